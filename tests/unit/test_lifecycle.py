"""The request lifecycle against fakes (Vault, Slack, clock) and SQLite, and the real timer tick."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, SQLModel, col, select

from bot.audit import AuditAction, verify_chain
from bot.domain.errors import Conflict, NotAllowed, NotFound, UserError
from bot.domain.grant_kinds import DynamicSecretGrant
from bot.domain.requests import RequestStatus, ValidRequest
from bot.lifecycle import CLAIM_TIMEOUT, EndReason, retry_delay
from bot.store.db import create_schema, make_engine, transaction
from bot.store.models import (
    AccessRequest,
    AuditEvent,
    Decision,
    Grant,
    GrantStatus,
    RequestMessage,
    utc,
)
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    START,
    FakeClock,
    FakeIssuer,
    Harness,
    SimulatedCrash,
    make_lifecycle,
)

S = RequestStatus
HOUR = timedelta(hours=1)
FAR = START + timedelta(days=365)  # a moment by which anything ever due is due
DM_POLICY = EXAMPLE_POLICY.replace("delivery: wrapped", "delivery: dm")


@pytest.fixture
def h() -> Harness:
    return make_lifecycle()


def submit(
    h: Harness,
    requester: str = REQUESTER,
    resource: str = "payments-db",
    duration: timedelta = HOUR,
    reason: str = "INC-4211 checkout errors",
) -> int:
    result = h.lifecycle.submit(requester, ValidRequest(resource, duration, reason), "C0ORIGIN")
    return result.view.id


def approved(h: Harness, resource: str = "payments-db", duration: timedelta = HOUR) -> int:
    request_id = submit(h, resource=resource, duration=duration)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.ACTIVE
    return request_id


def rows(engine: Engine, model: type[SQLModel]) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model)))


def grant_of(h: Harness, request_id: int) -> Grant:
    with Session(h.engine) as session:
        grant = session.exec(select(Grant).where(Grant.request_id == request_id)).one()
        return grant


def actions(h: Harness, request_id: int) -> list[str]:
    with Session(h.engine) as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id)
            .order_by(col(AuditEvent.id))
        )
        return [e.action for e in events]


def chain_ok(h: Harness) -> bool:
    with Session(h.engine) as session:
        return verify_chain(session).ok


def snapshot(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for 'nothing changed' assertions."""
    with h.engine.connect() as conn:
        return {
            table.name: [tuple(r) for r in conn.execute(table.select())]
            for table in SQLModel.metadata.sorted_tables
        }


def assert_no_secret_stored(h: Harness) -> None:
    assert h.issuer.secrets, "the test issued nothing"
    for table, table_rows in snapshot(h).items():
        for row in table_rows:
            for cell in row:
                for secret in h.issuer.secrets:
                    assert secret not in str(cell), f"{table} holds a secret: {row}"


# -- submit ----------------------------------------------------------------------------------------


def test_submit_stores_pending_request_audits_and_announces(h: Harness) -> None:
    seen_in_db: list[str] = []

    def observer(name: str, args: tuple[Any, ...]) -> None:
        if name == "announce_request":  # state first, then Slack
            seen_in_db.extend(r.status for r in rows(h.engine, AccessRequest))

    h.notifier.observer = observer
    result = h.lifecycle.submit(
        REQUESTER, ValidRequest("payments-db", timedelta(minutes=30), "INC-1 x"), "C0ORIGIN"
    )

    (request,) = rows(h.engine, AccessRequest)
    assert (
        request.id,
        request.requester,
        request.resource,
        request.duration_seconds,
        request.reason,
        request.status,
        request.origin_channel,
    ) == (result.view.id, REQUESTER, "payments-db", 1800, "INC-1 x", "pending", "C0ORIGIN")
    assert utc(request.created_at) == START
    assert seen_in_db == ["pending"]
    assert result.asked == (APPROVER, OTHER_APPROVER)
    assert result.view.status is S.PENDING and result.view.approvers == result.asked

    (event,) = rows(h.engine, AuditEvent)
    assert (event.action, event.actor, event.request_id) == ("requested", REQUESTER, request.id)
    assert '"duration":"30m"' in event.details and "U0BOB" in event.details
    assert chain_ok(h)

    (announced,) = h.notifier.of("announce_request")
    assert announced[0] == result.view
    messages = rows(h.engine, RequestMessage)
    assert sorted((m.kind, m.channel) for m in messages) == [
        ("approval", "C0APPROVALS"),
        ("approval", f"D-{APPROVER}"),
        ("approval", f"D-{OTHER_APPROVER}"),
        ("audit", "C0AUDIT"),
    ]  # the root of the request's audit-channel thread
    assert [a[1] for a in h.notifier.audits] == [AuditAction.REQUESTED]
    assert h.issuer.calls == []


def test_requester_who_is_also_an_approver_is_not_asked(h: Harness) -> None:
    result = h.lifecycle.submit(APPROVER, ValidRequest("payments-db", HOUR, "INC-1 x"), None)
    assert result.asked == (OTHER_APPROVER,)
    with pytest.raises(NotAllowed, match="your own request"):
        h.lifecycle.decide(result.view.id, APPROVER, approve=True)


