"""The API's write path executes a fixed, small number of SQL statements (a guard, not a timing).

A change that adds a statement to a status change or a parcel creation makes every ingest
slower (docs/performance.md, "The API write path"); this fails it in CI, on both engines.
"""

from __future__ import annotations

from support.harness import HarnessFactory
from support.parcels import PARCEL
from support.statements import statements

# statements per call, authentication included (a creation's INSERT sets its tracking
# number too: it was 8 and 5 with a separate UPDATE)
STATUS_CHANGE = {"sqlite": 7, "postgres": 3}
PARCEL_CREATE = {"sqlite": 7, "postgres": 4}


def _engine(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


async def test_status_change_and_parcel_creation_statement_counts(
    harness: HarnessFactory, database_url: str
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    shop = await acct.shop("http://127.0.0.1:9/hook")
    # a first call warms up what is cached per process (compiled statements, secrets)
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}})
    assert r.status_code == 200, r.text
    with statements() as created_sql:
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
    assert r.status_code == 200, r.text
    parcel_id = r.json()["parcel"]["id"]
    with statements() as changed_sql:
        r = await acct.call("POST", f"/api/v2/parcels/{parcel_id}/status", {"status_id": 3})
    assert r.status_code == 200, r.text
    assert r.json()["parcel"]["status"]["id"] == 3
    engine = _engine(database_url)
    assert len(created_sql) == PARCEL_CREATE[engine], "\n".join(created_sql)
    assert len(changed_sql) == STATUS_CHANGE[engine], "\n".join(changed_sql)
