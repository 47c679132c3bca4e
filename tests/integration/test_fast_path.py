"""The status change's fast path (api/fast_path.py) answers exactly as FastAPI's own handler.

Every request below goes once through the app as served and once through the same app with
the route rebuilt as a plain `APIRoute` (FastAPI's handler alone), on one database: status,
body and the challenge header must match, for the plain case and for every kind of
malformed call. And the plain case must really skip FastAPI's dependency solving.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies import utils as dependency_utils
from fastapi.routing import APIRoute

from parcelhook.app import create_app
from support.harness import Account, Harness, HarnessFactory

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
STATUS_PATH = "/api/v2/parcels/{parcel_id}/status"


def _plain(app: FastAPI) -> FastAPI:
    """`app` with the status change served by FastAPI's own handler alone."""
    for n, route in enumerate(app.router.routes):
        if isinstance(route, APIRoute) and route.path == STATUS_PATH:
            app.router.routes[n] = APIRoute(
                route.path, route.endpoint, methods=["POST"], response_model=None
            )
            return app
    raise AssertionError("no status route")


def _basic(public: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()


def _cases(pid: int, good: str) -> list[tuple[str, dict[str, str], bytes]]:
    """(path, headers, body): the plain case and the malformed ones."""
    j = {"content-type": "application/json", "authorization": good}
    path = f"/api/v2/parcels/{pid}/status"
    bodies: list[bytes] = [
        b'{"status_id": 3}',
        b'{"status_id": 5, "carrier_status_change_timestamp": 1700000000000}',
        b'{"status_id": 3, "carrier_status_change_timestamp": null}',
        b'{"status_id": 3.0}',
        b'{"status_id": "3"}',
        b'{"status_id": true}',
        b'{"status_id": null}',
        b'{"status_id": 424242}',
        b'{"status_id": 3, "extra": 1}',
        b'{"status_id": 3, "carrier_status_change_timestamp": -1}',
        b'{"status_id": 3, "carrier_status_change_timestamp": 99999999999999999999}',
        b"{}",
        b"[]",
        b'"x"',
        b"",
        b"{",
        b'{"status_id": 3} x',
        b'\xef\xbb\xbf{"status_id": 7}',
        '{"status_id": 91}'.encode("utf-16"),
        b'{"status_id": 3, "status_id": 5}',
        b'{"status_id": \xff}',
        b"[" * 5000 + b"]" * 5000,
    ]
    cases = [(path, j, body) for body in bodies]
    for content_type in (None, "text/plain", "application/json; charset=utf-8", "x/y+json"):
        headers = {"authorization": good}
        if content_type is not None:
            headers["content-type"] = content_type
        cases.append((path, headers, b'{"status_id": 11}'))
    for segment in ("007", "0", "-1", "abc", "99999999999999999999", "9223372036854775807"):
        cases.append((f"/api/v2/parcels/{segment}/status", j, b'{"status_id": 3}'))
    for auth in (None, "Basic !!", _basic("nope", "nope"), "Bearer x"):
        headers = {"content-type": "application/json"}
        if auth is not None:
            headers["authorization"] = auth
        cases.append((path, headers, b'{"status_id": 3}'))
        cases.append((path, headers, b"{"))
    return cases


async def _one_parcel(harness: HarnessFactory) -> tuple[Harness, Account, int]:
    """A parcelhook without a dispatcher, an account, and a parcel of a shop of it."""
    h = await harness(dispatcher=False)
    acct = await h.account()
    shop = await acct.shop("http://127.0.0.1:9/hook")
    created = await acct.call(
        "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
    )
    return h, acct, int(created.json()["parcel"]["id"])


async def test_the_fast_path_answers_as_fastapis_handler_does(harness: HarnessFactory) -> None:
    h, acct, pid = await _one_parcel(harness)
    good = _basic(acct.api.public_key, acct.api.secret_key)
    served = create_app(h.runtime, manage_runtime=False)
    plain = _plain(create_app(h.runtime, manage_runtime=False))
    base = "http://127.0.0.1:8000"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url=base) as fast,
        httpx.AsyncClient(transport=httpx.ASGITransport(plain), base_url=base) as slow,
    ):
        for path, headers, body in _cases(pid, good):
            # the slow one second: a change it made would make the fast one's answer differ
            a = await fast.post(path, content=body, headers=headers)
            b = await slow.post(path, content=body, headers=headers)
            what = (path, headers.get("content-type"), body[:60])
            assert (a.status_code, _json(a)) == (b.status_code, _json(b)), what
            assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate"), what


def _json(r: httpx.Response) -> Any:
    return json.loads(r.content)


async def test_a_plain_status_change_skips_dependency_solving(
    harness: HarnessFactory, monkeypatch: Any
) -> None:
    _, acct, pid = await _one_parcel(harness)
    solved: list[object] = []
    solve = dependency_utils.solve_dependencies

    async def counting(*args: Any, **kw: Any) -> Any:
        solved.append(kw.get("dependant"))
        return await solve(*args, **kw)

    monkeypatch.setattr("fastapi.routing.solve_dependencies", counting)
    r = await acct.call("POST", f"/api/v2/parcels/{pid}/status", {"status_id": 3})
    assert r.status_code == 200, r.text
    assert r.json()["parcel"]["status"]["id"] == 3
    assert solved == []
    # a malformed one is FastAPI's to answer
    r = await acct.call("POST", f"/api/v2/parcels/{pid}/status", {"status_id": "3"})
    assert r.status_code == 422
    assert solved
