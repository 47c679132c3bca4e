"""How records look on the panel's pages: times, delivery states, the headers a delivery sent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from markupsafe import Markup

from parcelhook.delivery.headers import USER_AGENT
from parcelhook.domain import deliveries as dl
from parcelhook.domain import keys, signing, systems
from parcelhook.domain.deliveries import Attempt, Delivery
from parcelhook.domain.integrations import Integration
from parcelhook.domain.outcome import unusual_status
from parcelhook.domain.retry import AttemptResult
from parcelhook.panel.i18n import N_, Gettext
from parcelhook.service import TestResult
from parcelhook.store.webhook_log import LogRow

ELIDED: Final = "…"
_SIGNATURE_HEADERS: Final = frozenset({"sendcloud-signature", "webhook-signature"})


def when(ms: int | None) -> Markup:
    """`<time datetime="…Z">2026-11-28 06:42:38 UTC</time>`, or an em dash for never.

    The page's script rewrites the text in the reader's time zone and language; without
    it the time stays UTC, labelled as such.
    """
    if ms is None:
        return Markup("—")
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        at.strftime("%Y-%m-%dT%H:%M:%SZ"), at.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def breakable(name: str) -> Markup:
    """`name` (an event type, e.g. parcel_status_changed) allowed to wrap after each `_`,
    so that a narrow table column need not scroll."""
    return Markup("_<wbr>").join(name.split("_"))


def system_name(system: str) -> str:
    return systems.SYSTEMS.get(system, system)


def heading_system(integration: Integration, _: Gettext) -> str:
    """The system beside an integration's name, unless the name already says it."""
    name = system_name(integration.system)
    return "" if name == integration.shop_name else _(name)


# what each event means to a merchant, in the order Configure lists them
EVENT_WORDS: Final = {
    systems.PARCEL_STATUS_CHANGED: N_("A parcel's status changed"),
    systems.INTEGRATION_CONNECTED: N_("An integration was connected"),
    systems.INTEGRATION_UPDATED: N_("An integration's settings changed"),
    systems.INTEGRATION_DELETED: N_("An integration was deleted"),
    systems.REFUND_REQUESTED: N_("A refund was requested"),
}
# words made elsewhere that pages show, marked here for the catalogue: a delivery's states,
# the API integration's system name, and the signature key's rules (parcelhook.domain.keys)
STATE_WORDS: Final = (N_("delivered"), N_("failed"), N_("retrying"), N_("pending"))
SYSTEM_WORDS: Final = (N_("API integration"),)
RULE_WORDS: Final = {
    "length": N_("at least 16 characters"),
    "digit": N_("at least one digit"),
    "uppercase": N_("at least one upper-case letter"),
    "lowercase": N_("at least one lower-case letter"),
    "special": N_("at least one special character (such as ! # % * or -)"),
}
assert RULE_WORDS == keys.RULES, "the checklist's words must be the domain's rules"


def weak_key_message(rules: list[str], _: Gettext) -> str:
    """The weak-key error in the reader's language, naming every failed rule."""
    words = "; ".join(_(RULE_WORDS[r]) for r in rules if r in RULE_WORDS)
    return _("The webhook signature key must have %(rules)s.") % {"rules": words}


def events_for(system: str) -> list[tuple[str, str]]:
    """The events an integration of `system` receives, by the dispatcher's own rule."""
    return [
        (action, words)
        for action, words in EVENT_WORDS.items()
        if systems.can_receive(system, action)
    ]


def state(d: Delivery | LogRow) -> str:
    """delivered, failed, retrying (pending after a failed attempt) or pending."""
    if d.status == dl.PENDING and d.attempt_count > 0:
        return "retrying"
    return d.status


def pretty_payload(d: Delivery) -> str:
    if not d.body:
        return "(the payload has been pruned)"
    try:
        return json.dumps(json.loads(d.body), indent=2, ensure_ascii=False)
    except ValueError:
        return d.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


def attempt_words(a: Attempt) -> str | None:
    """What went wrong with an attempt beside its status: the sender's error, or why an
    answer outside 2xx that is no error (a redirect, 101) did not count, as the log says."""
    if a.error or a.status_code is None:
        return a.error
    return unusual_status(AttemptResult(a.status_code, a.duration_ms))


def sent_headers(d: Delivery, at_ms: int | None = None) -> list[Header]:
    """The headers the attempt at `at_ms` sent (default: the last), signatures elided.

    Signed with throwaway keys: the values are replaced anyway, and this way no real
    key is ever touched by a page.
    """
    if at_ms is None:
        at_ms = d.attempts[-1].at_ms if d.attempts else d.created_ms
    headers = signing.webhook_headers(
        body=d.body or b"",
        msg_id=d.event_id,
        timestamp=at_ms // 1000,
        signature_key="-",
        webhook_secrets=(),
        user_agent=USER_AGENT,
    )
    return [
        Header(name, ELIDED if name.lower() in _SIGNATURE_HEADERS else value)
        for name, value in headers.items()
    ]


# the sender's plain words for the commonest network failures (parcelhook.delivery.sender),
# so that the test's answer reads in the merchant's language
NETWORK_WORDS: Final = (
    N_("connection refused"),
    N_("connection reset by peer"),
    N_("connection aborted"),
    N_("host unreachable"),
    N_("network unreachable"),
    N_("connection closed by endpoint"),
    N_("connection closed by endpoint without a response"),
    N_("invalid HTTP response from endpoint"),
)
_TIMED_OUT: Final = re.compile(r"timed out after (\d+(?:\.\d+)?) s")
_UNRESOLVED: Final = re.compile(r"could not resolve host (\S+)")


def network_words(error: str, _: Gettext) -> str:
    """A sender's error in the reader's language when it is a common one, else as it is."""
    if error in NETWORK_WORDS:
        return _(error)
    if found := _TIMED_OUT.fullmatch(error):
        return _("timed out after %(seconds)s s") % {"seconds": found.group(1)}
    if found := _UNRESOLVED.fullmatch(error):
        return _("could not resolve host %(host)s") % {"host": found.group(1)}
    return error


def test_summary(result: TestResult, _: Gettext) -> str:
    """The test's result in one sentence of plain words (the page and the script both show it)."""
    numbers = {"status": result.status_code, "ms": result.duration_ms}
    if result.delivered:
        return _("Delivered: the endpoint answered HTTP %(status)s in %(ms)s ms.") % numbers
    if result.status_code is None:
        # the network error's own words come from the sender, in English
        problem = network_words(result.error, _) if result.error else _("no answer")
        return _("Not delivered: %(problem)s (after %(ms)s ms).") % {**numbers, "problem": problem}
    if 300 <= result.status_code < 400:
        why = _("Redirects are not followed: use the final URL.")
    else:
        why = _("Only an answer in the 2xx range counts as delivered.")
    # an error beside a status is a failure while reading the answer, worth naming
    if result.error and not result.error.startswith("The endpoint answered"):
        why = f"{result.error[:1].upper()}{result.error[1:]}."
    said = _("Not delivered: the endpoint answered HTTP %(status)s in %(ms)s ms.") % numbers
    return f"{said} {why}"
