"""The timers' claims on a real PostgreSQL: a replica skips the rows another replica is claiming
at that instant (``FOR UPDATE SKIP LOCKED``) instead of waiting for them, and every kind of due
work, the escalation's time arithmetic included, is SQL PostgreSQL runs as meant."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from bot.scheduler import HOLD
from bot.store import schema
from bot.store.db import make_engine, transaction
from bot.store.due import claim_next
from bot.store.models import AccessRequest, Grant
from tests.unit.fakes import EXAMPLE_POLICY, FakeClock, make_lifecycle

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def engine(bot_db_url: str) -> Iterator[Engine]:
    made = make_engine(bot_db_url)
    schema.upgrade(made)
    yield made
    made.dispose()


def request(session: Session, created: datetime, **values: object) -> int:
    row = AccessRequest(
        requester="U0CAROL",
        resource="payments-db",
        duration_seconds=3600,
        reason="INC-1 due",
        created_at=created,
        updated_at=created,
        **values,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def expired_grants(engine: Engine, count: int) -> list[int]:
    with transaction(engine) as session:
        ids = []
        for _ in range(count):
            grant = Grant(
                request_id=request(session, NOW - timedelta(hours=2), status="active"),
                status="active",
                issued_at=NOW - timedelta(hours=1),
                expires_at=NOW - timedelta(seconds=1),
            )
            session.add(grant)
            session.flush()
            ids.append(grant.id)
        return ids


def test_a_row_another_replica_is_claiming_is_skipped_not_waited_for(engine: Engine) -> None:
    first, second = expired_grants(engine, 2)
    work = next(
        w for w in make_lifecycle(engine=engine).lifecycle.due_work() if w.name == "grant expiry"
    )
    locked, release = threading.Event(), threading.Event()

    def other_replica() -> None:
        with engine.connect() as conn, conn.begin():
            conn.execute(text('SELECT id FROM "grant" WHERE id = :id FOR UPDATE'), {"id": first})
            locked.set()
            release.wait(30)

    thread = threading.Thread(target=other_replica)
    thread.start()
    assert locked.wait(10)
    started = time.monotonic()
    claimed = claim_next(engine, Grant, work.due(NOW), work.oldest_first, NOW, NOW + HOLD)
    took = time.monotonic() - started
    release.set()
    thread.join(10)
    assert claimed == second and took < 2  # the oldest is locked: the next one, at once
    assert claim_next(engine, Grant, work.due(NOW), work.oldest_first, NOW, NOW + HOLD) == first
    assert claim_next(engine, Grant, work.due(NOW), work.oldest_first, NOW, NOW + HOLD) is None


def test_every_kind_of_due_work_runs_on_postgresql(engine: Engine) -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["resources"]["payments-db"].update(escalate_after="10m", pending_ttl="1h")
    h = make_lifecycle(yaml.safe_dump(raw), engine=engine, clock=FakeClock(NOW))
    with transaction(engine) as session:
        overdue = request(
            session, NOW - timedelta(minutes=11), pending_until=NOW + timedelta(hours=1)
        )
        not_yet = request(
            session, NOW - timedelta(minutes=9), pending_until=NOW + timedelta(hours=1)
        )
        escalated = request(
            session,
            NOW - timedelta(minutes=30),
            pending_until=NOW + timedelta(hours=1),
            escalation_level=1,
            escalated_at=NOW - timedelta(minutes=5),
        )
    for work in h.lifecycle.due_work():
        with Session(engine) as session:
            session.exec(
                select(work.table.id).where(work.due(NOW))
            ).all()  # runs, whatever it finds
    assert h.due("escalation", NOW) == [overdue]
    assert h.becomes_due("escalation", not_yet, NOW + timedelta(minutes=1))
    assert h.becomes_due("escalation", escalated, NOW + timedelta(minutes=5))
