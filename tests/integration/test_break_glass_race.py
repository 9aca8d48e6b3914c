"""One break-glass at a time, under real concurrency on PostgreSQL: threads submit through the
real lifecycle and store (Vault, Slack and timers are the unit fakes; the race is in the
database)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.audit import ensure_chain_head
from bot.domain.requests import ValidRequest
from bot.store.db import make_engine
from bot.store.schema import upgrade
from tests.unit.fakes import APPROVER, REQUESTER, race
from tests.unit.test_approval_rules import GLASS, assert_one_break_glass, break_glass_race, harness

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_break_glass_requests_get_one_grant_on_postgresql(
    bot_db_url: str, attempt: int
) -> None:
    engine = make_engine(bot_db_url)
    try:
        upgrade(engine)
        ensure_chain_head(engine)  # as the runtime does at start
        h = harness(GLASS, engine=engine)
        assert_one_break_glass(h, break_glass_race(h, count=8))
    finally:
        engine.dispose()


def test_the_lock_is_per_person_and_resource(bot_db_url: str) -> None:
    """Different people's emergencies at the same moment neither wait for nor block each other."""
    engine = make_engine(bot_db_url)
    try:
        upgrade(engine)
        ensure_chain_head(engine)  # as the runtime does at start
        h = harness(GLASS, engine=engine)
        people = [REQUESTER, APPROVER, "U0DAVE", "U0ERIN"]
        valid = ValidRequest("payments-db", timedelta(minutes=30), "INC-1 outage")

        def ask(i: int) -> str:
            return h.lifecycle.submit(people[i], valid, None, break_glass=True).view.status.value

        outcomes = race(len(people), ask)
        assert outcomes == ["active"] * len(people), outcomes
    finally:
        engine.dispose()
