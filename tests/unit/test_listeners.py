"""The Bolt listeners, called the way Bolt calls them, with recording ack/respond/client doubles.

They are thin on purpose; these tests pin the contract at the edge: every request is acked, a
user error becomes one ephemeral warning, and nothing is stored for bad input.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import Session, select

from bot.slack import blocks
from bot.slack.ids import COMMAND, ActionId, BlockId, CallbackId, InputId
from bot.slack.listeners import actions, commands, home, views
from bot.store.models import AccessRequest
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    REQUESTER,
    FakeBoltApp,
    FakeWebClient,
    Harness,
    Recorder,
    make_lifecycle,
)


class Edge:
    """A harness plus the registered handlers."""

    def __init__(self, policy: str = EXAMPLE_POLICY) -> None:
        self.h: Harness = make_lifecycle(policy)
        self.app = FakeBoltApp()
        for module in (commands, actions):
            module.register(self.app, self.h.lifecycle)  # type: ignore[arg-type]
        self.published: list[str] = []
        views.register(self.app, self.h.lifecycle, self.published.append)  # type: ignore[arg-type]
        home.register(self.app, self.published.append)  # type: ignore[arg-type]
        self.client = FakeWebClient()

    def requests(self) -> list[AccessRequest]:
        with Session(self.h.engine) as session:
            return list(session.exec(select(AccessRequest)))

    def slash(
        self, text: str, user: str = REQUESTER, channel: str = "C0ORIGIN"
    ) -> tuple[Recorder, Recorder]:
        ack, respond = Recorder(), Recorder()
        self.app.commands[COMMAND](
            ack=ack,
            respond=respond,
            client=self.client,
            command={
                "user_id": user,
                "text": text,
                "channel_id": channel,
                "trigger_id": "trigger-1",
            },
        )
        return ack, respond

    def click(self, action_id: ActionId, value: str, user: str) -> tuple[Recorder, Recorder]:
        ack, respond = Recorder(), Recorder()
        self.app.actions[action_id.value](
            ack=ack,
            respond=respond,
            client=self.client,
            body={
                "user": {"id": user},
                "response_url": "https://hooks.example/1",
                "trigger_id": "trigger-2",
            },
            action={"action_id": action_id.value, "value": value},
        )
        return ack, respond

    def submit_modal(
        self,
        resource: str,
        duration: str,
        reason: str,
        user: str = REQUESTER,
        metadata: str | None = '{"channel": "C0ORIGIN"}',
        public_key: str | None = None,
    ) -> Recorder:
        ack = Recorder()
        state = {
            BlockId.RESOURCE.value: {
                InputId.RESOURCE.value: {
                    "type": "static_select",
                    "selected_option": {"value": resource} if resource else None,
                }
            },
            BlockId.DURATION.value: {
                InputId.DURATION.value: {"type": "plain_text_input", "value": duration or None}
            },
            BlockId.REASON.value: {
                InputId.REASON.value: {"type": "plain_text_input", "value": reason}
            },
        }
        if public_key is not None:
            state[BlockId.PUBLIC_KEY.value] = {
                InputId.PUBLIC_KEY.value: {"type": "plain_text_input", "value": public_key}
            }
        view: dict[str, Any] = {
            "callback_id": CallbackId.REQUEST_MODAL.value,
            "state": {"values": state},
        }
        if metadata is not None:
            view["private_metadata"] = metadata
        self.app.views[CallbackId.REQUEST_MODAL.value](
            ack=ack, body={"user": {"id": user}}, view=view, client=self.client
        )
        return ack


@pytest.fixture
def edge() -> Edge:
    return Edge()


def test_a_request_is_acked_before_anything_is_written_and_carried_out_after(
    edge: Edge,
) -> None:
    """The ack goes out before the request is stored or anyone is asked: the rest is handed on
    (``later``) to run off the listener thread."""
    edge.app.hold_back = True
    ack, respond = edge.slash("payments-db 30m INC-1 checkout errors")
    assert ack.calls == [{}]
    assert edge.requests() == [] and respond.calls == [] and edge.h.notifier.calls == []
    (step,) = edge.app.deferred
    step()
    assert len(edge.requests()) == 1
    assert "#1" in respond.calls[0]["text"]


def test_every_surface_is_registered(edge: Edge) -> None:
    assert set(edge.app.commands) == {COMMAND}
    assert set(edge.app.actions) == {a.value for a in ActionId} | {InputId.RESOURCE.value}
    assert set(edge.app.views) == {c.value for c in CallbackId}
    assert set(edge.app.events) == {"app_home_opened"}


# -- the slash command -----------------------------------------------------------------------------


def test_help_is_the_ack(edge: Edge) -> None:
    ack, respond = edge.slash("help")
    assert ack.calls == [{"text": blocks.help_text(edge.h.policy)}]
    assert respond.calls == [] and edge.client.calls == []


def test_no_text_opens_the_modal(edge: Edge) -> None:
    ack, respond = edge.slash("", channel="C0HERE")
    assert ack.calls == [{}]
    ((method, kwargs),) = edge.client.calls
    assert method == "views.open" and kwargs["trigger_id"] == "trigger-1"
    assert kwargs["view"] == blocks.request_modal(edge.h.policy, "C0HERE")
    assert respond.calls == []


def test_a_request_is_stored_and_confirmed(edge: Edge) -> None:
    ack, respond = edge.slash("payments-db 30m INC-4211 checkout errors")
    assert ack.calls == [{}]
    (request,) = edge.requests()
    assert (request.resource, request.duration_seconds, request.status) == (
        "payments-db",
        1800,
        "pending",
    )
    ((reply,),) = [list(call.values()) for call in respond.calls]
    assert f"Request #{request.id}" in reply and f"<@{APPROVER}>" in reply


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("payments-db 30 INC-1 x", "is not a duration"),
        ("payments-db 0m INC-1 x", "too short"),
        ("payments-db -5m INC-1 x", "is not a duration"),
        ("payments-db 5h INC-1 x", "at most 4h"),
        ("payments-db", "Missing reason"),
        ("payments-db 30m", "Please give a reason"),
        ("<!channel> 30m INC-1 x", "Unknown resource"),
        ("list everything", "takes no arguments"),
        ("revoke", "Usage"),
        ("revoke abc", "is not a request id"),
        ("revoke 99999999999", "`99999999999` is not a request id"),
        ("extend 2147483648 30m", "`2147483648` is not a request id"),
    ],
)
def test_bad_input_is_an_ephemeral_warning_and_stores_nothing(
    edge: Edge, text: str, fragment: str
) -> None:
    ack, respond = edge.slash(text)
    ((reply,),) = [list(call.values()) for call in ack.calls]
    assert reply.startswith(":warning: ") and fragment in reply
    assert "<!channel>" not in reply
    assert respond.calls == []
    assert edge.requests() == []
    assert edge.h.notifier.calls == []


def test_revoke_with_a_superscript_digit_is_acked_with_a_warning(edge: Edge) -> None:
    ack, _ = edge.slash("revoke ²")
    assert ack.calls and ack.calls[0]["text"].startswith(":warning:")


def test_refusals_after_ack_are_responded(edge: Edge) -> None:
    ack, respond = edge.slash("orders-logs 30m INC-1 x", user=APPROVER)
    assert ack.calls == [{}]
    ((reply,),) = [list(call.values()) for call in respond.calls]
    assert reply.startswith(":warning: Nobody but you")


def test_list_and_revoke(edge: Edge) -> None:
    edge.slash("payments-db 30m INC-1 x")
    _, respond = edge.slash("list")
    assert "#1 `payments-db` 30m — waiting for approval" in respond.calls[0]["text"]
    _, respond = edge.slash("revoke #1", user=BYSTANDER)
    assert respond.calls[0]["text"].startswith(":warning: Only the requester")
    _, respond = edge.slash("revoke 1")
    assert respond.calls[0]["text"] == "Request #1 is now withdrawn."
    _, respond = edge.slash("list")
    assert "no pending requests" in respond.calls[0]["text"]


# -- buttons ---------------------------------------------------------------------------------------


def _ephemeral(respond: Recorder) -> str:
    (call,) = respond.calls
    assert call["response_type"] == "ephemeral" and call["replace_original"] is False
    return str(call["text"])


def test_approve_button(edge: Edge) -> None:
    edge.slash("payments-db 30m INC-1 x")
    ack, respond = edge.click(ActionId.APPROVE, "1", APPROVER)
    assert ack.calls == [{}]
    assert _ephemeral(respond) == "You approved request #1; it is now active."
    assert len(edge.h.notifier.deliveries) == 1


def test_deny_button(edge: Edge) -> None:
    edge.slash("payments-db 30m INC-1 x")
    _, respond = edge.click(ActionId.DENY, "1", APPROVER)
    assert _ephemeral(respond) == "You denied request #1; it is now denied."
    assert edge.h.issuer.calls == []


@pytest.mark.parametrize(
    ("action", "value", "user", "fragment"),
    [
        (ActionId.APPROVE, "1", REQUESTER, "your own request"),
        (ActionId.APPROVE, "1", BYSTANDER, "Only the approvers"),
        (ActionId.DENY, "1", BYSTANDER, "Only the approvers"),
        (ActionId.APPROVE, "99", APPROVER, "no request #99"),
        (ActionId.APPROVE, "1; drop table", APPROVER, "is not a request id"),
        (ActionId.APPROVE, "2147483648", APPROVER, "`2147483648` is not a request id"),
        (ActionId.DENY, "99999999999", APPROVER, "`99999999999` is not a request id"),
        (ActionId.REVIEW, "2147483648", APPROVER, "is not a request id"),
        (ActionId.REVOKE, "2147483648", REQUESTER, "is not a request id"),
        (ActionId.EXTEND, "2147483648", REQUESTER, "is not a request id"),
        (ActionId.EXTEND, "1", REQUESTER, "only active access can be extended"),
        (ActionId.REVOKE, "1", BYSTANDER, "Only the requester"),
    ],
)
def test_refused_clicks_change_nothing(
    edge: Edge, action: ActionId, value: str, user: str, fragment: str
) -> None:
    edge.slash("payments-db 30m INC-1 x")
    ack, respond = edge.click(action, value, user)
    assert ack.calls == [{}]
    text = _ephemeral(respond)
    assert text.startswith(":warning: ") and fragment in text
    assert [r.status for r in edge.requests()] == ["pending"]
    assert edge.h.issuer.calls == []


def test_a_request_from_a_channel_id_slack_would_not_send_is_refused(edge: Edge) -> None:
    ack, respond = edge.slash("payments-db 30m INC-1 x", channel="C" + "A" * 40)
    assert ack.calls == [{}]
    ((reply,),) = [list(call.values()) for call in respond.calls]
    assert reply.startswith(":warning: ") and "is not a Slack channel id" in reply
    assert edge.requests() == [] and edge.h.notifier.calls == []


def active(edge: Edge) -> int:
    """A live grant of REQUESTER's; its request id."""
    edge.slash("payments-db 30m INC-1 x")
    edge.click(ActionId.APPROVE, "1", APPROVER)
    assert [r.status for r in edge.requests()] == ["active"]
    return 1


