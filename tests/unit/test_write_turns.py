"""SQLite's write turn serves the dispatcher before API writers already waiting, so a
delivered outcome is recorded without waiting behind a queue of API transactions."""

from __future__ import annotations

import asyncio

import pytest

from parcelhook.store.write_turns import WriteTurns


async def test_the_dispatcher_goes_before_waiting_api_writers() -> None:
    turns = WriteTurns()
    order: list[str] = []

    async def write(name: str, *, first: bool = False) -> None:
        async with turns.turn(first=first):
            order.append(name)
            await asyncio.sleep(0.01)

    holder = asyncio.create_task(write("api-0"))
    await asyncio.sleep(0)  # it holds the turn
    api = [asyncio.create_task(write(f"api-{i}")) for i in range(1, 6)]
    await asyncio.sleep(0)
    outcome = asyncio.create_task(write("outcomes", first=True))
    await asyncio.gather(holder, *api, outcome)
    assert order == ["api-0", "outcomes", "api-1", "api-2", "api-3", "api-4", "api-5"]
    assert turns.waiting == 0


async def test_a_cancelled_waiter_neither_holds_nor_loses_the_turn() -> None:
    turns = WriteTurns()
    got: list[str] = []
    async with turns.turn():
        waiter = asyncio.create_task(turns.turn(first=True).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

        async def later() -> None:
            async with turns.turn():
                got.append("later")

        task = asyncio.create_task(later())
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 1)
    assert got == ["later"]
    assert turns.waiting == 0
