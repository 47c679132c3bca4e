"""`Tx`: the domain's reads and writes on one connection, and the mapping of rows to records."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from parcelhook.domain import deliveries as dl
from parcelhook.domain import keys
from parcelhook.domain.deliveries import Attempt, Delivery
from parcelhook.domain.errors import Conflict, NotFound
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import ApiKey, Integration, IntegrationChanges
from parcelhook.domain.parcels import NewParcel, Parcel, Refund, tracking_number
from parcelhook.domain.signing import new_webhook_secret
from parcelhook.domain.systems import TEST_WEBHOOK
from parcelhook.domain.tracking import StatusChange
from parcelhook.store import answer_headers, ingest
from parcelhook.store import schema as s
from parcelhook.store.crypto import SecretBox

T = TypeVar("T")


def integration_from_row(row: Row[Any], box: SecretBox) -> Integration:
    o = box.open
    return Integration(
        id=row.id,
        account_id=row.account_id,
        shop_name=row.shop_name,
        shop_url=row.shop_url,
        system=row.system,
        webhook_active=bool(row.webhook_active),
        webhook_url=row.webhook_url,
        webhook_signature_key=(
            o(row.webhook_signature_key_enc) if row.webhook_signature_key_enc else None
        ),
        public_key=row.public_key,
        secret_key=o(row.secret_key_enc),
        webhook_secret=o(row.webhook_secret_enc),
        previous_webhook_secret=(
            o(row.previous_webhook_secret_enc) if row.previous_webhook_secret_enc else None
        ),
        previous_webhook_secret_until_ms=row.previous_webhook_secret_until_ms,
        failing_since_ms=row.failing_since_ms,
        last_fetch_ms=row.last_fetch_ms,
        last_updated_ms=row.last_updated_ms,
        created_ms=row.created_ms,
        service_point_enabled=bool(row.service_point_enabled),
        service_point_carriers=tuple(
            json.loads(row.service_point_carriers) if row.service_point_carriers else ()
        ),
        deleted_ms=row.deleted_ms,
        disabled_reason=row.disabled_reason,
        disabled_ms=row.disabled_ms,
    )


def api_key_from_row(row: Sequence[Any], box: SecretBox) -> ApiKey:
    """From (id, account_id, system, secret_key_enc)."""
    return ApiKey(int(row[0]), int(row[1]), str(row[2]), box.open(row[3]))


# the parcel columns an update may change (when the request names them)
_CHANGEABLE = (
    "name",
    "company_name",
    "address",
    "house_number",
    "city",
    "postal_code",
    "country",
    "telephone",
    "email",
    "weight",
    "order_number",
    "external_order_id",
    "external_shipment_id",
    "shipment_id",
    "is_return",
    "external_reference",
)


class _Prefixed:
    """The columns of a row named `prefix` + name, by name (another table's, joined in)."""

    def __init__(self, mapping: Mapping[str, Any], prefix: str) -> None:
        self._mapping = mapping
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._prefix + name]


def parcel_from_row(row: Row[Any]) -> Parcel:
    return Parcel(
        id=row.id,
        account_id=row.account_id,
        integration_id=row.integration_id,
        name=row.name,
        company_name=row.company_name,
        address=row.address,
        house_number=row.house_number,
        city=row.city,
        postal_code=row.postal_code,
        country=row.country,
        telephone=row.telephone,
        email=row.email,
        weight=row.weight,
        order_number=row.order_number,
        external_order_id=row.external_order_id,
        external_shipment_id=row.external_shipment_id,
        shipment_id=row.shipment_id,
        tracking_number=row.tracking_number,
        is_return=bool(row.is_return),
        status_id=row.status_id,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        carrier_status_change_ms=row.carrier_status_change_ms,
        details=json.loads(row.details) if row.details else {},
        announced_ms=row.announced_ms,
        external_reference=row.external_reference,
    )


