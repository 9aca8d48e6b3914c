"""A Slack Socket Mode server emulator on loopback, plus a sender that delivers over it.

Why an emulator that speaks real WebSocket on a real socket: the failures that hurt users in
Socket Mode live in the client's transport (how it reconnects after ``refresh_requested``, what
it does when a proxy drops the TCP connection without a close frame). Only a real server on a
real socket can produce those events, so the tests and the benchmark can measure them instead of
trusting a mock. The WebSocket protocol itself is done by the ``websockets`` library; this module
only adds Slack's envelope protocol on top of it:

* every ``apps.connections.open`` call hands out a fresh URL (:meth:`SocketModeEmulator.new_url`,
  a single-use ticket in the query string, as Slack's URLs are);
* the server greets each connection with ``{"type": "hello", ...}``;
* :meth:`SocketModeEmulator.push` sends an envelope (``slash_commands``, ``interactive``,
  ``events_api``) to the newest live connection, or holds it until one exists (Slack redelivers
  to whichever connection is open), and :meth:`SocketModeEmulator.wait_for_ack` waits for the
  client's ``{"envelope_id": ..., "payload": ...}`` answer;
* :meth:`SocketModeEmulator.disconnect` sends ``{"type": "disconnect", "reason": ...}`` (the
  old connection stays open, as on Slack, until the client closes it), and
  :meth:`SocketModeEmulator.drop` kills the TCP connection without a WebSocket close frame.

The server runs its own asyncio loop in a daemon thread; every public method is thread-safe and
synchronous, so tests and benchmarks written in plain threads can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import requests
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_client import FORM, SlackRequestSender


@dataclass
class Connection:
    """One WebSocket connection a client opened (kept after it closes, for the record)."""

    id: int
    ticket: str
    opened_at: float  # time.monotonic()
    closed_at: float | None = None
    close_code: int | None = None  # None: closed without a close frame (or still open)
    hello_sent: bool = False
    dropped: bool = False  # we killed the TCP connection on purpose
    _ws: ServerConnection | None = field(default=None, repr=False, compare=False)

    @property
    def is_open(self) -> bool:
        """True until the connection closed, for whatever reason."""
        return self.closed_at is None


@dataclass
class Envelope:
    """An envelope the emulator pushed, and to which connection it went."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    queued_at: float  # time.monotonic() when a test asked to push it
    sent_at: float | None = None
    connection_id: int | None = None


@dataclass
class Ack:
    """The client's acknowledgement of an envelope."""

    envelope_id: str
    payload: dict[str, Any] | None
    time: float  # time.monotonic()
    connection_id: int


