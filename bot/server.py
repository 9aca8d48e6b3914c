"""Serving Slack's requests: HTTP (waitress, a production WSGI server) or Socket Mode.

Bolt's own ``app.start()`` is a single-threaded development server; waitress runs the same app
through Bolt's WSGI adapter with a thread pool. ``/healthz`` answers 200 once the bot is ready
(the runtime has reconciled), for load balancers and for the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"

StartResponse = Callable[..., Any]


def wsgi_app(app: App) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    slack = SlackRequestHandler(app, path=EVENTS_PATH)

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"ok": true}']
        return slack(environ, start_response)

    return application


def serve_http(app: App, host: str, port: int) -> None:
    from waitress import serve

    log.info("serving Slack requests on http://%s:%s%s", host, port, EVENTS_PATH)
    serve(wsgi_app(app), host=host, port=port, threads=8, ident="debug-access")


def serve_socket_mode(app: App, app_token: str) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    log.info("connecting to Slack in Socket Mode")
    SocketModeHandler(app, app_token).start()  # type: ignore[no-untyped-call]