def _refund_from_row(row: Row[Any]) -> Refund:
    return Refund(
        id=row.id,
        parcel_id=row.parcel_id,
        reason=row.reason,
        status=row.status,
        message=row.message,
        total_refund=row.total_refund,
        created_ms=row.created_ms,
    )


def _delivery_from_row(
    row: Row[Any], attempts: Sequence[Attempt] = (), body: bytes | None = None
) -> Delivery:
    return Delivery(
        id=row.id,
        event_id=row.event_id,
        integration_id=row.integration_id,
        account_id=row.account_id,
        action=row.action,
        status=row.status,
        attempt_count=row.attempt_count,
        next_attempt_ms=row.next_attempt_ms if row.status == dl.PENDING else None,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        attempts=tuple(attempts),
        body=body,
    )


# The API's hot statements, built once: building a statement anew (select(), where(),
# coercing every comparison) cost more than SQLite running it (docs/performance.md)
_p, _i = s.parcels, s.integrations
# `account_id + 0`: by the primary key only, whatever the statistics (store/ingest.py)
_PARCEL = select(_p).where(_p.c.id == bindparam("pid"), _p.c.account_id + 0 == bindparam("aid"))
_PARCEL_FOR_UPDATE = _PARCEL.with_for_update()
_INTEGRATIONS_BY_IDS = select(_i).where(_i.c.id.in_(bindparam("ids", expanding=True)))
_PARCELS_BY_IDS = select(_p).where(_p.c.id.in_(bindparam("ids", expanding=True)))
_INTEGRATION = select(_i).where(
    _i.c.id == bindparam("iid"), _i.c.account_id == bindparam("aid"), _i.c.deleted_ms.is_(None)
)
_INTEGRATION_BY_ID = select(_i).where(_i.c.id == bindparam("iid"))
_INTEGRATION_BY_KEY = select(_i).where(
    _i.c.public_key == bindparam("pk"), _i.c.deleted_ms.is_(None)
)
_API_KEY = select(_i.c.id, _i.c.account_id, _i.c.system, _i.c.secret_key_enc).where(
    _i.c.public_key == bindparam("pk"), _i.c.deleted_ms.is_(None)
)
# the same as raw driver SQL, for the engines' own lookups (sqlite.py, postgres.py)
API_KEY_SQL = (
    "SELECT id, account_id, system, secret_key_enc FROM integrations"
    " WHERE public_key = {} AND deleted_ms IS NULL"
)


def _redeliverable(
    account_id: int, status: str | None, integration_id: int | None, action: str | None
) -> list[ColumnElement[bool]]:
    """Which of the account's deliveries a redelivery takes: settled ones (in `status`),
    never a test send (it went to a typed URL, not the integration's)."""
    d = s.deliveries
    where = [d.c.account_id == account_id, d.c.status != dl.PENDING, d.c.action != TEST_WEBHOOK]
    if status is not None:
        where.append(d.c.status == status)
    if integration_id is not None:
        where.append(d.c.integration_id == integration_id)
    if action is not None:
        where.append(d.c.action == action)
    return where


