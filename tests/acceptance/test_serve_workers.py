"""`parcelhook serve --workers N`: processes sharing one port on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.harness import MASTER_KEY, drop_pg_database, make_pg_database, pg_reachable

EXE = [sys.executable, "-m", "parcelhook.cli"]
ACCOUNT = ("--email", "w@example.com", "--password", "secret123")
QUIET = ("--no-demo", "--log-level", "warning")
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path) -> None:
    result = subprocess.run(
        [*EXE, "serve", "--workers", "2", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        env={**os.environ, "PARCELHOOK_MASTER_KEY": MASTER_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --workers needs PostgreSQL: SQLite lets one process write")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.postgres
def test_two_workers_serve_the_api_on_postgres(tmp_path: Path) -> None:
    pg_reachable(required_reason="serve --workers runs on PostgreSQL")
    url = make_pg_database()
    env = {**os.environ, "PARCELHOOK_MASTER_KEY": MASTER_KEY}
    try:
        created = subprocess.run(
            [*EXE, "account", "create", "--json", "--database-url", url, *ACCOUNT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        keys = json.loads(created.stdout)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = (tmp_path / "serve.log").open("wb")
        server = subprocess.Popen(
            [*EXE, "serve", "--workers", "2", "--port", str(port), "--database-url", url, *QUIET],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "serve --workers 2 did not come up"
                time.sleep(0.1)
            # uvicorn's supervisor, and under it one spawned process per worker
            spawned = [
                pid
                for pid in _children(server.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            assert len(spawned) == 2
            auth = (keys["public_key"], keys["secret_key"])
            with httpx.Client(base_url=base, auth=auth, timeout=10) as client:
                ids = []
                for _ in range(20):
                    # a fresh connection each time, so that both processes take some
                    r = client.post(
                        "/api/v2/parcels", json={"parcel": PARCEL}, headers={"connection": "close"}
                    )
                    assert r.status_code == 200, r.text
                    ids.append(r.json()["parcel"]["id"])
                assert len(set(ids)) == 20
                r = client.get(f"/api/v2/parcels/{ids[0]}")
                assert r.status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
            log.close()
    finally:
        drop_pg_database(url)