def test_submit_refused_when_the_requester_is_the_only_approver(h: Harness) -> None:
    with pytest.raises(NotAllowed, match="Nobody but you"):
        h.lifecycle.submit(APPROVER, ValidRequest("orders-logs", HOUR, "INC-1 x"), None)
    assert rows(h.engine, AccessRequest) == []
    assert rows(h.engine, AuditEvent) == []
    assert h.notifier.calls == []


def test_submit_for_a_resource_not_in_the_policy(h: Harness) -> None:
    with pytest.raises(NotFound):
        h.lifecycle.submit(REQUESTER, ValidRequest("gone", HOUR, "INC-1 x"), None)
    assert rows(h.engine, AccessRequest) == []


def test_open_requests_of_lists_only_open_ones_newest_first(h: Harness) -> None:
    first = submit(h)
    second = approved(h)
    denied = submit(h)
    h.lifecycle.decide(denied, APPROVER, approve=False)
    submit(h, requester=OTHER_APPROVER)
    assert [v.id for v in h.lifecycle.open_requests_of(REQUESTER)] == [second, first]
    assert h.lifecycle.open_requests_of(BYSTANDER) == []


# -- approve ---------------------------------------------------------------------------------------


def test_approve_issues_activates_schedules_and_delivers(h: Harness) -> None:
    request_id = submit(h)
    at_delivery: list[tuple[str, str]] = []

    def observer(name: str, args: tuple[Any, ...]) -> None:
        if name == "deliver_credentials":
            at_delivery.append(
                (rows(h.engine, AccessRequest)[0].status, rows(h.engine, Grant)[0].status)
            )

    h.notifier.observer = observer
    h.clock.advance(timedelta(minutes=2))
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)

    assert view.status is S.ACTIVE
    assert (view.decided_by, view.decided_at) == (APPROVER, START + timedelta(minutes=2))
    expires = START + timedelta(minutes=2) + HOUR
    assert view.expires_at == expires
    # Issued and committed before the requester hears; active only once they have it.
    assert at_delivery == [("approved", "delivering")]

    grant = grant_of(h, request_id)
    assert grant.status == GrantStatus.ACTIVE
    assert grant.token_accessor == "accessor-0001"
    assert grant.lease_id == "database/creds/payments-readonly/lease-0002"
    assert utc(grant.expires_at) == expires
    assert h.becomes_due("grant expiry", grant.id, expires)
    assert h.due("revocation retry", FAR) == []

    (spec,) = [args for name, args in h.issuer.calls if name == "create"]
    assert (
        spec.request_id,
        spec.requester,
        spec.resource,
        spec.ttl,
        spec.max_ttl,
        spec.grant,
    ) == (
        request_id,
        REQUESTER,
        "payments-db",
        HOUR,
        4 * HOUR,
        DynamicSecretGrant("database/creds/payments-readonly"),
    )
    assert [name for name, _ in h.issuer.calls] == ["create", "read", "wrap"]

    ((delivered_view, delivery),) = h.notifier.deliveries
    assert delivered_view.requester == REQUESTER
    assert delivery.values is None and delivery.wrapping_token is not None
    assert delivery.wrap_ttl == timedelta(minutes=10) and delivery.expires_at == expires
    payload = h.issuer.wrapped[delivery.wrapping_token.reveal()]
    assert payload["password"] == "SECRET-password-0002"
    assert payload["request_id"] == str(request_id)
    assert delivery.notes == ()

    assert actions(h, request_id) == ["requested", "approved", "issued", "delivered"]
    (decision,) = rows(h.engine, Decision)
    assert (decision.approver, decision.verdict) == (APPROVER, "approve")
    assert chain_ok(h)
    refreshed = [args[0].status for args in h.notifier.of("refresh_request")]
    assert refreshed == [S.ACTIVE]  # once, after the DM (test_delivery: the DM comes first)
    assert {m.kind for m in rows(h.engine, RequestMessage)} == {"approval", "credentials", "audit"}


@pytest.mark.parametrize("policy", [EXAMPLE_POLICY, DM_POLICY], ids=["wrapped", "dm"])
@pytest.mark.parametrize("resource", ["payments-db", "orders-logs"])
def test_no_secret_value_is_ever_stored(policy: str, resource: str) -> None:
    h = make_lifecycle(policy)
    request_id = submit(h, resource=resource)
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert_no_secret_stored(h)
    h.lifecycle.revoke_early(request_id, REQUESTER)
    assert_no_secret_stored(h)
    assert h.lifecycle.get(request_id).status is S.ENDED


def test_dm_delivery_of_a_token_resource() -> None:
    h = make_lifecycle(DM_POLICY)
    request_id = submit(h, resource="orders-logs", duration=timedelta(minutes=30))
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert [name for name, _ in h.issuer.calls] == ["create"]  # no read, no wrap
    ((_, delivery),) = h.notifier.deliveries
    assert delivery.wrapping_token is None
    assert delivery.values is not None
    assert delivery.values["token"].reveal() == "hvs.SECRET-token-0001"
    grant = grant_of(h, request_id)
    assert grant.lease_id is None and grant.token_accessor == "accessor-0001"
    assert h.becomes_due("grant expiry", grant.id, START + timedelta(minutes=30))