class SocketModeEmulator:
    """Slack's Socket Mode endpoint on ``ws://127.0.0.1:PORT``.

    Attach it to a :class:`SlackEmulator` (``slack.socket_mode = emulator``, done by
    ``attach``) and the Web API emulator answers ``apps.connections.open`` with
    :meth:`new_url`. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, app_id: str = "A0APP", ping_interval: float | None = None) -> None:
        """``ping_interval``: server-side WebSocket pings (None: only the client pings)."""
        self.app_id = app_id
        self.ping_interval = ping_interval
        self.port = 0
        self._lock = threading.Condition()
        self._tickets: set[str] = set()
        self._connections: list[Connection] = []
        self._envelopes: dict[str, Envelope] = {}
        self._pending: list[str] = []  # envelope ids waiting for a live connection
        self._acks: dict[str, Ack] = {}
        self._other_messages: list[tuple[float, str]] = []
        self._conn_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        #: When True, every new connection gets ``hello`` and is then closed (1011) at once.
        self.flapping = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind a free loopback port and serve in a daemon thread (no-op when running)."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._serve())
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:  # reported to start()'s caller
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="socket-mode-emulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    async def _serve(self) -> Server:
        return await serve(
            self._handle,
            "127.0.0.1",
            self.port or 0,
            process_request=self._check_ticket,
            compression=None,
            ping_interval=self.ping_interval,
            close_timeout=1,
        )

    def stop(self) -> None:
        """Close every connection and the port; safe twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        server = self._server

        async def shutdown() -> None:
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = None
        self._loop = None
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def attach(self, slack: SlackEmulator) -> Self:
        """Let ``slack`` answer apps.connections.open with URLs of this emulator."""
        slack.socket_mode = self
        return self

    # ------------------------------------------------------------------ URLs

    def new_url(self) -> str:
        """A fresh single-use ``ws://`` URL (what apps.connections.open answers)."""
        if not self.port:
            raise RuntimeError("SocketModeEmulator is not started")
        ticket = secrets.token_hex(8)
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse URLs that were not handed out, or were used already (as Slack does)."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._lock:
            if ticket not in self._tickets:
                return connection.respond(403, "invalid or used ticket\n")
            self._tickets.discard(ticket)
        connection.request_ticket = ticket  # type: ignore[attr-defined]
        return None

    # ------------------------------------------------------------------ serving

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(
            next(self._conn_ids), getattr(ws, "request_ticket", ""), time.monotonic(), _ws=ws
        )
        with self._lock:
            self._connections.append(conn)
            count = sum(1 for c in self._connections if c.is_open)
            self._lock.notify_all()
        try:
            await ws.send(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": count,
                        "debug_info": {
                            "host": "emulator",
                            "build_number": 1,
                            "approximate_connection_time": 18060,
                        },
                        "connection_info": {"app_id": self.app_id},
                    }
                )
            )
            with self._lock:
                conn.hello_sent = True
                self._lock.notify_all()
            if self.flapping:  # a broken edge: says hello, then drops every connection at once
                await ws.close(1011, "server error")
                return
            await self._flush_pending()
            async for message in ws:
                self._on_message(conn, message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                conn.closed_at = time.monotonic()
                conn.close_code = ws.close_code if not conn.dropped else None
                conn._ws = None
                self._lock.notify_all()

    def _on_message(self, conn: Connection, text: str) -> None:
        now = time.monotonic()
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        with self._lock:
            if isinstance(message, dict) and isinstance(message.get("envelope_id"), str):
                envelope_id = message["envelope_id"]
                payload = message.get("payload")
                if envelope_id not in self._acks:  # keep the first ack
                    self._acks[envelope_id] = Ack(
                        envelope_id, payload if isinstance(payload, dict) else None, now, conn.id
                    )
            else:
                self._other_messages.append((now, text))
            self._lock.notify_all()

    def _newest_live(self) -> Connection | None:
        live = [
            c
            for c in self._connections
            if c.is_open and c.hello_sent and not c.dropped and c._ws is not None
        ]
        return live[-1] if live else None

    async def _flush_pending(self) -> None:
        """Send held envelopes to the newest live connection (runs on the loop)."""
        while True:
            with self._lock:
                conn = self._newest_live()
                if conn is None or not self._pending:
                    return
                envelope = self._envelopes[self._pending.pop(0)]
                ws = conn._ws
            assert ws is not None
            frame = json.dumps(
                {
                    "envelope_id": envelope.envelope_id,
                    "type": envelope.type,
                    "payload": envelope.payload,
                    "accepts_response_payload": envelope.accepts_response_payload,
                    "retry_attempt": 0,
                    "retry_reason": "",
                }
            )
            try:
                await ws.send(frame)
            except ConnectionClosed:
                with self._lock:  # the connection died under us: hold it for the next one
                    self._pending.insert(0, envelope.envelope_id)
                    conn.closed_at = conn.closed_at or time.monotonic()
                continue
            with self._lock:
                envelope.sent_at = time.monotonic()
                envelope.connection_id = conn.id
                self._lock.notify_all()

    def _call(self, make: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run a coroutine made by ``make`` on the emulator's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("SocketModeEmulator is not started")
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout)

    # ------------------------------------------------------------------ pushing

    def push(
        self, type_: str, payload: dict[str, Any], accepts_response_payload: bool | None = None
    ) -> str:
        """Send an envelope (to the newest live connection, or when one appears); its id.

        ``accepts_response_payload`` defaults to what Slack sets: true for slash commands and
        interactive payloads (the ack may carry a message or a ``response_action``), false for
        Events API callbacks.
        """
        if accepts_response_payload is None:
            accepts_response_payload = type_ != "events_api"
        envelope_id = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
        with self._lock:
            self._envelopes[envelope_id] = Envelope(
                envelope_id, type_, payload, accepts_response_payload, time.monotonic()
            )
            self._pending.append(envelope_id)
        self._call(self._flush_pending)
        return envelope_id

    def disconnect(
        self, reason: str = "refresh_requested", connection: Connection | None = None
    ) -> Connection:
        """Send ``{"type": "disconnect", "reason": reason}`` on a connection (default newest).

        The connection stays open (Slack keeps it about ten seconds), so the client decides when
        to close it; envelopes pushed afterwards go to whichever connection is newest.
        """
        conn = connection or self._require_live()
        ws = conn._ws
        if ws is None:
            raise AssertionError(f"connection {conn.id} is closed")
        frame = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "emulator"}}
        )
        self._call(lambda: ws.send(frame))
        return conn

    def drop(self, connection: Connection | None = None, reset: bool = False) -> Connection:
        """Kill a connection's TCP socket with no WebSocket close frame (default newest).

        As proxies and NAT gateways do: ``reset=False`` closes the socket (the client reads a
        FIN, i.e. EOF), ``reset=True`` sends a TCP RST (SO_LINGER 0). Either way the client never
        sees a close frame.
        """
        conn = connection or self._require_live()
        ws = conn._ws
        if ws is None:
            raise AssertionError(f"connection {conn.id} is closed")

        async def kill() -> None:
            transport = ws.transport
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

        with self._lock:
            conn.dropped = True
        self._call(kill)
        return conn

    def _require_live(self) -> Connection:
        with self._lock:
            conn = self._newest_live()
        if conn is None:
            raise AssertionError(f"no live Socket Mode connection; seen: {self.connections()}")
        return conn

    # ------------------------------------------------------------------ observing

    def connections(self) -> list[Connection]:
        """Snapshot of every connection so far, oldest first."""
        with self._lock:
            return list(self._connections)

    def live_connections(self) -> list[Connection]:
        """Connections open now that were greeted with hello."""
        with self._lock:
            return [c for c in self._connections if c.is_open and c.hello_sent]

    def envelope(self, envelope_id: str) -> Envelope:
        """What was pushed under ``envelope_id`` (and when it was actually sent)."""
        with self._lock:
            return self._envelopes[envelope_id]

    def acks(self) -> list[Ack]:
        """Every first ack received, in arrival order."""
        with self._lock:
            return sorted(self._acks.values(), key=lambda a: a.time)

    def ack(self, envelope_id: str) -> Ack | None:
        """The ack of ``envelope_id`` if it arrived."""
        with self._lock:
            return self._acks.get(envelope_id)

    def _wait(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = ready()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 0.2))
            state = (
                f"connections={self._connections!r} pending={self._pending!r} "
                f"acks={list(self._acks)!r}"
            )
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; {state}")

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        """Wait for the client's ack of ``envelope_id``."""
        return self._wait(
            lambda: self._acks.get(envelope_id), timeout, f"the ack of envelope {envelope_id}"
        )

    def wait_for_connection(self, after: int = 0, timeout: float = 10.0) -> Connection:
        """Wait for a greeted, open connection with ``id > after``; return the newest."""

        def ready() -> Connection | None:
            conn = self._newest_live()
            return conn if conn is not None and conn.id > after else None

        return self._wait(ready, timeout, f"a live connection newer than #{after}")

    def wait_closed(self, connection: Connection, timeout: float = 10.0) -> Connection:
        """Wait until ``connection`` is closed (by the client, or by us)."""
        return self._wait(
            lambda: connection if connection.closed_at is not None else None,
            timeout,
            f"connection #{connection.id} to close",
        )

    def ack_latency(self, envelope_id: str) -> float | None:
        """Seconds from a test asking to push ``envelope_id`` to the client's ack."""
        with self._lock:
            ack = self._acks.get(envelope_id)
            envelope = self._envelopes.get(envelope_id)
            if ack is None or envelope is None:
                return None
            return ack.time - envelope.queued_at


