"""The Socket Mode transport in-process against the emulators: what needs no bot process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from slack_bolt import App
from slack_sdk import WebClient

from bot.slack.socket_mode import RECONNECT_BACKOFF_MAX, SocketModeTransport
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.socket_mode import SocketModeEmulator

pytestmark = pytest.mark.integration


@pytest.fixture
def transport(slack: SlackEmulator) -> Iterator[tuple[SocketModeTransport, SocketModeEmulator]]:
    with SocketModeEmulator() as socket_mode:
        socket_mode.attach(slack)
        client = WebClient(token=slack.bot_token, base_url=slack.base_url)
        app = App(client=client, signing_secret="unused", request_verification_enabled=False)

        @app.command("/debug-access")
        def ack(ack: object) -> None:
            ack()  # type: ignore[operator]

        transport = SocketModeTransport(app, slack.app_token, client)
        assert transport.start()
        try:
            yield transport, socket_mode
        finally:
            transport.close()


def test_an_edge_that_drops_every_connection_is_not_hammered(
    transport: tuple[SocketModeTransport, SocketModeEmulator],
) -> None:
    """Each connection says hello and dies at once: the transport must back off, not reconnect
    in a tight loop (before the fix: 2,400 connections in 10 s)."""
    _transport, socket_mode = transport
    socket_mode.flapping = True
    first = socket_mode.drop()
    time.sleep(6)  # the behaviour under test is a rate over time
    attempts = [c for c in socket_mode.connections() if c.id > first.id]
    assert 2 <= len(attempts) <= 8, f"{len(attempts)} connections in 6 s"
    socket_mode.flapping = False
    last = attempts[-1].id
    socket_mode.wait_for_connection(after=last, timeout=RECONNECT_BACKOFF_MAX + 5)
    envelope = socket_mode.push(
        "slash_commands",
        {
            "command": "/debug-access",
            "text": "help",
            "user_id": "U0X",
            "team_id": "T0",
            "channel_id": "C0",
        },
    )
    assert socket_mode.wait_for_ack(envelope, timeout=5)
