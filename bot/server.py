"""Serving Slack's requests: HTTP (waitress, a production WSGI server) or Socket Mode.

Bolt's own ``app.start()`` is a single-threaded development server; waitress runs the same app
through Bolt's WSGI adapter with a thread pool. Both transports also answer the probes on
``PORT``: ``/healthz`` (the process is up and its timers started) and ``/readyz`` (database, Vault
token and, in Socket Mode, the Slack connection are all working; see ``bot.health``). In Socket
Mode that small HTTP server carries nothing else but the passkey page (``bot.web.passkey``, when
PUBLIC_URL is set): Slack's traffic comes over the socket.
``run_bot`` starts the runtime and serves on the configured transport until SIGTERM (or
Ctrl-C), then stops gracefully: readiness turns false and new Slack requests are answered "try
again in a minute" while the requests in flight finish (an approval being issued is delivered),
then the listener closes, the timers stop (a running job finishes) and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any

from prometheus_client import make_wsgi_app
from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.request.internals import build_context
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import Settings
from bot.errors import ConfigProblem
from bot.health import Readiness
from bot.logs import configure_logging
from bot.policy import Policy
from bot.runtime import start_runtime
from bot.slack.unavailable import RECEIVED_AT
from bot.web.passkey import StepUpPages, passkey_app

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_JSON = [("Content-Type", "application/json")]


def probes_app(readiness: Readiness, fallback: WsgiApp | None = None) -> WsgiApp:
    """``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus, ``bot.metrics``); anything else
    goes to ``fallback`` (or 404)."""
    metrics = make_wsgi_app()

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            start_response("200 OK", _JSON)
            return [b'{"ok": true}']
        if path == "/readyz":
            ready, body = readiness.body()
            start_response("200 OK" if ready else "503 Service Unavailable", _JSON)
            return [body]
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if fallback is not None:
            return fallback(environ, start_response)
        start_response("404 Not Found", _JSON)
        return [b'{"error": "not found"}']

    return application


def form_fields(raw_body: str, content_type: str | None) -> dict[str, str] | None:
    """The fields of a form-encoded body that is not an interactive payload (a slash command),
    parsed by its keys; None for JSON and for bodies with a ``payload`` field.

    slack_bolt's ``parse_body`` (``slack_bolt/request/internals.py``) decides that a form body
    is an interactive payload when the body *text* contains "payload" anywhere, then finds no
    ``payload`` field and returns ``{}``: a slash command whose text says "payload" reaches no
    listener and is answered 404. Only the key decides here. Values are taken as Bolt takes
    them (``parse_qsl`` with blank values kept, the last of a repeated key).
    """
    if not raw_body or content_type == "application/json" or raw_body.startswith("{"):
        return None
    fields = urllib.parse.parse_qsl(raw_body, keep_blank_values=True)
    if any(key == "payload" for key, _ in fields):
        return None
    return dict(fields)


class SlackHttpRequest(BoltRequest):
    """A BoltRequest for one HTTP delivery whose form body is parsed by ``form_fields``.

    Signature checks are Bolt's as always (they read ``raw_body``). Copies (Bolt makes one for
    each lazy listener) are of this class too, so they parse the same way.
    """

    def __init__(
        self,
        *,
        body: str,
        query: str | dict[str, Sequence[str]] | None = None,
        headers: dict[str, str | Sequence[str]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(body=body, query=query, headers=headers, context=context)
        fields = form_fields(self.raw_body, self.content_type)
        if fields is not None and fields != self.body:
            self.body = fields
            self.context = build_context(BoltContext(dict(context or {})), fields)

    def to_copyable(self) -> BoltRequest:
        return SlackHttpRequest(
            body=self.raw_body,
            query=self.query,
            headers=dict(self.headers),
            context=self.context.to_copyable(),
        )


class SlackEventsHandler(SlackRequestHandler):
    """Bolt's WSGI adapter, handing Bolt a ``SlackHttpRequest``."""

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        return self.app.dispatch(
            SlackHttpRequest(
                body=request.get_body(),
                query=request.query_string,
                headers=request.get_headers(),
                # When it arrived, so a listener that only starts after Slack gave up can tell.
                context={RECEIVED_AT: time.monotonic()},
            )
        )