@pytest.mark.parametrize("user", [APPROVER, BYSTANDER])
def test_extend_refuses_someone_elses_grant_before_showing_it(edge: Edge, user: str) -> None:
    request_id = active(edge)
    ack, respond = edge.click(ActionId.EXTEND, str(request_id), user)
    assert ack.calls == [{}]
    assert _ephemeral(respond) == ":warning: Only the requester can ask to extend their access."
    assert edge.client.calls == []  # no form opened


def test_extend_from_the_home_tab_refuses_by_dm(edge: Edge) -> None:
    request_id = active(edge)
    ack = Recorder()
    edge.app.actions[ActionId.EXTEND.value](
        ack=ack,
        respond=Recorder(),
        client=edge.client,
        body={"user": {"id": BYSTANDER}, "trigger_id": "trigger-3"},  # no response_url
        action={"action_id": ActionId.EXTEND.value, "value": str(request_id)},
    )
    assert [m for m, _ in edge.client.calls] == ["conversations.open", "chat.postMessage"]
    assert "Only the requester" in edge.client.calls[1][1]["text"]


def test_extend_opens_the_form_for_the_requester(edge: Edge) -> None:
    request_id = active(edge)
    _, respond = edge.click(ActionId.EXTEND, str(request_id), REQUESTER)
    assert respond.calls == []
    ((method, kwargs),) = edge.client.calls
    assert method == "views.open" and kwargs["view"]["callback_id"] == CallbackId.EXTEND_MODAL
    assert blocks.metadata_request_id(kwargs["view"]) == request_id


