"""The kill switch's races on a real PostgreSQL (READ COMMITTED, many connections): two admins
locking one person at the same moment, and a lock racing that person's own approval click."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bot.domain.errors import Conflict, NotAllowed
from bot.domain.requests import ValidRequest
from bot.store import schema
from bot.store.db import make_engine
from bot.store.models import AuditEvent, Decision, Grant, UserLock
from tests.unit.fakes import APPROVER, REQUESTER, make_lifecycle, race
from tests.unit.test_lock import ADMIN, HOUR, OTHER_ADMIN, POLICY

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(bot_db_url: str) -> Iterator[Engine]:
    made = make_engine(bot_db_url)
    schema.upgrade(made)
    yield made
    made.dispose()


def test_two_admins_locking_one_person_at_once_make_one_lock(engine: Engine) -> None:
    h = make_lifecycle(POLICY, engine=engine)
    for n in range(10):
        user = f"U0TARGET{n}"
        outcomes = race(
            2, lambda i, u=user: h.lifecycle.lock_user(u, (ADMIN, OTHER_ADMIN)[i], "x" * 5)
        )
        assert sum(isinstance(o, Conflict) for o in outcomes) == 1, outcomes
    with Session(engine) as session:
        assert len(session.exec(select(UserLock)).all()) == 10


def test_no_approval_by_an_approver_commits_after_their_lock(engine: Engine) -> None:
    """Whichever wins, the audit trail reads in an order where the approver was not yet locked
    when their approval counted."""
    h = make_lifecycle(POLICY, engine=engine)
    for n in range(15):
        valid = ValidRequest("payments-db", HOUR, f"INC-{n} race")
        request_id = h.lifecycle.submit(REQUESTER, valid, None).view.id

        def step(i: int, rid: int = request_id) -> object:
            if i == 0:
                return h.lifecycle.decide(rid, APPROVER, approve=True)
            return h.lifecycle.lock_user(APPROVER, ADMIN, "phished")

        outcomes = race(2, step)
        assert not isinstance(outcomes[1], Exception), outcomes
        assert outcomes[0] is not None and (
            not isinstance(outcomes[0], Exception) or isinstance(outcomes[0], NotAllowed)
        ), outcomes
        with Session(engine) as session:
            decided = session.exec(select(Decision).where(Decision.request_id == request_id)).all()
            events = session.exec(
                select(AuditEvent.action, AuditEvent.request_id)
                .where(col(AuditEvent.action).in_(["approved", "locked"]))
                .order_by(col(AuditEvent.id))
            ).all()
        order = [action for action, rid in events if rid in (request_id, None)]
        if decided:
            assert order[-2:] == ["approved", "locked"], order
        h.lifecycle.unlock_user(APPROVER, OTHER_ADMIN)


def test_two_admins_lifting_one_lock_at_once_lift_it_once(engine: Engine) -> None:
    """One lifts it; the other is told it is not locked (not a second ``unlocked`` event and
    a ``lifted_by`` overwritten behind the first admin's back)."""
    third = "U0THIRDADMIN"
    policy = POLICY.replace(
        f"admins: [{ADMIN}, {OTHER_ADMIN}]", f"admins: [{ADMIN}, {OTHER_ADMIN}, {third}]"
    )
    h = make_lifecycle(policy, engine=engine)
    admins = (third, OTHER_ADMIN)
    for n in range(10):
        user = f"U0LIFTED{n}"
        h.lifecycle.lock_user(user, ADMIN, "false alarm?")
        outcomes = race(2, lambda i, u=user: h.lifecycle.unlock_user(u, admins[i]))
        assert sum(isinstance(o, Conflict) for o in outcomes) == 1, outcomes
        winner = admins[[isinstance(o, Conflict) for o in outcomes].index(False)]
        with Session(engine) as session:
            lock = session.exec(select(UserLock).where(UserLock.user == user)).one()
            unlocked = session.exec(
                select(AuditEvent).where(
                    AuditEvent.action == "unlocked", col(AuditEvent.details).contains(user)
                )
            ).all()
        assert lock.lifted_by == winner and len(unlocked) == 1


def test_a_lock_racing_the_approval_of_that_persons_request_leaves_nothing_live(
    engine: Engine,
) -> None:
    """No timer runs here: whatever the order, the lock's own sweep (or Issue's check) leaves
    the locked requester holding nothing in Vault."""
    h = make_lifecycle(POLICY, engine=engine)
    for n in range(15):
        user = f"U0RACED{n}"
        valid = ValidRequest("payments-db", HOUR, f"INC-{n} race")
        request_id = h.lifecycle.submit(user, valid, None).view.id

        def step(i: int, rid: int = request_id, u: str = user) -> object:
            if i == 0:
                return h.lifecycle.decide(rid, APPROVER, approve=True)
            return h.lifecycle.lock_user(u, ADMIN, "laptop stolen")

        outcomes = race(2, step)
        assert not isinstance(outcomes[1], Exception), outcomes
        with Session(engine) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
        if grant is not None:
            assert grant.status == "revoked", (n, grant.status, outcomes)
            assert grant.lease_id not in h.issuer.live_leases
    assert not h.issuer.live_leases and not h.issuer.live_tokens
