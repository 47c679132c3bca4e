"""Tracking updates from a file, for `parcelhook import-tracking`: CSV or JSON lines.

CSV needs a header naming `parcel_id` and `status_id` (and optionally
`carrier_status_change_timestamp`); JSON lines hold one update object per line. Values
are passed on as they are, so the service reports a bad one in its own words.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

_INT_COLUMNS = ("parcel_id", "status_id", "carrier_status_change_timestamp")


def is_csv(path: Path, head: str) -> bool:
    """CSV by extension, or when the first non-blank character does not open a JSON object."""
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return False
    return not head.lstrip().startswith("{")


def read_updates(f: TextIO, as_csv: bool) -> Iterator[tuple[int, Any]]:
    """(line number, update) for every non-blank line after any header."""
    if as_csv:
        reader = csv.DictReader(f)
        missing = {"parcel_id", "status_id"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"the CSV header must name {' and '.join(sorted(missing))}")
        for row in reader:
            item: dict[str, Any] = {}
            for name, value in row.items():
                if name is None or value is None or value.strip() == "":
                    continue
                value = value.strip()
                item[name] = int(value) if name in _INT_COLUMNS and _integer(value) else value
            yield reader.line_num, item
        return
    for n, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError:
            yield n, "(not JSON)"


def _integer(text: str) -> bool:
    return text.isdigit() or (text.startswith("-") and text[1:].isdigit())


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())
