"""Build the Bolt app: a WebClient pointed at SLACK_API_URL, request verification, listeners."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web import SlackResponse

from bot.config import Settings
from bot.errors import ConfigProblem
from bot.lifecycle import AccessLifecycle
from bot.metrics import SLACK_ERRORS
from bot.slack.drain import Drain
from bot.slack.listeners import register_all

log = logging.getLogger(__name__)


# The longest Retry-After slack_sdk may sleep inside one call. A longer one is not slept through
# blindly (three retries of a 60 s Retry-After would hold a credentials DM for three minutes,
# far past the delivery window): the call fails with Slack's answer, and the caller decides
# whether to wait (the delivery does, within its window; best-effort posts are dropped).
MAX_INLINE_RETRY_AFTER = 10.0


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, retrying only when Slack asks for a short wait."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), [])
        try:
            wait = float(values[0]) if values else 1.0
        except ValueError:
            return False
        return wait <= MAX_INLINE_RETRY_AFTER


class CountingWebClient(WebClient):
    """A WebClient that counts the calls Slack refused or never answered, by method
    (``debug_access_slack_errors_total``), whoever made them."""

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:
        try:
            return super().api_call(api_method, **kwargs)
        except (SlackApiError, OSError):
            SLACK_ERRORS.labels(method=api_method).inc()
            raise


def build_web_client(settings: Settings) -> WebClient:
    """The one WebClient; Bolt copies its base_url and retry handlers for every request."""
    return CountingWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            BoundedRateLimitRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def log_unhandled(
    error: Exception, body: dict[str, Any], response: BoltResponse | None
) -> BoltResponse | None:
    """Bolt's last-resort error handler: log the type and where, not the payload (it may carry
    user text; never secrets). A 500 only while the request is still unanswered: once the
    listener has acked, Bolt passes no response and refuses one (an AssertionError in its
    listener thread), and Slack already has its answer."""
    log.error(
        "unhandled %s while handling a %s: %s",
        type(error).__name__,
        body.get("type") or body.get("command"),
        error,
    )
    return None if response is None else BoltResponse(status=500, body="")


def build_app(
    settings: Settings,
    client: WebClient,
    lifecycle: AccessLifecycle,
    publish_home: Callable[[str], None],
    drain: Drain | None = None,
) -> App:
    """The Bolt app with every listener registered. Calls auth.test (fails fast on a bad token).

    ``drain`` runs the listeners, and refuses new requests once the bot is stopping."""
    drain = drain or Drain()
    try:
        app = App(
            client=client,
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            # Socket Mode has no signatures to check; HTTP mode always verifies (401 otherwise).
            request_verification_enabled=not settings.socket_mode,
            listener_executor=drain.executor,
        )
    except BoltError as exc:  # Bolt's own auth.test at start: the token was refused
        found = re.search(r"'error': '([a-z_]+)'", str(exc))  # Bolt quotes auth.test's answer
        code = found.group(1) if found else None
        raise ConfigProblem(
            f"Slack refused the bot's token (SLACK_BOT_TOKEN): {code or 'auth.test failed'}"
        ) from None
    except OSError as exc:  # URLError included: nothing answered at SLACK_API_URL
        reason = getattr(exc, "reason", None) or exc
        raise ConfigProblem(f"cannot reach Slack at {settings.slack_api_url}: {reason}") from None
    app.use(drain.middleware)
    register_all(app, lifecycle, publish_home, drain.later)

    app.error(log_unhandled)
    return app
