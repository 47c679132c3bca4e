"""What parcelhook does, one function per user action.

Each operation validates its input (domain), changes the data and builds the events the
change causes, and commits both in one transaction (the outbox). The API and the panel call
these; neither touches the store or builds an event itself.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from parcelhook.delivery.headers import delivery_headers
from parcelhook.domain import deliveries as dl
from parcelhook.domain import events as ev
from parcelhook.domain import keys, systems, tracking
from parcelhook.domain.clock import Clock
from parcelhook.domain.deliveries import Delivery
from parcelhook.domain.errors import Conflict, InvalidInput, NotFound
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import (
    Integration,
    IntegrationChanges,
    TargetPolicy,
    check_webhook_settings,
)
from parcelhook.domain.parcels import NewParcel, Parcel, Refund, parse_new_parcel
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.statuses import ParcelStatus
from parcelhook.domain.text import check_text, has_nul
from parcelhook.store import Store, Tx, webhook_log
from parcelhook.store.webhook_log import Health

# the public_key column's width: a longer one cannot name an integration
_PUBLIC_KEY_MAX = 64
_hasher = PasswordHasher()


class TargetCheck(Protocol):
    """At save time: a message when the URL's host resolves to a forbidden address, else None."""

    async def __call__(self, url: str, *, allow_private: bool) -> str | None: ...


