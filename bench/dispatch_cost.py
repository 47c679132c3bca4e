"""The dispatcher's CPU per delivery, counted rather than timed: `python -m
bench.dispatch_cost [--engine postgres|sqlite] [-n 2000] [--tool callgrind|cprofile|cpu]`.

This process queues `n` deliveries to one receiver and starts a dispatcher in a child
process (`Runtime.start_dispatcher`, as `parcelhook worker` runs it; on SQLite as `serve`
does), then measures the child from the first receipt to the last:

- `callgrind`: instructions (valgrind's callgrind, instrumentation switched on and off with
  `callgrind_control`), which do not depend on the machine's load;
- `cprofile`: Python function calls (cProfile switched on and off by signals), with the
  top functions by own time written next to the figure;
- `cpu`: the child's CPU seconds from /proc (load-dependent; for a quick look).

`--rate R` commits the events one at a time at R per second while the dispatcher runs (each
commit a NOTIFY on PostgreSQL), as an API's commits arrive, instead of queueing them first.

`--src DIR` runs the child on another checkout's `src` (say `git archive` of an older
commit), so two builds are compared on the same queue and receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench import fixtures
from bench.fixtures import Events
from bench.procs import ROOT, Receiver, proc_cpu_seconds

CHILD_READY = "READY"


async def _child(url: str, profile_to: str | None) -> None:
    """The dispatcher alone, until SIGTERM; with `profile_to`, cProfile runs between
    SIGUSR1 and SIGUSR2 and its stats are written there."""
    # the parent's key: the integrations' secrets were sealed with it
    fixtures.MASTER_KEY = os.environ["PARCELHOOK_MASTER_KEY"]
    profiler = cProfile.Profile()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if profile_to is not None:
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(profile_to)

        loop.add_signal_handler(signal.SIGUSR2, dump)
    async with fixtures.runtime(url, concurrency=64) as rt:
        await rt.start_dispatcher()
        print(CHILD_READY, flush=True)
        await stop.wait()


async def _measure(args: argparse.Namespace) -> None:
    receiver = Receiver()
    # the SQLite database and the child's profile or callgrind dumps: gone when the run
    # ends, however it ends
    with tempfile.TemporaryDirectory(prefix="parcelhook-dispatch-cost-") as scratch:
        tmp = Path(scratch)
        try:
            async with (
                fixtures.database(args.engine, tmp) as url,
                fixtures.runtime(url) as rt,
            ):
                account_id, targets = await fixtures.shop_integrations(rt, [receiver.url()])
                events = Events(account_id)
                if not args.rate:
                    await fixtures.enqueue_bulk(rt, events, targets, args.n)
                    await receiver.reset()
                    await _run_child(args, url, receiver, None, tmp / "out")
                    return
                # one commit per event at `rate` per second, as an API's commits arrive
                pace = fixtures.enqueue_paced(rt, events, targets, args.rate, args.n / args.rate)
                await _run_child(args, url, receiver, pace, tmp / "out")
        finally:
            await receiver.close()


async def _run_child(
    args: argparse.Namespace,
    url: str,
    receiver: Receiver,
    arrivals: Coroutine[Any, Any, object] | None,
    out: Path,
) -> None:
    cmd = [sys.executable, "-m", "bench.dispatch_cost", "--child", url]
    if args.tool == "cprofile":
        cmd += ["--profile-to", str(out)]
    if args.tool == "callgrind":
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *cmd,
        ]
    env = {**os.environ, "PARCELHOOK_MASTER_KEY": fixtures.MASTER_KEY}
    if args.src is not None:
        env["PYTHONPATH"] = f"{args.src}{os.pathsep}{ROOT}"
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, cwd=ROOT)  # noqa: ASYNC220
    try:
        assert child.stdout is not None
        ready = await asyncio.to_thread(child.stdout.readline)
        if CHILD_READY not in ready.decode():
            raise RuntimeError("the dispatcher did not start")
        pacing = None if arrivals is None else asyncio.create_task(arrivals)
        first = await receiver.wait_for(1, 600.0, "first delivery")
        start_cpu = proc_cpu_seconds(child.pid)
        _switch(args.tool, child.pid, on=True)
        started = time.perf_counter()
        last = await receiver.wait_for(args.n, 1800.0, "deliveries")
        _switch(args.tool, child.pid, on=False)
        seconds = time.perf_counter() - started
        cpu = proc_cpu_seconds(child.pid) - start_cpu
        deliveries = last - first
        if pacing is not None:
            await pacing
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.to_thread(child.wait, 120)
    print(f"{deliveries} deliveries measured, {seconds:.1f} s", file=sys.stderr)
    if args.tool == "callgrind":
        instructions = _callgrind_total(out)
        print(f"instructions per delivery: {instructions / deliveries / 1000:,.1f} k")
    elif args.tool == "cprofile":
        stats = pstats.Stats(str(out))
        calls = sum(nc for (_, nc, _, _, _) in stats.stats.values())  # type: ignore[attr-defined]
        print(f"Python calls per delivery: {calls / deliveries:,.1f}")
        if args.top:
            stats.sort_stats("tottime").print_stats(args.top)
    else:
        print(f"CPU µs per delivery: {cpu * 1e6 / deliveries:,.1f}")


def _switch(tool: str, pid: int, *, on: bool) -> None:
    if tool == "callgrind":
        flag = "on" if on else "off"
        subprocess.run(["callgrind_control", "-i", flag, str(pid)], check=True, capture_output=True)
    elif tool == "cprofile":
        os.kill(pid, signal.SIGUSR1 if on else signal.SIGUSR2)


def _callgrind_total(out: Path) -> int:
    # the dump may be split into parts (out, out.1, …); each ends with its "totals:"
    total = 0
    for part in out.parent.glob(out.name + "*"):
        found = re.findall(r"^totals: (\d+)", part.read_text(errors="replace"), re.MULTILINE)
        total += sum(int(n) for n in found)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_cost", description=__doc__)
    parser.add_argument("--engine", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--tool", choices=("callgrind", "cprofile", "cpu"), default="callgrind")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events committed one by one at this rate, "
        "while the dispatcher runs (default: all queued before it starts)",
    )
    parser.add_argument("--top", type=int, default=0, help="cprofile: print the top functions")
    parser.add_argument("--src", type=Path, help="run the dispatcher on this source tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop  # the event loop of `parcelhook worker` and `serve`

    if args.child:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_child(args.child, args.profile_to))
        return
    uvloop.run(_measure(args))


if __name__ == "__main__":
    main()
