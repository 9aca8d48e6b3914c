"""Prometheus metrics (``bot.metrics``): outcomes are counted once their transaction commits and
never for one rolled back; the state gauges are read from the database at scrape time, count a
grant past its expiry until Vault confirmed it gone, and drop out (not 0) when the database does
not answer; ``/metrics`` serves them. The end-to-end scrape is in ``test_e2e_grant``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlmodel import Session, select

from bot.audit import AuditAction, append_event
from bot.domain.requests import ValidRequest
from bot.health import Readiness
from bot.lifecycle import EndReason
from bot.server import probes_app
from bot.store.db import transaction
from bot.store.gauges import StateGauges
from bot.store.models import Grant
from tests.unit.fakes import APPROVER, EXAMPLE_POLICY, REQUESTER, START, make_lifecycle

HOUR = timedelta(hours=1)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def gauges(collector: StateGauges) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {s.name: s.value for family in registry.collect() for s in family.samples}


def test_outcomes_and_revocations_are_counted_once_committed() -> None:
    h = make_lifecycle()
    submitted = sample("debug_access_requests_total", outcome="submitted")
    granted = sample("debug_access_requests_total", outcome="granted")
    revoked = sample("debug_access_revocations_total", result="ok")
    waits = sample("debug_access_approval_wait_seconds_count")
    issued = sample("debug_access_issue_seconds_count")
    valid = ValidRequest("payments-db", HOUR, "INC-1 counted")
    request_id = h.lifecycle.submit(REQUESTER, valid, None).view.id
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    h.lifecycle.revoke_early(request_id, REQUESTER)
    assert sample("debug_access_requests_total", outcome="submitted") == submitted + 1
    assert sample("debug_access_requests_total", outcome="granted") == granted + 1
    assert sample("debug_access_revocations_total", result="ok") == revoked + 1
    assert sample("debug_access_approval_wait_seconds_count") == waits + 1
    assert sample("debug_access_issue_seconds_count") == issued + 1


def test_an_event_rolled_back_is_not_counted() -> None:
    h = make_lifecycle()
    before = sample("debug_access_requests_total", outcome="denied")
    with pytest.raises(RuntimeError), transaction(h.engine) as session:
        append_event(session, at=START, actor=APPROVER, action=AuditAction.DENIED)
        raise RuntimeError("the transaction fails after the append")
    assert sample("debug_access_requests_total", outcome="denied") == before


def test_a_grant_past_its_expiry_is_overdue_until_vault_confirms_it_gone() -> None:
    h = make_lifecycle()
    valid = ValidRequest("payments-db", HOUR, "INC-2 overdue")
    pending = h.lifecycle.submit(REQUESTER, valid, None).view.id
    granted = h.lifecycle.submit(REQUESTER, valid, None).view.id
    h.lifecycle.decide(granted, APPROVER, approve=True)
    collector = StateGauges(h.engine, h.clock.now)
    assert gauges(collector) == {
        "debug_access_active_grants": 1,
        "debug_access_pending_requests": 1,
        "debug_access_grants_overdue": 0,
        "debug_access_users_locked": 0,
        "debug_access_locked_live_grants": 0,
    }
    h.clock.advance(HOUR + timedelta(seconds=1))  # expired; no tick has revoked it yet
    assert gauges(collector)["debug_access_grants_overdue"] == 1
    with Session(h.engine) as session:
        grant_id = session.exec(select(Grant.id).where(Grant.request_id == granted)).one()
    h.issuer.revoke_is_noop = True  # Vault cannot confirm it gone: overdue while retried
    failed = sample("debug_access_revocations_total", result="failed")
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
    assert gauges(collector)["debug_access_grants_overdue"] == 1
    assert sample("debug_access_revocations_total", result="failed") == failed + 1
    h.issuer.revoke_is_noop = False
    h.clock.advance(timedelta(minutes=5))
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    assert gauges(collector) == {
        "debug_access_active_grants": 0,
        "debug_access_pending_requests": 1,
        "debug_access_grants_overdue": 0,
        "debug_access_users_locked": 0,
        "debug_access_locked_live_grants": 0,
    }
    assert pending


def test_a_lock_whose_revocation_vault_refuses_shows_as_locked_live_grants() -> None:
    h = make_lifecycle(
        EXAMPLE_POLICY.replace("delivery: wrapped\n", "delivery: wrapped\nadmins: [U0SEC]\n")
    )
    valid = ValidRequest("payments-db", HOUR, "INC-3 stolen laptop")
    granted = h.lifecycle.submit(REQUESTER, valid, None).view.id
    h.lifecycle.decide(granted, APPROVER, approve=True)
    collector = StateGauges(h.engine, h.clock.now)
    h.issuer.revoke_is_noop = True  # Vault cannot confirm it gone
    h.lifecycle.lock_user(REQUESTER, "U0SEC", "stolen laptop")
    found = gauges(collector)
    assert (found["debug_access_users_locked"], found["debug_access_locked_live_grants"]) == (1, 1)
    h.issuer.revoke_is_noop = False
    h.clock.advance(timedelta(minutes=1))
    h.tick()
    found = gauges(collector)
    assert (found["debug_access_users_locked"], found["debug_access_locked_live_grants"]) == (1, 0)


def test_without_a_database_the_state_gauges_are_absent_not_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = create_engine("sqlite:////nonexistent-dir/bot.db")
    assert gauges(StateGauges(dead, lambda: START)) == {}
    assert "could not read the state gauges" in caplog.text


def test_metrics_are_served_next_to_the_probes() -> None:
    app = probes_app(Readiness())
    started: list[Any] = []
    body = b"".join(
        app({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda *a: started.append(a))
    )
    assert started[0][0].startswith("200")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"debug_access_requests", "debug_access_revocations"} <= names