def submit_extension(edge: Edge, user: str, metadata: str, duration: str = "30m") -> Recorder:
    ack = Recorder()
    values = {
        BlockId.EXTEND_DURATION.value: {
            InputId.EXTEND_DURATION.value: {"type": "plain_text_input", "value": duration}
        }
    }
    edge.app.views[CallbackId.EXTEND_MODAL.value](
        ack=ack,
        body={"user": {"id": user}},
        view={"private_metadata": metadata, "state": {"values": values}},
        client=edge.client,
    )
    return ack


@pytest.mark.parametrize(
    "metadata",
    [
        '{"request_id": 1e30}',
        '{"request_id": 2147483648}',
        '{"request_id": Infinity}',
        '{"request_id": NaN}',
        '{"request_id": "1"}',
        '{"request_id": true}',
        '{"request_id": 0}',
        '{"request_id": 1.0}',
        '{"request_id": null}',
        "{}",
        "[1]",
        "not json",
    ],
)
def test_an_extension_form_with_damaged_metadata_is_refused(edge: Edge, metadata: str) -> None:
    active(edge)
    ack = submit_extension(edge, REQUESTER, metadata)
    assert ack.calls == [
        {
            "response_action": "errors",
            "errors": {
                BlockId.EXTEND_DURATION.value: (
                    "This form is out of date or damaged. Close it and open it again."
                )
            },
        }
    ]
    assert len(edge.requests()) == 1 and edge.client.calls == []