# ---------------------------------------------------------------------------- the sender


class SocketModeSender(SlackRequestSender):
    """:class:`SlackRequestSender` that delivers over the Socket Mode emulator instead of HTTP.

    Same interface (``slash``, ``click``, ``click_in_view``, ``submit_view``, ``event``), so
    the flow helpers in tests/integration/flows.py work unchanged. Each delivery becomes an
    envelope; the call waits for the ack and returns it dressed as the HTTP answer Bolt would
    have given (200 with the ack payload as the JSON body, or an empty body), so assertions
    like ``sent.json()["response_action"]`` mean the same thing in both modes. A delivery that
    is never acked within ``timeout`` answers 504, which the flows' status assertions report.
    """

    def __init__(
        self,
        socket_mode: SocketModeEmulator,
        emulator: SlackEmulator,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        """No URL or signing secret: Socket Mode envelopes are authenticated by the socket."""
        super().__init__("socket-mode://", "unused", emulator, timeout=timeout, **kwargs)
        self.socket_mode = socket_mode
        self.last_envelope_id: str | None = None

    def post_raw(
        self,
        body: bytes | str,
        timestamp: int | None = None,
        signature: str | None = None,
        content_type: str = FORM,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Turn what would be an HTTP body into an envelope, push it, wait for its ack."""
        text = body.decode() if isinstance(body, bytes) else body
        if "json" in content_type:
            type_, payload = "events_api", json.loads(text)
        else:
            fields = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
            if set(fields) == {"payload"}:
                type_, payload = "interactive", json.loads(fields["payload"])
            else:
                type_, payload = "slash_commands", fields
        envelope_id = self.socket_mode.push(type_, payload)
        self.last_envelope_id = envelope_id
        response = requests.Response()
        response.headers["X-Envelope-Id"] = envelope_id
        try:
            ack = self.socket_mode.wait_for_ack(envelope_id, self.timeout)
        except AssertionError as exc:
            response.status_code = 504
            response._content = str(exc).encode()
            return response
        response.status_code = 200
        response._content = json.dumps(ack.payload).encode() if ack.payload else b""
        response.headers["Content-Type"] = "application/json"
        return response

    def replay_last(self) -> requests.Response:
        """Socket Mode has no request replay to test (no signatures)."""
        raise NotImplementedError("no replay in Socket Mode")

    def get(self, path: str) -> requests.Response:
        """No HTTP server behind this sender."""
        raise NotImplementedError("Socket Mode sender has no HTTP endpoint")
