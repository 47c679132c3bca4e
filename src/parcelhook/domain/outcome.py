"""The one place that decides what one delivery attempt leads to, and what to record.

`decide_outcome` is pure: given the attempt's result (or None when the integration's
webhook is off), the delivery's history, the retry policy, the attempt's time and a
random source, it returns the delivery's new status, its next attempt time, the note to
show, and how the endpoint's health changes. The dispatcher only carries the decision
and the store only writes it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass

from parcelhook.domain import deliveries as dl
from parcelhook.domain.retry import AttemptResult, RetryPolicy, Verdict

WEBHOOK_OFF = "webhook feedback is off for this integration; redeliver once it is on again"
GONE = "the endpoint answered 410 Gone: webhook feedback was turned off for this integration"

_STATUS_OF = {
    Verdict.DELIVERED: dl.DELIVERED,
    Verdict.RETRY: dl.PENDING,
    Verdict.FAILED: dl.FAILED,
    Verdict.GONE: dl.FAILED,
}


class Health(enum.Enum):
    """What an attempt says about its endpoint."""

    UNCHANGED = "unchanged"  # nothing was sent (the webhook is off)
    OK = "ok"  # it accepted: no longer failing
    FAILING = "failing"  # it did not accept: failing from now, unless it already is
    GONE = "gone"  # it answered 410: failing, and the integration's webhook is turned off


@dataclass(frozen=True, slots=True)
class OutcomeDecision:
    """Everything to record about one attempt (or one delivery that could not be sent)."""

    verdict: Verdict
    status: str  # the delivery's new status (deliveries.PENDING / DELIVERED / FAILED)
    # the delivery's next_attempt_ms: the retry's time, else the attempt's (settled)
    next_attempt_ms: int
    # last_error to show: the note when there is one, else the attempt's error
    note: str | None
    health: Health
    # whether an attempt was made (counts towards attempt_count, and gets an attempt row)
    attempted: bool


def unusual_status(result: AttemptResult) -> str | None:
    """Why an answer that looks like no failure is one (a status code alone says it for
    4xx and 5xx)."""
    code = result.status_code
    if code is None or result.error is not None:
        return None
    if 300 <= code < 400:
        return f"the endpoint answered {code}: redirects are not followed; only 2xx counts"
    if code < 200:
        return f"the endpoint answered {code} and no final answer; only 2xx counts"
    return None


def decide_outcome(
    result: AttemptResult | None,
    *,
    attempt_count: int,
    schedule_base: int,
    policy: RetryPolicy,
    at_ms: int,
    rng: random.Random | None = None,
) -> OutcomeDecision:
    """What follows `result`, the attempt made at `at_ms` of a delivery with `attempt_count`
    attempts before it, `schedule_base` of them before its last redelivery.

    `result` None: nothing was sent because the integration's webhook is off.
    """
    if result is None:
        return OutcomeDecision(
            Verdict.FAILED, dl.FAILED, at_ms, WEBHOOK_OFF, Health.UNCHANGED, attempted=False
        )
    decision = policy.decide(result, attempt_count + 1 - schedule_base, rng)
    verdict = decision.verdict
    next_ms = at_ms
    if decision.retry_in is not None:
        # from the attempt's start: the schedule does not drift with slow endpoints
        next_ms = at_ms + round(decision.retry_in * 1000)
    if verdict is Verdict.DELIVERED:
        health = Health.OK
    elif verdict is Verdict.GONE:
        health = Health.GONE
    else:
        health = Health.FAILING
    note = GONE if verdict is Verdict.GONE else result.error or unusual_status(result)
    return OutcomeDecision(verdict, _STATUS_OF[verdict], next_ms, note, health, attempted=True)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery, as the dispatcher hands it to the store."""

    delivery_id: int
    integration_id: int
    # the claim's lease token: only its holder may settle the delivery
    lease: str
    at_ms: int
    result: AttemptResult | None
    decision: OutcomeDecision
    # where the attempt went (the integration's webhook URL at the time), for its log
    url: str | None = None

    @property
    def verdict(self) -> Verdict:
        return self.decision.verdict


@dataclass(frozen=True, slots=True)
class HealthChanges:
    """A batch's endpoint health changes, one set of integration ids per change."""

    ok: frozenset[int]
    failing: frozenset[int]
    gone: frozenset[int]

    def __bool__(self) -> bool:
        return bool(self.ok or self.failing or self.gone)


def health_changes(outcomes: Iterable[Outcome]) -> HealthChanges:
    """The health changes of a batch; an endpoint that accepted anything in it is not
    failing (a success is the latest news of an endpoint that recovered mid-batch)."""
    ok: set[int] = set()
    failing: set[int] = set()
    gone: set[int] = set()
    for o in outcomes:
        health = o.decision.health
        if health is Health.OK:
            ok.add(o.integration_id)
        elif health is not Health.UNCHANGED:
            failing.add(o.integration_id)
            if health is Health.GONE:
                gone.add(o.integration_id)
    return HealthChanges(frozenset(ok), frozenset(failing - ok), frozenset(gone))
