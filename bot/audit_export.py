"""``debug-access audit export`` and ``audit verify``: the audit trail for a SIEM, and in words.

An export carries every column of each row, hashes included, so whoever receives it can check
the chain again: ``details`` is exactly the JSON text that was hashed (a string column in CSV, the
same object in JSON Lines, which re-serialises to that text with sorted keys and no spaces), and
``at`` is the hashed ISO form in UTC. An export that starts after the first event begins with a
``prev_hash`` that links to the row before it, not to the genesis hash.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlmodel import Session, col, select

from bot.audit import ChainReport
from bot.store.models import AuditEvent, utc

ExportFormat = Literal["jsonl", "csv"]
COLUMNS = ("id", "at", "actor", "action", "request_id", "resource", "details", "prev_hash", "hash")


def export_events(events: Iterable[AuditEvent], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``events`` to ``out`` as JSON Lines or CSV (with a header row); return how many."""
    if fmt == "jsonl":
        return _write_jsonl(events, out)
    if fmt == "csv":
        return _write_csv(events, out)
    raise ValueError(f"unknown export format {fmt!r}: use jsonl or csv")


def event_row(event: AuditEvent) -> dict[str, Any]:
    """One event's columns, with ``details`` still the stored JSON text."""
    return {
        "id": event.id,
        "at": utc(event.at).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "request_id": event.request_id,
        "resource": event.resource,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _write_jsonl(events: Iterable[AuditEvent], out: TextIO) -> int:
    count = 0
    for event in events:
        row = event_row(event)
        row["details"] = json.loads(event.details)
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


def _write_csv(events: Iterable[AuditEvent], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for event in events:
        writer.writerow(event_row(event))
        count += 1
    return count


def parse_day(text: str) -> datetime:
    """``--since`` / ``--until``: ``2026-11-01`` is that day's midnight UTC; a full ISO time
    (``2026-11-01T09:30:00+01:00``, ``…Z``) is taken as written, and without an offset as UTC."""
    cleaned = text.strip()
    try:
        return utc(datetime.fromisoformat(cleaned))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date like 2026-11-01 or a time like 2026-11-01T09:30:00Z"
        ) from None


def query_events(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> Iterator[AuditEvent]:
    """Events with ``since <= at < until`` (either bound optional), in chain order."""
    statement = select(AuditEvent)
    if since is not None:
        statement = statement.where(col(AuditEvent.at) >= utc(since))
    if until is not None:
        statement = statement.where(col(AuditEvent.at) < utc(until))
    return iter(session.exec(statement.order_by(col(AuditEvent.id))))


def verify_report_text(report: ChainReport) -> str:
    """``audit verify``'s verdict in plain words."""
    if report.ok:
        return f"audit chain intact: {_events(report.checked)}"
    problem = report.problem or "it does not verify"
    if report.first_bad_id is not None:
        return f"audit chain BROKEN at event {report.first_bad_id}: {problem}"
    return f"audit chain BROKEN after {_events(report.checked)}: {problem}"


def _events(count: int) -> str:
    return f"{count:,} event{'' if count == 1 else 's'}"