def test_an_extension_form_submitted_by_someone_else_is_refused(edge: Edge) -> None:
    request_id = active(edge)
    ack = submit_extension(edge, BYSTANDER, json.dumps({"request_id": request_id}))
    ((call),) = ack.calls
    assert call["response_action"] == "errors"
    assert "Only the requester" in call["errors"][BlockId.EXTEND_DURATION.value]
    assert len(edge.requests()) == 1


def test_revoke_button(edge: Edge) -> None:
    edge.slash("payments-db 30m INC-1 x")
    edge.click(ActionId.APPROVE, "1", APPROVER)
    _, respond = edge.click(ActionId.REVOKE, "1", REQUESTER)
    assert _ephemeral(respond) == "Request #1 is now ended."
    assert not edge.h.issuer.live


# -- the modal -------------------------------------------------------------------------------------


def test_modal_submission_stores_and_confirms_in_the_channel(edge: Edge) -> None:
    ack = edge.submit_modal("payments-db", "45m", "INC-7\nsecond line")
    assert ack.calls == [{}]
    (request,) = edge.requests()
    assert (request.duration_seconds, request.reason) == (2700, "INC-7 second line")
    ((method, kwargs),) = edge.client.calls
    assert (method, kwargs["channel"], kwargs["user"]) == (
        "chat.postEphemeral",
        "C0ORIGIN",
        REQUESTER,
    )
    assert f"Request #{request.id}" in kwargs["text"]


def test_modal_default_duration(edge: Edge) -> None:
    edge.submit_modal("payments-db", "", "INC-7 x")
    assert edge.requests()[0].duration_seconds == 3600