def test_short_default_lease_is_renewed_up_to_the_approved_duration(h: Harness) -> None:
    h.issuer.lease_ttl = timedelta(minutes=20)  # e.g. a database role's default_ttl
    request_id = approved(h)
    ((_, delivery),) = h.notifier.deliveries
    assert delivery.expires_at == START + HOUR and delivery.notes == ()
    assert h.issuer.count("renew") == 1
    assert h.becomes_due("grant expiry", grant_of(h, request_id).id, START + HOUR)


def test_vault_capping_the_grant_is_reported_and_the_timer_follows(h: Harness) -> None:
    h.issuer.lease_ttl = timedelta(minutes=20)
    h.issuer.renew_cap = timedelta(minutes=20)  # the role's max_ttl allows no more
    request_id = approved(h)
    ((_, delivery),) = h.notifier.deliveries
    assert delivery.expires_at == START + timedelta(minutes=20)
    (note,) = delivery.notes
    assert "20m" in note and "1h" in note
    grant_id = grant_of(h, request_id).id
    assert h.becomes_due("grant expiry", grant_id, START + timedelta(minutes=20))


@pytest.mark.parametrize("actor", [REQUESTER, BYSTANDER, "u0alice"])
@pytest.mark.parametrize("approve", [True, False])
def test_only_another_approver_may_decide(h: Harness, actor: str, approve: bool) -> None:
    request_id = submit(h)
    before, calls_before = snapshot(h), len(h.notifier.calls)
    with pytest.raises(NotAllowed):
        h.lifecycle.decide(request_id, actor, approve=approve)
    assert snapshot(h) == before
    assert len(h.notifier.calls) == calls_before
    assert h.issuer.calls == []
    assert h.lifecycle.get(request_id).status is S.PENDING


@pytest.mark.parametrize("second_actor", [APPROVER, OTHER_APPROVER])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("second", [True, False])
def test_a_second_decision_conflicts_and_issues_nothing(
    h: Harness, second_actor: str, first: bool, second: bool
) -> None:
    request_id = submit(h)
    h.lifecycle.decide(request_id, APPROVER, approve=first)
    before = snapshot(h)
    with pytest.raises(Conflict, match=f"decided by <@{APPROVER}>"):
        h.lifecycle.decide(request_id, second_actor, approve=second)
    assert snapshot(h) == before
    assert h.issuer.count("create") == (1 if first else 0)
    assert len(rows(h.engine, Decision)) == 1


def test_decide_on_a_missing_request(h: Harness) -> None:
    with pytest.raises(NotFound, match="no request #99"):
        h.lifecycle.decide(99, APPROVER, approve=True)


def test_concurrent_approvals_issue_one_grant(tmp_path: Path) -> None:
    """Two approvers click at the same moment on a file-backed SQLite database (several
    connections, real locking). Run a few rounds: exactly one click wins each time."""
    engine = make_engine(f"sqlite:///{tmp_path}/race.db")
    create_schema(engine)
    h = make_lifecycle(engine=engine)
    rounds = 8
    for _ in range(rounds):
        request_id = submit(h)
        barrier = threading.Barrier(2)
        outcomes: list[object] = []
        lock = threading.Lock()

        def click(
            actor: str,
            request_id: int = request_id,
            barrier: threading.Barrier = barrier,
            outcomes: list[object] = outcomes,
            lock: threading.Lock = lock,
        ) -> None:
            barrier.wait()
            try:
                result: object = h.lifecycle.decide(request_id, actor, approve=True).status
            except Exception as exc:  # recorded, so an unexpected error shows in the assert
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=click, args=(a,)) for a in (APPROVER, OTHER_APPROVER)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(map(type, outcomes), key=str) == sorted([S, Conflict], key=str), outcomes
        assert S.ACTIVE in outcomes
    assert h.issuer.count("create") == rounds
    assert len(rows(engine, Grant)) == rounds
    assert len(rows(engine, Decision)) == rounds
    assert len(h.notifier.deliveries) == rounds
    assert chain_ok(h)
    engine.dispose()


# -- deny ------------------------------------------------------------------------------------------


def test_deny(h: Harness) -> None:
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, OTHER_APPROVER, approve=False)
    assert view.status is S.DENIED and view.decided_by == OTHER_APPROVER
    assert h.issuer.calls == []
    assert rows(h.engine, Grant) == []
    assert h.notifier.deliveries == []
    ((user, text),) = h.notifier.tells
    assert user == REQUESTER and "denied" in text and f"#{request_id}" in text
    ((refreshed, refs),) = h.notifier.of("refresh_request")
    assert refreshed.status is S.DENIED
    assert {r.channel for r in refs} == {"C0APPROVALS", f"D-{APPROVER}", f"D-{OTHER_APPROVER}"}
    assert actions(h, request_id) == ["requested", "denied"]
    (decision,) = rows(h.engine, Decision)
    assert decision.verdict == "deny"
    with pytest.raises(Conflict):
        h.lifecycle.revoke_early(request_id, REQUESTER)


