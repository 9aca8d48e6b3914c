"""The bot's Socket Mode transport: slack_sdk's websocket-client based client, gaps closed.

Why not Bolt's default ``SocketModeHandler`` (slack_sdk's *built-in* client): measured against
the Socket Mode emulator (tests/emulators/socket_mode.py, ``benchmarks/socket_mode_faults.py``),
it fails both everyday connection events:

* ``{"type": "disconnect", "reason": "refresh_requested"}`` while idle: the next command is
  acked after about 3 s (Slack's limit). The client reconnects on its only message-processing
  thread, and closing the old connection waits for the receive lock that the reader thread holds
  in a blocking ``recv`` with a 3 s timeout; the new connection is not read meanwhile.
* the TCP connection closed without a WebSocket close frame (proxies, NAT, load balancers): the
  reader treats EOF (``recv() == b""``) as "no data yet" and loops on it at 100% of a core until
  the ping monitor declares the connection stale (measured: 59 s); commands meanwhile are late
  or lost. ``ping_interval`` is the only knob and it does not stop the spin.

The websocket-client based client (``slack_sdk.socket_mode.websocket_client``, the WebSocket
protocol done by the websocket-client library) sees EOF and RST as a closed connection and
reconnects at once without spinning, but it has gaps of its own, closed here by a thin subclass
(connection handling only; envelopes, acks and ``disconnect`` handling stay slack_sdk's):

* on ``refresh_requested`` it installs the new session object before that session is open (a
  single runner thread opens it 0.5 s later, and only after the old session has wound down,
  which can take websocket-client's 3 s close timeout). An ack sent in that gap fails with
  "Connection is already closed": measured, a command pushed right after the disconnect was
  never acked (3/3), and one run stalled 10 s until the monitor noticed. Here each session runs
  in its own thread and the old one is closed only once the new one is open (make-before-break);
  :meth:`_ResilientClient.send_message` also waits up to ``ACK_SEND_WAIT`` for an opening
  session rather than dropping the ack.
* closing the replaced session fired its on_close, which started a second reconnect (two
  apps.connections.open per refresh); a session that is still opening counts as connected here.
* it pings every ``PING_INTERVAL`` but never checks for the pong, so a link that goes silent
  (no FIN, no RST: an expired NAT entry) was never noticed; here ``PING_TIMEOUT`` applies, so a
  dead link should be replaced within ``PING_INTERVAL + PING_TIMEOUT`` (15 s; not measured).
* failed attempts are retried after 0.5 s doubling to 10 s (slack_sdk: on_close retried
  at once, in a tight loop when the WebSocket URL is refused); a connection that dies within
  ``STABLE_AFTER`` of opening counts as a failed attempt, so a server that accepts and drops
  at once (or says ``link_disabled``) is retried ever more slowly, not thousands of times.

Measured on loopback (``python -m benchmarks.socket_mode_faults``, 3-5 trials per figure):

=====================  ===================  ====================  ===================
client                 refresh -> ack       drop (FIN) reconnect  commands lost (FIN)
=====================  ===================  ====================  ===================
built-in, defaults     3.02 s (2.63 +0.5s)  59 s at 96% of core   171/181
built-in, ping 1 s     3.02 s               6.0 s at 98% of core  12/21
websocket-client       never acked (+0 s)   0.51 s at ~2%         0/6
this transport         0.01-0.02 s          0.01 s at ~1%         0/10
=====================  ===================  ====================  ===================

(RST drop: built-in 9.0 s, 21/31 lost; this transport 0.01 s, 0/10 lost.)

Concurrency: ``CONCURRENCY`` worker threads run Bolt listeners; the listeners ack first and do
Vault/database work afterwards, so a handful suffices (the same as the HTTP server's 8 threads).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_sdk import WebClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.websocket_client import SocketModeClient
from websocket import WebSocketApp, WebSocketException

log = logging.getLogger(__name__)

PING_INTERVAL = 10.0  # seconds between client pings (slack_sdk's default for this client)
PING_TIMEOUT = 5.0  # no pong within this: the link is dead, reconnect
RECONNECT_BACKOFF_MIN = 0.5  # after a failed attempt, wait this long, doubling ...
RECONNECT_BACKOFF_MAX = 10.0  # ... up to this
ACK_SEND_WAIT = 2.0  # how long an ack waits for a connection being (re)opened
CONCURRENCY = 8
CONNECT_WAIT = 10.0  # start(): how long to wait for the first connection
STABLE_AFTER = 10.0  # a connection open this long was healthy: its successor starts at once


class _ResilientClient(SocketModeClient):
    """slack_sdk's websocket-client Socket Mode client with the gaps above closed.

    Only connection handling changes; the protocol is websocket-client's and the envelope
    handling (queue, workers, acks, ``disconnect`` messages) slack_sdk's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each session runs in its own thread (see connect()); the shared runner is not used.
        self.current_session_runner.shutdown()  # type: ignore[no-untyped-call]
        self._retiring: dict[int, WebSocketApp] = {}  # id(new session) -> session it replaces
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._opened_at: dict[int, float] = {}  # id(session) -> when it opened
        self.on_open_listeners.append(self._on_open)

    def connect(self) -> None:
        """Open a new session in its own thread; the old one closes once the new one is open.

        slack_sdk closes the old session first (up to websocket-client's 3 s close timeout) and
        opens the new one from a single runner thread only after the old one has fully wound
        down, so acks had no open connection for 0.5 to 3+ s. Make-before-break instead: the old
        session keeps reading (envelopes Slack still sends on it are handled) until the new one
        is open. Consecutive failed attempts back off from 0.5 s to 10 s.
        """
        old_opened = self._opened_at.get(id(self.current_session))
        if old_opened is not None and time.monotonic() - old_opened >= STABLE_AFTER:
            # Replacing a connection that was healthy (a routine refresh, a drop after hours):
            # no wait. One that died young counts as a failed attempt, so a server that
            # accepts and drops at once is not hammered (measured before: 2,400 reconnects
            # in 10 s).
            self._backoff, self._next_attempt = 0.0, 0.0
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(max(self._backoff * 2, RECONNECT_BACKOFF_MIN), RECONNECT_BACKOFF_MAX)
        old = self.current_session
        self.current_session = None  # so slack_sdk's connect() does not close it first
        try:
            super().connect()
        except BaseException:
            self.current_session = old
            raise
        new = self.current_session
        assert new is not None
        if old is not None:
            self._retiring[id(new)] = old
        threading.Thread(
            target=self._run_session, args=(new,), daemon=True, name="socket-mode-session"
        ).start()

    def _on_open(self, ws: WebSocketApp) -> None:
        if ws is not self.current_session:
            self.logger.info("Closing a connection replaced while it was opening")
            threading.Thread(target=ws.close, kwargs={"timeout": 1}, daemon=True).start()
            return
        self._opened_at[id(ws)] = time.monotonic()
        old = self._retiring.pop(id(ws), None)
        if old is not None:
            threading.Thread(
                target=old.close, kwargs={"timeout": 1}, daemon=True, name="socket-mode-retire"
            ).start()

    def _run_session(self, session: WebSocketApp) -> None:
        """Read one session until it ends; a pong timeout notices silent dead links."""
        try:
            session.run_forever(
                ping_interval=self.ping_interval,
                ping_timeout=PING_TIMEOUT,
                reconnect=0,  # slack_sdk opens a new URL; never reuse one
                http_proxy_host=self.http_proxy_host,
                http_proxy_port=self.http_proxy_port,
                http_proxy_auth=self.http_proxy_auth,
                proxy_type=self.proxy_type,
            )
        except Exception:
            self.logger.exception("Socket Mode session failed")
            session.close()
        finally:
            self._opened_at.pop(id(session), None)
            retired = self._retiring.pop(id(session), None)
            if retired is not None and session is not self.current_session:
                retired.close(timeout=1)

    def _run_current_session(self) -> None:
        """Unused: sessions run in their own threads."""

    def is_connected(self) -> bool:
        """Open, or opening: a session that has not ended.

        slack_sdk counts a session that is still opening as "not connected", so the old
        session's on_close started a second reconnect that could replace a healthy session.
        """
        session = self.current_session
        if session is None or self.closed:
            return False
        return not session.has_done_teardown

    def send_message(self, message: str) -> None:
        """Send, waiting briefly for a connection that is being opened instead of failing."""
        deadline = time.monotonic() + ACK_SEND_WAIT
        while True:
            try:
                super().send_message(message)
                return
            except WebSocketException:
                if self.closed or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def close(self) -> None:
        """Close the current session (with a close frame) and the replaced ones."""
        for old in list(self._retiring.values()):
            old.close(timeout=1)
        self._retiring.clear()
        super().close()