@pytest.mark.parametrize(
    ("resource", "duration", "reason", "block", "fragment"),
    [
        ("payments-db", "30", "INC-1 x", BlockId.DURATION, "is not a duration"),
        ("payments-db", "9h", "INC-1 x", BlockId.DURATION, "at most 4h"),
        ("orders-logs", "", "INC-1 x", BlockId.DURATION, "Say how long"),
        ("nope", "30m", "INC-1 x", BlockId.RESOURCE, "Unknown resource"),
        ("", "30m", "INC-1 x", BlockId.RESOURCE, "Unknown resource"),
        ("payments-db", "30m", " ", BlockId.REASON, "Please give a reason"),
        ("payments-db", "30m", "x" * 501, BlockId.REASON, "too long"),
    ],
)
def test_modal_errors_appear_under_their_field(
    edge: Edge, resource: str, duration: str, reason: str, block: BlockId, fragment: str
) -> None:
    ack = edge.submit_modal(resource, duration, reason)
    ((call),) = ack.calls
    assert call["response_action"] == "errors"
    assert list(call["errors"]) == [block.value]
    assert fragment in call["errors"][block.value]
    assert edge.requests() == [] and edge.client.calls == []


@pytest.mark.parametrize("metadata", [None, '{"channel": null}', '{"channel": "D0DM"}'])
def test_modal_confirms_by_dm_without_a_channel(edge: Edge, metadata: str | None) -> None:
    edge.submit_modal("payments-db", "30m", "INC-1 x", metadata=metadata)
    assert [m for m, _ in edge.client.calls] == ["conversations.open", "chat.postMessage"]
    assert edge.client.calls[1][1]["channel"] == f"D-{REQUESTER}"
    assert len(edge.requests()) == 1


@pytest.mark.parametrize(
    "metadata",
    [
        "not json",
        '{"channel": 5}',
        '["C0X"]',
        json.dumps({"channel": "C" + "A" * 40}),
        json.dumps({"channel": "C0X\u0000"}),
        json.dumps({"channel": "c0lower"}),
        json.dumps({"channel": "C0X\nERROR forged"}),
    ],
)
def test_a_form_with_damaged_metadata_is_refused_before_anything_is_stored(
    edge: Edge, metadata: str
) -> None:
    """private_metadata we did not write (an old form, or a forged one): the channel in it
    would be stored with the request, so the form is refused, with the reason on it."""
    ack = edge.submit_modal("payments-db", "30m", "INC-1 x", metadata=metadata)
    ((call),) = ack.calls
    assert call["response_action"] == "errors"
    assert call["errors"] == {
        BlockId.RESOURCE.value: "This form is out of date or damaged. Close it and open it again."
    }
    assert edge.requests() == [] and edge.client.calls == []


def test_modal_refusal_after_ack_is_posted(edge: Edge) -> None:
    edge.submit_modal("orders-logs", "30m", "INC-1 x", user=APPROVER)
    ((_, kwargs),) = edge.client.calls
    assert kwargs["text"].startswith(":warning: Nobody but you")


def test_modal_confirmation_failure_is_swallowed(edge: Edge) -> None:
    edge.client.fail_with = OSError("connection refused")
    ack = edge.submit_modal("payments-db", "30m", "INC-1 x")
    assert ack.calls == [{}]
    assert len(edge.requests()) == 1  # the request stands; only the receipt was lost


def test_modal_private_metadata_round_trip(edge: Edge) -> None:
    modal = blocks.request_modal(edge.h.policy, "C0ROUND")
    edge.submit_modal("payments-db", "30m", "INC-1 x", metadata=modal["private_metadata"])
    assert edge.client.calls[0][1]["channel"] == "C0ROUND"
    assert json.loads(modal["private_metadata"]) == {"channel": "C0ROUND"}


# -- SSH certificates: the key field, the key form, the redrawn form ------------------------------


@pytest.fixture
def ssh_edge() -> Edge:
    from tests.unit.test_ssh_grants import SSH_POLICY

    return Edge(SSH_POLICY)


