"""The bare FastAPI app the ingest ratios divide by: `python -m bench.bare_api --port N`.

Same uvicorn settings as `parcelhook serve` (uvloop, httptools, no access log); it parses
the same JSON body as `POST /api/v2/parcels/{id}/status` with a pydantic model and answers
a small JSON object. No authentication, no database: what the framework alone costs.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

app = FastAPI()


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status_id: int
    carrier_status_change_timestamp: int | None = Field(default=None, ge=0)


@app.post("/api/v2/parcels/{parcel_id}/status")
async def change_status(parcel_id: int, body: StatusIn) -> dict[str, object]:
    return {"parcel": {"id": parcel_id, "status": {"id": body.status_id}}}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_api")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
