"""The passkey page: one static HTML page, its script, and two JSON endpoints.

``GET /passkey`` serves the page; the link token is in the URL's fragment, which the browser
never sends, so it stays out of access logs and Referer headers. The script posts it to
``POST /passkey/begin`` (what the link is for, escaped HTML of what is being approved, and the
WebAuthn options) and the passkey's answer to ``POST /passkey/finish``. Everything that decides
lives in ``bot.lifecycle.step_up``; this module only speaks HTTP. Refusals are 4xx with a plain
message for the page; an unexpected failure is logged (never with the token) and answered 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Protocol

from bot.domain.errors import UserError
from bot.domain.step_up import PAGE_PATH, StepUpRefused
from bot.lifecycle import PageStart

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

BEGIN_PATH = f"{PAGE_PATH}/begin"
FINISH_PATH = f"{PAGE_PATH}/finish"
SCRIPT_PATH = f"{PAGE_PATH}/passkey.js"
#: A passkey's answer is a few kilobytes; anything much larger is not one.
MAX_BODY = 64 * 1024

_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
]


class StepUpPages(Protocol):
    """What the page needs of the lifecycle (``AccessLifecycle`` provides it)."""

    def step_up_begin(self, token: str) -> PageStart: ...

    def step_up_finish(self, token: str, credential: dict[str, Any]) -> str: ...


def _static(name: str) -> bytes:
    return resources.files("bot.web").joinpath(name).read_bytes()


class _BadRequest(Exception):
    pass


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/json"):
        raise _BadRequest("expected application/json")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _BadRequest("bad Content-Length") from None
    if length <= 0 or length > MAX_BODY:
        raise _BadRequest("empty or too large")
    try:
        body = json.loads(environ["wsgi.input"].read(length))
    except ValueError:
        raise _BadRequest("not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise _BadRequest("no link token")
    return body


def passkey_app(pages: StepUpPages, fallback: WsgiApp | None = None) -> WsgiApp:
    """The page's routes; any other path goes to ``fallback`` (or 404)."""
    page, script, style = _static("passkey.html"), _static("passkey.js"), _static("passkey.css")

    def send(
        start_response: StartResponse,
        status: str,
        body: bytes,
        content_type: str,
        *extra: tuple[str, str],
    ) -> list[bytes]:
        start_response(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                *_SECURITY_HEADERS,
                *extra,
            ],
        )
        return [body]

    def answer(start_response: StartResponse, status: str, data: dict[str, Any]) -> list[bytes]:
        return send(start_response, status, json.dumps(data).encode(), "application/json")

    def api(environ: dict[str, Any], start_response: StartResponse, path: str) -> list[bytes]:
        try:
            body = _read_json(environ)
            token = body["token"]
            if path == BEGIN_PATH:
                start = pages.step_up_begin(token)
                return answer(
                    start_response,
                    "200 OK",
                    {
                        "ok": True,
                        "purpose": start.purpose.value,
                        "summary_html": start.summary_html,
                        "options": start.options,
                    },
                )
            credential = body.get("credential")
            if not isinstance(credential, dict):
                raise _BadRequest("no credential")
            message = pages.step_up_finish(token, credential)
            return answer(start_response, "200 OK", {"ok": True, "message": message})
        except _BadRequest:
            return answer(
                start_response,
                "400 Bad Request",
                {"ok": False, "message": "The page sent something the bot did not understand."},
            )
        except StepUpRefused as refused:
            return answer(start_response, "403 Forbidden", {"ok": False, "message": str(refused)})
        except UserError as err:
            return answer(start_response, "409 Conflict", {"ok": False, "message": str(err)})
        except Exception:
            log.exception("the passkey page failed on %s", path)
            return answer(
                start_response,
                "500 Internal Server Error",
                {"ok": False, "message": "Something failed on the bot's side; nothing counted."},
            )

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == PAGE_PATH and method in ("GET", "HEAD"):
            return send(start_response, "200 OK", page, "text/html; charset=utf-8")
        if path == SCRIPT_PATH and method in ("GET", "HEAD"):
            return send(start_response, "200 OK", script, "text/javascript; charset=utf-8")
        if path == f"{PAGE_PATH}/passkey.css" and method in ("GET", "HEAD"):
            return send(start_response, "200 OK", style, "text/css; charset=utf-8")
        if path in (BEGIN_PATH, FINISH_PATH):
            if method != "POST":
                not_allowed = b'{"error": "method not allowed"}'
                return send(
                    start_response,
                    "405 Method Not Allowed",
                    not_allowed,
                    "application/json",
                    ("Allow", "POST"),
                )
            return api(environ, start_response, path)
        if fallback is not None:
            return fallback(environ, start_response)
        return send(start_response, "404 Not Found", b'{"error": "not found"}', "application/json")

    return application
