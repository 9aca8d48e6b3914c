"""The hash-chained audit trail: appends link up, and each kind of tampering is found."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from bot.audit import GENESIS_HASH, AuditAction, append_event, verify_chain, verify_events
from bot.store.db import transaction
from bot.store.models import AuditEvent, AuditHead
from tests.unit.fakes import START, memory_engine

COUNT = 6


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = memory_engine()
    yield engine
    engine.dispose()


def _append(engine: Engine, n: int, **overrides: Any) -> None:
    with transaction(engine) as session:
        fields: dict[str, Any] = {
            "at": START + timedelta(minutes=n, microseconds=n),
            "actor": f"U0USER{n}",
            "action": list(AuditAction)[n % len(AuditAction)],
            "request_id": n,
            "resource": "payments-db",
            "details": {"n": n, "reason": f"INC-{n} <!channel> & ünïcode"},
        }
        fields.update(overrides)
        append_event(session, **fields)


@pytest.fixture
def chain(engine: Engine) -> Engine:
    for n in range(1, COUNT + 1):
        _append(engine, n)
    return engine


def _events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))


def _verify(engine: Engine) -> Any:
    with Session(engine) as session:
        return verify_chain(session)


def _sha(prev: str, content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


def test_append_links_every_row_to_the_one_before(chain: Engine) -> None:
    events = _events(chain)
    assert [e.id for e in events] == list(range(1, COUNT + 1))
    prev = GENESIS_HASH
    for n, event in enumerate(events, start=1):
        assert event.prev_hash == prev
        # Recompute the documented hash independently of bot.audit's helpers.
        content = {
            "at": (START + timedelta(minutes=n, microseconds=n)).isoformat(timespec="microseconds"),
            "actor": f"U0USER{n}",
            "action": list(AuditAction)[n % len(AuditAction)].value,
            "request_id": n,
            "resource": "payments-db",
            "details": json.dumps(
                {"n": n, "reason": f"INC-{n} <!channel> & ünïcode"},
                sort_keys=True,
                separators=(",", ":"),
            ),
        }
        assert event.hash == _sha(prev, content)
        prev = event.hash
    with Session(chain) as session:
        head = session.get(AuditHead, 1)
        assert head is not None
        assert head.last_hash == prev
        assert head.count == COUNT


def test_intact_chain_verifies(chain: Engine) -> None:
    report = _verify(chain)
    assert report.ok
    assert report.checked == COUNT
    assert report.first_bad_id is None and report.problem is None


def test_empty_chain_verifies(engine: Engine) -> None:
    report = _verify(engine)
    assert report.ok and report.checked == 0


def test_a_rolled_back_append_leaves_no_trace(chain: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(chain) as session:
        append_event(session, at=START, actor="U0X", action=AuditAction.WITHDRAWN)
        raise RuntimeError("the state change failed")
    assert len(_events(chain)) == COUNT
    assert _verify(chain).ok
    _append(chain, COUNT + 1)
    assert _verify(chain).ok


def test_times_in_other_zones_are_stored_and_hashed_as_utc(engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    _append(engine, 1, at=datetime(2025, 3, 4, 11, 0, tzinfo=plus_two))
    _append(engine, 2, at=datetime(2025, 3, 4, 9, 1))  # naive: taken as UTC
    assert _verify(engine).ok
    event = _events(engine)[0]
    assert event.at.replace(tzinfo=UTC) == datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def test_details_that_are_not_json_are_stringified(engine: Engine) -> None:
    _append(engine, 1, details={"expires_at": START, "approvers": ["U0A", "U0B"]})
    assert json.loads(_events(engine)[0].details) == {
        "expires_at": str(START),
        "approvers": ["U0A", "U0B"],
    }
    assert _verify(engine).ok


def test_verify_events_works_without_a_head(chain: Engine) -> None:
    assert verify_events(_events(chain)).ok
    assert verify_events(_events(chain)[:-2]).ok  # without the head, a cut tail is invisible
    assert not verify_events(_events(chain)[:-2], _events(chain)[-1].hash).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("details", '{"n":3,"reason":"nothing to see"}'),
        ("actor", "U0SOMEONEELSE"),
        ("action", "denied"),
        ("request_id", 999),
        ("resource", "orders-logs"),
        ("at", START + timedelta(days=1)),
    ],
)
def test_an_edited_row_is_found(chain: Engine, column: str, value: Any) -> None:
    with transaction(chain) as session:
        session.exec(update(AuditEvent).where(col(AuditEvent.id) == 3).values({column: value}))
    report = _verify(chain)
    assert not report.ok
    assert report.first_bad_id == 3
    assert report.problem == "its content was changed"
    assert report.checked == 3


def test_an_edited_row_with_a_recomputed_hash_breaks_the_next_link(chain: Engine) -> None:
    event = _events(chain)[2]
    forged = {
        "at": START.isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "request_id": event.request_id,
        "resource": event.resource,
        "details": "{}",
    }
    with transaction(chain) as session:
        session.exec(
            update(AuditEvent)
            .where(col(AuditEvent.id) == 3)
            .values(at=START, details="{}", hash=_sha(event.prev_hash, forged))
        )
    report = _verify(chain)
    assert (report.ok, report.first_bad_id) == (False, 4)
    assert "deleted or moved" in (report.problem or "")


@pytest.mark.parametrize(
    ("deleted", "first_bad"), [({3}, 4), ({1}, 2), ({2, 3}, 4), ({1, 2, 3, 4, 5}, 6)]
)
def test_a_deleted_row_is_found(chain: Engine, deleted: set[int], first_bad: int) -> None:
    with transaction(chain) as session:
        session.exec(delete(AuditEvent).where(col(AuditEvent.id).in_(deleted)))
    report = _verify(chain)
    assert not report.ok
    assert report.first_bad_id == first_bad
    assert report.problem == "does not follow the previous row (a row was deleted or moved)"


@pytest.mark.parametrize("how_many", [1, 2, COUNT])
def test_deleting_the_newest_rows_is_found(chain: Engine, how_many: int) -> None:
    with transaction(chain) as session:
        session.exec(delete(AuditEvent).where(col(AuditEvent.id) > COUNT - how_many))
    report = _verify(chain)
    assert not report.ok
    assert report.checked == COUNT - how_many
    assert report.first_bad_id is None
    assert report.problem == "the newest rows were deleted"


@pytest.mark.parametrize(("a", "b"), [(2, 3), (1, COUNT), (4, 5)])
def test_swapped_rows_are_found(chain: Engine, a: int, b: int) -> None:
    with transaction(chain) as session:
        for old, new in ((a, -1), (b, a), (-1, b)):
            session.exec(update(AuditEvent).where(col(AuditEvent.id) == old).values(id=new))
    assert [e.request_id for e in _events(chain)][a - 1] == b  # really swapped
    report = _verify(chain)
    assert not report.ok
    assert report.first_bad_id == a
    assert report.problem is not None


def test_appending_after_tampering_does_not_heal_the_chain(chain: Engine) -> None:
    with transaction(chain) as session:
        session.exec(delete(AuditEvent).where(col(AuditEvent.id) == 2))
    _append(chain, COUNT + 1)
    report = _verify(chain)
    assert (report.ok, report.first_bad_id) == (False, 3)


def test_every_action_has_a_stable_value() -> None:
    assert {a.value for a in AuditAction} >= {
        "requested",
        "approved",
        "denied",
        "issued",
        "revoked",
        "expired",
        "failed",
    }
