"""SSH certificates end to end: the new grant kind, from the App Home to a login on a real sshd.

The bot runs for real against OpenBao's SSH engine; a loopback sshd trusts that CA for two local
users. The requester registers a key on the App Home, or pastes one in the form, an approver
approves, and the DMed certificate logs in as the policy's principal and as nobody else. Revoke
now says plainly that the certificate cannot be recalled, and it indeed still logs in until it
expires; then sshd refuses it. One wait of about a minute (the shortest grant) covers the expiry
of both certificates issued here.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.slack.ids import ActionId, BlockId, CallbackId, InputId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    AUDIT,
    REQUESTER,
    action_ids,
    approval_message,
    assert_nowhere,
    audit_actions,
    blocks_text,
    bot_rows,
    click,
    credentials_message,
    policy_for,
    posts_to,
    reply_to,
    request_access,
    request_status,
    wait_until,
)
from tests.integration.services import OpenBaoServer, PostgresServer, VaultDatabase
from tests.integration.sshd import (
    OTHER_PRINCIPAL,
    PRINCIPAL,
    SshCa,
    SshdServer,
    certificate_key_id,
    certificate_principals,
    generate_key,
    require_root,
    running_sshd,
    setup_ssh_ca,
    try_login,
)

pytestmark = pytest.mark.integration

RESOURCE = "ops-host"
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


@pytest.fixture(scope="module")
def ssh_ca(openbao: OpenBaoServer) -> SshCa:
    require_root()
    return setup_ssh_ca(openbao.client(), mount=f"ssh-{secrets.token_hex(4)}")


@pytest.fixture(scope="module")
def sshd(ssh_ca: SshCa) -> Iterator[SshdServer]:
    with running_sshd(ssh_ca.public_key, ssh_ca.allowed_users) as server:
        yield server


def ssh_policy(vault_path: str, ca: SshCa) -> dict[str, Any]:
    policy = policy_for(vault_path)
    policy["resources"][RESOURCE] = {
        "description": "Shell on the ops hosts",
        # No max_duration: the kind's short default (1h) applies.
        "grant": {
            "type": "ssh_certificate",
            "mount": ca.mount,
            "role": ca.role,
            "principals": [PRINCIPAL],
        },
        "approvers": [ALICE],
    }
    return policy


def certificate_from(message: dict[str, Any], directory: Path, key: Path) -> Path:
    """Save the certificate from the credentials DM where ssh looks for it (<key>-cert.pub)."""
    text = blocks_text(message)
    match = re.search(r"(ssh-ed25519-cert-v01@openssh\.com [A-Za-z0-9+/=]+)", text)
    assert match, f"no certificate in the DM: {text[:500]}"
    cert = directory / f"{key.name}-cert.pub"
    cert.write_text(match.group(1) + "\n")
    return cert


def home_of(slack: SlackEmulator, user: str, after: int = 0) -> dict[str, Any]:
    """The latest Home tab published for ``user`` after the first ``after`` publishes."""
    calls = wait_until(
        lambda: [
            c for c in slack.calls("views.publish")[after:] if c.params.get("user_id") == user
        ],
        what=f"a Home tab for {user}",
    )
    return dict(calls[-1].params["view"])


def test_ssh_certificate_from_app_home_and_form_to_a_login_that_ends_by_expiry_only(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    ssh_ca: SshCa,
    sshd: SshdServer,
    tmp_path: Path,
) -> None:
    bot = run_bot(ssh_policy(vault_db.path, ssh_ca))
    key = generate_key(tmp_path, "laptop")
    public_key = key.with_suffix(".pub").read_text().strip()
    private_key = key.read_text()
    private_fragment = max(private_key.splitlines(), key=len)  # a line of the key body

    # 1. A request without any key is refused with how to give one, and nothing is stored.
    sent = bot.sender.slash(REQUESTER, f"{RESOURCE} 1m INC-9 disk full")
    refusal = reply_to(slack, str(sent.response_key))["text"]
    assert "public* key" in refusal and "App Home" in refusal
    assert bot_rows(postgres, bot, "SELECT count(*) FROM access_request")[0][0] == 0

    # 2. The form shows a key field only once the SSH resource is chosen; a private key pasted
    #    there is refused loudly and goes nowhere.
    bot.sender.slash(REQUESTER, "", channel_id="C0TEAM")
    form = slack.wait_for("views.open").params["view"]
    assert BlockId.PUBLIC_KEY not in json.dumps(form["blocks"])
    bot.sender.click_in_view(REQUESTER, form, InputId.RESOURCE, selected_value=RESOURCE)
    redrawn = slack.wait_for("views.update").params["view"]
    assert slack.wait_for("views.update").params["view_id"] == form["id"]
    key_block = next(b for b in redrawn["blocks"] if b.get("block_id") == BlockId.PUBLIC_KEY)
    assert key_block.get("optional") is False  # nothing registered yet
    assert "Ends by expiry only" in blocks_text(redrawn)

    def form_values(pasted: str) -> dict[str, Any]:
        return {
            BlockId.RESOURCE: {InputId.RESOURCE: bot.sender.selected(RESOURCE)},
            BlockId.PUBLIC_KEY: {InputId.PUBLIC_KEY: pasted},
            BlockId.DURATION: {InputId.DURATION: "1m"},
            BlockId.REASON: {InputId.REASON: "INC-9 disk full on ops-3"},
        }

    refused = bot.sender.submit_view(REQUESTER, redrawn, form_values(private_key))
    assert refused.json()["response_action"] == "errors"
    assert "private key" in refused.json()["errors"][BlockId.PUBLIC_KEY]
    assert bot_rows(postgres, bot, "SELECT count(*) FROM access_request")[0][0] == 0

    # 3. Register the public key once on the App Home.
    bot.sender.event({"type": "app_home_opened", "user": REQUESTER, "tab": "home"})
    home = home_of(slack, REQUESTER)
    assert "None registered" in blocks_text(home)
    bot.sender.click_in_view(REQUESTER, home, ActionId.OPEN_SSH_KEY_FORM)
    key_form = slack.wait_for(
        "views.open", lambda c: c.params["view"]["callback_id"] == CallbackId.SSH_KEY_MODAL
    ).params["view"]
    published = len(slack.calls("views.publish"))
    done = bot.sender.submit_view(
        REQUESTER, key_form, {BlockId.SSH_KEY: {InputId.SSH_KEY: public_key + "\n"}}
    )
    assert done.status_code == 200 and not done.text
    home = home_of(slack, REQUESTER, after=published)
    fingerprint = FINGERPRINT.search(blocks_text(home))
    assert fingerprint, blocks_text(home)

    # 4. The slash command now uses the registered key; approvers see it and the warning.
    first = request_access(bot, slack, REQUESTER, f"{RESOURCE} 1m INC-9 disk full on ops-3")
    message = approval_message(slack, first)
    assert fingerprint.group(0) in blocks_text(message)
    assert "Ends by expiry only" in blocks_text(message)
    click(bot, slack, ALICE, message, ActionId.APPROVE)
    dm = credentials_message(slack, REQUESTER, first)
    assert dm["channel"] == slack.dm_channel(REQUESTER)
    assert action_ids(dm) == [ActionId.REVOKE]  # no Extend: a certificate cannot be renewed
    assert "Ends by expiry only" in blocks_text(dm)
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first_key = first_dir / key.name
    first_key.write_text(private_key)
    first_key.chmod(0o600)
    first_cert = certificate_from(dm, first_dir, first_key)
    assert certificate_principals(first_cert) == [PRINCIPAL]
    assert f"request #{first} for {REQUESTER}" in certificate_key_id(first_cert)

    login = try_login(sshd, PRINCIPAL, first_key, first_cert)
    assert login.ok, f"{login.stderr}\n--- sshd ---\n{sshd.log_text()[-2000:]}"
    assert not try_login(sshd, OTHER_PRINCIPAL, first_key, first_cert).ok

    # 5. The form with a pasted key (another key pair) issues a second certificate.
    other = generate_key(tmp_path, "other")
    bot.sender.slash(REQUESTER, "")
    form = slack.wait_for(
        "views.open",
        lambda c: (
            c.params["view"]["callback_id"] == CallbackId.REQUEST_MODAL
            and c.params["view"]["id"] != form["id"]
        ),
    ).params["view"]
    updates = len(slack.calls("views.update"))
    bot.sender.click_in_view(REQUESTER, form, InputId.RESOURCE, selected_value=RESOURCE)
    wait_until(lambda: len(slack.calls("views.update")) > updates, what="the redrawn form")
    redrawn = slack.calls("views.update")[-1].params["view"]
    key_block = next(b for b in redrawn["blocks"] if b.get("block_id") == BlockId.PUBLIC_KEY)
    assert key_block["optional"] is True and fingerprint.group(0) in json.dumps(key_block)
    submitted = bot.sender.submit_view(
        REQUESTER, redrawn, form_values(other.with_suffix(".pub").read_text())
    )
    assert submitted.status_code == 200 and not submitted.text
    second = first + 1
    click(bot, slack, ALICE, approval_message(slack, second), ActionId.APPROVE)
    second_cert = certificate_from(credentials_message(slack, REQUESTER, second), tmp_path, other)
    assert try_login(sshd, PRINCIPAL, other, second_cert).ok
    # The first key's certificate does not make the second key's work, nor the reverse.
    assert not try_login(sshd, PRINCIPAL, other, first_cert).ok

    # 6. Revoke now ends the first grant in the bot, and says the certificate lives on.
    answer = click(bot, slack, REQUESTER, dm, ActionId.REVOKE)
    assert "cannot be recalled" in answer["text"]
    wait_until(lambda: request_status(postgres, bot, first) == "ended", what="first ended")
    assert try_login(sshd, PRINCIPAL, first_key, first_cert).ok  # no pretending
    ended_dm = wait_until(
        lambda: next(
            (
                c.params["text"]
                for c in slack.calls("chat.postMessage")
                if c.params.get("channel") == slack.dm_channel(REQUESTER)
                and f"#{first}) was ended" in str(c.params.get("text"))
            ),
            None,
        ),
        what="the requester told the certificate stays valid",
    )
    assert "stays valid until" in ended_dm

    # 7. Both certificates stop working on their own once their minute is up.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        try_login(sshd, PRINCIPAL, first_key, first_cert).ok
        or try_login(sshd, PRINCIPAL, other, second_cert).ok
    ):
        time.sleep(1)
    assert not try_login(sshd, PRINCIPAL, first_key, first_cert).ok
    assert not try_login(sshd, PRINCIPAL, other, second_cert).ok
    wait_until(lambda: request_status(postgres, bot, second) == "ended", timeout=60, what="expiry")

    # The audit trail names the key and the certificate; nothing anywhere holds the private key.
    assert audit_actions(postgres, bot, first) == [
        "requested",
        "approved",
        "issued",
        "delivered",
        "revoked",
    ]
    assert audit_actions(postgres, bot, second)[-1] == "expired"
    (issued,) = bot_rows(
        postgres,
        bot,
        f"SELECT details FROM audit_event WHERE request_id = {first} AND action = 'issued'",
    )
    details = json.loads(issued[0])
    assert details["serial"] and details["key_fingerprint"] == fingerprint.group(0)
    assert details["principals"] == [PRINCIPAL]
    audit_posts = " ".join(str(c.params.get("text")) for c in posts_to(slack, AUDIT))
    assert "cannot be recalled" in audit_posts
    assert_nowhere([private_fragment], slack=slack, bot=bot, postgres=postgres)
