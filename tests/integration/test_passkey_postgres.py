"""Passkey step-up's races on a real PostgreSQL (READ COMMITTED, many connections)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from bot.audit import AuditAction, ensure_chain_head
from bot.domain.step_up import MAX_REFUSALS
from bot.lifecycle import StepUpSettings
from bot.policy import parse_policy
from bot.store import schema
from bot.store.db import make_engine
from bot.store.models import AuditEvent, PasskeyCredential, StepUpLink
from tests.unit.fakes import APPROVER, BYSTANDER, make_lifecycle, race
from tests.unit.soft_authenticator import SoftAuthenticator
from tests.unit.test_step_up import (
    ORIGIN,
    STEP_UP_POLICY,
    TTL,
    api,
    approval_token,
    enrol,
    submit,
    token_in,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(bot_db_url: str) -> Iterator[Engine]:
    made = make_engine(bot_db_url)
    schema.upgrade(made)
    ensure_chain_head(made)
    yield made
    made.dispose()


def test_two_enrolment_links_finished_at_once_register_one_passkey(engine: Engine) -> None:
    """One passkey per person: two enrolment links (the person's own and one taken by whoever
    holds their Slack session) finished at the same moment must not register two."""
    h = make_lifecycle(parse_policy(STEP_UP_POLICY, "p.yml"), engine=engine)
    h.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    for n in range(5):
        user = f"{APPROVER}{n}"
        bodies = []
        for _ in range(2):
            token = token_in(h.lifecycle.passkey_enrolment(user))
            status, begun = api(h, "/passkey/begin", {"token": token})
            assert status == 200, begun
            device = SoftAuthenticator("localhost", ORIGIN)
            bodies.append({"token": token, "credential": device.create(begun["options"])})
        outcomes = race(2, lambda i, b=bodies: api(h, "/passkey/finish", b[i]))
        with Session(engine) as session:
            kept = session.exec(select(PasskeyCredential).where(PasskeyCredential.user == user))
            assert len(kept.all()) == 1, outcomes
        assert sorted(status for status, _ in outcomes) == [200, 403], outcomes


def test_a_cloned_authenticator_racing_the_original_counts_once(engine: Engine) -> None:
    """Two answers with the same counter value (an authenticator and its clone, each on its
    own link) posted at the same moment: the counter must move forward once, so one of them
    is refused, as it is when they come one after the other."""
    h = make_lifecycle(parse_policy(STEP_UP_POLICY, "p.yml"), engine=engine)
    h.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    device = enrol(h, APPROVER)
    for _ in range(5):
        bodies = []
        clone_counter = device.sign_count
        for _ in range(2):
            token = approval_token(h, submit(h))
            status, begun = api(h, "/passkey/begin", {"token": token})
            assert status == 200, begun
            device.sign_count = clone_counter  # the clone signs with the same counter
            bodies.append({"token": token, "credential": device.get(begun["options"])})
        outcomes = race(2, lambda i, b=bodies: api(h, "/passkey/finish", b[i]))
        assert sorted(status for status, _ in outcomes) == [200, 403], outcomes


def test_refusals_racing_on_one_link_are_audited_at_most_max_refusals_times(
    engine: Engine,
) -> None:
    """Whoever holds a link posts wrong answers as fast as they can, in parallel: the link is
    spent at the ``MAX_REFUSALS``-th refusal, and no more than that many are audited."""
    h = make_lifecycle(parse_policy(STEP_UP_POLICY, "p.yml"), engine=engine)
    h.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    enrol(h, APPROVER)
    mallory = enrol(h, BYSTANDER)
    token = approval_token(h, submit(h))
    status, begun = api(h, "/passkey/begin", {"token": token})
    assert status == 200, begun
    bodies = [
        {"token": token, "credential": mallory.get(begun["options"])}
        for _ in range(2 * MAX_REFUSALS)
    ]
    outcomes = race(len(bodies), lambda i: api(h, "/passkey/finish", bodies[i]))
    assert all(status == 403 for status, _ in outcomes), outcomes
    assert sum("no longer works" in answer["message"] for _, answer in outcomes) == 1, outcomes
    with Session(engine) as session:
        refused = session.exec(
            select(AuditEvent).where(AuditEvent.action == AuditAction.STEP_UP_REFUSED)
        ).all()
        link = session.exec(select(StepUpLink)).all()[-1]
    assert len(refused) == MAX_REFUSALS
    assert link.used_at is not None and link.refusals == MAX_REFUSALS