# -- Vault failing while issuing -------------------------------------------------------------------


def test_vault_failure_at_create_fails_the_request_and_leaves_nothing(h: Harness) -> None:
    h.issuer.fail("create")
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    assert view.failure is not None and "fake Vault refused create" in view.failure
    assert rows(h.engine, Grant) == []
    assert not h.issuer.live
    assert h.notifier.deliveries == []
    assert h.due("grant expiry", FAR) == []
    told = dict(h.notifier.tells)
    assert "could not be issued" in told[REQUESTER]
    assert "issuing failed" in told[APPROVER]
    assert any(alert for _, action, _, alert in h.notifier.audits if action == "failed")
    assert actions(h, request_id) == ["requested", "approved", "failed"]
    assert chain_ok(h)


def test_vault_unreachable_at_create_says_nothing_was_issued_and_to_ask_again(
    h: Harness,
) -> None:
    h.issuer.fail("create", how="unreachable")
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    assert view.failure is not None and "could not reach fake Vault" in view.failure
    assert rows(h.engine, Grant) == [] and not h.issuer.live
    told = dict(h.notifier.tells)
    assert "Nothing was issued" in told[REQUESTER] and "ask again" in told[REQUESTER]
    assert "could not reach fake Vault" in told[APPROVER]


def test_lost_answer_to_create_never_claims_nothing_was_left(h: Harness) -> None:
    """Vault made the token but its answer was lost: the bot cannot name it, so it says a token
    may exist and when it ends by itself, and alerts the audit channel."""
    h.issuer.fail("create", how="lost")
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    assert h.issuer.live  # the fake Vault holds a token nobody knows of
    told = dict(h.notifier.tells)
    assert "Nothing was" not in told[REQUESTER]
    assert "may have created a grant token" in told[REQUESTER]
    assert "expires by itself by" in told[REQUESTER]
    (alert,) = [a for a in h.notifier.audits if a[3]]
    assert alert[1] == "failed" and "may have created a grant token" in alert[2]
    with Session(h.engine) as session:
        failed = session.exec(select(AuditEvent).where(AuditEvent.action == "failed")).one()
    assert json.loads(failed.details)["token_may_live_until"] == (START + HOUR).isoformat()
    assert chain_ok(h)


@pytest.mark.parametrize("failing", ["read", "wrap"])
def test_vault_failure_after_the_token_exists_revokes_it(h: Harness, failing: str) -> None:
    h.issuer.fail(failing)
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert not h.issuer.live
    (revoke,) = [args for name, args in h.issuer.calls if name == "revoke"]
    assert revoke[0] == "accessor-0001"
    grant = grant_of(h, request_id)
    assert grant.status == GrantStatus.REVOKED
    if failing == "read":
        assert view.status is S.FAILED
        assert grant.end_reason == EndReason.ISSUE_FAILED
        assert h.notifier.deliveries == []
        assert actions(h, request_id) == ["requested", "approved", "failed", "revoked"]
    else:  # wrapping is part of delivery: the grant was never delivered, so it fails like one
        assert view.status is S.FAILED
        assert grant.end_reason == EndReason.DELIVERY_FAILED
        assert revoke[1] is not None  # the lease is named, not left to die with the token
        assert "could not be delivered" in dict(h.notifier.tells)[REQUESTER]
    assert chain_ok(h)


def test_issue_failure_whose_cleanup_also_fails_keeps_retrying(h: Harness) -> None:
    h.issuer.fail("read")
    h.issuer.fail("revoke")
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    grant = grant_of(h, request_id)
    assert (grant.status, grant.revoke_attempts) == (GrantStatus.REVOKING, 1)
    assert h.becomes_due("revocation retry", grant.id, START + timedelta(seconds=15))
    assert "accessor-0001" in h.issuer.live_tokens
    h.clock.advance(timedelta(seconds=15))
    assert h.lifecycle.end_grant(grant.id, EndReason.EXPIRED) is True
    assert not h.issuer.live
    assert grant_of(h, request_id).end_reason == EndReason.ISSUE_FAILED  # the first reason stays
    assert h.lifecycle.get(request_id).status is S.FAILED


def test_delivery_failure_revokes_the_grant(h: Harness) -> None:
    h.notifier.fail_delivery = True
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    assert view.failure is not None and "cannot open a DM" in view.failure
    assert not h.issuer.live
    grant = grant_of(h, request_id)
    assert (grant.status, grant.end_reason) == (GrantStatus.REVOKED, EndReason.DELIVERY_FAILED)
    assert len(h.notifier.deliveries) > 1  # retried within the delivery window first
    told = dict(h.notifier.tells)[REQUESTER]
    assert "could not be delivered" in told and "revoked (Vault confirmed it)" in told
    assert "delivered" not in actions(h, request_id)
    assert actions(h, request_id)[-1] == "revoked"
    assert not [m for m in rows(h.engine, RequestMessage) if m.kind == "credentials"]


