"""The floor: a minimal Bolt app that acks a slash command and posts one chat.postMessage.

It is served exactly as the bot is (``bot.server.serve_http``: waitress with the same thread
count, Bolt's WSGI adapter, signature checks, the same number of listener threads), so what
``benchmarks.ack_burst`` measures against it is the cost of Bolt, waitress and one Slack post on
this machine, and nothing of the bot's own work.

    SLACK_BOT_TOKEN=… SLACK_SIGNING_SECRET=… SLACK_API_URL=… PORT=… python -m benchmarks.floor_app
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.health import Readiness
from bot.server import StopSignal, serve_http
from bot.slack.drain import LISTENER_THREADS
from bot.slack.ids import COMMAND


def build_floor_app(signing_secret: str, client: WebClient) -> App:
    """Ack, then post the command's text back to its channel: one outgoing Slack call."""
    app = App(
        client=client,
        signing_secret=signing_secret,
        listener_executor=ThreadPoolExecutor(
            max_workers=LISTENER_THREADS, thread_name_prefix="slack-listener"
        ),
    )

    @app.command(COMMAND)
    def command(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_postMessage(channel=command["channel_id"], text=f"floor: {command['text']}")

    return app


def main() -> None:
    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = build_floor_app(os.environ["SLACK_SIGNING_SECRET"], client)
    stop = StopSignal()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve_http(app, Readiness(), "127.0.0.1", int(os.environ["PORT"]), stop, lambda: None)


if __name__ == "__main__":
    main()
