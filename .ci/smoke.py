"""Smoke test of an installed parcelhook (run by the fresh venv's python, outside the repo).

Migrates a new SQLite database, creates an account, serves on a free port and goes through
one request of each kind: health, the panel's sign-in page, an API call, metrics.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [str(BIN / "parcelhook"), *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def get(url: str, auth: tuple[str, str] | None = None, body: object = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, data, timeout=10) as response:
        return response.status, response.read()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # nothing may come from the source tree
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
        env["PARCELHOOK_DATABASE_URL"] = f"sqlite:///{tmp}/smoke.db"
        print(cli("migrate", env=env).strip())
        created = json.loads(
            cli("account", "create", "--email", "smoke@example.com", "--password",
                "smoke-pass-1", "--json", env=env)
        )  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([str(BIN / "parcelhook"), "serve", "--port", str(port)], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, _ = get(base + "/healthz")
                    break
                except OSError:
                    assert server.poll() is None, "serve exited"
                    assert time.monotonic() < deadline, "serve did not come up"
                    time.sleep(0.2)
            assert get(base + "/login")[0] == 200
            auth = (created["public_key"], created["secret_key"])
            parcel = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1"}
            parcel["country"] = "NL"
            status, body = get(base + "/api/v2/parcels", auth, {"parcel": parcel})
            assert status in (200, 201), body
            status, body = get(base + "/metrics")
            assert status == 200 and b"parcelhook_http_requests_total" in body
        finally:
            server.terminate()
            server.wait(30)
    print("smoke test passed")


if __name__ == "__main__":
    main()
