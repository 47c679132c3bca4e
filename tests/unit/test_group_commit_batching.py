"""Group commit's batching: who shares a batch, and who gets which answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from parcelhook.group_commit import GroupCommit


class Unavailable(Exception):
    pass


class Recorder:
    """Applies batches of (key, value) items as a transaction would, recording each batch."""

    def __init__(self, *, poison: str | None = None, down: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.poison = poison
        self.down = down

    async def apply(self, items: Sequence[tuple[str, int]]) -> list[int | Exception]:
        await asyncio.sleep(0)  # a transaction awaits
        if self.down:
            raise Unavailable("the database is away")
        if any(key == self.poison for key, _ in items):
            raise ValueError("a bug for this item")
        self.batches.append(list(items))
        return [value * 10 if key != "missing" else LookupError(key) for key, value in items]


def _commit(r: Recorder) -> GroupCommit[tuple[str, int], int]:
    return GroupCommit(
        r.apply, key=lambda i: i[0], shared_failure=lambda e: isinstance(e, Unavailable)
    )


async def test_concurrent_items_share_one_batch_and_get_their_own_answers() -> None:
    r = Recorder()
    g = _commit(r)
    answers = await asyncio.gather(*(g.submit((f"p{i}", i)) for i in range(20)))
    assert answers == [i * 10 for i in range(20)]
    assert len(r.batches) == 1


async def test_a_lone_item_is_applied_at_once_and_alone() -> None:
    r = Recorder()
    g = _commit(r)
    assert await g.submit(("p", 1)) == 10
    assert await g.submit(("p", 2)) == 20
    assert r.batches == [[("p", 1)], [("p", 2)]]


async def test_the_same_key_twice_goes_into_the_next_batch_in_order() -> None:
    r = Recorder()
    g = _commit(r)
    answers = await asyncio.gather(
        g.submit(("a", 1)), g.submit(("a", 2)), g.submit(("b", 3)), g.submit(("a", 4))
    )
    assert answers == [10, 20, 30, 40]
    assert r.batches == [[("a", 1), ("b", 3)], [("a", 2)], [("a", 4)]]


async def test_an_items_own_error_goes_to_that_caller_only() -> None:
    r = Recorder()
    g = _commit(r)
    answers = await asyncio.gather(
        g.submit(("p", 1)), g.submit(("missing", 2)), g.submit(("q", 3)), return_exceptions=True
    )
    assert answers[0] == 10 and answers[2] == 30
    assert isinstance(answers[1], LookupError)


async def test_a_batch_that_fails_is_applied_item_by_item_so_only_the_culprit_fails() -> None:
    r = Recorder(poison="bad")
    g = _commit(r)
    answers = await asyncio.gather(
        g.submit(("p", 1)), g.submit(("bad", 2)), g.submit(("q", 3)), return_exceptions=True
    )
    assert answers[0] == 10 and answers[2] == 30
    assert isinstance(answers[1], ValueError)
    assert r.batches == [[("p", 1)], [("q", 3)]]


async def test_a_database_away_fails_the_whole_batch_at_once() -> None:
    r = Recorder(down=True)
    g = _commit(r)
    answers = await asyncio.gather(
        *(g.submit((f"p{i}", i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(a, Unavailable) for a in answers)
    r.down = False
    assert await g.submit(("p0", 7)) == 70  # and the next batch is applied


async def test_a_caller_gone_before_its_batch_is_not_applied() -> None:
    r = Recorder()
    g = _commit(r)
    first = asyncio.ensure_future(g.submit(("a", 1)))
    gone = asyncio.ensure_future(g.submit(("a", 2)))  # waits: same key as the first
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 10
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.01)
    assert r.batches == [[("a", 1)]]


async def test_without_a_key_equal_items_share_a_batch() -> None:
    r = Recorder()
    g: GroupCommit[tuple[str, int], int] = GroupCommit(
        r.apply, key=None, shared_failure=lambda e: isinstance(e, Unavailable)
    )
    answers = await asyncio.gather(*(g.submit(("same", 1)) for _ in range(5)))
    assert answers == [10] * 5
    assert len(r.batches) == 1
