"""A PagerDuty REST API v2 emulator served over real HTTP on loopback.

Serves the two endpoints the bot reads: ``GET /oncalls`` (filtered by ``schedule_ids[]``,
``escalation_policy_ids[]``, ``escalation_levels[]`` and the ``since``/``until`` window, paged
with ``limit``/``offset``/``more``, users embedded with ``include[]=users``) and
``GET /users/{id}``. It checks the ``Authorization: Token token=…`` header like PagerDuty
(401 otherwise), records every call, and can be made to fail: ``outage = True`` answers 503,
``fail_next`` queues statuses, ``delay`` slows every answer, and ``stop()`` closes the port so
clients see "connection refused".
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.emulators.loopback import LoopbackServer


@dataclass
class PDCall:
    """One request the emulator received. ``params`` maps each query key to all its values."""

    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    time: float = field(default_factory=time.time)

    def param(self, key: str) -> str | None:
        values = self.params.get(key)
        return values[0] if values else None


@dataclass
class OnCallEntry:
    """One on-call period: ``user_id`` is on call at ``escalation_level`` of
    ``escalation_policy_id`` (via ``schedule_id``, or directly when it is None)."""

    user_id: str
    escalation_policy_id: str
    escalation_level: int = 1
    schedule_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def overlaps(self, since: datetime, until: datetime) -> bool:
        return (self.start is None or self.start <= until) and (
            self.end is None or self.end > since
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    emulator: PagerDutyEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence stderr; tests inspect ``calls()``."""

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        status, body = self.emulator._handle(parsed.path, params, dict(self.headers.items()))
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up waiting (a timeout test): nobody to answer


class PagerDutyEmulator(LoopbackServer):
    """Threaded HTTP emulator of the PagerDuty REST API. Point the bot at ``base_url``."""

    handler_class = _Handler
    thread_name = "pagerduty-emulator"

    def __init__(self, token: str = "pd-test-token-0123456789") -> None:
        self.token = token
        self.users: dict[str, dict[str, Any]] = {}
        self.oncalls: list[OnCallEntry] = []
        # Settable by tests.
        self.outage = False
        self.delay = 0.0
        self.max_limit = 100
        self.honour_include = True
        # False: ignore escalation_levels[] and since/until, as a sloppy proxy or an API change
        # might, so tests can prove the client checks levels and periods itself.
        self.filter_server_side = True
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self._calls: list[PDCall] = []
        self._init_server()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("PagerDutyEmulator is not started")
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ state API

    def add_user(self, user_id: str, email: str, name: str | None = None) -> None:
        self.users[user_id] = {
            "id": user_id,
            "type": "user",
            "email": email,
            "name": name or f"PD {user_id}",
            "summary": name or user_id,
        }

    def add_oncall(
        self,
        user_id: str,
        escalation_policy_id: str = "PEP0001",
        escalation_level: int = 1,
        schedule_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        self.oncalls.append(
            OnCallEntry(user_id, escalation_policy_id, escalation_level, schedule_id, start, end)
        )

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status``."""
        with self._lock:
            self._faults.extend([status] * times)

    def calls(self, path_prefix: str = "") -> list[PDCall]:
        with self._lock:
            return [c for c in self._calls if c.path.startswith(path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    # ------------------------------------------------------------------ handling

    def _handle(
        self, path: str, params: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        status, body = self._answer(path, params, headers)
        kept = {k.lower(): v for k, v in headers.items() if k.lower() != "authorization"}
        kept["authorized"] = str(headers.get("Authorization") == f"Token token={self.token}")
        with self._lock:
            self._calls.append(PDCall(path, params, kept, status))
        return status, body

    def _answer(
        self, path: str, params: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if self.outage:
            return 503, {"error": {"message": "Service Unavailable", "code": 2000}}
        if fault is not None:
            return fault, {"error": {"message": f"injected {fault}", "code": 2000}}
        if headers.get("Authorization") != f"Token token={self.token}":
            return 401, {"error": {"message": "Authentication failed", "code": 2006}}
        if path == "/oncalls":
            return self._list_oncalls(params)
        if path.startswith("/users/"):
            user = self.users.get(urllib.parse.unquote(path[len("/users/") :]))
            if user is None:
                return 404, {"error": {"message": "Not Found", "code": 2100}}
            return 200, {"user": user}
        return 404, {"error": {"message": "Not Found", "code": 2100}}

    def _list_oncalls(self, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        now = datetime.now(UTC)
        try:
            since = datetime.fromisoformat(params["since"][0]) if "since" in params else now
            until = datetime.fromisoformat(params["until"][0]) if "until" in params else now
            limit = min(int(params.get("limit", ["25"])[0]), self.max_limit)
            offset = int(params.get("offset", ["0"])[0])
            levels = {int(v) for v in params.get("escalation_levels[]", [])}
        except ValueError:
            return 400, {"error": {"message": "Invalid Input Provided", "code": 2001}}
        if until < since:
            return 400, {"error": {"message": "until must be after since", "code": 2001}}
        schedules = set(params.get("schedule_ids[]", []))
        policies = set(params.get("escalation_policy_ids[]", []))
        include_users = self.honour_include and "users" in params.get("include[]", [])
        matching = [
            entry
            for entry in self.oncalls
            if (not schedules or entry.schedule_id in schedules)
            and (not policies or entry.escalation_policy_id in policies)
            and (not self.filter_server_side or not levels or entry.escalation_level in levels)
            and (not self.filter_server_side or entry.overlaps(since, until))
        ]
        page = matching[offset : offset + limit]
        return 200, {
            "oncalls": [self._render(entry, include_users) for entry in page],
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(matching),
            "total": None,
        }

    def _render(self, entry: OnCallEntry, include_users: bool) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": entry.user_id,
            "type": "user_reference",
            "summary": self.users.get(entry.user_id, {}).get("name", entry.user_id),
        }
        if include_users and entry.user_id in self.users:
            user = {**self.users[entry.user_id]}
        schedule = (
            None
            if entry.schedule_id is None
            else {"id": entry.schedule_id, "type": "schedule_reference"}
        )
        return {
            "user": user,
            "schedule": schedule,
            "escalation_policy": {
                "id": entry.escalation_policy_id,
                "type": "escalation_policy_reference",
            },
            "escalation_level": entry.escalation_level,
            "start": _iso(entry.start),
            "end": _iso(entry.end),
        }