def test_a_private_key_in_the_form_is_refused_under_the_key_field(ssh_edge: Edge) -> None:
    from tests.unit.test_ssh_grants import PRIVATE_KEY

    ack = ssh_edge.submit_modal("ops-host", "30m", "INC-9 disk full", public_key=PRIVATE_KEY)
    (call,) = ack.calls
    reply = call["errors"]
    assert call["response_action"] == "errors" and set(reply) == {BlockId.PUBLIC_KEY.value}
    assert "private key" in reply[BlockId.PUBLIC_KEY.value]
    assert "*" not in reply[BlockId.PUBLIC_KEY.value]  # form errors are plain text
    assert ssh_edge.requests() == [] and ssh_edge.client.calls == []


def test_a_form_drawn_before_the_key_field_gets_the_error_under_the_resource(
    ssh_edge: Edge,
) -> None:
    ack = ssh_edge.submit_modal("ops-host", "30m", "INC-9 disk full")
    (call,) = ack.calls
    assert call["response_action"] == "errors"
    assert "App Home" in call["errors"][BlockId.RESOURCE.value]
    assert ssh_edge.requests() == []


def test_a_form_with_a_public_key_stores_the_request(ssh_edge: Edge) -> None:
    from tests.unit.test_ssh_keys import ED25519_FP, ED25519_LINE

    ack = ssh_edge.submit_modal("ops-host", "30m", "INC-9 disk full", public_key=ED25519_LINE)
    assert ack.calls == [{}]
    (stored,) = ssh_edge.requests()
    assert stored.public_key == " ".join(ED25519_LINE.split()[:2])
    assert ssh_edge.h.lifecycle.get(stored.id or 0).key_fingerprint == ED25519_FP


def test_choosing_a_resource_redraws_the_form_in_place(ssh_edge: Edge) -> None:
    ack = Recorder()
    ssh_edge.app.actions[InputId.RESOURCE.value](
        ack=ack,
        client=ssh_edge.client,
        body={
            "user": {"id": REQUESTER},
            "view": {"id": "V1", "hash": "h1", "private_metadata": '{"channel": "C0HERE"}'},
            "actions": [{"selected_option": {"value": "ops-host"}}],
        },
    )
    assert ack.calls == [{}]
    ((method, kwargs),) = ssh_edge.client.calls
    assert method == "views.update" and kwargs["view_id"] == "V1" and kwargs["hash"] == "h1"
    assert kwargs["view"] == blocks.request_modal(ssh_edge.h.policy, "C0HERE", "ops-host", None)


def test_the_key_form_registers_and_republishes_the_home(ssh_edge: Edge) -> None:
    from tests.unit.test_ssh_grants import PRIVATE_KEY
    from tests.unit.test_ssh_keys import ED25519_FP, ED25519_LINE

    def submit(text: str) -> Recorder:
        ack = Recorder()
        values = {BlockId.SSH_KEY.value: {InputId.SSH_KEY.value: {"value": text}}}
        ssh_edge.app.views[CallbackId.SSH_KEY_MODAL.value](
            ack=ack, body={"user": {"id": REQUESTER}}, view={"state": {"values": values}}
        )
        return ack

    refused = submit(PRIVATE_KEY)
    assert "private key" in refused.calls[0]["errors"][BlockId.SSH_KEY.value]
    assert ssh_edge.published == []
    assert ssh_edge.h.lifecycle.registered_key_fingerprint(REQUESTER) is None
    assert submit(ED25519_LINE).calls == [{}]
    assert ssh_edge.published == [REQUESTER]
    assert ssh_edge.h.lifecycle.registered_key_fingerprint(REQUESTER) == ED25519_FP

    ssh_edge.app.actions[ActionId.OPEN_SSH_KEY_FORM.value](
        ack=Recorder(), body={"user": {"id": REQUESTER}, "trigger_id": "t"}, client=ssh_edge.client
    )
    ((method, kwargs),) = ssh_edge.client.calls
    assert method == "views.open" and kwargs["view"] == blocks.ssh_key_modal(ED25519_FP)
