"""An answer's headers as an attempt keeps them: capped by the transport, made storable and
cookie-free at the store boundary, one JSON text on the way in and pairs on the way out; the
outcome rows' other texts made storable too."""

from __future__ import annotations

import json

from parcelhook.delivery import wire
from parcelhook.domain.deliveries import storable_headers
from parcelhook.domain.outcome import Outcome, decide_outcome
from parcelhook.domain.retry import AttemptResult, RetryPolicy
from parcelhook.store import answer_headers
from parcelhook.store.queue import outcome_rows


def test_a_header_is_cut_to_its_limits_and_marked_when_cut() -> None:
    assert wire.kept_header("X-Ok", "fine") == ("X-Ok", "fine")
    name, value = wire.kept_header("N" * 100, "v" * 256)
    assert (name, value) == ("N" * 64, "v" * 256)  # exactly at the limit: not cut
    _, value = wire.kept_header("X", "v" * 257)
    assert value == "v" * 255 + "…" and len(value) == wire.HEADER_VALUE_KEPT


def test_what_no_engine_stores_is_replaced_and_cookies_are_not_kept() -> None:
    kept = storable_headers(
        [
            ("X-Nul", "a\x00b"),
            ("X-Controls", "\x01\x1b[31mred\x7f"),
            ("X-Surrogate", "half \udcff"),
            ("X-Tab", "keeps\ttabs"),
            ("Set-Cookie", "session=secret; HttpOnly"),
            ("set-cookie2", "old=secret"),
        ]
    )
    assert kept == (
        ("X-Nul", "a\ufffdb"),
        ("X-Controls", "\ufffd\ufffd[31mred\ufffd"),
        ("X-Surrogate", "half ?"),
        ("X-Tab", "keeps\ttabs"),
        ("Set-Cookie", "…"),
        ("set-cookie2", "…"),
    )
    assert "secret" not in repr(kept)


def test_the_stored_text_reads_back_in_order_cleaned_on_the_way_in() -> None:
    pairs = [("X-B", "2"), ("X-A", "1"), ("X-A", ""), ("X-É", "ü\x00"), ("X-Fold", "a\r\n b")]
    text = answer_headers.to_text(pairs)
    assert text is not None and "\x00" not in text and "\r" not in text
    assert answer_headers.from_text(text) == (
        ("X-B", "2"),
        ("X-A", "1"),
        ("X-A", ""),
        ("X-É", "ü\ufffd"),
        ("X-Fold", "a   b"),
    )
    clean = [("Content-Type", "application/json"), ("Date", "Mon")]
    assert answer_headers.from_text(answer_headers.to_text(clean)) == tuple(clean)
    cookie = answer_headers.to_text([("Set-Cookie", "sid=secret"), ("X", "set-cookie here")])
    assert cookie is not None and "secret" not in cookie
    assert answer_headers.from_text(cookie) == (("Set-Cookie", "…"), ("X", "set-cookie here"))


def test_the_columns_first_form_json_pairs_still_reads() -> None:
    assert answer_headers.from_text(json.dumps([["X-A", "1"], ["X-B", "ü"]])) == (
        ("X-A", "1"),
        ("X-B", "ü"),
    )


def test_no_headers_store_as_null_and_old_attempts_read_as_none() -> None:
    assert answer_headers.to_text([]) is None
    assert answer_headers.from_text(None) == ()
    assert answer_headers.from_text("") == ()


def test_one_bad_byte_anywhere_is_caught() -> None:
    clean = (("Content-Type", "application/json"), ("X-Set", "tab\tok"), ("Date", "Mon"))
    assert answer_headers.from_text(answer_headers.to_text(clean)) == clean
    for bad in ("\x00", "\x1f", "\x7f", "\udc80", "\n", "\r"):
        last = answer_headers.from_text(answer_headers.to_text((*clean, ("X-Last", f"v{bad}"))))
        assert last[-1][1] != f"v{bad}" and len(last) == 4
        first = answer_headers.from_text(answer_headers.to_text(((f"X{bad}", "v"), *clean)))
        assert first[0][0] != f"X{bad}" and len(first) == 4
    elided = answer_headers.from_text(answer_headers.to_text((*clean, ("SET-COOKIE", "a=b"))))
    assert elided[-1] == ("SET-COOKIE", "…")


def test_outcome_rows_replace_only_what_no_engine_stores() -> None:
    def outcome(result: AttemptResult, url: str) -> Outcome:
        decision = decide_outcome(
            result, attempt_count=0, schedule_base=0, policy=RetryPolicy(), at_ms=5
        )
        return Outcome(1, 2, "lease", 5, result, decision, url)

    clean = AttemptResult(200, 3, "thanks", response_headers=(("X-Ok", "1"),))
    dirty = AttemptResult(500, 3, "a\x00b\udcff", error="bad byte \x1b", response_headers=())
    attempts, states = outcome_rows(
        [outcome(clean, "https://a.example/"), outcome(dirty, "https://b.example/")]
    )
    assert [a[4:] for a in attempts] == [
        (None, "thanks", "X-Ok\n1", "https://a.example/"),
        ("bad byte \ufffd", "a\ufffdb?", None, "https://b.example/"),
    ]
    # the delivery's last error is the attempt's, made storable the same way
    assert [s[5:7] for s in states] == [(200, None), (500, "bad byte \ufffd")]