def wsgi_app(app: App, readiness: Readiness, pages: StepUpPages | None = None) -> WsgiApp:
    """Slack's events on ``EVENTS_PATH``, the probes, and the passkey page (``pages``)."""
    slack: WsgiApp = SlackEventsHandler(app, path=EVENTS_PATH)
    return probes_app(readiness, passkey_app(pages, slack) if pages is not None else slack)


class StopSignal:
    """Set by SIGTERM / SIGINT. A plain flag the main thread polls: a signal handler that took a
    lock (``threading.Event.set``) could deadlock against the main thread holding it."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum

    def wait(self, poll: float = 0.1) -> None:
        while self.received is None:
            time.sleep(poll)
        log.info("received %s: shutting down", signal.Signals(self.received).name)


def serve_http(
    app: App,
    readiness: Readiness,
    host: str,
    port: int,
    stop: StopSignal,
    drain: Callable[[], None],
    pages: StepUpPages | None = None,
) -> None:
    """Serve until ``stop``; ``drain`` runs while the server still answers (Slack requests that
    arrive meanwhile get "try again in a minute", probes get 503)."""
    from waitress import create_server

    server = create_server(
        wsgi_app(app, readiness, pages), host=host, port=port, threads=8, ident="debug-access"
    )
    threading.Thread(target=server.run, name="http", daemon=True).start()
    log.info("serving Slack requests on http://%s:%s%s", host, port, EVENTS_PATH)
    try:
        stop.wait()
        drain()
    finally:
        server.close()


def serve_socket_mode(
    app: App,
    readiness: Readiness,
    app_token: str,
    web_client: WebClient,
    host: str,
    port: int,
    stop: StopSignal,
    drain: Callable[[], None],
    pages: StepUpPages | None = None,
) -> None:
    """Connect to Slack over a socket and answer the probes on ``host:port`` until ``stop``;
    ``drain`` runs while the socket is still open (new envelopes are acked with "try again").
    The passkey page (``pages``) is served there too: approvers' browsers must reach it."""
    from waitress import create_server

    from bot.slack.socket_mode import SocketModeTransport

    transport = SocketModeTransport(app, app_token, web_client)
    readiness.add(
        "slack",
        lambda: None if transport.is_connected() else "not connected to Slack (Socket Mode)",
    )
    probes = create_server(
        probes_app(readiness, passkey_app(pages) if pages is not None else None),
        host=host,
        port=port,
        threads=4,
        ident="debug-access",
    )
    threading.Thread(target=probes.run, name="probes", daemon=True).start()
    log.info("probes on http://%s:%s/healthz and /readyz", host, port)
    try:
        try:
            transport.start()
        except SlackApiError as exc:
            raise ConfigProblem(
                f"Slack refused the app-level token (SLACK_APP_TOKEN): {exc.response.get('error')}"
            ) from None
        stop.wait()
        drain()
    finally:
        transport.close()
        probes.close()


def run_bot(settings: Settings, policy: Policy, announce: Callable[[], None] | None = None) -> None:
    """Start the runtime and serve until stopped."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = start_runtime(settings, policy)
    stop = StopSignal()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if announce:
        announce()
    pages = runtime.lifecycle if settings.public_url is not None else None
    try:
        if settings.socket_mode and settings.slack_app_token is not None:
            serve_socket_mode(
                runtime.app,
                runtime.readiness,
                settings.slack_app_token.get_secret_value(),
                runtime.web_client,
                settings.host,
                settings.port,
                stop,
                runtime.stop_taking_requests,
                pages,
            )
        else:
            serve_http(
                runtime.app,
                runtime.readiness,
                settings.host,
                settings.port,
                stop,
                runtime.stop_taking_requests,
                pages,
            )
    finally:
        runtime.shutdown()
