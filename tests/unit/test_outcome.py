"""Every verdict of `decide_outcome`, and how a batch's health changes add up."""

from __future__ import annotations

import random

import pytest

from parcelhook.domain import deliveries as dl
from parcelhook.domain.outcome import (
    GONE,
    WEBHOOK_OFF,
    Health,
    Outcome,
    OutcomeDecision,
    decide_outcome,
    health_changes,
)
from parcelhook.domain.retry import AttemptResult, RetryPolicy, Verdict

AT = 1_800_000_000_000
POLICY = RetryPolicy(delays=(300.0, 600.0), jitter=0.0)


def decide(
    result: AttemptResult | None, attempt_count: int = 0, schedule_base: int = 0
) -> OutcomeDecision:
    return decide_outcome(
        result,
        attempt_count=attempt_count,
        schedule_base=schedule_base,
        policy=POLICY,
        at_ms=AT,
        rng=random.Random(1),
    )


def test_an_accepted_attempt_is_delivered_and_clears_failing() -> None:
    d = decide(AttemptResult(204, 5))
    assert d == OutcomeDecision(Verdict.DELIVERED, dl.DELIVERED, AT, None, Health.OK, True)


def test_a_failed_attempt_is_retried_on_schedule_from_its_start() -> None:
    d = decide(AttemptResult(500, 5, "boom", error=None))
    assert (d.verdict, d.status, d.next_attempt_ms) == (Verdict.RETRY, dl.PENDING, AT + 300_000)
    assert (d.note, d.health, d.attempted) == (None, Health.FAILING, True)
    second = decide(AttemptResult(None, 5, error="connection refused"), attempt_count=1)
    assert second.next_attempt_ms == AT + 600_000
    assert second.note == "connection refused"


def test_retry_after_moves_the_next_attempt_within_bounds() -> None:
    d = decide(AttemptResult(429, 5, retry_after=450))
    assert (d.verdict, d.next_attempt_ms) == (Verdict.RETRY, AT + 450_000)


def test_jitter_comes_from_the_given_rng() -> None:
    policy = RetryPolicy(delays=(300.0,), jitter=0.1)
    times = {
        decide_outcome(
            AttemptResult(500, 1),
            attempt_count=0,
            schedule_base=0,
            policy=policy,
            at_ms=AT,
            rng=random.Random(seed),
        ).next_attempt_ms
        for seed in (1, 1, 2)
    }
    assert len(times) == 2
    assert all(AT + 270_000 <= t <= AT + 330_000 for t in times)


def test_the_last_attempt_fails_the_delivery() -> None:
    d = decide(AttemptResult(None, 10_000, error="timed out after 10 s"), attempt_count=2)
    assert d == OutcomeDecision(
        Verdict.FAILED, dl.FAILED, AT, "timed out after 10 s", Health.FAILING, True
    )


def test_a_redelivery_restarts_the_schedule() -> None:
    d = decide(AttemptResult(500, 1), attempt_count=5, schedule_base=5)
    assert (d.verdict, d.next_attempt_ms) == (Verdict.RETRY, AT + 300_000)


def test_410_gone_fails_the_delivery_and_turns_the_webhook_off() -> None:
    d = decide(AttemptResult(410, 3))
    assert d == OutcomeDecision(Verdict.GONE, dl.FAILED, AT, GONE, Health.GONE, True)


def test_a_webhook_switched_off_fails_without_an_attempt() -> None:
    d = decide(None, attempt_count=1)
    assert d == OutcomeDecision(
        Verdict.FAILED, dl.FAILED, AT, WEBHOOK_OFF, Health.UNCHANGED, attempted=False
    )


def _outcome(integration_id: int, result: AttemptResult | None) -> Outcome:
    return Outcome(1, integration_id, "lease", AT, result, decide(result))


@pytest.mark.parametrize(
    ("results", "ok", "failing", "gone"),
    [
        ([AttemptResult(200, 1)], {7}, set(), set()),
        ([AttemptResult(500, 1)], set(), {7}, set()),
        ([AttemptResult(410, 1)], set(), {7}, {7}),
        ([None], set(), set(), set()),
        # a success in the same batch is the latest news: the endpoint is not failing
        ([AttemptResult(500, 1), AttemptResult(200, 1)], {7}, set(), set()),
        ([AttemptResult(410, 1), AttemptResult(200, 1)], {7}, set(), {7}),
    ],
)
def test_health_changes_of_a_batch(
    results: list[AttemptResult | None], ok: set[int], failing: set[int], gone: set[int]
) -> None:
    changes = health_changes([_outcome(7, r) for r in results])
    assert (changes.ok, changes.failing, changes.gone) == (ok, failing, gone)
    assert bool(changes) == bool(ok or failing or gone)
