"""Audit export and verify in words: JSON Lines and CSV round-trip every column, an export can be
verified again by whoever receives it, and --since/--until mean what they say."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, col, create_engine, select

from bot.audit import AuditAction, ChainReport, append_event, verify_events
from bot.audit_export import (
    COLUMNS,
    export_events,
    parse_day,
    query_events,
    verify_report_text,
)
from bot.store.db import create_schema, transaction
from bot.store.models import AuditEvent, utc

DAY = datetime(2026, 11, 1, tzinfo=UTC)
HOSTILE = 'INC-1 "quoted", <!channel> & ünïcode\nnew line; =SUM(A1)'


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def events(engine: Engine) -> list[AuditEvent]:
    """Six events a few hours apart around midnight on 1 November, odd values included."""
    rows: list[dict[str, Any]] = [
        {
            "at": DAY - timedelta(hours=2),
            "actor": "U0CAROL",
            "action": AuditAction.REQUESTED,
            "request_id": 1,
            "resource": "payments-db",
            "details": {"reason": HOSTILE, "duration": "1h", "approvers": ["U0ALICE"]},
        },
        {
            "at": DAY - timedelta(microseconds=1),
            "actor": "U0ALICE",
            "action": AuditAction.APPROVED,
            "request_id": 1,
            "resource": "payments-db",
        },
        {
            "at": DAY,
            "actor": "debug-access",
            "action": AuditAction.ISSUED,
            "request_id": 1,
            "resource": "payments-db",
            "details": {"lease_id": "database/creds/x/lease-1", "held_for": "1h", "ratio": 0.1},
        },
        {
            "at": DAY + timedelta(hours=5, microseconds=7),
            "actor": "debug-access",
            "action": AuditAction.REVOKE_FAILED,
            "details": {"error": "timeout", "attempt": 2},
        },
        {
            "at": DAY + timedelta(days=1) - timedelta(microseconds=1),
            "actor": "U0ALICE",
            "action": AuditAction.REVOKED,
            "request_id": 1,
            "resource": "payments-db",
            "details": {"confirmed_by_vault": True, "nothing": None},
        },
        {
            "at": DAY + timedelta(days=1),
            "actor": "U0BOB",
            "action": AuditAction.REQUESTED,
            "request_id": 2,
            "resource": "orders-logs",
            "details": {"reason": "next day"},
        },
    ]
    for row in rows:
        with transaction(engine) as session:
            append_event(session, **row)
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))


def as_tuple(event: AuditEvent) -> tuple[Any, ...]:
    return (
        event.id,
        utc(event.at),
        event.actor,
        event.action,
        event.request_id,
        event.resource,
        event.details,
        event.prev_hash,
        event.hash,
    )


def read_jsonl(text: str) -> list[AuditEvent]:
    events = []
    for line in text.splitlines():
        row = json.loads(line)
        assert list(row) == list(COLUMNS)
        assert isinstance(row["details"], dict)  # an object, not a string, for the SIEM
        row["details"] = json.dumps(row["details"], sort_keys=True, separators=(",", ":"))
        row["at"] = datetime.fromisoformat(row["at"])
        events.append(AuditEvent(**row))
    return events


def read_csv(text: str) -> list[AuditEvent]:
    events = []
    for row in csv.DictReader(io.StringIO(text)):
        assert list(row) == list(COLUMNS)
        events.append(
            AuditEvent(
                id=int(row["id"]),
                at=datetime.fromisoformat(row["at"]),
                actor=row["actor"],
                action=row["action"],
                request_id=int(row["request_id"]) if row["request_id"] else None,
                resource=row["resource"] or None,
                details=row["details"],
                prev_hash=row["prev_hash"],
                hash=row["hash"],
            )
        )
    return events


READERS = {"jsonl": read_jsonl, "csv": read_csv}


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips_every_column(events: list[AuditEvent], fmt: Any) -> None:
    out = io.StringIO()
    assert export_events(events, fmt, out) == len(events)
    back = READERS[fmt](out.getvalue())
    assert [as_tuple(e) for e in back] == [as_tuple(e) for e in events]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_can_be_verified_again_by_its_reader(events: list[AuditEvent], fmt: Any) -> None:
    out = io.StringIO()
    export_events(events, fmt, out)
    assert verify_events(READERS[fmt](out.getvalue())).ok


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_edited_on_the_way_fails_verification(events: list[AuditEvent], fmt: Any) -> None:
    out = io.StringIO()
    export_events(events, fmt, out)
    edited = out.getvalue().replace("timeout", "success")
    report = verify_events(READERS[fmt](edited))
    assert not report.ok
    assert report.first_bad_id == events[3].id


def test_jsonl_is_one_object_per_line_with_times_in_utc(events: list[AuditEvent]) -> None:
    out = io.StringIO()
    export_events(events, "jsonl", out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events)
    first = json.loads(lines[0])
    assert first["at"] == "2026-10-31T22:00:00.000000+00:00"
    assert first["details"]["reason"] == HOSTILE
    assert first["request_id"] == 1
    assert json.loads(lines[3])["request_id"] is None


def test_csv_keeps_details_as_the_hashed_json_text(events: list[AuditEvent]) -> None:
    out = io.StringIO()
    export_events(events, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["details"] for row in rows] == [e.details for e in events]
    assert rows[0]["details"].startswith("{")  # never a formula for a spreadsheet


def test_an_empty_export_is_valid(engine: Engine) -> None:
    jsonl, table = io.StringIO(), io.StringIO()
    assert export_events([], "jsonl", jsonl) == 0
    assert export_events([], "csv", table) == 0
    assert jsonl.getvalue() == ""
    assert table.getvalue() == ",".join(COLUMNS) + "\n"


def test_an_unknown_format_is_refused(events: list[AuditEvent]) -> None:
    with pytest.raises(ValueError, match="use jsonl or csv"):
        export_events(events, "xml", io.StringIO())  # type: ignore[arg-type]


# -- --since / --until ----------------------------------------------------------------------------


def test_a_date_is_its_midnight_in_utc() -> None:
    assert parse_day("2026-11-01") == DAY
    assert parse_day(" 2026-11-01 ") == DAY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T09:30:00+01:00", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
        ("2026-11-01T09:30:00Z", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("2026-11-01T09:30", datetime(2026, 11, 1, 9, 30, tzinfo=UTC)),
        ("2026-11-01 09:30:00.123456+00:00", datetime(2026, 11, 1, 9, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_a_full_time_is_taken_as_written(text: str, expected: datetime) -> None:
    parsed = parse_day(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "01/11/2026", "", "2026-11-01T25:00"])
def test_anything_else_is_refused_in_words(text: str) -> None:
    with pytest.raises(ValueError, match="is not a date like 2026-11-01"):
        parse_day(text)


def test_query_is_half_open_and_in_chain_order(engine: Engine, events: list[AuditEvent]) -> None:
    with Session(engine) as session:
        day = list(query_events(session, DAY, DAY + timedelta(days=1)))
        since = list(query_events(session, since=DAY))
        until = list(query_events(session, until=DAY))
        everything = list(query_events(session))
    assert [e.id for e in day] == [e.id for e in events[2:5]]
    assert [e.id for e in since] == [e.id for e in events[2:]]
    assert [e.id for e in until] == [e.id for e in events[:2]]
    assert [e.id for e in everything] == [e.id for e in events]


def test_query_bounds_in_other_zones_mean_the_same_instant(
    engine: Engine, events: list[AuditEvent]
) -> None:
    berlin_midnight_utc = DAY.astimezone(timezone(timedelta(hours=1)))  # 01:00+01:00
    with Session(engine) as session:
        day = list(query_events(session, berlin_midnight_utc, DAY + timedelta(days=1)))
    assert [e.id for e in day] == [e.id for e in events[2:5]]


# -- verify in words ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "text"),
    [
        (ChainReport(True, 1234), "audit chain intact: 1,234 events"),
        (ChainReport(True, 1), "audit chain intact: 1 event"),
        (ChainReport(True, 0), "audit chain intact: 0 events"),
        (
            ChainReport(False, 57, 57, "its content was changed"),
            "audit chain BROKEN at event 57: its content was changed",
        ),
        (
            ChainReport(
                False, 3, 12, "does not follow the previous row (a row was deleted or moved)"
            ),
            "audit chain BROKEN at event 12: does not follow the previous row "
            "(a row was deleted or moved)",
        ),
        (
            ChainReport(False, 1500, None, "the newest rows were deleted"),
            "audit chain BROKEN after 1,500 events: the newest rows were deleted",
        ),
    ],
)
def test_verify_report_in_plain_words(report: ChainReport, text: str) -> None:
    assert verify_report_text(report) == text


def test_verify_report_of_a_real_tampered_chain(events: list[AuditEvent]) -> None:
    events[2].details = events[2].details.replace("lease-1", "lease-9")
    assert verify_report_text(verify_events(events)) == (
        f"audit chain BROKEN at event {events[2].id}: its content was changed"
    )
