"""`debug-access dev` works with nothing but Slack's tokens: it starts its own OpenBao, seeds a
demo secret, writes a demo policy, and the whole loop runs against them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import hvac
import pytest
import requests

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_client import SlackRequestSender
from tests.integration.flows import (
    ALICE,
    REQUESTER,
    approval_message,
    click,
    credentials_message,
    reply_to,
    unwrap_from,
    wait_until,
)
from tests.integration.services import free_port, free_port_pair

pytestmark = pytest.mark.integration


def test_dev_mode_runs_the_whole_loop_against_its_embedded_openbao(
    slack: SlackEmulator,
    tmp_path: Path,
) -> None:
    port, vault_port = free_port(), free_port_pair()
    signing_secret = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.pop("SLACK_APP_TOKEN", None)
    env.update(
        {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": signing_secret,
            "SLACK_API_URL": slack.base_url,
            "PORT": str(port),
            "HOME": str(tmp_path),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot",
                "dev",
                "--approver",
                ALICE,
                "--vault-port",
                str(vault_port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=60, what="dev mode to be ready")
        banner = log_path.read_text()
        assert f"OpenBao dev server  http://127.0.0.1:{vault_port}" in banner
        assert "demo-secrets" in banner and (tmp_path / ".dev" / "policy.yml").exists()

        sender = SlackRequestSender(f"http://127.0.0.1:{port}/slack/events", signing_secret, slack)
        sent = sender.slash(REQUESTER, "demo-secrets trying the bot")
        assert "Request #1" in reply_to(slack, str(sent.response_key))["text"]
        bot = type("Bot", (), {"sender": sender})()
        click(
            bot, slack, ALICE, approval_message(slack, 1, slack.dm_channel(ALICE)), ActionId.APPROVE
        )
        message = credentials_message(slack, REQUESTER, 1)
        vault = f"http://127.0.0.1:{vault_port}"
        unwrapped = unwrap_from(message, SimpleNamespace(addr=vault))  # type: ignore[arg-type]
        user = hvac.Client(url=vault, token=unwrapped["token"])
        demo = user.secrets.kv.v2.read_secret_version(
            path="demo/app", mount_point="secret", raise_on_deleted_version=True
        )
        assert demo["data"]["data"]["api_key"].startswith("demo-")
    finally:
        process.terminate()
        process.wait(timeout=15)