class SocketModeTransport:
    """Serve a sync Bolt ``App`` over Socket Mode; ``start()`` returns once connected.

    ``web_client`` must be the app's client: ``apps.connections.open`` goes to its ``base_url``
    (SLACK_API_URL), which is the emulator in tests. The caller blocks on its own stop event
    and calls ``close()``; ``is_connected()`` feeds /readyz.
    """

    def __init__(self, app: App, app_token: str, web_client: WebClient) -> None:
        self.app = app
        self.client = _ResilientClient(
            app_token=app_token,
            logger=logging.getLogger("bot.slack.socket_mode.client"),
            web_client=web_client,
            ping_interval=PING_INTERVAL,
            concurrency=CONCURRENCY,
        )
        self.client.socket_mode_request_listeners.append(self._handle)  # type: ignore[arg-type]
        self._hello = threading.Event()
        self.client.message_listeners.append(self._on_message)  # type: ignore[arg-type]

    def _on_message(
        self, _client: SocketModeClient, message: dict[str, Any], _raw: str | None
    ) -> None:
        if message.get("type") == "hello":
            self._hello.set()

    def _handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        """What Bolt's SocketModeHandler.handle does: dispatch, then ack on the socket."""
        start = time.time()
        response = run_bolt_app(self.app, req)
        send_response(client, req, response, start)

    def start(self, timeout: float = CONNECT_WAIT) -> bool:
        """Open the first connection; True once Slack said hello (False: still trying).

        Raises slack_sdk's SlackApiError at once when apps.connections.open refuses the token.
        """
        log.info("connecting to Slack in Socket Mode")
        self.client.connect()
        connected = self._hello.wait(timeout)
        if connected:
            log.info("Socket Mode connected")
        else:
            log.warning("Socket Mode not connected after %.0fs; still trying", timeout)
        return connected

    def is_connected(self) -> bool:
        """True while a WebSocket connection to Slack is open (for /readyz)."""
        session = self.client.current_session
        sock = session.sock if session is not None else None
        return self._hello.is_set() and sock is not None and bool(sock.connected)

    def close(self) -> None:
        """Stop reconnecting, close the connection and the worker threads."""
        self.client.close()
