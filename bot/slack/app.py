"""Build the Bolt app: a WebClient pointed at SLACK_API_URL, request verification, listeners."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.config import Settings
from bot.lifecycle import AccessLifecycle
from bot.slack.drain import Drain
from bot.slack.home import HomePublisher
from bot.slack.listeners import register_all

log = logging.getLogger(__name__)


def build_web_client(settings: Settings) -> WebClient:
    """The one WebClient; Bolt copies its base_url and retry handlers for every request."""
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def build_app(
    settings: Settings,
    client: WebClient,
    lifecycle: AccessLifecycle,
    publish_home: HomePublisher,
    drain: Drain | None = None,
) -> App:
    """The Bolt app with every listener registered. Calls auth.test (fails fast on a bad token).

    ``drain`` runs the listeners, and refuses new requests once the bot is stopping."""
    drain = drain or Drain()
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        # Socket Mode has no signatures to check; HTTP mode always verifies (401 otherwise).
        request_verification_enabled=not settings.socket_mode,
        listener_executor=drain.executor,
    )
    app.use(drain.middleware)
    register_all(app, lifecycle, publish_home)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        # Log the type and where, not the payload (it may carry user text; never secrets).
        log.error(
            "unhandled %s while handling a %s: %s",
            type(error).__name__,
            body.get("type") or body.get("command"),
            error,
        )
        return BoltResponse(status=500, body="")

    return app
