"""What Slack shows for a grant that ends by expiry only (an SSH certificate): the form's key
field, the approval warning, the certificate DM without Extend, the honest Revoke now, and the
App Home's key registration."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from slack_sdk.models.views import View

from bot.issuer import SecretValue
from bot.policy import parse_policy
from bot.ports import CredentialDelivery
from bot.slack import blocks
from bot.slack.home import home_view
from bot.slack.ids import ActionId, BlockId, CallbackId, InputId
from tests.unit.fakes import EXAMPLE_POLICY, REQUESTER, START
from tests.unit.test_blocks import DECIDED, PENDING, _actions, _texts, assert_valid_block_kit
from tests.unit.test_ssh_grants import SSH_POLICY

POLICY = parse_policy(SSH_POLICY)
FINGERPRINT = "SHA256:YFzVUx5tc1y+v1o5NjvgIHr53yJzQAEICL42IrZMtmM"
UNTIL = START + timedelta(minutes=31)
SSH_PENDING = replace(
    PENDING, resource="ops-host", ends_by_expiry_only=True, key_fingerprint=FINGERPRINT
)
SSH_ACTIVE = replace(
    DECIDED,
    resource="ops-host",
    ends_by_expiry_only=True,
    key_fingerprint=FINGERPRINT,
    status=DECIDED.status.ACTIVE,
    expires_at=UNTIL,
)


def _inputs(modal: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (b["block_id"], b["element"]["action_id"]) for b in modal["blocks"] if b["type"] == "input"
    ]


def test_the_form_shows_a_key_field_only_for_a_kind_that_signs_a_key() -> None:
    plain = blocks.request_modal(POLICY, "C0ORIGIN")
    resource_block = plain["blocks"][0]
    assert resource_block["dispatch_action"] is True  # choosing redraws the form
    assert (BlockId.PUBLIC_KEY, InputId.PUBLIC_KEY) not in _inputs(plain)
    assert _inputs(blocks.request_modal(POLICY, None, selected="payments-db")) == _inputs(plain)

    ssh = blocks.request_modal(POLICY, "C0ORIGIN", selected="ops-host")
    assert View(**ssh).to_dict() == ssh
    assert _inputs(ssh) == [
        (BlockId.RESOURCE, InputId.RESOURCE),
        (BlockId.PUBLIC_KEY, InputId.PUBLIC_KEY),
        (BlockId.DURATION, InputId.DURATION),
        (BlockId.REASON, InputId.REASON),
    ]
    assert ssh["blocks"][0]["element"]["initial_option"]["value"] == "ops-host"
    assert json.loads(ssh["private_metadata"]) == {"channel": "C0ORIGIN"}
    assert blocks.metadata_channel(ssh) == "C0ORIGIN"
    key = next(b for b in ssh["blocks"] if b.get("block_id") == BlockId.PUBLIC_KEY)
    assert key["optional"] is False and key["element"]["multiline"] is True
    assert "Ends by expiry only" in json.dumps(ssh)

    registered = blocks.request_modal(POLICY, None, "ops-host", registered_key=FINGERPRINT)
    key = next(b for b in registered["blocks"] if b.get("block_id") == BlockId.PUBLIC_KEY)
    assert key["optional"] is True and FINGERPRINT in key["hint"]["text"]
    # An unknown selection (a policy reloaded under the form) draws the plain form.
    assert _inputs(blocks.request_modal(POLICY, None, selected="gone")) == _inputs(plain)


def test_the_key_registration_form() -> None:
    modal = blocks.ssh_key_modal(None)
    assert View(**modal).to_dict() == modal
    assert modal["callback_id"] == CallbackId.SSH_KEY_MODAL
    assert _inputs(modal) == [(BlockId.SSH_KEY, InputId.SSH_KEY)]
    assert "No key yet" in json.dumps(modal)
    assert FINGERPRINT in json.dumps(blocks.ssh_key_modal(FINGERPRINT))


def test_approvers_see_the_key_and_that_it_ends_by_expiry_only() -> None:
    _, message = blocks.approval_message(SSH_PENDING)
    assert_valid_block_kit(message)
    shown = "\n".join(_texts(message))
    assert FINGERPRINT in shown and "Ends by expiry only" in shown
    _, plain = blocks.approval_message(PENDING)
    assert "Ends by expiry only" not in "\n".join(_texts(plain))


def test_the_certificate_dm_is_copyable_and_offers_no_extend() -> None:
    cert = "ssh-ed25519-cert-v01@openssh.com AAAAcert"
    delivery = CredentialDelivery(
        expires_at=UNTIL,
        values={"certificate": SecretValue(cert)},
        instructions=("Save it as `~/.ssh/id_ed25519-cert.pub`.",),
        verbatim=True,
    )
    _, message = blocks.credentials_message(SSH_ACTIVE, delivery)
    assert_valid_block_kit(message)
    shown = "\n".join(_texts(message))
    assert f"```{cert}```" in shown and "certificate: " not in shown
    assert "id_ed25519-cert.pub" in shown and "Ends by expiry only" in shown
    (actions,) = _actions(message)
    (revoke,) = actions["elements"]
    assert revoke["action_id"] == ActionId.REVOKE
    assert "cannot be recalled" in revoke["confirm"]["text"]["text"]


def test_revoke_now_says_what_it_did_not_do() -> None:
    ended = replace(SSH_ACTIVE, status=SSH_ACTIVE.status.ENDED)
    text = blocks.revoked_text(ended)
    assert text.startswith(f"Request #{ended.id} is now ended.")
    assert "cannot be recalled" in text and "stays valid until" in text
    assert blocks.revoked_text(replace(ended, ends_by_expiry_only=False)) == (
        f"Request #{ended.id} is now ended."
    )


def test_the_home_offers_key_registration_only_when_a_resource_needs_one() -> None:
    def buttons(view: dict[str, Any]) -> list[str]:
        return [
            e["action_id"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]
        ]

    none = home_view(REQUESTER, [], [], [], POLICY)
    assert ActionId.OPEN_SSH_KEY_FORM in buttons(none)
    assert "None registered" in json.dumps(none)
    registered = home_view(REQUESTER, [], [], [], POLICY, registered_key=FINGERPRINT)
    assert FINGERPRINT in json.dumps(registered) and "Replace SSH key" in json.dumps(registered)
    without = home_view(REQUESTER, [], [], [], parse_policy(EXAMPLE_POLICY))
    assert ActionId.OPEN_SSH_KEY_FORM not in buttons(without)
    assert View(**registered).to_dict() == registered
