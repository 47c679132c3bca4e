"""Logging set-up: text for people, JSON lines (structlog) for collectors.

Code logs through the standard library (`logging.getLogger(...)`), with structured fields
passed as `extra={...}`; both formats show them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# the LogRecord attributes every record has: whatever else it carries came from `extra`
# (uvicorn adds an ANSI-coloured copy of its message, which neither format wants)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was given with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value …`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def _drop_color_message(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event.pop("color_message", None)
    return event


def json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(),
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            structlog.processors.format_exc_info,
        ],
    )


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    handler.set_name("parcelhook")
    root = logging.getLogger()
    # replaces only its own handler: others (a host application's, pytest's) stay
    for old in [h for h in root.handlers if h.get_name() == "parcelhook"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # drivers log every statement (SQLAlchemy at INFO, aiosqlite with its parameters at
    # DEBUG: ciphertexts, hashes, payloads), so they speak only of trouble
    for driver in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "alembic"):
        logging.getLogger(driver).setLevel(logging.WARNING)