# -- revoking early, withdrawing -------------------------------------------------------------------


@pytest.mark.parametrize("actor", [REQUESTER, APPROVER, OTHER_APPROVER])
def test_revoke_early(h: Harness, actor: str) -> None:
    request_id = approved(h)
    h.clock.advance(timedelta(minutes=7))
    view = h.lifecycle.revoke_early(request_id, actor)
    assert view.status is S.ENDED
    assert (view.ended_by, view.end_reason) == (actor, EndReason.REVOKED)
    assert view.ended_at == START + timedelta(minutes=7)
    assert not h.issuer.live
    (revoke,) = [args for name, args in h.issuer.calls if name == "revoke"]
    assert revoke == ("accessor-0001", "database/creds/payments-readonly/lease-0002")
    assert h.issuer.count("confirm") == 1
    grant = grant_of(h, request_id)
    assert (grant.status, grant.revoke_attempts) == (GrantStatus.REVOKED, 0)
    (closed,) = h.notifier.of("close_credentials")
    assert closed[1].channel == f"D-{REQUESTER}"
    (told,) = [text for user, text in h.notifier.tells if user == REQUESTER]
    assert f"<@{actor}> revoked it" in told and "Vault confirmed" in told
    assert actions(h, request_id)[-1] == "revoked"
    with Session(h.engine) as session:
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc())).first()
        assert last is not None and last.actor == actor and '"held_for":"7m"' in last.details
    assert chain_ok(h)


def test_bystander_may_not_revoke(h: Harness) -> None:
    request_id = approved(h)
    before = snapshot(h)
    with pytest.raises(NotAllowed):
        h.lifecycle.revoke_early(request_id, BYSTANDER)
    assert snapshot(h) == before
    assert h.issuer.count("revoke") == 0
    assert h.issuer.live


def test_requester_withdraws_a_pending_request(h: Harness) -> None:
    request_id = submit(h)
    view = h.lifecycle.revoke_early(request_id, REQUESTER)
    assert view.status is S.WITHDRAWN
    assert actions(h, request_id) == ["requested", "withdrawn"]
    ((refreshed, _),) = h.notifier.of("refresh_request")
    assert refreshed.status is S.WITHDRAWN
    assert h.issuer.calls == []
    with pytest.raises(Conflict):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    with pytest.raises(Conflict):
        h.lifecycle.revoke_early(request_id, REQUESTER)
    assert h.issuer.calls == []


@pytest.mark.parametrize(
    ("actor", "match"), [(APPROVER, "use Deny"), (BYSTANDER, "Only the requester")]
)
def test_only_the_requester_withdraws(h: Harness, actor: str, match: str) -> None:
    request_id = submit(h)
    with pytest.raises(NotAllowed, match=match):
        h.lifecycle.revoke_early(request_id, actor)
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_revoking_an_ended_grant_is_a_conflict(h: Harness) -> None:
    request_id = approved(h)
    h.lifecycle.revoke_early(request_id, REQUESTER)
    with pytest.raises(Conflict, match="nothing to revoke"):
        h.lifecycle.revoke_early(request_id, APPROVER)
    assert h.issuer.count("revoke") == 1


# -- ending a grant --------------------------------------------------------------------------------


def _break_revocation(issuer: FakeIssuer, how: str) -> None:
    if how == "revoke raises":
        issuer.fail("revoke")
    elif how == "confirm raises":
        issuer.fail("confirm")
    else:  # revoke claims success but nothing was revoked
        issuer.revoke_is_noop = True


@pytest.mark.parametrize("how", ["revoke raises", "confirm raises", "still live"])
def test_failed_revocation_stays_revoking_and_retries(h: Harness, how: str) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    _break_revocation(h.issuer, how)
    h.clock.advance(HOUR)

    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
    grant = grant_of(h, request_id)
    assert grant.status == GrantStatus.REVOKING
    assert grant.revoke_attempts == 1
    assert grant.last_error
    assert grant.ended_at is None and grant.claimed_at is None
    assert h.lifecycle.get(request_id).status is S.REVOKING
    assert h.becomes_due("revocation retry", grant_id, START + HOUR + timedelta(seconds=15))
    (alert,) = [a for a in h.notifier.audits if a[3]]
    assert alert[1] == AuditAction.REVOKE_FAILED and "REVOCATION FAILED (attempt 1)" in alert[2]
    assert "failing to revoke" in alert[2]
    assert h.issuer.live == (how != "confirm raises")  # unconfirmed is treated as live
    assert "expired" not in actions(h, request_id)
    assert h.notifier.of("close_credentials") == []

    h.issuer.revoke_is_noop = False
    h.clock.advance(timedelta(seconds=15))
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    assert not h.issuer.live
    grant = grant_of(h, request_id)
    assert (grant.status, grant.revoke_attempts) == (GrantStatus.REVOKED, 1)
    assert h.lifecycle.get(request_id).status is S.ENDED
    assert actions(h, request_id)[-2:] == ["revoke_failed", "expired"]
    assert chain_ok(h)


