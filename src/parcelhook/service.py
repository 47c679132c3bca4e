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
from decimal import Decimal
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from parcelhook.delivery.headers import delivery_headers
from parcelhook.domain import deliveries as dl
from parcelhook.domain import events as ev
from parcelhook.domain import keys, systems, tracking
from parcelhook.domain.clock import Clock
from parcelhook.domain.deliveries import Delivery
from parcelhook.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import (
    ApiKey,
    Integration,
    IntegrationChanges,
    TargetPolicy,
    check_webhook_settings,
)
from parcelhook.domain.parcels import NewParcel, Parcel, Refund, new_shipment_uuid
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.senders import SenderAddress, SenderAddressFields
from parcelhook.domain.shipping import DEFAULT_CATALOGUE, ShippingMethod, carrier_name
from parcelhook.domain.statuses import STATUS_MESSAGES, ParcelStatus
from parcelhook.domain.text import check_text, has_nul
from parcelhook.group_commit import GroupCommit
from parcelhook.labels import Format, Sender, render_label
from parcelhook.store import Store, Tx, webhook_log
from parcelhook.store import sender_addresses as sender_store
from parcelhook.store.faults import is_unavailable
from parcelhook.store.parcel_queries import ParcelFilter, Position, find_parcels
from parcelhook.store.webhook_log import Health, LogFilter, LogRow

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
class Cancellation:
    """Sendcloud's answer to a cancellation: `cancelled`, `queued` or `deleted`."""

    status: str
    message: str
    http_status: int
    parcel: Parcel


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
        shipping_methods: Sequence[ShippingMethod] = DEFAULT_CATALOGUE,
        public_url: str = "",
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.sender = sender
        self.check_target = check_target
        self.shipping_methods = tuple(shipping_methods)
        # where this server is reached: label links in webhook payloads start with it
        self.public_url = public_url
        self.secret_grace_ms = secret_grace_ms
        self._status_changes: GroupCommit[tracking.StatusChange, Parcel] = GroupCommit(
            self._change_statuses,
            key=lambda c: c.parcel_id,
            shared_failure=is_unavailable,
        )
        self._creations: GroupCommit[tuple[int, int, NewParcel], Parcel] = GroupCommit(
            self._create_each, key=None, shared_failure=is_unavailable
        )

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

    async def authenticate_api(self, public_key: str, secret_key: str) -> ApiKey | None:
        """The API integration whose key pair this is (constant-time secret comparison).
        Read at every call, so a deleted integration's key stops working at once."""
        found = None
        if len(public_key) <= _PUBLIC_KEY_MAX and not has_nul(public_key):
            found = await self.store.api_key(public_key)
        candidate = found.secret_key if found else secrets.token_hex(16)
        ok = secrets.compare_digest(candidate.encode(), secret_key.encode())
        if found is None or not ok or found.system != systems.API:
            return None
        return found

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
            rotated = await tx.rotate_webhook_secret(current, now, self.secret_grace_ms)
            # a webhook setting changed (SPEC §2): signed with both secrets, as everything
            # sent in the grace period, so a receiver on either verifies it
            await self._emit_integration(tx, systems.INTEGRATION_UPDATED, rotated, now)
            return rotated

    async def _emit_integration(
        self, tx: Tx, action: str, integration: Integration, now: int
    ) -> None:
        event, recipients = ev.integration_event(action, integration, now)
        await tx.enqueue(event, recipients, now)

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
        # the log shows every send, tests too (marked by their action)
        async with self.store.transaction() as tx:
            await webhook_log.record_test(tx, event, integration.id, result, now, url)
        return TestResult(
            delivered=result.succeeded,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            response_excerpt=result.response_excerpt,
            error=result.error if result.error else _status_problem(result),
        )

    # -- parcels ----------------------------------------------------------------------

    async def create_parcel(self, account_id: int, acting: Integration, new: NewParcel) -> Parcel:
        """One parcel: `acting`'s, or that of the integration `new.integration_id` names."""
        created, _ = await self.create_parcels(account_id, acting.id, [new], partial=False)
        return created[0]

    async def create_parcels(
        self, account_id: int, acting_id: int, batch: Sequence[NewParcel], *, partial: bool
    ) -> tuple[list[Parcel], list[tuple[int, DomainError]]]:
        """Create a batch in one transaction: all or nothing, or (`partial`) every parcel
        that is valid, with the index and error of each one that is not. `acting_id` is
        the calling integration, whose the parcels are unless they name another."""
        if len(batch) == 1 and not partial:
            # one parcel: committed together with other calls' (group commit)
            return [await self._creations.submit((account_id, acting_id, batch[0]))], []
        created: list[Parcel] = []
        failed: list[tuple[int, DomainError]] = []
        async with self.store.transaction() as tx:
            for index, new in enumerate(batch):
                try:
                    created.append(await self._create_parcel(tx, account_id, acting_id, new))
                except (InvalidInput, NotFound, Conflict) as exc:
                    if not partial:
                        raise
                    failed.append((index, exc))
        return created, failed

    async def _create_each(
        self, items: Sequence[tuple[int, int, NewParcel]]
    ) -> list[Parcel | Exception]:
        """Several calls' parcels in one transaction. Any error, a caller's bad input
        included, undoes them all: group commit then creates each in its own transaction,
        so that only the bad one fails and nothing of it is kept."""
        async with self.store.transaction() as tx:
            return [await self._create_parcel(tx, *item) for item in items]

    async def _create_parcel(
        self, tx: Tx, account_id: int, acting_id: int, new: NewParcel
    ) -> Parcel:
        if new.integration_id is not None and new.integration_id != acting_id:
            try:
                owner = await tx.integration(account_id, new.integration_id)
            except NotFound:
                raise InvalidInput(
                    "integration_id names no integration of this account.",
                    field="integration_id",
                ) from None
        else:
            # routed as it is in this transaction (the caller's, authenticated just before)
            found = await tx.integration_by_id(acting_id)
            if found is None:
                raise NotFound("No such integration.", field="integration_id")
            owner = found
        if new.sender_address is not None:
            await _check_sender_address(tx, account_id, new.sender_address)
        if new.external_reference is not None and await tx.parcel_by_reference(
            account_id, new.external_reference
        ):
            raise InvalidInput(
                "external_reference must be unique: a parcel already has it.",
                field="external_reference",
            )
        now = self.clock.now_ms()
        details = {**new.details, "shipment_uuid": new_shipment_uuid()}
        if new.sender_address is not None:
            details["sender_address"] = new.sender_address
        first = ParcelStatus.BEING_ANNOUNCED if new.request_label else ParcelStatus.READY_TO_SEND
        parcel = await tx.create_parcel(account_id, owner.id, new, now, first, details)
        await self._emit_parcel(tx, parcel, now, owner)
        if new.request_label:
            parcel = await self._announce(tx, parcel)
        return parcel

    async def _announce(self, tx: Tx, parcel: Parcel) -> Parcel:
        """Being announced → Ready to send with a label, or → Announcement failed."""
        problem = self._method(parcel.shipment_id).fits(Decimal(parcel.weight), parcel.country)
        now = self.clock.now_ms()
        if problem is not None:
            parcel = await tx.set_parcel_status(
                parcel,
                ParcelStatus.ANNOUNCEMENT_FAILED,
                now,
                None,
                details={**parcel.details, "errors": {"non_field_errors": [problem]}},
            )
        else:
            details = {k: v for k, v in parcel.details.items() if k != "errors"}
            parcel = await tx.set_parcel_status(
                parcel, ParcelStatus.READY_TO_SEND, now, None, details=details, announced=True
            )
        await self._emit_parcel(tx, parcel, parcel.updated_ms)
        return parcel

    async def update_parcel(self, account_id: int, parcel_id: int, change: NewParcel) -> Parcel:
        """Change a parcel that is not announced yet; `request_label` announces it."""
        async with self.store.transaction() as tx:
            parcel = await tx.parcel(account_id, parcel_id, lock=True)
            if parcel.has_label:
                raise InvalidInput(
                    "An announced parcel may not be changed; cancel it and create a new one.",
                    field="id",
                )
            if parcel.status_id in _NOT_CANCELLABLE:
                raise InvalidInput(
                    f"A parcel in status {parcel.status_id} may not be changed.", field="id"
                )
            now = self.clock.now_ms()
            details = {**parcel.details, **change.details}
            if change.sender_address is not None:
                await _check_sender_address(tx, account_id, change.sender_address)
                details["sender_address"] = change.sender_address
            parcel = await tx.update_parcel(parcel, change, details, now)
            if change.request_label:
                parcel = await tx.set_parcel_status(parcel, ParcelStatus.BEING_ANNOUNCED, now, None)
                await self._emit_parcel(tx, parcel, parcel.updated_ms)
                parcel = await self._announce(tx, parcel)
        return parcel

    async def find_parcel_for_return(self, parcel_id: int) -> Parcel | None:
        """Any account's parcel, for the return portal (which checks the link's code)."""
        async with self.store.reading() as r:
            return await r.parcel_any_account(parcel_id)

    async def get_parcel(self, account_id: int, parcel_id: int) -> Parcel:
        async with self.store.reading() as r:
            return await r.parcel(account_id, parcel_id)

    async def find_parcels(
        self, account_id: int, f: ParcelFilter, at: Position | None, limit: int
    ) -> tuple[list[Parcel], bool]:
        """A page of the account's parcels in (updated, id) order, and whether more follow."""
        # the polling itself (updated_after, a cursor) reads one index range: on the loop
        async with self.store.browsing() if f.may_walk else self.store.reading() as r:
            return await find_parcels(r, account_id, f, at, limit)

    async def change_status(
        self, account_id: int, parcel_id: int, status_id: int, carrier_ms: int | None = None
    ) -> Parcel:
        """A tracking update; a real change commits its `parcel_status_changed` with it.
        Concurrent changes are committed together (group commit, `_change_statuses`)."""
        tracking.check_status(status_id, carrier_ms)
        change = tracking.StatusChange(account_id, parcel_id, status_id, carrier_ms)
        return await self._status_changes.submit(change)

    async def _change_statuses(
        self, changes: Sequence[tracking.StatusChange]
    ) -> list[Parcel | Exception]:
        """A batch of status changes (no two of one parcel) in one transaction, each
        answered as if alone: the parcel as changed, as it was (already that status, no
        event), or NotFound (none such in the change's account)."""
        async with self.store.transaction() as tx:
            # one statement that locks the rows and changes only those whose status differs,
            # so the same change made twice at once emits one event; the stored change time
            # (strictly after the previous one) stamps the event
            now = self.clock.now_ms()
            changed = await tx.change_parcel_statuses(changes, now)
            others = [c.parcel_id for c in changes if c.parcel_id not in changed]
            found = await tx.parcels_any_account(others) if others else {}
            need = {p.integration_id for p, owner in changed.values() if owner is None}
            owners = await tx.integrations_by_ids(need) if need else {}
            batch: list[tuple[Event, list[Integration]]] = []
            answers: list[Parcel | Exception] = []
            for c in changes:
                if c.parcel_id in changed:
                    parcel, owner = changed[c.parcel_id]
                    owner = owner or owners.get(parcel.integration_id)
                    payload = ev.parcel_status_changed(parcel, parcel.updated_ms, self.public_url)
                    batch.append(
                        (
                            ev.make_event(parcel.account_id, payload),
                            ev.recipients(systems.PARCEL_STATUS_CHANGED, owner),
                        )
                    )
                    answers.append(parcel)
                    continue
                unchanged = found.get(c.parcel_id)
                if unchanged is None or unchanged.account_id != c.account_id:
                    answers.append(NotFound("No such parcel.", field="id"))
                else:
                    answers.append(unchanged)
            await tx.enqueue_many(batch, now)
        return answers

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
            # who receives a change, by the parcel's integration (the same for most items)
            receiving = {
                iid: ev.recipients(systems.PARCEL_STATUS_CHANGED, owner)
                for iid, owner in owners.items()
            }
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
                updated = parcel.updated_ms + 1
                parcel = parcel.with_status(
                    u.status_id, now if now > updated else updated, u.carrier_ms
                )
                parcels[parcel.id] = changed[parcel.id] = parcel
                # stamped with the stored change time, strictly increasing per parcel
                payload = ev.parcel_status_changed(parcel, parcel.updated_ms, self.public_url)
                batch.append(
                    (ev.make_event(account_id, payload), receiving.get(parcel.integration_id, []))
                )
                results.append(tracking.TrackingResult(u.parcel_id, tracking.CHANGED, u.status_id))
            await tx.set_parcel_statuses(list(changed.values()))
            await tx.enqueue_many(batch, now)
        return results

    async def cancel_parcel(self, account_id: int, parcel_id: int) -> Cancellation:
        """Cancel as Sendcloud does: at once, queued while the carrier has the parcel, or
        (announcement failed) deleted; refused once delivered or already cancelled."""
        async with self.store.transaction() as tx:
            parcel = await tx.parcel(account_id, parcel_id, lock=True)
            now = self.clock.now_ms()
            if parcel.status_id in _NOT_CANCELLABLE:
                words = STATUS_MESSAGES[parcel.status_id]
                raise InvalidInput(
                    f"A parcel in status {parcel.status_id} ({words}) cannot be cancelled.",
                    field="status",
                )
            if parcel.status_id == ParcelStatus.ANNOUNCEMENT_FAILED:
                parcel = await self._set_status(tx, parcel, ParcelStatus.CANCELLED, now, None)
                return Cancellation("deleted", "Parcel has been deleted", 410, parcel)
            before = parcel.status_id
            parcel = await self._set_status(
                tx, parcel, ParcelStatus.CANCELLATION_REQUESTED, now, None
            )
            if before in IN_CARRIER_HANDS:
                # the carrier has it: the request stands until the carrier confirms
                return Cancellation("queued", "Parcel cancellation has been queued", 202, parcel)
            parcel = await self._set_status(tx, parcel, ParcelStatus.CANCELLED, now, None)
            return Cancellation("cancelled", "Parcel has been cancelled", 200, parcel)

    async def request_refund(self, account_id: int, parcel_id: int, reason: str) -> Refund:
        if not reason.strip():
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
            event = ev.make_event(
                account_id, ev.refund_requested(refund, parcel, now, self.public_url)
            )
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
        payload = ev.parcel_status_changed(parcel, now, self.public_url)
        event = ev.make_event(parcel.account_id, payload)
        await tx.enqueue(event, ev.recipients(systems.PARCEL_STATUS_CHANGED, owner), now)

    def _method(self, shipment_id: int) -> ShippingMethod:
        for method in self.shipping_methods:
            if method.id == shipment_id:
                return method
        raise InvalidInput(f"Shipping method {shipment_id} is not offered.", field="shipment")

    async def label_pdf(
        self, account_id: int, parcel_id: int, printer: Format, start_from: int
    ) -> bytes:
        """The parcel's label as PDF (404 until the parcel is announced)."""
        async with self.store.reading() as r:
            parcel = await r.parcel(account_id, parcel_id)
            if not parcel.has_label:
                raise NotFound("This parcel has no label yet: request one first.", field="id")
            sender = await self._label_sender(r, parcel)
        name = carrier_name(parcel.carrier_code)
        return await asyncio.to_thread(render_label, parcel, sender, name, printer, start_from)

    async def _label_sender(self, tx: Tx, parcel: Parcel) -> Sender:
        d = parcel.details
        if parcel.is_return and d.get("from_address_1"):
            street = f"{d.get('from_address_1', '')} {d.get('from_house_number', '')}".strip()
            return Sender(
                d.get("from_company_name") or d.get("from_name", ""),
                street,
                d.get("from_postal_code", ""),
                d.get("from_city", ""),
                d.get("from_country", parcel.country),
            )
        addresses = await sender_store.sender_addresses(tx, parcel.account_id)
        chosen = next((a for a in addresses if a.id == d.get("sender_address")), None)
        chosen = chosen or next((a for a in addresses if a.is_default), None)
        if chosen is None:
            email = await sender_store.account_email(tx, parcel.account_id)
            return Sender(email, "", "", "", parcel.country)
        f = chosen.address
        return Sender(
            f.company_name or f.contact_name,
            f"{f.street} {f.house_number}".strip(),
            f.postal_code,
            f.city,
            f.country,
        )

    # -- the account: user and sender addresses ----------------------------------------

    async def user(self, account_id: int) -> dict[str, Any]:
        """The account in Sendcloud's `user` shape (company details from its sender address)."""
        async with self.store.reading() as r:
            email = await sender_store.account_email(r, account_id)
            addresses = await sender_store.sender_addresses(r, account_id)
        default = next((a.address for a in addresses if a.is_default), SenderAddressFields())
        return {
            "username": email,
            "company_name": default.company_name,
            "telephone": default.telephone,
            "address": f"{default.street} {default.house_number}".strip(),
            "city": default.city,
            "postal_code": default.postal_code,
            "email": email,
            "company_logo": None,
            "registered": True,
            "terms_accepted": True,
            "invoice_settings": {},
        }

    async def sender_addresses(self, account_id: int) -> list[SenderAddress]:
        async with self.store.reading() as r:
            return await sender_store.sender_addresses(r, account_id)

    async def sender_address(self, account_id: int, address_id: int) -> SenderAddress:
        async with self.store.reading() as r:
            return await sender_store.sender_address(r, account_id, address_id)

    async def add_sender_address(
        self, account_id: int, fields: SenderAddressFields
    ) -> SenderAddress:
        async with self.store.transaction() as tx:
            return await sender_store.add_sender_address(
                tx, account_id, fields, self.clock.now_ms()
            )

    async def change_sender_address(
        self, account_id: int, address_id: int, fields: SenderAddressFields, *, default: bool
    ) -> SenderAddress:
        async with self.store.transaction() as tx:
            current = await sender_store.sender_address(tx, account_id, address_id)
            changed = await sender_store.change_sender_address(tx, current, fields)
            if default:
                await sender_store.make_default(tx, changed)
            return await sender_store.sender_address(tx, account_id, address_id)

    async def remove_sender_address(self, account_id: int, address_id: int) -> None:
        async with self.store.transaction() as tx:
            current = await sender_store.sender_address(tx, account_id, address_id)
            await sender_store.remove_sender_address(tx, current)

    # -- the webhook log --------------------------------------------------------------

    async def list_events(self, account_id: int, after_id: str, limit: int) -> list[Event]:
        async with self.store.browsing() as r:
            return await r.events(account_id, after_id, limit)

    async def list_deliveries(self, account_id: int, **filters: Any) -> list[Delivery]:
        status = filters.get("status")
        if status is not None and status not in dl.STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(dl.STATUSES)}.", field="status")
        async with self.store.browsing() as r:
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
        async with self.store.reading() as r:
            await r.integration(account_id, integration_id)
            up_to = await r.last_delivery_id()
        total, after = 0, 0
        while True:
            # in pages, the loop free between them, as redeliver_many (200,000 waiting
            # made due in one transaction held SQLite's loop thread 1.5 s)
            async with self.store.transaction() as tx:
                count, last = await webhook_log.retry_now_page(
                    tx,
                    account_id,
                    integration_id,
                    now,
                    after_id=after,
                    up_to_id=up_to,
                    limit=REDELIVER_PAGE,
                )
            if last is None:
                return total
            total, after = total + count, last
            await asyncio.sleep(0)

    async def search_log(
        self,
        account_id: int,
        found_by: LogFilter,
        *,
        order_number: str = "",
        tracking_number: str = "",
        limit: int = 50,
    ) -> list[LogRow]:
        """The webhook log, newest first; an order or tracking number finds its parcels."""
        async with self.store.browsing() as r:
            if order_number or tracking_number:
                ids = await webhook_log.parcels_matching(
                    r, account_id, order_number=order_number, tracking_number=tracking_number
                )
                found_by = replace(found_by, parcel_ids=ids)
            return await webhook_log.search(r, account_id, found_by, limit)

    async def integration_health(self, account_id: int, integration_id: int) -> Health:
        async with self.store.browsing() as r:
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
        async with self.store.reading() as r:
            # what exists now: deliveries made (or settled again) meanwhile stay as they are
            up_to = await r.last_delivery_id()
        total, after = 0, 0
        while True:
            # pages of their own transactions, the loop free between them: on SQLite a
            # transaction runs on the event loop's thread (200,000 at once held it 1.8 s)
            async with self.store.transaction() as tx:
                count, last = await tx.redeliver_page(
                    account_id,
                    now,
                    status=status,
                    integration_id=integration_id,
                    action=action,
                    after_id=after,
                    up_to_id=up_to,
                    limit=REDELIVER_PAGE,
                )
            if last is None:
                return total
            total, after = total + count, last
            await asyncio.sleep(0)


