"""Serving Slack's requests: HTTP (waitress, a production WSGI server) or Socket Mode.

Bolt's own ``app.start()`` is a single-threaded development server; waitress runs the same app
through Bolt's WSGI adapter with a thread pool. Both transports also answer the probes on
``PORT``: ``/healthz`` (the process is up and its timers started) and ``/readyz`` (database, Vault
token and, in Socket Mode, the Slack connection are all working; see ``bot.health``). In Socket
Mode that small HTTP server carries nothing else: Slack's traffic comes over the socket.
``run_bot`` starts the runtime and serves on the configured transport until SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import Settings
from bot.errors import ConfigProblem
from bot.health import Readiness
from bot.logs import configure_logging
from bot.policy import Policy
from bot.runtime import start_runtime

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_JSON = [("Content-Type", "application/json")]


def probes_app(readiness: Readiness, fallback: WsgiApp | None = None) -> WsgiApp:
    """``/healthz`` and ``/readyz``; anything else goes to ``fallback`` (or 404)."""

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            start_response("200 OK", _JSON)
            return [b'{"ok": true}']
        if path == "/readyz":
            ready, body = readiness.body()
            start_response("200 OK" if ready else "503 Service Unavailable", _JSON)
            return [body]
        if fallback is not None:
            return fallback(environ, start_response)
        start_response("404 Not Found", _JSON)
        return [b'{"error": "not found"}']

    return application


def wsgi_app(app: App, readiness: Readiness) -> WsgiApp:
    """Slack's events on ``EVENTS_PATH`` plus the probes."""
    return probes_app(readiness, SlackRequestHandler(app, path=EVENTS_PATH))


def serve_http(app: App, readiness: Readiness, host: str, port: int) -> None:
    from waitress import serve

    log.info("serving Slack requests on http://%s:%s%s", host, port, EVENTS_PATH)
    serve(wsgi_app(app, readiness), host=host, port=port, threads=8, ident="debug-access")


def serve_socket_mode(
    app: App, readiness: Readiness, app_token: str, web_client: WebClient, host: str, port: int
) -> None:
    """Connect to Slack over a socket and answer the probes on ``host:port`` until stopped."""
    from waitress import create_server

    from bot.slack.socket_mode import SocketModeTransport

    transport = SocketModeTransport(app, app_token, web_client)
    readiness.add(
        "slack",
        lambda: None if transport.is_connected() else "not connected to Slack (Socket Mode)",
    )
    probes = create_server(
        probes_app(readiness), host=host, port=port, threads=4, ident="debug-access"
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
        threading.Event().wait()  # until SIGTERM / Ctrl-C raises in this thread
    finally:
        transport.close()
        probes.close()


def run_bot(settings: Settings, policy: Policy, announce: Callable[[], None] | None = None) -> None:
    """Start the runtime and serve until stopped."""
    configure_logging(settings.log_level)
    runtime = start_runtime(settings, policy)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        runtime.shutdown()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    if announce:
        announce()
    try:
        if settings.socket_mode and settings.slack_app_token is not None:
            serve_socket_mode(
                runtime.app,
                runtime.readiness,
                settings.slack_app_token.get_secret_value(),
                runtime.web_client,
                settings.host,
                settings.port,
            )
        else:
            serve_http(runtime.app, runtime.readiness, settings.host, settings.port)
    finally:
        runtime.shutdown()
