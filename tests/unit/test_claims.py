"""The guarded-update helper against SQLite: every status change's WHERE clause is the state
machine's allowed transitions, so a move the state machine forbids never matches a row."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col

from bot.domain.grants import GRANT_TRANSITIONS, GrantStatus, grant_sources
from bot.domain.requests import ALLOWED_TRANSITIONS, RequestStatus, request_sources
from bot.store.claims import claim, grant_guard, move_grant, move_request, request_guard
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant
from tests.unit.fakes import START, memory_engine

R = RequestStatus
G = GrantStatus


@pytest.fixture(scope="module")
def engine() -> Engine:
    return memory_engine()


def _request(engine: Engine, status: RequestStatus) -> int:
    with transaction(engine) as session:
        row = AccessRequest(
            requester="U1",
            resource="db",
            duration_seconds=60,
            reason="INC-1",
            status=status.value,
            created_at=START,
            updated_at=START,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def _grant(engine: Engine, status: GrantStatus) -> int:
    request_id = _request(engine, R.ACTIVE)
    with transaction(engine) as session:
        row = Grant(request_id=request_id, status=status.value, issued_at=START)
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def _status(engine: Engine, model: type[AccessRequest] | type[Grant], key: int) -> str:
    with Session(engine) as session:
        row = session.get(model, key)
        assert row is not None
        return row.status


# -- the guards are the state machine ------------------------------------------------------------


@pytest.mark.parametrize("target", list(RequestStatus))
def test_the_request_guard_lists_exactly_the_allowed_sources(target: RequestStatus) -> None:
    expected = {s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets}
    assert request_sources(target) == expected
    compiled = str(request_guard(target).compile(compile_kwargs={"literal_binds": True}))
    assert all(f"'{s.value}'" in compiled for s in expected)
    assert not any(f"'{s.value}'" in compiled for s in set(R) - expected)


@pytest.mark.parametrize("target", list(GrantStatus))
def test_the_grant_guard_lists_exactly_the_allowed_sources(target: GrantStatus) -> None:
    expected = {s for s, targets in GRANT_TRANSITIONS.items() if target in targets}
    assert grant_sources(target) == expected
    compiled = str(grant_guard(target).compile(compile_kwargs={"literal_binds": True}))
    assert all(f"'{s.value}'" in compiled for s in expected)
    assert not any(f"'{s.value}'" in compiled for s in set(G) - expected)


def test_the_documented_grant_transitions() -> None:
    allowed = {(a, b) for a, targets in GRANT_TRANSITIONS.items() for b in targets}
    assert allowed == {
        (G.ISSUING, G.DELIVERING),  # Vault issued it; the requester does not have it yet
        (G.ISSUING, G.REVOKING),  # issuing failed, or ended before it was active
        (G.DELIVERING, G.ACTIVE),  # the credentials DM was sent
        (G.DELIVERING, G.REVOKING),  # undeliverable, or ended before it was delivered
        (G.ACTIVE, G.REVOKING),
        (G.REVOKING, G.REVOKING),  # a failed revocation released, or a stale claim taken over
        (G.REVOKING, G.REVOKED),
    }
    assert set(GRANT_TRANSITIONS) == set(GrantStatus)


# -- against the database: every pair of states ----------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(R, R)))
def test_a_request_moves_exactly_when_the_state_machine_allows(
    engine: Engine, current: RequestStatus, target: RequestStatus
) -> None:
    request_id = _request(engine, current)
    later = START + timedelta(minutes=1)
    with transaction(engine) as session:
        moved = move_request(session, request_id, target, later)
    assert moved is (target in ALLOWED_TRANSITIONS[current])
    assert _status(engine, AccessRequest, request_id) == (target if moved else current).value


@pytest.mark.parametrize(("current", "target"), list(itertools.product(G, G)))
def test_a_grant_moves_exactly_when_the_state_machine_allows(
    engine: Engine, current: GrantStatus, target: GrantStatus
) -> None:
    grant_id = _grant(engine, current)
    with transaction(engine) as session:
        moved = move_grant(session, grant_id, target)
    assert moved is (target in GRANT_TRANSITIONS[current])
    assert _status(engine, Grant, grant_id) == (target if moved else current).value


# -- extra conditions, narrowing, and races --------------------------------------------------------


def test_extra_conditions_must_hold_too(engine: Engine) -> None:
    request_id = _request(engine, R.PENDING)
    later = START + timedelta(minutes=1)
    with transaction(engine) as session:
        assert not move_request(
            session, request_id, R.EXPIRED, later, col(AccessRequest.requester) == "someone else"
        )
        assert move_request(
            session, request_id, R.EXPIRED, later, col(AccessRequest.requester) == "U1"
        )
    with Session(engine) as session:
        row = session.get(AccessRequest, request_id)
        assert row is not None
        assert row.status == R.EXPIRED.value
        assert row.updated_at.replace(tzinfo=later.tzinfo) == later


def test_only_from_narrows_the_guard(engine: Engine) -> None:
    approved = _request(engine, R.APPROVED)
    with transaction(engine) as session:
        assert not move_request(session, approved, R.ENDED, START, only_from=[R.REVOKING])
    assert _status(engine, AccessRequest, approved) == R.APPROVED.value


def test_only_from_refuses_a_move_the_state_machine_does_not_have() -> None:
    with pytest.raises(ValueError, match="no move from active to ended"):
        request_guard(R.ENDED, only_from=[R.ACTIVE])


def test_of_two_racing_moves_exactly_one_wins(engine: Engine) -> None:
    request_id = _request(engine, R.PENDING)
    with transaction(engine) as session:
        first = move_request(session, request_id, R.APPROVED, START)
        second = move_request(session, request_id, R.WITHDRAWN, START)
    assert (first, second) == (True, False)


def test_values_are_written_with_the_move(engine: Engine) -> None:
    grant_id = _grant(engine, G.ACTIVE)
    with transaction(engine) as session:
        assert move_grant(session, grant_id, G.REVOKING, end_reason="expired", claimed_at=START)
    with Session(engine) as session:
        row = session.get(Grant, grant_id)
        assert row is not None
        assert (row.status, row.end_reason) == (G.REVOKING.value, "expired")


def test_claim_without_a_status_change(engine: Engine) -> None:
    request_id = _request(engine, R.PENDING)
    with transaction(engine) as session:
        unreviewed = col(AccessRequest.reviewed_by).is_(None)
        assert claim(session, AccessRequest, request_id, unreviewed, reviewed_by="U2")
        assert not claim(session, AccessRequest, request_id, unreviewed, reviewed_by="U3")
    with Session(engine) as session:
        row = session.get(AccessRequest, request_id)
        assert row is not None
        assert (row.reviewed_by, row.status) == ("U2", R.PENDING.value)


def test_claim_of_a_missing_row(engine: Engine) -> None:
    with transaction(engine) as session:
        assert not claim(session, Grant, 999_999, collected=True)
