"""A Slack Web API emulator served over real HTTP on loopback.

Why a real HTTP server instead of mocking `WebClient`: the bot builds its own
`WebClient(base_url=SLACK_API_URL)` inside a separate process, so the only seam we can use in
end-to-end tests is the network. Serving the API over HTTP also exercises slack_sdk's real
encoding (form vs JSON bodies, Authorization header, error raising), which a mock would skip.

The emulator records every call (including failed and unknown ones) so tests can assert on
what the bot said, wait for asynchronous work, and scan everything sent to Slack for leaked
secrets.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from tests.emulators.loopback import LoopbackServer

if TYPE_CHECKING:
    from tests.emulators.socket_mode import SocketModeEmulator

# Form-encoded fields that slack_sdk serialises as JSON strings; we decode them so tests see the
# same Python structures whichever encoding the SDK happened to choose for a method.
JSON_FIELDS = frozenset(
    {"blocks", "attachments", "view", "metadata", "unfurls", "user_auth_blocks", "options"}
)

Predicate = Callable[["Call"], bool]


def _always(_call: Call) -> bool:
    """Default predicate: accept any call."""
    return True


@dataclass
class Call:
    """One request the emulator received.

    `params` is what the client sent (query string, form fields and JSON body merged, JSON
    fields decoded). `response` is what the emulator answered, kept so tests can reach values
    that exist only in the answer (e.g. the `ts` of a posted message).
    """

    method: str
    params: dict[str, Any]
    time: float
    response: dict[str, Any] | None = field(default=None, compare=False)
    http_status: int = 200


@dataclass
class _Delay:
    """A queued slow answer for `delay_next`."""

    seconds: float
    when: Callable[[dict[str, Any]], bool]
    remaining: int


@dataclass
class _Fault:
    """A queued fault for `fail_next`."""

    error: str
    status: int
    remaining: int
    retry_after: int = 1


# What a Slack outage answers, in turn: rate limited with Retry-After, a server error, and the
# `ratelimited` error Slack also sends in a 200 answer.
OUTAGE_ANSWERS = ((429, "ratelimited"), (500, "internal_error"), (200, "ratelimited"))


@dataclass
class _Outage:
    """Every call of `methods` fails until `until` (monotonic), cycling through `answers`."""

    methods: frozenset[str] | None
    until: float
    retry_after: int
    answers: tuple[tuple[int, str], ...]
    served: int = 0


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the owning emulator (set as a class attribute per server)."""

    emulator: SlackEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr logging; tests inspect `calls()` instead."""

    def do_GET(self) -> None:
        """Slack accepts GET for read methods (slack_sdk uses it for users.info etc.)."""
        self._dispatch()

    def do_POST(self) -> None:
        """Most Web API calls and all response_url deliveries are POSTs."""
        self._dispatch()

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        params = _parse_params(parsed.query, raw, self.headers.get("Content-Type") or "")
        if parsed.path.startswith("/api/"):
            method = parsed.path[len("/api/") :].strip("/")
            status, body, headers = self.emulator._handle_api(
                method, params, self.headers.get("Authorization")
            )
        elif parsed.path.startswith("/response/"):
            key = urllib.parse.unquote(parsed.path[len("/response/") :])
            status, body, headers = self.emulator._handle_response_url(key, params)
        elif parsed.path.startswith("/upload/"):
            file_id = parsed.path[len("/upload/") :]
            status, body, headers = self.emulator._handle_upload(file_id, raw)
        else:
            status, body, headers = 404, {"ok": False, "error": "not_found"}, {}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _parse_params(query: str, raw: bytes, content_type: str) -> dict[str, Any]:
    """Merge query string and body into one dict, decoding JSON-string fields.

    slack_sdk sends JSON for some methods and form encoding for others; tests should not care.
    """
    params: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params[key] = value
    if raw:
        text = raw.decode("utf-8", errors="replace")
        if "application/json" in content_type or text.lstrip().startswith("{"):
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                params.update(decoded)
                return params
        for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            params[key] = value
    for key in JSON_FIELDS & params.keys():
        value = params[key]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                params[key] = json.loads(value)
    return params


class SlackEmulator(LoopbackServer):
    """Threaded HTTP emulator of the Slack Web API plus `response_url` endpoints.

    Use as a context manager or call `start()` / `stop()`. Point the bot at `base_url`.
    """

    handler_class = _Handler
    thread_name = "slack-emulator"

    def __init__(
        self,
        bot_token: str = "xoxb-test-token",
        bot_user_id: str = "U0BOT",
        team_id: str = "T0TEAM",
        bot_id: str = "B0BOT",
        team_domain: str = "t0team",
        app_token: str = "xapp-1-A0APP-1-test",
    ) -> None:
        """Configure identities; nothing listens until `start()`."""
        self.bot_token = bot_token
        # The app-level token apps.connections.open requires (Socket Mode), and the Socket Mode
        # emulator whose URLs it hands out (None: the method answers an error, as for an app
        # with Socket Mode turned off).
        self.app_token = app_token
        self.socket_mode: SocketModeEmulator | None = None
        self.bot_user_id = bot_user_id
        self.team_id = team_id
        self.bot_id = bot_id
        self.team_domain = team_domain
        # Settable by tests: usergroup id -> member user ids (for usergroups.users.list).
        self.usergroups: dict[str, list[str]] = {}
        # Optional per-user overrides merged into users.info answers (e.g. a different tz).
        self.users: dict[str, dict[str, Any]] = {}
        # User ids that users.info reports as user_not_found (e.g. deactivated accounts).
        self.unknown_users: set[str] = set()
        # Channel ids conversations.info reports as channel_not_found (a deleted channel).
        self.missing_channels: set[str] = set()

        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._delays: dict[str, list[_Delay]] = {}
        self.delayed: list[Call] = []  # calls held back by delay_next, recorded as they arrive
        self._outage: _Outage | None = None
        # Settable by tests: seconds each call of a method takes to answer (a slow Slack).
        self.latency: dict[str, float] = {}
        self._messages: dict[str, dict[str, dict[str, Any]]] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}  # uploaded through files_upload_v2
        self._home_views: dict[str, str] = {}
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._init_server()

    # ------------------------------------------------------------------ lifecycle

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash)."""
        if not self.port:
            raise RuntimeError("SlackEmulator is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Web API base URL; ends with '/' because slack_sdk joins method names with urljoin."""
        return f"{self.root_url}/api/"

    # ------------------------------------------------------------------ recording API

    def calls(self, method: str | None = None) -> list[Call]:
        """Snapshot of recorded calls, optionally only those of one method."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear(self) -> None:
        """Forget recorded calls (stored messages and views are kept)."""
        with self._lock:
            self._calls.clear()

    def wait_for(self, method: str, predicate: Predicate = _always, timeout: float = 10.0) -> Call:
        """Return the first recorded call of `method` matching `predicate`, waiting if needed.

        Raises AssertionError listing what *was* recorded, because "timed out" alone makes
        asynchronous failures very hard to diagnose.
        """
        return self.wait_for_count(method, 1, predicate, timeout)[0]

    def wait_for_count(
        self, method: str, n: int, predicate: Predicate = _always, timeout: float = 10.0
    ) -> list[Call]:
        """Wait until at least `n` matching calls are recorded; return the first `n`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                matching = [c for c in self._calls if c.method == method and predicate(c)]
                if len(matching) >= n:
                    return matching[:n]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(timeout=min(remaining, 0.2))
            listing = self._describe_calls()
        raise AssertionError(
            f"timed out after {timeout}s waiting for {n} matching {method!r} call(s); "
            f"found {len(matching)}. Recorded calls:\n{listing}"
        )

    def _describe_calls(self) -> str:
        """One line per recorded call, truncated, for assertion messages."""
        if not self._calls:
            return "  (none)"
        lines = []
        for c in self._calls:
            params = json.dumps(c.params, default=str)
            if len(params) > 300:
                params = params[:300] + "..."
            lines.append(f"  {c.method} [{c.http_status}] {params}")
        return "\n".join(lines)

    def all_texts(self) -> list[str]:
        """Every payload ever sent to Slack, JSON-dumped, for secret-leak scans.

        Deliberately covers all parameters of all calls (text, blocks, attachments, views,
        response_url bodies...), so a secret cannot hide in a field a test forgot about.
        """
        with self._lock:
            return [json.dumps(c.params, default=str, sort_keys=True) for c in self._calls]

    # ------------------------------------------------------------------ state API

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Current (post-update) messages in `channel`, oldest first."""
        with self._lock:
            stored = self._messages.get(self._resolve_channel(channel), {})
            return [copy.deepcopy(m) for _, m in sorted(stored.items())]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """One current message; KeyError if it was never posted."""
        with self._lock:
            msg = self._messages.get(self._resolve_channel(channel), {}).get(ts)
            if msg is None:
                raise KeyError(f"no message {ts} in {channel}")
            return copy.deepcopy(msg)

    def view(self, view_id: str) -> dict[str, Any]:
        """The current content of a view (as answered by views.open/publish/update)."""
        with self._lock:
            return copy.deepcopy(self._views[view_id])

    def home_view(self, user_id: str) -> dict[str, Any]:
        """The App Home view last published for `user_id`; KeyError if none."""
        with self._lock:
            return copy.deepcopy(self._views[self._home_views[user_id]])

    @staticmethod
    def dm_channel(user_id: str) -> str:
        """The DM channel id the emulator assigns to a user (what conversations.open returns)."""
        return "D" + user_id

    def fail_next(
        self, method: str, error: str = "internal_error", status: int = 200, times: int = 1
    ) -> None:
        """Make the next `times` calls of `method` answer `{"ok": false, "error": error}`."""
        with self._lock:
            self._faults.setdefault(method, []).append(_Fault(error, status, times))

    def delay_next(
        self,
        method: str,
        seconds: float,
        when: Callable[[dict[str, Any]], bool] = lambda _params: True,
        times: int = 1,
    ) -> None:
        """Hold the answer to the next `times` calls of `method` whose params match `when` for
        `seconds` (a slow Slack: something is in flight meanwhile). Each held call is appended
        to `delayed` when it arrives, so a test can act while it waits."""
        with self._lock:
            self._delays.setdefault(method, []).append(_Delay(seconds, when, times))

    def _take_delay(self, method: str, params: dict[str, Any]) -> float:
        with self._lock:
            for delay in self._delays.get(method, []):
                if delay.remaining > 0 and delay.when(params):
                    delay.remaining -= 1
                    self.delayed.append(Call(method, dict(params), time.time()))
                    self._lock.notify_all()
                    return delay.seconds
        return 0.0

    def outage(
        self,
        seconds: float,
        methods: tuple[str, ...] | None = ("conversations.open", "chat.postMessage"),
        retry_after: int = 2,
        answers: tuple[tuple[int, str], ...] = OUTAGE_ANSWERS,
    ) -> None:
        """Fail every call of ``methods`` (None: every method but auth.test) for ``seconds``
        from now, answering in turn 429 with ``Retry-After``, 500, and ``ratelimited``:
        what a Slack incident looks like from the bot. ``outage(0)`` ends it."""
        with self._lock:
            self._outage = _Outage(
                methods=frozenset(methods) if methods is not None else None,
                until=time.monotonic() + seconds,
                retry_after=retry_after,
                answers=answers,
            )

    def outage_answers(self) -> int:
        """How many calls the current (or last) outage has failed."""
        with self._lock:
            return self._outage.served if self._outage else 0

    def response_url(self, key: str | None = None) -> str:
        """A loopback response_url; POSTs to it are recorded as method "response_url"."""
        if key is None:
            key = secrets.token_hex(8)
        return f"{self.root_url}/response/{urllib.parse.quote(key, safe='')}"

    # ------------------------------------------------------------------ request handling

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            outage = self._outage
            if (
                outage is not None
                and method != "auth.test"
                and (outage.methods is None or method in outage.methods)
                and time.monotonic() < outage.until
            ):
                status, error = outage.answers[outage.served % len(outage.answers)]
                outage.served += 1
                return _Fault(error, status, 0, outage.retry_after)
            queue = self._faults.get(method)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    def _handle_upload(
        self, file_id: str, raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The second step of files_upload_v2: the file's bytes, posted to the upload URL."""
        with self._lock:
            if file_id not in self.files:
                return 404, {"ok": False, "error": "unknown_file"}, {}
            self.files[file_id]["content"] = raw
        self._record(
            Call("file_upload", {"file_id": file_id, "size": len(raw)}, time.time(), {"ok": True})
        )
        return 200, {"ok": True}, {}

    def _api_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = self._next_id("F")
        with self._lock:
            self.files[file_id] = {
                "id": file_id,
                "filename": params["filename"],
                "length": int(params["length"]),
                "content": b"",
            }
        return {"ok": True, "upload_url": f"{self.root_url}/upload/{file_id}", "file_id": file_id}

    def _api_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params["files"]
        if isinstance(files, str):
            files = json.loads(files)
        done = []
        with self._lock:
            for item in files:
                stored = self.files[item["id"]]
                stored.update(
                    title=item.get("title"),
                    channel=params.get("channel_id"),
                    thread_ts=params.get("thread_ts"),
                )
                done.append(
                    {"id": item["id"], "title": item.get("title"), "name": stored["filename"]}
                )
        return {"ok": True, "files": done}

    def _handle_response_url(
        self, key: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        response: dict[str, Any] = {"ok": True}
        self._record(Call("response_url", {"key": key, **params}, time.time(), response))
        return 200, response, {}

    def _handle_api(
        self, method: str, params: dict[str, Any], authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        token = None
        if authorization and authorization.startswith("Bearer "):
            token = authorization[len("Bearer ") :]
        elif isinstance(params.get("token"), str):
            token = params["token"]
        params.pop("token", None)
        hold = self._take_delay(method, params)
        if hold:
            time.sleep(hold)

        status = 200
        headers: dict[str, str] = {}
        if self.latency.get(method):
            time.sleep(self.latency[method])
        # apps.connections.open takes the app-level token (xapp-) and nothing else does.
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        fault = self._take_fault(method) if token == expected else None
        if token != expected:
            response: dict[str, Any] = {"ok": False, "error": "invalid_auth"}
        elif fault is not None:
            status = fault.status
            response = {"ok": False, "error": fault.error}
            if status == 429:
                headers["Retry-After"] = str(fault.retry_after)
        else:
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            if handler is None:
                response = {"ok": False, "error": "unknown_method"}
            else:
                try:
                    response = handler(params)
                except (KeyError, TypeError, ValueError) as exc:
                    response = {"ok": False, "error": "invalid_arguments", "detail": repr(exc)}
        self._record(Call(method, params, time.time(), response, status))
        return status, response, headers

    # ------------------------------------------------------------------ helpers

    def _next_ts(self) -> str:
        n = next(self._ts_counter)
        return f"{1700000000 + n // 10000}.{(n % 10000) * 100:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08d}"

    def _resolve_channel(self, channel: str) -> str:
        """Posting to a user id lands in that user's DM, as on real Slack."""
        if channel[:1] in ("U", "W"):
            return self.dm_channel(channel)
        return channel

    def _with_block_ids(self, blocks: Any) -> Any:
        """Slack assigns a block_id to blocks sent without one; mirror that."""
        if not isinstance(blocks, list):
            return blocks
        out = []
        for block in blocks:
            if isinstance(block, dict) and "block_id" not in block:
                block = {**block, "block_id": secrets.token_hex(3)}
            out.append(block)
        return out

    def _user_profile(self, user_id: str) -> dict[str, Any]:
        name = user_id.lower()
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": f"User {user_id}",
            "deleted": False,
            "is_bot": False,
            "tz": "Europe/Berlin",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": {
                "email": f"{name}@example.com",
                "display_name": name,
                "real_name": f"User {user_id}",
            },
        }
        override = self.users.get(user_id, {})
        profile_override = override.get("profile", {})
        user.update({k: v for k, v in override.items() if k != "profile"})
        user["profile"].update(profile_override)
        return user

    # ------------------------------------------------------------------ Web API methods

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Test Team",
            "team_id": self.team_id,
            "user": "debug-access",
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        """A fresh single-use WebSocket URL from the attached Socket Mode emulator."""
        if self.socket_mode is None:
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": self.socket_mode.new_url()}

    def _api_api_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "args": params}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            return {"ok": False, "error": "no_text"}
        channel = self._resolve_channel(channel)
        with self._lock:
            ts = self._next_ts()
            message: dict[str, Any] = {
                "type": "message",
                "channel": channel,
                "ts": ts,
                "text": params.get("text", ""),
                "blocks": self._with_block_ids(params.get("blocks", [])),
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
            }
            if params.get("attachments"):
                message["attachments"] = params["attachments"]
            if params.get("thread_ts"):
                message["thread_ts"] = str(params["thread_ts"])
            self._messages.setdefault(channel, {})[ts] = message
        public = {k: v for k, v in message.items() if k != "channel"}
        return {"ok": True, "channel": channel, "ts": ts, "message": public}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(str(params.get("channel") or ""))
        ts = str(params.get("ts") or "")
        with self._lock:
            message = self._messages.get(channel, {}).get(ts)
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            if "text" in params:
                message["text"] = params["text"]
            # Real Slack keeps previous blocks when `blocks` is omitted; [] removes them.
            if "blocks" in params:
                message["blocks"] = self._with_block_ids(params["blocks"])
            if "attachments" in params:
                message["attachments"] = params["attachments"]
            message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
            text = message["text"]
            public = {k: v for k, v in message.items() if k != "channel"}
        return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": public}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        with self._lock:
            ts = self._next_ts()
        return {"ok": True, "message_ts": ts}

    def _api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(str(params.get("channel") or ""))
        ts = str(params.get("message_ts") or "")
        with self._lock:
            if ts not in self._messages.get(channel, {}):
                return {"ok": False, "error": "message_not_found"}
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://{self.team_domain}.slack.com/archives/{channel}/p"
            + ts.replace(".", ""),
        }

    def _api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not channel or channel in self.missing_channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": channel, "is_channel": channel.startswith("C")}}

    def _api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = params.get("users")
        if isinstance(users, list):
            users = ",".join(users)
        if not users:
            channel_id = params.get("channel")
            if not channel_id:
                return {"ok": False, "error": "users_list_not_supplied"}
            return {"ok": True, "channel": {"id": channel_id}}
        ids = [u.strip() for u in str(users).split(",") if u.strip()]
        channel_id = self.dm_channel(ids[0]) if len(ids) == 1 else "G" + "".join(sorted(ids))
        return {"ok": True, "no_op": False, "already_open": False, "channel": {"id": channel_id}}

    def _store_view(self, view: Any, view_id: str | None = None) -> dict[str, Any]:
        if not isinstance(view, dict):
            raise ValueError("view must be a JSON object")
        with self._lock:
            if view_id is None:
                view_id = self._next_id("V")
            stored = {
                "id": view_id,
                "team_id": self.team_id,
                "type": view.get("type"),
                "callback_id": view.get("callback_id", ""),
                "private_metadata": view.get("private_metadata", ""),
                "external_id": view.get("external_id", ""),
                "title": view.get("title"),
                "submit": view.get("submit"),
                "close": view.get("close"),
                "blocks": self._with_block_ids(view.get("blocks", [])),
                "state": {"values": {}},
                "hash": secrets.token_hex(6),
                "app_id": "A0APP",
                "bot_id": self.bot_id,
                "root_view_id": view_id,
                "previous_view_id": None,
            }
            self._views[view_id] = stored
            return copy.deepcopy(stored)

    def _api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = self._store_view(params.get("view"))
        # Convenience for tests: the recorded view also carries its assigned id, so
        # `submit_view(user, call.params["view"], ...)` can reference it.
        if isinstance(params.get("view"), dict):
            params["view"] = {**params["view"], "id": view["id"]}
        return {"ok": True, "view": view}

    _api_views_push = _api_views_open

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = params.get("user_id")
        if not user_id:
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
            existing = self._home_views.get(str(user_id))
        view = self._store_view(params.get("view"), existing)
        with self._lock:
            self._home_views[str(user_id)] = view["id"]
        if isinstance(params.get("view"), dict):
            params["view"] = {**params["view"], "id": view["id"]}
        return {"ok": True, "view": view}

    def _api_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        with self._lock:
            if not view_id and external_id:
                view_id = next(
                    (vid for vid, v in self._views.items() if v["external_id"] == external_id),
                    None,
                )
            if not view_id or view_id not in self._views:
                return {"ok": False, "error": "not_found"}
        view = self._store_view(params.get("view"), str(view_id))
        return {"ok": True, "view": view}

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = str(params.get("user") or "")
        if not user_id or user_id in self.unknown_users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": self._user_profile(user_id)}

    def _api_users_lookupByEmail(self, params: dict[str, Any]) -> dict[str, Any]:
        email = str(params.get("email") or "").lower()
        for user_id, override in self.users.items():
            if str(override.get("profile", {}).get("email", "")).lower() == email:
                return {"ok": True, "user": self._user_profile(user_id)}
        local, _, domain = email.partition("@")
        if domain != "example.com" or not local or local.upper() in self.unknown_users:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": self._user_profile(local.upper())}

    def _api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}