class WebhookSender(Protocol):
    """Sends one signed request (the Test API Webhook button's sender)."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult: ...


@dataclass(frozen=True, slots=True)
class NewAccount:
    account_id: int
    integration: Integration


@dataclass(frozen=True, slots=True)
class TestResult:
    delivered: bool
    status_code: int | None
    duration_ms: int
    response_excerpt: str
    error: str | None


class Service:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: TargetPolicy,
        sender: WebhookSender,
        *,
        check_target: TargetCheck,
        secret_grace_ms: int = 24 * 3600 * 1000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.sender = sender
        self.check_target = check_target
        self.secret_grace_ms = secret_grace_ms

    # -- accounts ---------------------------------------------------------------------

    async def create_account(self, email: str, password: str) -> NewAccount:
        email = email.strip().lower()
        if "@" not in email or len(email) > 320:
            raise InvalidInput("email is not a valid e-mail address.", field="email")
        if len(password) < 8:
            raise InvalidInput("password must have at least 8 characters.", field="password")
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            account_id = await tx.create_account(email, password_hash, now)
            integration = await tx.create_integration(
                account_id,
                IntegrationChanges(shop_name="API integration", system=systems.API),
                now,
            )
            await self._emit_integration(tx, systems.INTEGRATION_CONNECTED, integration, now)
        return NewAccount(account_id, integration)

    async def set_password(self, account_id: int, password: str) -> None:
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        async with self.store.transaction() as tx:
            await tx.set_password(account_id, password_hash)

    async def session_generation(self, account_id: int) -> int | None:
        """Which panel sessions of the account still count (None: the account is gone)."""
        async with self.store.reading() as r:
            return await r.session_generation(account_id)

    async def end_sessions(self, account_id: int) -> None:
        """Sign the account out everywhere: in every process, and after restarts."""
        async with self.store.transaction() as tx:
            await tx.end_sessions(account_id)

    async def sign_in(self, email: str, password: str) -> int | None:
        """The account id when the password matches (always costs one hash, found or not)."""
        email = email.strip().lower()
        found = None
        if not has_nul(email):  # PostgreSQL cannot even compare text holding NUL
            async with self.store.reading() as r:
                found = await r.account_by_email(email)
        stored = found[1] if found else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return found[0] if found else None

    async def authenticate_api(self, public_key: str, secret_key: str) -> Integration | None:
        """The API integration whose key pair this is (constant-time secret comparison)."""
        integration = None
        if len(public_key) <= _PUBLIC_KEY_MAX and not has_nul(public_key):
            async with self.store.reading() as r:
                integration = await r.integration_by_public_key(public_key)
        candidate = integration.secret_key if integration else secrets.token_hex(16)
        ok = secrets.compare_digest(candidate.encode(), secret_key.encode())
        if integration is None or not ok or integration.system != systems.API:
            return None
        return integration

    # -- integrations -----------------------------------------------------------------

    async def list_integrations(
        self, account_id: int, after_id: int = 0, limit: int | None = None
    ) -> list[Integration]:
        async with self.store.reading() as r:
            return await r.integrations(account_id, after_id=after_id, limit=limit)

    async def get_integration(self, account_id: int, integration_id: int) -> Integration:
        async with self.store.reading() as r:
            return await r.integration(account_id, integration_id)

    async def _check_target(self, active: bool, url: str | None) -> None:
        check_webhook_settings(active, url, self.policy)
        if url:
            problem = await self.check_target(url, allow_private=self.policy.allow_private)
            if problem:
                raise InvalidInput(problem, field="webhook_url", code="invalid_url")

    async def create_integration(self, account_id: int, changes: IntegrationChanges) -> Integration:
        await self._check_target(bool(changes.webhook_active), changes.webhook_url)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            integration = await tx.create_integration(account_id, changes, now)
            await self._emit_integration(tx, systems.INTEGRATION_CONNECTED, integration, now)
        return integration

    async def update_integration(
        self, account_id: int, integration_id: int, changes: IntegrationChanges
    ) -> Integration:
        async with self.store.reading() as r:
            current = await r.integration(account_id, integration_id)
        active = (
            current.webhook_active if changes.webhook_active is None else changes.webhook_active
        )
        url = None if changes.clear_webhook_url else (changes.webhook_url or current.webhook_url)
        await self._check_target(active, url)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            current = await tx.integration(account_id, integration_id)
            updated = await tx.update_integration(current, changes, now)
            await self._emit_integration(tx, systems.INTEGRATION_UPDATED, updated, now)
        return updated

    async def delete_integration(self, account_id: int, integration_id: int) -> None:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            current = await tx.integration(account_id, integration_id)
            # routed before the tombstone, so the deleted integration hears of it too
            await self._emit_integration(tx, systems.INTEGRATION_DELETED, current, now)
            await tx.delete_integration(current, now)

    async def rotate_webhook_secret(self, account_id: int, integration_id: int) -> Integration:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            current = await tx.integration(account_id, integration_id)
            return await tx.rotate_webhook_secret(current, now, self.secret_grace_ms)

    async def _emit_integration(
        self, tx: Tx, action: str, integration: Integration, now: int
    ) -> None:
        event = ev.make_event(
            integration.account_id, ev.integration_changed(action, integration, now)
        )
        await tx.enqueue(event, ev.recipients(action, integration), now)

    async def test_webhook(
        self,
        account_id: int,
        integration_id: int,
        *,
        url: str | None = None,
        key: str | None = None,
    ) -> TestResult:
        """Send one signed `test_webhook` to the URL and key as typed; nothing is stored.

        A URL or key not given (None) is the saved one; an empty URL is refused.
        """
        async with self.store.reading() as r:
            integration = await r.integration(account_id, integration_id)
        if key:
            keys.check_signature_key(key)
        url = integration.webhook_url if url is None else url
        if not url:
            raise InvalidInput(
                "A webhook URL is required to test.", field="webhook_url", code="required"
            )
        key = key or integration.signing_key
        await self._check_target(True, url)
        now = self.clock.now_ms()
        payload = ev.test_webhook(integration.id, integration.shop_name, integration.system, now)
        event = ev.make_event(account_id, payload)
        headers = delivery_headers(
            integration, msg_id=event.id, body=event.body, at_ms=now, signature_key=key
        )
        result = await self.sender.send(url, event.body, headers)
        return TestResult(
            delivered=result.succeeded,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            response_excerpt=result.response_excerpt,
            error=result.error if result.error else _status_problem(result),
        )

    # -- parcels ----------------------------------------------------------------------

    async def create_parcel(self, account_id: int, acting: Integration, data: Any) -> Parcel:
        new: NewParcel = parse_new_parcel(data)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            owner = acting
            if new.integration_id is not None and new.integration_id != acting.id:
                try:
                    owner = await tx.integration(account_id, new.integration_id)
                except NotFound:
                    raise InvalidInput(
                        "integration_id names no integration of this account.",
                        field="integration_id",
                    ) from None
            else:
                # routed as it is in this transaction: the caller's copy is from before it
                owner = await tx.integration_by_id(acting.id) or acting
            parcel = await tx.create_parcel(
                account_id, owner.id, new, now, ParcelStatus.READY_TO_SEND
            )
            await self._emit_parcel(tx, parcel, now, owner)
        return parcel

    async def get_parcel(self, account_id: int, parcel_id: int) -> Parcel:
        async with self.store.reading() as r:
            return await r.parcel(account_id, parcel_id)

    async def parcels_updated_after(
        self, account_id: int, after_ms: int, after_id: int, limit: int
    ) -> list[Parcel]:
        async with self.store.reading() as r:
            return await r.parcels_updated_after(account_id, after_ms, after_id, limit)

    async def change_status(
        self, account_id: int, parcel_id: int, status_id: Any, carrier_ms: Any = None
    ) -> Parcel:
        tracking.check_status(status_id, carrier_ms)
        async with self.store.transaction() as tx:
            # one statement that locks the row and changes it only if the status differs, so
            # the same change made twice at once emits one event; the stored change time
            # (strictly after the previous one) stamps the event
            now = self.clock.now_ms()
            parcel = await tx.change_parcel_status(
                account_id, parcel_id, status_id, now, carrier_ms
            )
            if parcel is None:
                return await tx.parcel(account_id, parcel_id)  # unchanged, or NotFound
            await self._emit_parcel(tx, parcel, parcel.updated_ms)
            return parcel

    async def track_many(
        self, account_id: int, items: Sequence[Any]
    ) -> list[tracking.TrackingResult]:
        """Carrier tracking updates, committed with their events in one transaction.

        Each item gets a result in its place: a malformed item, or a parcel this account
        does not have (another tenant's included), fails alone and the rest still apply.
        """
        if not 1 <= len(items) <= tracking.MAX_BATCH:
            raise InvalidInput(
                f"tracking_updates must hold 1 to {tracking.MAX_BATCH} updates.",
                field="tracking_updates",
            )
        parsed: list[tracking.TrackingUpdate | tracking.TrackingResult] = []
        for item in items:
            try:
                parsed.append(tracking.parse_update(item))
            except InvalidInput as exc:
                pid = tracking.item_parcel_id(item)
                parsed.append(tracking.TrackingResult(pid, tracking.FAILED, error=exc))
        wanted = {u.parcel_id for u in parsed if isinstance(u, tracking.TrackingUpdate)}
        if not wanted:
            return [u for u in parsed if isinstance(u, tracking.TrackingResult)]
        results: list[tracking.TrackingResult] = []
        async with self.store.transaction() as tx:
            parcels = await tx.parcels_for_update(account_id, wanted)
            now = self.clock.now_ms()  # inside the lock, as for one change
            owners = await tx.integrations_by_ids({p.integration_id for p in parcels.values()})
            changed: dict[int, Parcel] = {}
            batch: list[tuple[Event, list[Integration]]] = []
            for u in parsed:
                if isinstance(u, tracking.TrackingResult):
                    results.append(u)
                    continue
                parcel = parcels.get(u.parcel_id)
                if parcel is None:
                    missing = NotFound("No such parcel.", field="parcel_id")
                    results.append(
                        tracking.TrackingResult(u.parcel_id, tracking.FAILED, error=missing)
                    )
                    continue
                if parcel.status_id == u.status_id:
                    results.append(
                        tracking.TrackingResult(u.parcel_id, tracking.UNCHANGED, u.status_id)
                    )
                    continue
                parcel = replace(
                    parcel,
                    status_id=u.status_id,
                    updated_ms=max(now, parcel.updated_ms + 1),
                    carrier_status_change_ms=u.carrier_ms,
                )
                parcels[parcel.id] = changed[parcel.id] = parcel
                # stamped with the stored change time, strictly increasing per parcel
                payload = ev.parcel_status_changed(parcel, parcel.updated_ms)
                owner = owners.get(parcel.integration_id)
                batch.append(
                    (
                        ev.make_event(account_id, payload),
                        ev.recipients(systems.PARCEL_STATUS_CHANGED, owner),
                    )
                )
                results.append(tracking.TrackingResult(u.parcel_id, tracking.CHANGED, u.status_id))
            await tx.set_parcel_statuses(list(changed.values()))
            await tx.enqueue_many(batch, now)
        return results

    async def cancel_parcel(self, account_id: int, parcel_id: int) -> Parcel:
        async with self.store.transaction() as tx:
            parcel = await tx.parcel(account_id, parcel_id, lock=True)
            now = self.clock.now_ms()
            if parcel.status_id in _NOT_CANCELLABLE:
                raise Conflict(
                    f"A parcel in status {parcel.status_id} cannot be cancelled.",
                    field="status",
                )
            parcel = await self._set_status(
                tx, parcel, ParcelStatus.CANCELLATION_REQUESTED, now, None
            )
            return await self._set_status(tx, parcel, ParcelStatus.CANCELLED, now, None)

    async def request_refund(self, account_id: int, parcel_id: int, data: Any) -> Refund:
        refund_data = data.get("refund") if isinstance(data, dict) else None
        reason = refund_data.get("reason") if isinstance(refund_data, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("refund.reason is required.", field="reason", code="required")
        if len(reason) > 2000:
            raise InvalidInput("reason must be at most 2000 characters.", field="reason")
        check_text(reason, "reason")
        async with self.store.transaction() as tx:
            # locked, so of two refunds at once one is created and the other sees it (409)
            parcel = await tx.parcel(account_id, parcel_id, lock=True)
            now = self.clock.now_ms()
            refund = await tx.create_refund(parcel, reason.strip(), parcel.price, now)
            owner = await tx.integration_by_id(parcel.integration_id)
            event = ev.make_event(account_id, ev.refund_requested(refund, parcel, now))
            await tx.enqueue(event, ev.recipients(systems.REFUND_REQUESTED, owner), now)
        return refund

    async def _set_status(
        self, tx: Tx, parcel: Parcel, status_id: int, now: int, carrier_ms: int | None
    ) -> Parcel:
        parcel = await tx.set_parcel_status(parcel, status_id, now, carrier_ms)
        # the stored change time is strictly after the previous one (with the row locked),
        # so each parcel's events carry strictly increasing timestamps
        await self._emit_parcel(tx, parcel, parcel.updated_ms)
        return parcel

    async def _emit_parcel(
        self, tx: Tx, parcel: Parcel, now: int, owner: Integration | None = None
    ) -> None:
        """Queue `parcel_status_changed`; `owner`, when given, was read in this transaction."""
        if owner is None:
            owner = await tx.integration_by_id(parcel.integration_id)
        event = ev.make_event(parcel.account_id, ev.parcel_status_changed(parcel, now))
        await tx.enqueue(event, ev.recipients(systems.PARCEL_STATUS_CHANGED, owner), now)

    # -- the webhook log --------------------------------------------------------------

    async def list_events(self, account_id: int, after_id: str, limit: int) -> list[Event]:
        async with self.store.reading() as r:
            return await r.events(account_id, after_id, limit)

    async def list_deliveries(self, account_id: int, **filters: Any) -> list[Delivery]:
        status = filters.get("status")
        if status is not None and status not in dl.STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(dl.STATUSES)}.", field="status")
        async with self.store.reading() as r:
            return await r.deliveries(account_id, **filters)

    async def get_delivery(self, account_id: int, delivery_id: int) -> Delivery:
        async with self.store.reading() as r:
            return await r.delivery(account_id, delivery_id)

    async def redeliver(self, account_id: int, delivery_id: int) -> Delivery:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            current = await tx.delivery(account_id, delivery_id)
            if current.status == dl.PENDING:
                # a waiting delivery is sent now, keeping its webhook-id
                await webhook_log.retry_now(tx, account_id, now, delivery_id=delivery_id)
            else:
                await tx.redeliver(account_id, now, delivery_id=delivery_id, status=None)
            # as committed: read after the commit, a fast dispatcher may already have sent it
            return await tx.delivery(account_id, delivery_id)

    async def retry_all_now(self, account_id: int, integration_id: int) -> int:
        """Send every waiting delivery of the integration now; returns how many."""
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            await tx.integration(account_id, integration_id)
            return await webhook_log.retry_now(tx, account_id, now, integration_id=integration_id)

    async def integration_health(self, account_id: int, integration_id: int) -> Health:
        async with self.store.reading() as r:
            return await webhook_log.health(r, account_id, integration_id)

    async def redeliver_many(
        self,
        account_id: int,
        *,
        status: str = dl.FAILED,
        integration_id: int | None = None,
        action: str | None = None,
    ) -> int:
        if status not in (dl.FAILED, dl.DELIVERED):
            raise InvalidInput("status must be failed or delivered.", field="status")
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            return await tx.redeliver(
                account_id, now, status=status, integration_id=integration_id, action=action
            )


_NOT_CANCELLABLE = frozenset(
    {
        ParcelStatus.DELIVERED,
        ParcelStatus.CANCELLATION_REQUESTED,
        ParcelStatus.CANCELLED,
        ParcelStatus.CANCELLED_UPSTREAM,
        ParcelStatus.SHIPMENT_COLLECTED_BY_CUSTOMER,
    }
)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def _status_problem(result: AttemptResult) -> str | None:
    if result.succeeded or result.status_code is None:
        return None
    if 300 <= result.status_code < 400:
        return f"The endpoint answered {result.status_code} (redirects are not followed)."
    return f"The endpoint answered {result.status_code}; only 2xx counts as delivered."
