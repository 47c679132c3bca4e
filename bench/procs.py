"""The processes a benchmark run starts (receivers, `parcelhook worker`s) and ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PARCELHOOK = Path(sys.executable).parent / "parcelhook"


class Proc:
    """A child process that is always ended when the run ends, however it ends."""

    live: ClassVar[set[Proc]] = set()

    def __init__(self, popen: subprocess.Popen[bytes], name: str) -> None:
        self.popen = popen
        self.name = name
        Proc.live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        Proc.live.discard(self)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        Proc.live.discard(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.live):
            proc.stop(grace=2.0)


def proc_status(pid: int, field: str) -> int:
    """A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB (0 when unavailable)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Receiver:
    """`python -m bench.receiver` in its own process, and a client to read its records."""

    def __init__(self, mode: str = "ok") -> None:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--mode", mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        self.proc = Proc(popen, f"receiver-{mode}")
        assert popen.stdout is not None
        line = popen.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.stop()
            raise RuntimeError(f"the {mode} receiver did not start")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    async def _call(self, method: str, path: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, self.base + path) as r:
            return json.loads(await r.read())

    async def count(self) -> int:
        return int((await self._call("GET", "/_stats"))["count"])

    async def receipts(self) -> dict[str, float]:
        """Arrival time by webhook-id (the first arrival of each)."""
        got = await self._call("GET", "/_receipts")
        out: dict[str, float] = {}
        for wid, t in zip(got["ids"], got["times"], strict=True):
            out.setdefault(wid, t)
        return out

    async def reset(self) -> None:
        await self._call("POST", "/_reset")

    async def wait_for(self, n: int, within: float, what: str) -> int:
        """Wait until `n` requests arrived (or `within` seconds passed); returns the count."""
        deadline = time.monotonic() + within
        count = await self.count()
        while count < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            count = await self.count()
        if count < n:
            print(f"  ! {what}: only {count} of {n} arrived in {within:g} s", file=sys.stderr)
        return count

    async def wait_for_ids(self, ids: set[str], within: float, what: str) -> dict[str, float]:
        """Wait until each of `ids` arrived (or `within` seconds passed); the receipts."""
        deadline = time.monotonic() + within
        got = await self.receipts()
        while not ids <= got.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            got = await self.receipts()
        if missing := len(ids - got.keys()):
            print(
                f"  ! {what}: {missing} of {len(ids)} not arrived in {within:g} s", file=sys.stderr
            )
        return got

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self.proc.stop()


class Worker:
    """One `parcelhook worker` process (optionally under `py-spy record`)."""

    def __init__(
        self,
        database_url: str,
        master_key: str,
        *,
        concurrency: int,
        timeout: float = 10.0,
        profile: Path | None = None,
    ) -> None:
        cmd = [
            str(PARCELHOOK),
            "worker",
            "--allow-private-targets",
            "--allow-http-targets",
            "--database-url",
            database_url,
            "--endpoint-concurrency",
            str(concurrency),
            "--timeout",
            f"{timeout:g}",
            "--log-level",
            "warning",
        ]
        if profile is not None:
            py_spy = Path(sys.executable).parent / "py-spy"
            cmd = [str(py_spy), "record", "-r", "200", "-f", "raw", "-o", str(profile), "--", *cmd]
        env = {**os.environ, "PARCELHOOK_MASTER_KEY": master_key}
        popen = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sys.stderr
        )
        self.proc = Proc(popen, "worker")
        self.profiled = profile is not None

    @property
    def pid(self) -> int:
        """The worker's own pid (under py-spy, the child of py-spy)."""
        if not self.profiled:
            return self.proc.pid
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            if children.split():
                return int(children.split()[0])
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        return proc_status(self.pid, "VmHWM") / 1024

    def stop(self) -> None:
        if self.profiled:
            # py-spy writes its profile when the target exits
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            Proc.live.discard(self.proc)
            return
        self.proc.stop(grace=15.0)


def pids_named(name: str) -> list[int]:
    """The processes whose command is `name`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
    return pids


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named processes (and by everything else) over a stretch of time."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self._start: dict[str, float] = {}
        self._postgres: list[int] = []

    def _snapshot(self) -> dict[str, float]:
        snap = {role: sum(proc_cpu_seconds(p) for p in pids) for role, pids in self.roles.items()}
        snap["postgres"] = sum(proc_cpu_seconds(p) for p in self._postgres)
        snap["machine"] = _machine_busy_seconds()
        return snap

    def start(self) -> None:
        # every PostgreSQL process on this host (the server is shared, so this may
        # include other clients' backends; the benchmark's own dominate while it runs)
        self._postgres = pids_named("postgres")
        self._start = self._snapshot()

    def per_delivery_us(self, deliveries: int) -> dict[str, float]:
        """µs of CPU per delivery by role; "rest" is all the machine's other work."""
        end = self._snapshot()
        used = {role: end[role] - self._start.get(role, 0.0) for role in end}
        if not self._postgres:
            used.pop("postgres")
        rest = used.pop("machine") - sum(used.values())
        used["rest"] = max(rest, 0.0)
        return {role: 1e6 * s / max(deliveries, 1) for role, s in used.items()}