def test_revocation_retries_back_off(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.issuer.fail("revoke", times=3)
    retries = []
    for _ in range(3):
        assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
        retry_at = utc(grant_of(h, request_id).next_retry_at)
        assert h.becomes_due("revocation retry", grant_id, retry_at)
        retries.append(retry_at)
    assert [at - START for at in retries] == [
        timedelta(seconds=15),
        timedelta(seconds=30),
        timedelta(minutes=1),
    ]
    assert grant_of(h, request_id).revoke_attempts == 3
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, timedelta(seconds=15)),
        (1, timedelta(seconds=15)),
        (2, timedelta(seconds=30)),
        (3, timedelta(minutes=1)),
        (4, timedelta(minutes=2)),
        (5, timedelta(minutes=5)),
        (6, timedelta(minutes=10)),
        (50, timedelta(minutes=10)),
    ],
)
def test_retry_delay(attempts: int, delay: timedelta) -> None:
    assert retry_delay(attempts) == delay


def test_unreachable_vault_is_retried_every_few_seconds_and_alerted_sparingly(
    h: Harness,
) -> None:
    """While Vault does not answer, retries come every 5 s (so the grant ends within seconds of
    its return), but the audit channel hears of attempts 1, 2, 4 and 8 only."""
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.clock.advance(HOUR)
    h.issuer.fail("revoke", times=9, how="unreachable")
    retries = []
    for _ in range(9):
        assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
        retries.append(utc(grant_of(h, request_id).next_retry_at))
        h.clock.advance(timedelta(seconds=5))
    assert retries == [START + HOUR + timedelta(seconds=5 * (i + 1)) for i in range(9)]
    alerts = [a[2] for a in h.notifier.audits if a[3]]
    assert [a.split(")")[0] for a in alerts] == [
        f"REVOCATION FAILED (attempt {n}" for n in (1, 2, 4, 8)
    ]
    assert "failing to revoke" in alerts[0] and "until Vault answers" in alerts[0]
    assert actions(h, request_id).count("revoke_failed") == 4
    assert h.lifecycle.get(request_id).status is S.REVOKING
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    assert not h.issuer.live


