"""The dispatcher's cheap histograms expose what prometheus_client's would."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from parcelhook.domain import events
from parcelhook.domain.events import event_time_ms, new_event_id
from parcelhook.metrics import LocalHistogram


def test_a_local_histogram_matches_prometheus_clients() -> None:
    bounds = (0.005, 0.01, 0.1, 1.0)
    values = [0.0, 0.005, 0.0051, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 30.0]
    registry = CollectorRegistry()
    reference = Histogram("h", "h", buckets=bounds, registry=registry)
    local = LocalHistogram(bounds)
    for v in values:
        reference.observe(v)
        local.observe(v)
    ours = [(x.name, sorted(x.labels.items()), x.value) for x in local.family("h", "h").samples]
    theirs = [
        (x.name, sorted(x.labels.items()), x.value)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for x in family.samples
        if x.name in ("h_bucket", "h_count", "h_sum")
    ]
    assert sorted(ours) == sorted(theirs)


def test_an_event_ids_time_reads_back() -> None:
    for ms in (0, 1, 1_780_000_000_123, 2**48 - 1):
        assert event_time_ms(new_event_id(ms)) == ms


def test_an_event_id_is_the_ulid_of_its_time_and_random_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crockford = "0123456789abcdefghjkmnpqrstvwxyz"
    cases = ((0, b"\0" * 10), (2**48 - 1, b"\xff" * 10), (1_780_000_000_123, b"ab\x00\x7f" * 3))
    for ms, tail in cases:
        monkeypatch.setattr(events, "_random_tail", lambda tail=tail: tail[:10])
        n = (ms << 80) | int.from_bytes(tail[:10], "big")
        # the ULID spelled out: 26 Crockford digits of the 128-bit number, most significant first
        expected = "".join(crockford[(n >> (5 * i)) & 31] for i in range(25, -1, -1))
        assert new_event_id(ms) == "evt_" + expected


def test_event_ids_in_one_millisecond_differ_in_this_process_and_a_forked_one() -> None:
    mine = {new_event_id(0) for _ in range(1000)}
    assert len(mine) == 1000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out at once
        os.write(write, "".join(new_event_id(0) for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        text = f.read().decode()
    theirs = {text[k : k + 30] for k in range(0, len(text), 30)}
    ours = {new_event_id(0) for _ in range(100)}
    assert status == 0 and len(theirs) == 100
    assert not theirs & ours