class Tx:
    """Domain operations on one connection; inside `Store.transaction()` they commit together."""

    def __init__(self, conn: AsyncConnection, box: SecretBox) -> None:
        self.conn = conn
        self.box = box
        self._sqlite = conn.dialect.name == "sqlite"
        # deliveries were queued: the store wakes the dispatchers after the commit
        self.queued = False
        # PostgreSQL: the NOTIFY channel, so that enqueueing can send the wake-up itself
        # (it is delivered at commit either way), and whether it did
        self.notify_channel: str | None = None
        self.notified = False

    # -- accounts ---------------------------------------------------------------------

    async def create_account(self, email: str, password_hash: str, now_ms: int) -> int:
        a = s.accounts
        exists = await self.conn.execute(select(a.c.id).where(a.c.email == email))
        if exists.first() is not None:
            raise Conflict("An account with this e-mail already exists.", field="email")
        result = await self.conn.execute(
            insert(a)
            .values(email=email, password_hash=password_hash, created_ms=now_ms)
            .returning(a.c.id)
        )
        return int(result.scalar_one())

    async def account_by_email(self, email: str) -> tuple[int, str] | None:
        a = s.accounts
        row = (
            await self.conn.execute(select(a.c.id, a.c.password_hash).where(a.c.email == email))
        ).first()
        return (row.id, row.password_hash) if row else None

    async def set_password(self, account_id: int, password_hash: str) -> None:
        """A new password, which also ends every panel session of the account."""
        a = s.accounts
        await self.conn.execute(
            update(a)
            .where(a.c.id == account_id)
            .values(password_hash=password_hash, session_generation=a.c.session_generation + 1)
        )

    async def session_generation(self, account_id: int) -> int | None:
        """The account's session generation; None when there is no such account."""
        a = s.accounts
        q = select(a.c.session_generation).where(a.c.id == account_id)
        found = (await self.conn.execute(q)).scalar()
        return None if found is None else int(found)

    async def end_sessions(self, account_id: int) -> None:
        """Refuse every panel session of the account signed until now."""
        a = s.accounts
        await self.conn.execute(
            update(a)
            .where(a.c.id == account_id)
            .values(session_generation=a.c.session_generation + 1)
        )

    async def create_integration(
        self, account_id: int, changes: IntegrationChanges, now_ms: int
    ) -> Integration:
        box = self.box
        key = changes.webhook_signature_key
        values: dict[str, Any] = {
            "account_id": account_id,
            "shop_name": changes.shop_name or "",
            "shop_url": changes.shop_url,
            "system": changes.system,
            "webhook_active": bool(changes.webhook_active),
            "webhook_url": changes.webhook_url,
            "webhook_signature_key_enc": box.seal(key) if key else None,
            "webhook_signature_key_last4": keys.last4(key) if key else None,
            "public_key": secrets.token_hex(16),
            "secret_key_enc": box.seal(secrets.token_hex(16)),
            "webhook_secret_enc": box.seal(new_webhook_secret()),
            "last_updated_ms": now_ms,
            "created_ms": now_ms,
            "service_point_enabled": bool(changes.service_point_enabled),
            "service_point_carriers": json.dumps(list(changes.service_point_carriers or ())),
        }
        i = s.integrations
        new_id = (await self.conn.execute(insert(i).values(**values).returning(i.c.id))).scalar()
        return await self.integration(account_id, int(new_id or 0))

    async def integration(self, account_id: int, integration_id: int) -> Integration:
        """The account's live integration, or NotFound (also for another account's id)."""
        params = {"iid": integration_id, "aid": account_id}
        row = (await self.conn.execute(_INTEGRATION, params)).first()
        if row is None:
            raise NotFound("No such integration.", field="id")
        return integration_from_row(row, self.box)

    async def integrations(
        self, account_id: int, *, after_id: int = 0, limit: int | None = None
    ) -> list[Integration]:
        i = s.integrations
        q = (
            select(i)
            .where(i.c.account_id == account_id, i.c.deleted_ms.is_(None), i.c.id > after_id)
            .order_by(i.c.id)
        )
        if limit is not None:
            q = q.limit(limit)
        return [integration_from_row(r, self.box) for r in await self.conn.execute(q)]

    async def integration_by_id(self, integration_id: int) -> Integration | None:
        """Any integration, deleted or not: for routing, never for answering a tenant."""
        row = (await self.conn.execute(_INTEGRATION_BY_ID, {"iid": integration_id})).first()
        return integration_from_row(row, self.box) if row else None

    async def integration_by_public_key(self, public_key: str) -> Integration | None:
        row = (await self.conn.execute(_INTEGRATION_BY_KEY, {"pk": public_key})).first()
        return integration_from_row(row, self.box) if row else None

    async def api_key(self, public_key: str) -> ApiKey | None:
        row = (await self.conn.execute(_API_KEY, {"pk": public_key})).first()
        return api_key_from_row(row, self.box) if row else None

    async def update_integration(
        self, current: Integration, changes: IntegrationChanges, now_ms: int
    ) -> Integration:
        box = self.box
        values: dict[str, Any] = {"last_updated_ms": max(now_ms, current.last_updated_ms + 1)}
        for name in (
            "shop_name",
            "shop_url",
            "system",
            "webhook_active",
            "webhook_url",
            "service_point_enabled",
        ):
            value = getattr(changes, name)
            if value is not None:
                values[name] = value
        if changes.clear_webhook_url:
            values["webhook_url"] = None
        if changes.service_point_carriers is not None:
            values["service_point_carriers"] = json.dumps(list(changes.service_point_carriers))
        if changes.webhook_active:
            # turned on again: why it was turned off is history
            values["disabled_reason"] = None
            values["disabled_ms"] = None
        if changes.webhook_signature_key:
            values["webhook_signature_key_enc"] = box.seal(changes.webhook_signature_key)
            values["webhook_signature_key_last4"] = keys.last4(changes.webhook_signature_key)
        elif changes.clear_signature_key:
            values["webhook_signature_key_enc"] = None
            values["webhook_signature_key_last4"] = None
        i = s.integrations
        await self.conn.execute(update(i).where(i.c.id == current.id).values(**values))
        return await self.integration(current.account_id, current.id)

    async def rotate_webhook_secret(
        self, current: Integration, now_ms: int, grace_ms: int
    ) -> Integration:
        box = self.box
        i = s.integrations
        await self.conn.execute(
            update(i)
            .where(i.c.id == current.id)
            .values(
                webhook_secret_enc=box.seal(new_webhook_secret()),
                previous_webhook_secret_enc=box.seal(current.webhook_secret),
                previous_webhook_secret_until_ms=now_ms + grace_ms,
                last_updated_ms=max(now_ms, current.last_updated_ms + 1),
            )
        )
        return await self.integration(current.account_id, current.id)

    async def delete_integration(self, current: Integration, now_ms: int) -> None:
        # kept as a tombstone: its own integration_deleted must still reach its webhook
        i = s.integrations
        await self.conn.execute(
            update(i)
            .where(i.c.id == current.id)
            .values(
                deleted_ms=now_ms,
                last_updated_ms=max(now_ms, current.last_updated_ms + 1),
                public_key="deleted-" + secrets.token_hex(12),
            )
        )

    async def create_parcel(
        self,
        account_id: int,
        integration_id: int,
        new: NewParcel,
        now_ms: int,
        status_id: int,
        details: Mapping[str, Any] | None = None,
    ) -> Parcel:
        kept = dict(details if details is not None else new.details)
        values: dict[str, Any] = {
            "account_id": account_id,
            "integration_id": integration_id,
            "name": new.name,
            "company_name": new.company_name,
            "address": new.address,
            "house_number": new.house_number,
            "city": new.city,
            "postal_code": new.postal_code,
            "country": new.country,
            "telephone": new.telephone,
            "email": new.email,
            "weight": new.weight,
            "order_number": new.order_number,
            "external_order_id": new.external_order_id,
            "external_shipment_id": new.external_shipment_id,
            "shipment_id": new.shipment_id,
            "is_return": new.is_return,
            "status_id": status_id,
            "created_ms": now_ms,
            "updated_ms": now_ms,
            "external_reference": new.external_reference,
        }
        row = [values[name] for name in ingest.NEW_PARCEL_NAMES[:-1]] + [json.dumps(kept)]
        if self._sqlite:
            new_id = await self._on_sqlite(ingest.sqlite_insert_parcel, row)
        else:
            new_id = await ingest.pg_insert_parcel(await self._pg(), row)
        values["tracking_number"] = tracking_number(new_id)
        # built from what was written: the row holds nothing else
        return Parcel(id=new_id, carrier_status_change_ms=None, details=kept, **values)

    async def parcel(self, account_id: int, parcel_id: int, *, lock: bool = False) -> Parcel:
        """The account's parcel; `lock` holds its row until the transaction ends (PostgreSQL:
        FOR UPDATE; SQLite's transactions hold the database's write turn already)."""
        q = _PARCEL_FOR_UPDATE if lock and not self._sqlite else _PARCEL
        row = (await self.conn.execute(q, {"pid": parcel_id, "aid": account_id})).first()
        if row is None:
            raise NotFound("No such parcel.", field="id")
        return parcel_from_row(row)

    async def parcels_updated_after(
        self, account_id: int, after_ms: int, after_id: int, limit: int
    ) -> list[Parcel]:
        """Parcels changed after an instant, in (updated, id) order: the polling alternative."""
        p = s.parcels
        q = (
            select(p)
            .where(
                p.c.account_id == account_id,
                or_(p.c.updated_ms > after_ms, and_(p.c.updated_ms == after_ms, p.c.id > after_id)),
            )
            .order_by(p.c.updated_ms, p.c.id)
            .limit(limit)
        )
        return [parcel_from_row(r) for r in await self.conn.execute(q)]

    async def change_parcel_statuses(
        self, changes: Sequence[StatusChange], now_ms: int
    ) -> dict[int, tuple[Parcel, Integration | None]]:
        """Give each change's parcel its status unless it has it already (no two changes of
        one parcel), in one statement that locks the rows (PostgreSQL re-checks a row
        another writer changed meanwhile). Each change time is strictly after the parcel's
        previous one, so a parcel's events carry strictly increasing timestamps. Returns,
        by parcel id, each changed parcel and, on PostgreSQL, its integration; a change
        missing from it changed nothing: its parcel has that status already, or the
        change's account has no such parcel."""
        if not changes:
            return {}
        if self._sqlite:
            return await self._on_sqlite(ingest.sqlite_change_statuses, changes, now_ms)
        rows = await ingest.pg_change_statuses(await self._pg(), changes, now_ms)
        # each row carries its parcel's integration; most of a batch's share one, built once
        owners: dict[int, Integration] = {}
        changed: dict[int, tuple[Parcel, Integration | None]] = {}
        for row in rows:
            owner = owners.get(row["owner_id"])
            if owner is None:
                prefixed = cast(Row[Any], _Prefixed(row, "owner_"))
                owner = owners[row["owner_id"]] = integration_from_row(prefixed, self.box)
            changed[row[0]] = (ingest.parcel_from_values(row), owner)
        return changed

    async def parcels_any_account(self, ids: Iterable[int]) -> dict[int, Parcel]:
        """Parcels by id whatever their account: the caller checks the account."""
        rows = await self.conn.execute(_PARCELS_BY_IDS, {"ids": sorted(set(ids))})
        return {row.id: parcel_from_row(row) for row in rows}

    async def set_parcel_status(
        self,
        parcel: Parcel,
        status_id: int,
        now_ms: int,
        carrier_ms: int | None,
        *,
        details: Mapping[str, Any] | None = None,
        announced: bool = False,
    ) -> Parcel:
        """A new status (`announced`: with a label from now on, `details` replaced)."""
        p = s.parcels
        updated_ms = max(now_ms, parcel.updated_ms + 1)
        values: dict[str, Any] = {
            "status_id": status_id,
            "updated_ms": updated_ms,
            "carrier_status_change_ms": carrier_ms,
        }
        if details is not None:
            values["details"] = json.dumps(dict(details))
        if announced:
            values["announced_ms"] = updated_ms
        await self.conn.execute(update(p).where(p.c.id == parcel.id).values(**values))
        return await self.parcel(parcel.account_id, parcel.id)

    async def parcels_for_update(self, account_id: int, ids: Iterable[int]) -> dict[int, Parcel]:
        """The account's parcels among `ids`, locked until the transaction ends (PostgreSQL;
        SQLite's write transaction excludes other writers anyway), in id order."""
        wanted = sorted(set(ids))
        if self._sqlite:
            return await self._on_sqlite(ingest.sqlite_parcels_of, account_id, wanted)
        return await ingest.pg_parcels_of(await self._pg(), account_id, wanted)

    async def set_parcel_statuses(self, parcels: Sequence[Parcel]) -> None:
        """Write the status fields of already-changed parcels, one statement for all."""
        if not parcels:
            return
        if self._sqlite:
            await self._on_sqlite(ingest.sqlite_set_statuses, parcels)
        else:
            await ingest.pg_set_statuses(await self._pg(), parcels)

    async def integrations_by_ids(self, ids: Iterable[int]) -> dict[int, Integration]:
        """Any integrations, deleted or not: for routing, never for answering a tenant."""
        wanted = sorted(set(ids))
        if self._sqlite:
            box = self.box
            found = await self._on_sqlite(ingest.sqlite_integrations, wanted)
            return {
                m["id"]: integration_from_row(cast(Row[Any], _Prefixed(m, "")), box) for m in found
            }
        rows = await self.conn.execute(_INTEGRATIONS_BY_IDS, {"ids": wanted})
        return {row.id: integration_from_row(row, self.box) for row in rows}

    async def parcel_any_account(self, parcel_id: int) -> Parcel | None:
        """A parcel whatever its account: only for checks that prove ownership otherwise."""
        p = s.parcels
        row = (await self.conn.execute(select(p).where(p.c.id == parcel_id))).first()
        return parcel_from_row(row) if row else None

    async def update_parcel(
        self, parcel: Parcel, change: NewParcel, details: Mapping[str, Any], now_ms: int
    ) -> Parcel:
        """Change the fields `change` names (and the details); no status change, no event."""
        p = s.parcels
        values: dict[str, Any] = {
            name: getattr(change, name)
            for name in _CHANGEABLE
            if name in change.given or (name == "shipment_id" and "shipment" in change.given)
        }
        values.pop("integration_id", None)
        values["details"] = json.dumps(dict(details))
        values["updated_ms"] = max(now_ms, parcel.updated_ms + 1)
        await self.conn.execute(update(p).where(p.c.id == parcel.id).values(**values))
        return await self.parcel(parcel.account_id, parcel.id)

    async def parcel_by_reference(self, account_id: int, reference: str) -> bool:
        """Whether a parcel of the account already has this `external_reference`."""
        p = s.parcels
        q = select(p.c.id).where(p.c.account_id == account_id, p.c.external_reference == reference)
        return (await self.conn.execute(q.limit(1))).first() is not None

    async def create_refund(self, parcel: Parcel, reason: str, total: str, now_ms: int) -> Refund:
        r = s.refunds
        values = {
            "parcel_id": parcel.id,
            "account_id": parcel.account_id,
            "reason": reason,
            "status": "requested",
            "message": "Refund requested",
            "total_refund": total,
            "created_ms": now_ms,
        }
        # one statement that cannot race: a refund already there (or committed meanwhile by
        # a writer that did not lock the parcel) inserts nothing
        dialect = sqlite_insert if self._sqlite else pg_insert
        new_id = (
            await self.conn.execute(
                dialect(r)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[r.c.parcel_id])
                .returning(r.c.id)
            )
        ).scalar()
        if new_id is None:
            raise Conflict("A refund was already requested for this parcel.", field="parcel_id")
        row = (await self.conn.execute(select(r).where(r.c.id == new_id))).one()
        return _refund_from_row(row)

    # -- the outbox -------------------------------------------------------------------

    async def enqueue(self, event: Event, recipients: Sequence[Integration], now_ms: int) -> None:
        """Store the event and one pending delivery per recipient, in this transaction."""
        await self.enqueue_many([(event, recipients)], now_ms)

    async def enqueue_many(
        self, batch: Sequence[tuple[Event, Sequence[Integration]]], now_ms: int
    ) -> None:
        """Store the events and one pending delivery per recipient of each, in this
        transaction (on PostgreSQL with the dispatchers' wake-up, sent at commit)."""
        if not batch:
            return
        if self._sqlite:
            queued = await self._on_sqlite(ingest.sqlite_enqueue, batch, now_ms)
        else:
            channel = self.notify_channel
            queued = await ingest.pg_enqueue(await self._pg(), batch, now_ms, channel)
            self.notified = self.notified or (queued and channel is not None)
        self.queued = self.queued or queued

    # -- the driver's own connection ---------------------------------------------------

    async def _on_sqlite(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(sqlite3 connection, *args)` on this transaction's connection (on the loop's
        thread; in aiosqlite's greenlet for an in-memory database)."""
        return await self.conn.run_sync(lambda sync: fn(sync.connection.dbapi_connection, *args))

    async def _pg(self) -> Any:
        """This transaction's asyncpg connection, its transaction begun. SQLAlchemy's
        adapter sends BEGIN lazily, with its first statement: a statement sent straight to
        asyncpg before that would commit on its own."""
        raw = await self.conn.get_raw_connection()
        adapted: Any = raw.dbapi_connection
        if adapted._transaction is None:
            await adapted._start_transaction()
        pg: Any = raw.driver_connection
        if not pg.is_in_transaction():  # never outside the transaction, whatever changes
            raise RuntimeError("the transaction's asyncpg connection has no transaction open")
        return pg

    # -- the webhook log --------------------------------------------------------------

    async def events(self, account_id: int, after_id: str, limit: int) -> list[Event]:
        e = s.events
        q = (
            select(e)
            .where(e.c.account_id == account_id, e.c.id > after_id)
            .order_by(e.c.id)
            .limit(limit)
        )
        return [
            Event(
                id=r.id,
                account_id=r.account_id,
                action=r.action,
                timestamp_ms=r.timestamp_ms,
                body=(r.body or "").encode("ascii"),
            )
            for r in await self.conn.execute(q)
        ]

    async def deliveries(
        self,
        account_id: int,
        *,
        status: str | None = None,
        integration_id: int | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Newest first, so the log opens on what just happened."""
        d = s.deliveries
        q = select(d).where(d.c.account_id == account_id).order_by(d.c.id.desc()).limit(limit)
        if status is not None:
            q = q.where(d.c.status == status)
        if integration_id is not None:
            q = q.where(d.c.integration_id == integration_id)
        if action is not None:
            q = q.where(d.c.action == action)
        else:
            # the panel's test sends are logged for the panel, not the API's delivery log
            q = q.where(d.c.action != TEST_WEBHOOK)
        if before_id is not None:
            q = q.where(d.c.id < before_id)
        return [_delivery_from_row(r) for r in await self.conn.execute(q)]

    async def delivery(self, account_id: int, delivery_id: int) -> Delivery:
        d, a, e = s.deliveries, s.attempts, s.events
        row = (
            await self.conn.execute(
                select(d, e.c.body)
                .join(e, e.c.id == d.c.event_id)
                .where(d.c.id == delivery_id, d.c.account_id == account_id)
            )
        ).first()
        if row is None:
            raise NotFound("No such delivery.", field="id")
        attempt_rows = await self.conn.execute(
            select(a).where(a.c.delivery_id == delivery_id).order_by(a.c.id)
        )
        attempts = [
            Attempt(
                at_ms=r.at_ms,
                duration_ms=r.duration_ms,
                status_code=r.status_code,
                error=r.error,
                response_excerpt=r.response_excerpt,
                response_headers=answer_headers.from_text(r.response_headers),
                url=r.url,
            )
            for r in attempt_rows
        ]
        body = row.body.encode("ascii") if row.body is not None else None
        return _delivery_from_row(row, attempts, body)

    async def redeliver(
        self,
        account_id: int,
        now_ms: int,
        *,
        delivery_id: int | None = None,
        status: str | None = dl.FAILED,
        integration_id: int | None = None,
        action: str | None = None,
    ) -> int:
        """Queue settled deliveries again with a fresh retry schedule; returns how many."""
        d = s.deliveries
        where = _redeliverable(account_id, status, integration_id, action)
        if delivery_id is not None:
            where.append(d.c.id == delivery_id)
        return await self._redeliver(where, now_ms)

    async def redeliver_page(
        self,
        account_id: int,
        now_ms: int,
        *,
        status: str,
        integration_id: int | None,
        action: str | None,
        after_id: int,
        up_to_id: int,
        limit: int,
    ) -> tuple[int, int | None]:
        """`redeliver`, for the first `limit` matching deliveries with ids in (after_id,
        up_to_id]: how many were queued again, and the last id looked at (None: none left)."""
        d = s.deliveries
        where = _redeliverable(account_id, status, integration_id, action)
        page = select(d.c.id).where(*where, d.c.id > after_id, d.c.id <= up_to_id)
        ids = [r[0] for r in await self.conn.execute(page.order_by(d.c.id).limit(limit))]
        if not ids:
            return 0, None
        return await self._redeliver([*where, d.c.id.in_(ids)], now_ms), ids[-1]

    async def last_delivery_id(self) -> int:
        return int(await self.conn.scalar(select(func.max(s.deliveries.c.id))) or 0)

    async def _redeliver(self, where: list[ColumnElement[bool]], now_ms: int) -> int:
        d, e = s.deliveries, s.events
        # a pruned payload cannot be sent again (a probe of the event's key per row)
        payload_kept = exists().where(e.c.id == d.c.event_id, e.c.body.is_not(None))
        result = await self.conn.execute(
            update(d)
            .where(*where, payload_kept)
            .values(
                status=dl.PENDING,
                schedule_base=d.c.attempt_count,
                next_attempt_ms=now_ms,
                lease_owner=None,
                updated_ms=now_ms,
            )
        )
        count = int(result.rowcount or 0)
        if count:
            self.queued = True
        return count

    # -- operations -------------------------------------------------------------------

    async def ping(self) -> None:
        """One round trip: raises when the database cannot be reached."""
        await self.conn.execute(select(1))

    async def queue_depth(self, now_ms: int, cap: int) -> tuple[int, int]:
        """Pending deliveries and those of them due now, each counted up to `cap`: bounded
        reads of the partial indexes on pending deliveries, never a walk of the table."""
        d = s.deliveries
        pending = select(d.c.id).where(d.c.status == dl.PENDING)
        counts = []
        for q in (pending, pending.where(d.c.next_attempt_ms <= now_ms)):
            bounded = q.limit(cap).subquery()
            counts.append(
                int(
                    (
                        await self.conn.execute(select(func.count()).select_from(bounded))
                    ).scalar_one()
                )
            )
        return counts[0], counts[1]

    async def prune(self, older_than_ms: int, batch: int) -> int:
        """Drop attempts and payloads of settled deliveries older than the cut-off, one batch."""
        d, e, a = s.deliveries, s.events, s.attempts
        old = (
            select(d.c.id)
            .where(d.c.status == dl.DELIVERED, d.c.updated_ms < older_than_ms)
            .limit(batch)
        )
        ids = [r[0] for r in await self.conn.execute(old)]
        if not ids:
            # events nobody was to receive go by age alone
            unrouted = (
                select(e.c.id)
                .where(
                    e.c.timestamp_ms < older_than_ms,
                    ~select(d.c.id).where(d.c.event_id == e.c.id).exists(),
                )
                .limit(batch)
            )
            gone = await self.conn.execute(delete(e).where(e.c.id.in_(unrouted.scalar_subquery())))
            return int(gone.rowcount or 0)
        event_ids = [
            r[0]
            for r in await self.conn.execute(select(d.c.event_id).where(d.c.id.in_(ids)).distinct())
        ]
        await self.conn.execute(delete(a).where(a.c.delivery_id.in_(ids)))
        await self.conn.execute(delete(d).where(d.c.id.in_(ids)))
        # an event's payload goes only when none of its deliveries still needs it
        still_used = select(d.c.event_id).where(d.c.event_id.in_(event_ids))
        await self.conn.execute(delete(e).where(e.c.id.in_(event_ids), e.c.id.not_in(still_used)))
        return len(ids)