def test_a_new_kind_of_revocation_failure_is_alerted_at_once(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.issuer.fail("revoke", times=2, how="unreachable")
    for _ in range(2):
        h.lifecycle.end_grant(grant_id, EndReason.EXPIRED)
    h.issuer.fail("revoke", times=1)  # attempt 3: Vault answers now, with an error
    h.lifecycle.end_grant(grant_id, EndReason.EXPIRED)
    alerts = [a[2] for a in h.notifier.audits if a[3]]
    assert len(alerts) == 3 and "fake Vault refused revoke" in alerts[2]
    assert utc(grant_of(h, request_id).next_retry_at) - START == timedelta(minutes=1)  # backoff


def test_expiry_ends_the_grant_and_tells_the_requester(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.clock.advance(HOUR)
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    view = h.lifecycle.get(request_id)
    assert (view.status, view.end_reason, view.ended_by) == (S.ENDED, "expired", "debug-access")
    assert actions(h, request_id)[-1] == "expired"
    assert any(user == REQUESTER and "it expired" in text for user, text in h.notifier.tells)


def test_end_grant_twice_is_a_no_op(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    before, calls = snapshot(h), list(h.notifier.calls)
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
    assert h.lifecycle.end_grant(grant_id, EndReason.REVOKED, actor=REQUESTER) is False
    assert snapshot(h) == before
    assert h.notifier.calls == calls
    assert h.issuer.count("revoke") == 1


def test_end_grant_leaves_a_fresh_claim_alone(h: Harness) -> None:
    """Another replica claimed the grant a moment ago and is revoking it right now."""
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    with transaction(h.engine) as session:
        session.exec(
            update(Grant)
            .where(col(Grant.id) == grant_id)
            .values(status=GrantStatus.REVOKING, claimed_at=h.clock.now())
        )
    h.clock.advance(CLAIM_TIMEOUT - timedelta(seconds=1))
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is False
    assert h.issuer.count("revoke") == 0
    h.clock.advance(timedelta(seconds=2))  # the other replica died: the claim is stale
    assert h.lifecycle.end_grant(grant_id, EndReason.EXPIRED) is True
    assert not h.issuer.live


def test_end_grant_of_a_missing_grant(h: Harness) -> None:
    assert h.lifecycle.end_grant(12345, EndReason.EXPIRED) is False
    assert h.issuer.calls == []


# -- a restart: the first tick finds what fell due, and what a crash interrupted -------------------


def _restart(h: Harness, now: datetime) -> Harness:
    """The same database and Vault after a restart: a fresh lifecycle, notifier and clock."""
    clock = FakeClock(now)
    h.issuer.clock = clock
    return make_lifecycle(h.policy, engine=h.engine, clock=clock, issuer=h.issuer)


def _crash(h: Harness, op: str) -> int:
    request_id = submit(h)
    h.issuer.crash(op)
    with pytest.raises(SimulatedCrash):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    return request_id


def test_the_first_tick_after_a_restart_finishes_what_a_crash_interrupted(h: Harness) -> None:
    past_due = approved(h, duration=timedelta(minutes=30))
    future = approved(h, duration=4 * HOUR)
    stranded = _crash(h, "create")  # APPROVED, nothing issued
    half_issued = _crash(h, "read")  # a token exists, its grant row is ISSUING
    assert h.lifecycle.get(stranded).status is S.APPROVED
    assert grant_of(h, half_issued).status == GrantStatus.ISSUING
    live_before = set(h.issuer.live_tokens)
    assert len(live_before) == 3

    later = START + HOUR
    r = _restart(h, later)
    counts = r.tick()

    assert counts == {
        "grant expiry": 1,
        "interrupted approval": 1,
        "interrupted issue": 1,
        "collection check": 1,  # the future grant's credentials were unwrapped in time
    }
    assert r.lifecycle.get(past_due).status is S.ENDED
    assert r.lifecycle.get(past_due).end_reason == EndReason.EXPIRED
    assert r.lifecycle.get(future).status is S.ACTIVE
    assert r.becomes_due("grant expiry", grant_of(r, future).id, START + 4 * HOUR)
    for request_id in (stranded, half_issued):
        view = r.lifecycle.get(request_id)
        assert view.status is S.FAILED
        assert view.failure is not None and "stopped while issuing" in view.failure
    assert grant_of(r, half_issued).status == GrantStatus.REVOKED
    assert r.issuer.live_tokens == {grant_of(r, future).token_accessor}  # only the future one
    # Stopped before a grant was recorded: whether Vault made a token is not known, so the
    # requester is not told that nothing was issued, but until when such a token could live.
    stranded_notice = next(text for user, text in r.notifier.tells if f"#{stranded}" in text)
    assert "Nothing was issued" not in stranded_notice
    assert "may have created a grant token" in stranded_notice, stranded_notice
    assert "expires by itself" in stranded_notice
    assert chain_ok(r)
    assert r.tick() == {}


def test_a_failed_revocation_is_retried_after_a_restart(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.issuer.fail("revoke")
    assert h.lifecycle.end_grant(grant_id, EndReason.REVOKED, actor=REQUESTER) is False

    r = _restart(h, START + timedelta(minutes=5))
    assert r.tick()["revocation retry"] == 1
    view = r.lifecycle.get(request_id)
    assert (view.status, view.end_reason, view.ended_by) == (S.ENDED, "revoked", REQUESTER)
    assert not r.issuer.live


def test_a_restart_waits_for_a_fresh_claim(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.issuer.crash("revoke")  # died mid-revocation: claimed, never finished
    with pytest.raises(SimulatedCrash):
        h.lifecycle.end_grant(grant_id, EndReason.EXPIRED)
    assert grant_of(h, request_id).claimed_at is not None

    soon = START + timedelta(seconds=30)
    r = _restart(h, soon)
    assert r.tick()["revocation retry"] == 0  # the claim is fresh: not yet
    assert r.becomes_due("revocation retry", grant_id, START + CLAIM_TIMEOUT + timedelta(seconds=1))
    assert r.lifecycle.get(request_id).status is S.REVOKING
    assert r.issuer.live

    r2 = _restart(r, START + CLAIM_TIMEOUT + timedelta(seconds=1))
    assert r2.tick()["revocation retry"] == 1
    assert r2.lifecycle.get(request_id).status is S.ENDED
    assert not r2.issuer.live


def test_full_flow_audit_trail(h: Harness) -> None:
    request_id = approved(h)
    h.clock.advance(HOUR)
    h.lifecycle.end_grant(grant_of(h, request_id).id, EndReason.EXPIRED)
    assert actions(h, request_id) == ["requested", "approved", "issued", "delivered", "expired"]
    posted: list[str] = [a[1] for a in h.notifier.audits]
    assert posted == ["requested", "approved", "issued", "expired"]
    assert chain_ok(h)
    assert_no_secret_stored(h)


@pytest.mark.parametrize("step", ["submit", "decide", "revoke"])
def test_user_errors_carry_no_secret(h: Harness, step: str) -> None:
    request_id = approved(h)
    calls: dict[str, Callable[[], object]] = {
        "submit": lambda: h.lifecycle.submit(
            APPROVER, ValidRequest("orders-logs", HOUR, "x y"), None
        ),
        "decide": lambda: h.lifecycle.decide(request_id, APPROVER, approve=True),
        "revoke": lambda: h.lifecycle.revoke_early(request_id, BYSTANDER),
    }
    with pytest.raises(UserError) as info:
        calls[step]()
    for secret in h.issuer.secrets:
        assert secret not in str(info.value)


# -- the tick: whatever the database says is due ----------------------------------------------


def test_the_tick_ends_a_grant_once_it_is_due(h: Harness) -> None:
    request_id = approved(h)
    h.issuer.unwrap(grant_of(h, request_id).wrap_accessor)
    h.clock.advance(HOUR - timedelta(seconds=1))
    assert h.tick()["grant expiry"] == 0  # nothing is due yet (the collection check was)
    assert h.issuer.live
    h.clock.advance(timedelta(seconds=1))
    assert h.tick() == {"grant expiry": 1}
    assert h.lifecycle.get(request_id).status is S.ENDED and not h.issuer.live
    assert actions(h, request_id)[-1] == "expired"
    assert h.tick() == {}


def test_the_tick_retries_a_failed_revocation_only_when_its_backoff_is_due(h: Harness) -> None:
    request_id = approved(h)
    grant_id = grant_of(h, request_id).id
    h.issuer.fail("revoke")
    assert h.lifecycle.end_grant(grant_id, EndReason.REVOKED, actor=REQUESTER) is False
    assert grant_of(h, request_id).next_retry_at is not None
    h.clock.advance(timedelta(seconds=5))
    assert h.tick()["revocation retry"] == 0  # the 15 s backoff is not over
    assert h.lifecycle.get(request_id).status is S.REVOKING
    h.clock.advance(timedelta(seconds=11))
    assert h.tick()["revocation retry"] == 1
    assert h.lifecycle.get(request_id).status is S.ENDED and not h.issuer.live


def test_the_tick_expires_an_overdue_pending_request(h: Harness) -> None:
    request_id = submit(h)
    h.clock.advance(timedelta(minutes=59))
    h.tick()
    assert h.lifecycle.get(request_id).status is S.PENDING
    h.clock.advance(timedelta(minutes=2))  # past the default pending_ttl of 1h
    assert h.tick()["pending expiry"] == 1
    assert h.lifecycle.get(request_id).status is S.EXPIRED
    with pytest.raises(Conflict):
        h.lifecycle.decide(request_id, APPROVER, approve=True)


def test_a_late_approval_after_pending_ttl_is_refused_and_expires_the_request(h: Harness) -> None:
    request_id = submit(h)
    h.clock.advance(timedelta(hours=4))  # no tick took the expiry up yet
    with pytest.raises(Conflict, match="expired"):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert h.lifecycle.get(request_id).status is S.EXPIRED
    assert h.issuer.calls == []


def test_the_database_allows_one_pending_extension_per_grant_even_in_a_race(h: Harness) -> None:
    request_id = approved(h)
    h.lifecycle.request_extension(request_id, REQUESTER, "30m")
    # A second request that passed its checks before the first was stored (a race) still fails.
    resource = h.policy.resources["payments-db"]
    with pytest.raises(Conflict, match="already waiting"):
        h.lifecycle.submission.route_new(
            requester=REQUESTER,
            resource_name="payments-db",
            resource=resource,
            duration=timedelta(minutes=30),
            reason="x",
            origin_channel=None,
            parent_id=request_id,
        )
    with Session(h.engine) as session:
        pending = session.exec(
            select(AccessRequest).where(AccessRequest.parent_id == request_id)
        ).all()
    assert len(pending) == 1


# -- wrapped credentials that are never unwrapped --------------------------------------------------


def test_credentials_never_unwrapped_are_revoked_before_the_wrapping_token_expires(
    h: Harness,
) -> None:
    h.issuer.requester_unwraps = False
    request_id = approved(h)
    grant = grant_of(h, request_id)
    assert grant.wrap_accessor and grant.collected is None
    check_at = START + timedelta(minutes=10) - timedelta(seconds=15)
    assert h.becomes_due("collection check", grant.id, check_at)
    h.clock.set(check_at)
    assert h.tick() == {"collection check": 1}
    assert h.lifecycle.get(request_id).status is S.ENDED
    assert not h.issuer.live and not h.issuer.live_wraps  # the wrapping token is revoked too
    assert actions(h, request_id)[-2:] == ["not_collected", "revoked"]
    assert any("not unwrapped in time" in text for _, text in h.notifier.tells)
    assert h.lifecycle.check_collected(grant.id) is None  # once only


def test_unwrapped_credentials_are_recorded_and_the_grant_stays(h: Harness) -> None:
    h.issuer.requester_unwraps = False
    request_id = approved(h)
    grant = grant_of(h, request_id)
    h.issuer.unwrap(grant.wrap_accessor)
    h.clock.advance(timedelta(minutes=9, seconds=50))
    assert h.tick() == {"collection check": 1}
    assert grant_of(h, request_id).collected is True
    assert h.lifecycle.get(request_id).status is S.ACTIVE
    assert actions(h, request_id)[-1] == "collected"


def test_dm_delivery_has_nothing_to_collect() -> None:
    h = make_lifecycle(EXAMPLE_POLICY.replace("delivery: wrapped", "delivery: dm"))
    request_id = approved(h)
    assert grant_of(h, request_id).wrap_accessor is None and h.due("collection check", FAR) == []


def test_an_approval_that_issues_refreshes_each_home_once(h: Harness) -> None:
    request_id = submit(h)
    before = len(h.notifier.of("home_changed"))
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    refreshes = h.notifier.of("home_changed")[before:]
    assert len(refreshes) == 1  # the "issued" announcement; "approved" did not publish too
    (users,) = refreshes[0]
    assert REQUESTER in users and APPROVER in users
