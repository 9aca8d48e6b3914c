"""Passkey step-up: the link rules (pure), and the page's WSGI handlers over the real lifecycle
(fakes for Vault and Slack, a software authenticator, py_webauthn's real verification)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bot import checks
from bot.audit import AuditAction
from bot.config import Settings
from bot.configuration import load_configuration
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.requests import RequestStatus as S
from bot.domain.requests import ValidRequest
from bot.domain.step_up import (
    MAX_REFUSALS,
    LinkPurpose,
    LinkState,
    RelyingParty,
    RequestState,
    StepUpRefused,
    check_credential_owner,
    check_link,
    check_sign_count,
    link_url,
    token_hash,
)
from bot.errors import ConfigProblem
from bot.health import Readiness
from bot.lifecycle import StepUpSettings
from bot.lifecycle.edges import Via
from bot.lifecycle.step_up import LINK_RETENTION, purge_links
from bot.policy import parse_policy
from bot.server import probes_app
from bot.slack.home import home_view
from bot.slack.ids import ActionId
from bot.store.models import AuditEvent, PasskeyCredential, StepUpLink, UserLock
from bot.web.passkey import passkey_app
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    Harness,
    make_lifecycle,
)
from tests.unit.soft_authenticator import SoftAuthenticator
from tests.unit.test_listeners import Edge, Recorder

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ORIGIN = "http://localhost:8123"
TTL = timedelta(minutes=15)
STEP_UP_POLICY = EXAMPLE_POLICY.replace(
    "delivery: wrapped\n", f"delivery: wrapped\nstep_up: passkey\nadmins: [{APPROVER}]\n"
)
# Mallory may approve too here, so that "another approver's passkey" is a real credential.
STEP_UP_POLICY = STEP_UP_POLICY.replace(
    "approvers: [U0ALICE, U0BOB]", f"approvers: [U0ALICE, U0BOB, {BYSTANDER}]"
)
LINK_TOKEN = re.compile(r"/passkey#([A-Za-z0-9_-]+)\|")


# -- the rules --------------------------------------------------------------------------------


def link(**changes: Any) -> LinkState:
    values: dict[str, Any] = {
        "purpose": LinkPurpose.APPROVE,
        "user": APPROVER,
        "request_id": 7,
        "expires_at": NOW + TTL,
        "used_at": None,
    }
    values.update(changes)
    return LinkState(**values)


PENDING = RequestState(pending=True, decided_by_user=False)


def test_a_fresh_link_for_a_pending_request_counts() -> None:
    assert check_link(link(), LinkPurpose.APPROVE, NOW, PENDING) == link()


@pytest.mark.parametrize(
    ("state", "purpose", "request_state", "says"),
    [
        (None, LinkPurpose.APPROVE, PENDING, "not valid"),
        (link(purpose=LinkPurpose.ENROL), LinkPurpose.APPROVE, PENDING, "not valid"),
        (link(used_at=NOW - timedelta(seconds=1)), LinkPurpose.APPROVE, PENDING, "already used"),
        (link(expires_at=NOW), LinkPurpose.APPROVE, PENDING, "expired"),
        (link(), LinkPurpose.APPROVE, RequestState(False, False), "already been decided"),
        (link(), LinkPurpose.APPROVE, None, "already been decided"),
        (link(), LinkPurpose.APPROVE, RequestState(True, True), "already decided"),
    ],
)
def test_links_that_do_not_count_say_why(
    state: LinkState | None, purpose: LinkPurpose, request_state: RequestState | None, says: str
) -> None:
    with pytest.raises(StepUpRefused, match=says):
        check_link(state, purpose, NOW, request_state)


def test_an_enrolment_link_needs_no_request() -> None:
    enrol = link(purpose=LinkPurpose.ENROL, request_id=None)
    assert check_link(enrol, LinkPurpose.ENROL, NOW) == enrol


def test_only_a_hash_of_the_token_is_kept_and_the_token_rides_in_the_fragment() -> None:
    assert token_hash("abc") == token_hash("abc") != token_hash("abd")
    assert "abc" not in token_hash("abc") and len(token_hash("abc")) == 64
    assert link_url("https://bot.example.com/", "tok") == "https://bot.example.com/passkey#tok"


def test_the_relying_party_is_the_public_urls_origin_and_host() -> None:
    rp = RelyingParty.from_public_url("https://debug-access.internal.example.com")
    assert rp == RelyingParty(
        "https://debug-access.internal.example.com", "debug-access.internal.example.com"
    )
    assert RelyingParty.from_public_url("http://localhost:8123").origin == "http://localhost:8123"
    with pytest.raises(ValueError, match="https"):
        RelyingParty.from_public_url("http://bot.example.com")
    with pytest.raises(ValueError, match="not an http"):
        RelyingParty.from_public_url("bot.example.com")


@pytest.mark.parametrize(("stored", "presented"), [(0, 0), (0, 1), (5, 6)])
def test_a_counter_that_moves_forward_or_never_counts_is_accepted(
    stored: int, presented: int
) -> None:
    check_sign_count(stored, presented)


@pytest.mark.parametrize(("stored", "presented"), [(5, 5), (5, 3), (1, 0)])
def test_a_counter_that_does_not_move_forward_is_refused(stored: int, presented: int) -> None:
    with pytest.raises(StepUpRefused, match="counter"):
        check_sign_count(stored, presented)


def test_only_the_link_users_own_passkey_counts() -> None:
    check_credential_owner(APPROVER, APPROVER)
    with pytest.raises(StepUpRefused, match="someone else"):
        check_credential_owner(BYSTANDER, APPROVER)
    with pytest.raises(StepUpRefused, match="not registered"):
        check_credential_owner(None, APPROVER)


# -- configuration ------------------------------------------------------------------------------


def test_a_step_up_policy_without_public_url_refuses_to_start(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(STEP_UP_POLICY)
    monkeypatch.chdir(tmp_path)
    env = {
        "slack_bot_token": "xoxb-real-looking",
        "slack_signing_secret": "s3cret-value",
        "vault_token": "hvs.real",
        "debug_access_policy": policy,
    }
    with pytest.raises(ConfigProblem, match="PUBLIC_URL"):
        load_configuration(**env)
    settings, parsed = load_configuration(**env, public_url="https://bot.example.com/")
    assert parsed.uses_step_up() and settings.public_url == "https://bot.example.com"
    policy.write_text(EXAMPLE_POLICY)
    assert load_configuration(**env)[0].public_url is None


def test_public_url_must_be_a_secure_origin() -> None:
    with pytest.raises(ValueError, match="https"):
        Settings(
            slack_bot_token="xoxb-real-looking",
            slack_signing_secret="s3cret-value",
            vault_token="hvs.real",
            public_url="http://bot.example.com",
        )


@pytest.mark.parametrize(
    "url",
    [
        "https://bot.example.com/debug-access",  # the page's script posts to /passkey/begin
        "https://bot.example.com/?team=ops",
        "https://bot.example.com/#x",
    ],
)
def test_public_url_must_be_an_origin_without_path_query_or_fragment(url: str) -> None:
    """The page loads its script from, and posts to, absolute paths (``/passkey/...``), and
    the link is PUBLIC_URL + ``/passkey#token``: a path, query or fragment would make a link
    that cannot work (or hides the token in a query)."""
    with pytest.raises(ValueError, match="origin"):
        RelyingParty.from_public_url(url)
    assert RelyingParty.from_public_url("https://bot.example.com/").rp_id == "bot.example.com"


# -- the lifecycle and the page ----------------------------------------------------------------


@pytest.fixture
def h() -> Harness:
    harness = make_lifecycle(parse_policy(STEP_UP_POLICY, "p.yml"))
    harness.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    return harness


def call(app: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    out = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], out


def api(h: Harness, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, out = call(passkey_app(h.lifecycle), "POST", path, body)
    return status, json.loads(out)


def token_in(text: str) -> str:
    match = LINK_TOKEN.search(text)
    assert match, text
    return match.group(1)


def enrol(h: Harness, user: str) -> SoftAuthenticator:
    device = SoftAuthenticator("localhost", ORIGIN)
    token = token_in(h.lifecycle.passkey_enrolment(user))
    status, begun = api(h, "/passkey/begin", {"token": token})
    assert status == 200 and begun["purpose"] == "enrol", begun
    assert begun["options"]["rp"]["id"] == "localhost"
    status, done = api(
        h, "/passkey/finish", {"token": token, "credential": device.create(begun["options"])}
    )
    assert status == 200 and "registered" in done["message"], done
    return device


def submit(h: Harness, reason: str = "INC-4211 checkout errors") -> int:
    valid = ValidRequest("payments-db", timedelta(hours=1), reason)
    return h.lifecycle.submit(REQUESTER, valid, "C0ORIGIN").view.id


def approval_token(h: Harness, request_id: int, user: str = APPROVER) -> str:
    return token_in(h.lifecycle.start_step_up(request_id, user))


def confirm(
    h: Harness, token: str, device: SoftAuthenticator, origin: str | None = None
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    status, begun = api(h, "/passkey/begin", {"token": token})
    assert status == 200, begun
    body = {"token": token, "credential": device.get(begun["options"], origin=origin)}
    status, done = api(h, "/passkey/finish", body)
    return status, done, body


def audit(h: Harness, action: str) -> list[AuditEvent]:
    with Session(h.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)))


def test_approve_with_a_passkey_issues_and_is_audited_as_stepped_up(h: Harness) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    assert h.lifecycle.approval_needs_step_up(request_id)
    token = approval_token(h, request_id)
    assert h.lifecycle.get(request_id).status is S.PENDING  # the click alone counts nothing
    assert [e.request_id for e in audit(h, AuditAction.STEP_UP_REQUESTED)] == [request_id]

    status, done, _ = confirm(h, token, device)
    assert status == 200 and "now active" in done["message"], done
    assert h.lifecycle.get(request_id).status is S.ACTIVE
    (approved,) = audit(h, AuditAction.APPROVED)
    assert json.loads(approved.details)["step_up"] == "passkey"
    with Session(h.engine) as session:
        (stored,) = session.exec(select(PasskeyCredential))
        assert stored.user == APPROVER and stored.sign_count == 1 and stored.last_used_at
        links = list(session.exec(select(StepUpLink)))
    # Only hashes: no stored link row holds the token itself.
    assert all(token not in repr(row) for row in links)
    assert any(row.token_hash == token_hash(token) for row in links)


def test_the_slack_path_cannot_approve_a_step_up_resource_without_the_passkey(h: Harness) -> None:
    request_id = submit(h)
    with pytest.raises(NotAllowed, match="passkey"):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert h.lifecycle.get(request_id).status is S.PENDING
    # The admins' command line is the one other way in (it records where it came from).
    with pytest.raises(NotAllowed, match="not an admin"):
        h.lifecycle.decide(request_id, OTHER_APPROVER, approve=True, via=Via.CLI)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True, via=Via.CLI)
    assert view.status is S.ACTIVE
    (approved,) = audit(h, AuditAction.APPROVED)
    assert json.loads(approved.details) == {"via": "cli"}


def test_an_approval_from_anywhere_but_the_command_line_needs_the_passkey(h: Harness) -> None:
    """Only ``Via.CLI`` is exempt (with its admin check): any other path an approval may come
    by (a new one added later) must not skip the passkey, nor the admin check, by default."""
    request_id = submit(h)
    with pytest.raises(NotAllowed, match="passkey"):
        h.lifecycle.decide(request_id, APPROVER, approve=True, via="web")
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_deny_needs_no_passkey(h: Harness) -> None:
    request_id = submit(h)
    assert h.lifecycle.decide(request_id, APPROVER, approve=False).status is S.DENIED


def test_an_approver_without_a_passkey_is_told_how_to_register_one(h: Harness) -> None:
    request_id = submit(h)
    answer = h.lifecycle.start_step_up(request_id, APPROVER)
    assert "not registered" in answer and "Approve* again" in answer
    status, begun = api(h, "/passkey/begin", {"token": token_in(answer)})
    assert status == 200 and begun["purpose"] == "enrol"
    assert audit(h, AuditAction.STEP_UP_REQUESTED) == []


def test_only_listed_approvers_get_a_link(h: Harness) -> None:
    request_id = submit(h)
    with pytest.raises(NotAllowed):
        h.lifecycle.start_step_up(request_id, REQUESTER)
    with pytest.raises(NotAllowed):
        h.lifecycle.start_step_up(request_id, "U0NOBODY")


def test_a_forged_token_gets_a_clear_refusal(h: Harness) -> None:
    status, answer = api(h, "/passkey/begin", {"token": "made-up-token"})
    assert status == 403 and "not valid" in answer["message"] and answer["ok"] is False
    status, answer = api(h, "/passkey/finish", {"token": "made-up-token", "credential": {}})
    assert status == 403 and "not valid" in answer["message"]


def test_another_approvers_passkey_does_not_count_and_is_audited(h: Harness) -> None:
    enrol(h, APPROVER)
    mallory = enrol(h, BYSTANDER)
    request_id = submit(h)
    token = approval_token(h, request_id)
    status, done, _ = confirm(h, token, mallory)
    assert status == 403 and "someone else" in done["message"]
    assert h.lifecycle.get(request_id).status is S.PENDING
    (refused,) = audit(h, AuditAction.STEP_UP_REFUSED)
    assert refused.actor == APPROVER and refused.request_id == request_id


def test_an_expired_link_is_refused(h: Harness) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    token = approval_token(h, request_id)
    h.clock.advance(TTL)
    status, answer = api(h, "/passkey/begin", {"token": token})
    assert status == 403 and "expired" in answer["message"]
    status, done = api(
        h, "/passkey/finish", {"token": token, "credential": device.get({"challenge": "x"})}
    )
    assert status == 403 and "expired" in done["message"]
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_a_link_for_a_decided_request_is_refused(h: Harness) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    token = approval_token(h, request_id)
    h.lifecycle.decide(request_id, OTHER_APPROVER, approve=False)
    status, answer = api(h, "/passkey/begin", {"token": token})
    assert status == 403 and "already been decided" in answer["message"]
    status, done = api(
        h, "/passkey/finish", {"token": token, "credential": device.get({"challenge": "x"})}
    )
    assert status == 403 and "already been decided" in done["message"]


def test_a_replayed_assertion_is_refused(h: Harness) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    status, _, body = confirm(h, approval_token(h, request_id), device)
    assert status == 200
    status, again = api(h, "/passkey/finish", body)
    assert status == 403 and "already used" in again["message"]
    # Replayed against a fresh link, it signs the wrong challenge.
    second = submit(h)
    body["token"] = approval_token(h, second)
    status, again = api(h, "/passkey/finish", body)
    assert status == 403 and "could not be verified" in again["message"]
    assert h.lifecycle.get(second).status is S.PENDING


def test_a_cloned_authenticator_whose_counter_went_back_is_refused(h: Harness) -> None:
    device = enrol(h, APPROVER)
    assert confirm(h, approval_token(h, submit(h)), device)[0] == 200
    assert confirm(h, approval_token(h, submit(h)), device)[0] == 200
    device.sign_count = 0  # the clone: same key, its counter behind the original's
    request_id = submit(h)
    status, done, _ = confirm(h, approval_token(h, request_id), device)
    assert status == 403 and "counter" in done["message"]
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_an_assertion_made_for_another_origin_is_refused(h: Harness) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    status, done, _ = confirm(
        h, approval_token(h, request_id), device, origin="https://evil.example"
    )
    assert status == 403 and "could not be verified" in done["message"]
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_an_enrolment_for_another_origin_is_refused(h: Harness) -> None:
    token = token_in(h.lifecycle.passkey_enrolment(APPROVER))
    _, begun = api(h, "/passkey/begin", {"token": token})
    device = SoftAuthenticator("localhost", "https://evil.example")
    status, done = api(
        h, "/passkey/finish", {"token": token, "credential": device.create(begun["options"])}
    )
    assert status == 403 and "Nothing was registered" in done["message"]
    assert not h.lifecycle.has_passkey(APPROVER)


def test_the_page_shows_what_is_approved_escaped(h: Harness) -> None:
    enrol(h, APPROVER)
    request_id = submit(h, reason="<script>alert(1)</script> & more")
    status, begun = api(h, "/passkey/begin", {"token": approval_token(h, request_id)})
    assert status == 200 and begun["purpose"] == "approve"
    summary = begun["summary_html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in summary
    assert "<script>" not in summary
    for shown in (REQUESTER, "payments-db", "1h", f"#{request_id}", APPROVER):
        assert shown in summary


def test_the_page_and_its_script_are_served_with_a_strict_policy(h: Harness) -> None:
    app = passkey_app(h.lifecycle)
    status, headers, body = call(app, "GET", "/passkey")
    assert status == 200 and b"<main>" in body and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    status, headers, body = call(app, "GET", "/passkey/passkey.js")
    assert status == 200 and b"navigator.credentials" in body
    # Refusals carry the same headers: nothing the bot answers may be framed or sniffed.
    for method, path, expected in (("GET", "/passkey/finish", 405), ("GET", "/elsewhere", 404)):
        status, headers, _ = call(app, method, path)
        assert status == expected
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    assert call(app, "GET", "/passkey/finish")[1]["Allow"] == "POST"


def test_malformed_posts_are_answered_400(h: Harness) -> None:
    app = passkey_app(h.lifecycle)
    assert call(app, "POST", "/passkey/begin", {"no": "token"})[0] == 400
    assert call(app, "POST", "/passkey/finish", {"token": "t", "credential": "x"})[0] == 400
    assert call(app, "POST", "/passkey/begin", None)[0] == 400


# -- Slack: the Approve button, the App Home --------------------------------------------------


@pytest.fixture
def edge() -> Edge:
    built = Edge(STEP_UP_POLICY)
    built.h.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    return built


def test_approve_on_a_step_up_resource_answers_with_a_link_and_decides_nothing(edge: Edge) -> None:
    enrol(edge.h, APPROVER)
    edge.slash("payments-db 30m INC-1 x")
    ack, respond = edge.click(ActionId.APPROVE, "1", APPROVER)
    assert ack.calls == [{}]
    (answer,) = respond.calls
    assert answer["response_type"] == "ephemeral" and "confirm with your passkey" in answer["text"]
    token_in(answer["text"])
    assert edge.h.lifecycle.get(1).status is S.PENDING and edge.h.notifier.deliveries == []


def test_approve_from_the_home_tab_sends_the_link_by_dm(edge: Edge) -> None:
    edge.slash("payments-db 30m INC-1 x")
    respond = Recorder()
    edge.app.actions[ActionId.APPROVE.value](
        ack=Recorder(),
        respond=respond,
        client=edge.client,
        body={"user": {"id": APPROVER}},  # the App Home has no response_url
        action={"action_id": ActionId.APPROVE.value, "value": "1"},
    )
    posted = [kw for method, kw in edge.client.calls if method == "chat.postMessage"]
    assert respond.calls == [] and len(posted) == 1
    assert "not registered" in posted[0]["text"]  # no passkey yet: the enrolment link
    token_in(posted[0]["text"])


def test_register_passkey_on_the_home_tab_sends_a_link_by_dm(edge: Edge) -> None:
    edge.app.actions[ActionId.ENROL_PASSKEY.value](
        ack=Recorder(), body={"user": {"id": APPROVER}}, client=edge.client
    )
    (opened,) = [kw for method, kw in edge.client.calls if method == "conversations.open"]
    (posted,) = [kw for method, kw in edge.client.calls if method == "chat.postMessage"]
    assert opened["users"] == APPROVER and "Register your passkey" in posted["text"]
    status, begun = api(edge.h, "/passkey/begin", {"token": token_in(posted["text"])})
    assert status == 200 and begun["purpose"] == "enrol"


def test_the_home_tab_offers_a_passkey_only_where_the_policy_asks_for_one(edge: Edge) -> None:
    def home_text(policy_text: str, has_passkey: bool | None) -> str:
        policy = parse_policy(policy_text, "p.yml")
        view = home_view(APPROVER, [], [], [], policy, None, has_passkey)
        return json.dumps(view["blocks"])

    assert ActionId.ENROL_PASSKEY.value in home_text(STEP_UP_POLICY, False)
    assert "None registered" in home_text(STEP_UP_POLICY, False)
    assert ActionId.ENROL_PASSKEY.value not in home_text(STEP_UP_POLICY, True)
    assert "Registered" in home_text(STEP_UP_POLICY, True)
    assert ActionId.ENROL_PASSKEY.value not in home_text(EXAMPLE_POLICY, None)


def test_socket_mode_serves_the_page_on_the_probes_port(h: Harness) -> None:
    app = probes_app(Readiness(), passkey_app(h.lifecycle))
    assert call(app, "GET", "/healthz")[0] == 200
    assert call(app, "GET", "/passkey")[0] == 200
    token = token_in(h.lifecycle.passkey_enrolment(APPROVER))
    status, _, out = call(app, "POST", "/passkey/begin", {"token": token})
    assert status == 200 and json.loads(out)["purpose"] == "enrol"


def test_one_passkey_per_person_and_each_registration_is_announced(h: Harness) -> None:
    enrol(h, APPROVER)
    assert any(
        action == AuditAction.PASSKEY_REGISTERED and APPROVER in text and alert
        for _view, action, text, alert in h.notifier.audits
    )
    assert any(user == APPROVER and "not you" in text for user, text in h.notifier.tells)
    # A taken-over Slack session must not add the attacker's passkey next to the real one.
    with pytest.raises(Conflict, match="already have a passkey"):
        h.lifecycle.passkey_enrolment(APPROVER)


def test_an_enrolment_link_made_before_the_first_registration_cannot_add_a_second(
    h: Harness,
) -> None:
    spare = token_in(h.lifecycle.passkey_enrolment(APPROVER))
    enrol(h, APPROVER)
    status, answer = api(h, "/passkey/begin", {"token": spare})
    assert status == 403 and "already have a passkey" in answer["message"]
    with Session(h.engine) as session:
        assert len(list(session.exec(select(PasskeyCredential)))) == 1


# -- break-glass --------------------------------------------------------------------------------

BREAK_GLASS_POLICY = EXAMPLE_POLICY.replace(
    "    approvers: [U0ALICE]\n",
    "    approvers: [U0ALICE]\n    break_glass: {max_duration: 30m, step_up: passkey}\n",
)


@pytest.fixture
def bg() -> Harness:
    harness = make_lifecycle(parse_policy(BREAK_GLASS_POLICY, "p.yml"))
    harness.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    return harness


def test_break_glass_with_step_up_is_issued_only_after_the_passkey(bg: Harness) -> None:
    valid = ValidRequest("orders-logs", timedelta(minutes=15), "INC-9 <site> down")
    assert bg.lifecycle.break_glass_needs_step_up("orders-logs")
    assert not bg.lifecycle.break_glass_needs_step_up("payments-db")
    with pytest.raises(NotAllowed, match="passkey"):
        bg.lifecycle.submit(REQUESTER, valid, None, break_glass=True)
    first = bg.lifecycle.start_break_glass_step_up(REQUESTER, valid, "C0ORIGIN")
    assert "not registered" in first  # the requester enrols first
    device = enrol(bg, REQUESTER)

    token = token_in(bg.lifecycle.start_break_glass_step_up(REQUESTER, valid, "C0ORIGIN"))
    assert bg.issuer.calls == []  # nothing created or issued on the click
    status, begun = api(bg, "/passkey/begin", {"token": token})
    assert status == 200 and begun["purpose"] == "break_glass"
    assert "INC-9 &lt;site&gt; down" in begun["summary_html"] and "15m" in begun["summary_html"]
    body = {"token": token, "credential": device.get(begun["options"])}
    status, done = api(bg, "/passkey/finish", body)
    assert status == 200 and "Break-glass access #1" in done["message"], done
    assert bg.lifecycle.get(1).status is S.ACTIVE and bg.lifecycle.get(1).break_glass
    (event,) = audit(bg, AuditAction.BREAK_GLASS)
    assert json.loads(event.details)["step_up"] == "passkey"
    (clicked,) = audit(bg, AuditAction.STEP_UP_REQUESTED)
    assert clicked.resource == "orders-logs" and json.loads(clicked.details)["for"] == "break_glass"
    status, again = api(bg, "/passkey/finish", body)
    assert status == 403 and "already used" in again["message"]


def test_break_glass_is_checked_before_the_link_is_sent(bg: Harness) -> None:
    enrol(bg, REQUESTER)
    too_long = ValidRequest("orders-logs", timedelta(hours=2), "INC-9 site down")
    with pytest.raises(UserError):
        bg.lifecycle.start_break_glass_step_up(REQUESTER, too_long, None)
    with Session(bg.engine) as session:
        assert [r.purpose for r in session.exec(select(StepUpLink))] == ["enrol"]


def test_the_slash_command_answers_break_glass_with_the_link() -> None:
    edge = Edge(BREAK_GLASS_POLICY)
    edge.h.lifecycle.step_up.settings = StepUpSettings(public_url=ORIGIN, link_ttl=TTL)
    enrol(edge.h, REQUESTER)
    _, respond = edge.slash("orders-logs 15m --break-glass INC-9 site down")
    (answer,) = respond.calls
    assert "needs your passkey" in answer["text"]
    token_in(answer["text"])
    assert edge.requests() == []


def test_check_names_the_passkey_page_and_its_relying_party(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = SimpleNamespace(
        debug_access_policy="policy.yml",
        database_url="sqlite://",
        vault_addr="http://vault.invalid",
        slack_api_url="http://slack.invalid",
        public_url="https://debug-access.internal.example.com",
    )
    policy = parse_policy(STEP_UP_POLICY)
    monkeypatch.setattr(checks, "load_configuration", lambda: (settings, policy))
    checks.run_checks()
    lines = capsys.readouterr().out.splitlines()
    assert (
        "[ok ] passkey step-up: page at https://debug-access.internal.example.com/passkey "
        "(RP id debug-access.internal.example.com; approvers' browsers must reach it)"
    ) in lines


def _lock(h: Harness, user: str) -> None:
    """A lock written as the lock's first step writes it (the lock's own tests cover the rest)."""
    with Session(h.engine) as session:
        session.add(
            UserLock(
                user=user,
                reason="session token leaked",
                locked_by="U0SEC",
                locked_via="slack",
                locked_at=h.clock.now(),
            )
        )
        session.commit()


def test_a_locked_approver_gets_no_link_and_a_link_from_before_the_lock_does_not_count(
    h: Harness,
) -> None:
    device = enrol(h, APPROVER)
    request_id = submit(h)
    token = approval_token(h, request_id)  # asked for before the lock
    _lock(h, APPROVER)
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.start_step_up(submit(h), APPROVER)
    status, done, _body = confirm(h, token, device)
    assert status != 200 and "locked your access" in done["message"], done
    assert h.lifecycle.get(request_id).status is S.PENDING


def test_a_locked_user_cannot_plant_a_passkey_for_after_the_unlock(h: Harness) -> None:
    token = token_in(h.lifecycle.passkey_enrolment(OTHER_APPROVER))  # asked for before the lock
    _lock(h, OTHER_APPROVER)
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.passkey_enrolment(OTHER_APPROVER)
    status, begun = api(h, "/passkey/begin", {"token": token})
    assert status != 200 and "locked your access" in begun["message"], begun
    assert not h.lifecycle.has_passkey(OTHER_APPROVER)


def test_an_admin_resets_a_lost_passkey_and_the_user_registers_a_new_one(h: Harness) -> None:
    old = enrol(h, OTHER_APPROVER)
    with pytest.raises(NotAllowed, match="not an admin"):
        h.lifecycle.reset_passkey(OTHER_APPROVER, BYSTANDER, Via.CLI)
    assert h.lifecycle.reset_passkey(OTHER_APPROVER, APPROVER, Via.CLI) == 1
    assert not h.lifecycle.has_passkey(OTHER_APPROVER)
    (reset,) = audit(h, AuditAction.PASSKEY_RESET)
    details = json.loads(reset.details)
    assert (reset.actor, details["user"], details["via"]) == (APPROVER, OTHER_APPROVER, "cli")
    assert any(
        "removed the passkey of <@U0BOB> via CLI" in t for _v, _a, t, _al in h.notifier.audits
    )
    with pytest.raises(Conflict, match="has no passkey"):
        h.lifecycle.reset_passkey(OTHER_APPROVER, APPROVER, Via.CLI)
    # The old passkey no longer counts; a new one does.
    request_id = submit(h)
    new = enrol(h, OTHER_APPROVER)
    status, done, _ = confirm(h, approval_token(h, request_id, OTHER_APPROVER), old)
    assert status != 200, done
    status, done, _ = confirm(h, approval_token(h, request_id, OTHER_APPROVER), new)
    assert status == 200, done


# -- old links are purged -------------------------------------------------------------------------


def link_rows(h: Harness) -> list[StepUpLink]:
    with Session(h.engine) as session:
        return list(session.exec(select(StepUpLink).order_by(col(StepUpLink.id))))


def test_used_and_expired_links_are_purged_by_the_tick_after_a_day(h: Harness) -> None:
    device = enrol(h, APPROVER)  # one used link
    request_id = submit(h)
    approval_token(h, request_id)  # one left to expire
    h.clock.advance(LINK_RETENTION + TTL - timedelta(seconds=1))
    fresh = approval_token(h, submit(h))  # made just now: kept
    assert len(link_rows(h)) == 3
    # The used one, used over a day ago; the other has been expired a second less than a day.
    assert h.tick()["step-up links purged"] == 1
    h.clock.advance(timedelta(seconds=2))
    assert h.tick()["step-up links purged"] == 1
    (kept,) = link_rows(h)
    assert kept.token_hash == token_hash(fresh)
    assert confirm(h, fresh, device)[0] == 200  # a live link still works
    assert h.tick()["step-up links purged"] == 0


def test_the_purge_deletes_a_bounded_batch_per_call(h: Harness) -> None:
    enrol(h, APPROVER)
    request_id = submit(h)
    for _ in range(3):
        approval_token(h, request_id)
    h.clock.advance(LINK_RETENTION + TTL + timedelta(seconds=1))
    assert purge_links(h.engine, h.clock.now(), limit=2) == 2
    assert len(link_rows(h)) == 2  # the enrolment link and one approval link are left
    assert purge_links(h.engine, h.clock.now(), limit=2) == 2
    assert link_rows(h) == []


# -- refusals per link are bounded ----------------------------------------------------------------


def test_a_link_is_spent_after_max_refusals_so_its_audit_events_are_bounded(h: Harness) -> None:
    device = enrol(h, APPROVER)
    mallory = enrol(h, BYSTANDER)
    request_id = submit(h)
    token = approval_token(h, request_id)
    for _ in range(MAX_REFUSALS - 1):
        status, done, last_body = confirm(h, token, mallory)
        assert status == 403 and "someone else" in done["message"]
    status, done, _ = confirm(h, token, mallory)
    assert status == 403 and "no longer works" in done["message"]
    refused = audit(h, AuditAction.STEP_UP_REFUSED)
    assert len(refused) == MAX_REFUSALS
    assert "link_spent" in refused[-1].details
    assert not any("link_spent" in event.details for event in refused[:-1])

    # Spent: neither more refusals nor the right passkey count, and nothing more is audited.
    status, again = api(h, "/passkey/finish", last_body)
    assert status == 403 and "already used" in again["message"]
    status, answer = api(h, "/passkey/begin", {"token": token})
    assert status == 403 and "already used" in answer["message"]
    status, again = api(
        h, "/passkey/finish", {"token": token, "credential": device.get({"challenge": "x"})}
    )
    assert status == 403 and "already used" in again["message"]
    assert len(audit(h, AuditAction.STEP_UP_REFUSED)) == MAX_REFUSALS
    assert h.lifecycle.get(request_id).status is S.PENDING
    # A new link works as before.
    assert confirm(h, approval_token(h, request_id), device)[0] == 200