# deliveries a bulk redelivery queues again per transaction
REDELIVER_PAGE = 1_000

_NOT_CANCELLABLE = frozenset(
    {
        ParcelStatus.DELIVERED,
        ParcelStatus.CANCELLATION_REQUESTED,
        ParcelStatus.CANCELLED,
        ParcelStatus.CANCELLED_UPSTREAM,
        ParcelStatus.SHIPMENT_COLLECTED_BY_CUSTOMER,
    }
)
# the carrier has these parcels: a cancellation is asked for and waits for its answer
IN_CARRIER_HANDS = frozenset(
    {
        ParcelStatus.EN_ROUTE_TO_SORTING_CENTER,
        ParcelStatus.DELIVERY_DELAYED,
        ParcelStatus.SORTED,
        ParcelStatus.NOT_SORTED,
        ParcelStatus.BEING_SORTED,
        ParcelStatus.DELIVERY_ATTEMPT_FAILED,
        ParcelStatus.AWAITING_CUSTOMER_PICKUP,
        ParcelStatus.SHIPMENT_PICKED_UP_BY_DRIVER,
        ParcelStatus.PARCEL_EN_ROUTE,
        ParcelStatus.DRIVER_EN_ROUTE,
        ParcelStatus.AT_CUSTOMS,
        ParcelStatus.AT_SORTING_CENTRE,
        ParcelStatus.DELIVERY_METHOD_CHANGED,
        ParcelStatus.DELIVERY_DATE_CHANGED,
        ParcelStatus.DELIVERY_ADDRESS_CHANGED,
        ParcelStatus.EXCEPTION,
    }
)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def _status_problem(result: AttemptResult) -> str | None:
    if result.succeeded or result.status_code is None:
        return None
    if 300 <= result.status_code < 400:
        return f"The endpoint answered {result.status_code} (redirects are not followed)."
    return f"The endpoint answered {result.status_code}; only 2xx counts as delivered."


async def _check_sender_address(tx: Tx, account_id: int, address_id: int) -> None:
    """Refuse (400) a sender address id that is not one of the account's."""
    try:
        await sender_store.sender_address(tx, account_id, address_id)
    except NotFound:
        raise InvalidInput(
            "sender_address names no sender address of this account.",
            field="sender_address",
        ) from None
