"""A TCP proxy on loopback that a test can cut and restore, to break a dependency on purpose.

Modes, switched at any time from the test's thread:

* ``restore()``: pass everything on (the default).
* ``cut()``: drop every open connection and refuse new ones (the port stops listening, so a
  client gets *connection refused*): a dead server.
* ``freeze()`` (alias ``hang()``): keep every connection open, accept new ones, pass nothing
  on: a server that hangs.
* ``drop_idle(after, silently=...)``: forget connections idle for ``after`` seconds, as a load
  balancer's idle timeout does. ``silently=True`` is what cloud load balancers do: no FIN, the
  client still believes the connection open, and its next request on it is answered by a
  reset without reaching the server. ``silently=False`` closes the client side with a FIN.
* ``lose_answer(marker, how=...)``: the next request containing ``marker`` reaches the server,
  but its answer never reaches the client (``how="reset"``: the connection is reset when the
  answer comes; ``how="hang"``: the answer is swallowed and the connection kept open).

Threads, no asyncio: a test drives it from its own thread.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a middlebox that forgot the flow answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.last_active = time.monotonic()
        self.forgotten = False  # dropped silently: the next byte from the client gets a reset
        self.lose_answer: str | None = None  # "reset" or "hang" once its request was marked
        self.closed = False


class CuttableProxy:
    """Forward ``127.0.0.1:port`` to ``target``, until told otherwise."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._frozen = threading.Event()
        self._closed = False
        self._idle_after: float | None = None
        self._idle_silently = True
        self._lose: tuple[bytes, str] | None = None
        #: What happened, for the test's assertions: counters by event name.
        self.events: dict[str, int] = {}
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()
        threading.Thread(target=self._reap_idle, name="proxy-idle", daemon=True).start()

    # ------------------------------------------------------------------ listening

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        ).start()

    def _count(self, event: str) -> None:
        with self._lock:
            self.events[event] = self.events.get(event, 0) + 1

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:  # cut meanwhile: refuse
                _reset(client)
                continue
            self._count("accepted")
            if self._frozen.is_set():  # accept, then never answer
                with self._lock:
                    self._links.add(_Link(client, None))
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            threading.Thread(target=self._pump_up, args=(link,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(link,), daemon=True).start()

    # ------------------------------------------------------------------ forwarding

    def _hold_while_frozen(self) -> None:
        while self._frozen.is_set() and not self._closed:
            time.sleep(0.05)

    def _pump_up(self, link: _Link) -> None:
        """Client -> server."""
        assert link.upstream is not None
        try:
            while True:
                data = link.client.recv(65536)
                if not data:
                    break
                if link.forgotten:  # the flow is unknown to the "load balancer": reset
                    self._count("reset_stale")
                    self._close(link, reset_client=True)
                    return
                link.last_active = time.monotonic()
                with self._lock:
                    lose = self._lose
                    if lose is not None and lose[0] in data:
                        self._lose = None
                        link.lose_answer = lose[1]
                        self.events["answer_lost"] = self.events.get("answer_lost", 0) + 1
                self._hold_while_frozen()
                link.upstream.sendall(data)
        except OSError:
            pass
        if not link.forgotten:
            self._close(link)

    def _pump_down(self, link: _Link) -> None:
        """Server -> client."""
        assert link.upstream is not None
        try:
            while True:
                data = link.upstream.recv(65536)
                if not data:
                    break
                if link.lose_answer == "reset":
                    self._close(link, reset_client=True)
                    return
                if link.lose_answer == "hang":
                    continue  # swallowed; the client waits for ever
                link.last_active = time.monotonic()
                self._hold_while_frozen()
                link.client.sendall(data)
        except OSError:
            pass
        if not link.forgotten and link.lose_answer != "hang":
            self._close(link)

    def _close(self, link: _Link, *, reset_client: bool = False, client_too: bool = True) -> None:
        with self._lock:
            if client_too:
                self._links.discard(link)
        for sock in (link.upstream, link.client if client_too else None):
            if sock is None:
                continue
            if sock is link.client and reset_client:
                _reset(sock)
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _reap_idle(self) -> None:
        while not self._closed:
            time.sleep(0.05)
            after = self._idle_after
            if after is None:
                continue
            now = time.monotonic()
            with self._lock:
                idle = [
                    link
                    for link in self._links
                    if link.upstream is not None
                    and not link.forgotten
                    and link.lose_answer is None
                    and now - link.last_active >= after
                ]
            for link in idle:
                self._count("dropped_idle")
                if self._idle_silently:
                    # Forget the flow: the server side goes, the client is told nothing.
                    link.forgotten = True
                    self._close(link, client_too=False)
                else:
                    self._close(link)

    # ------------------------------------------------------------------ the test's switches

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until ``restore()``."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept() and stops listening (Linux);
            # close() alone leaves the kernel socket listening until accept() returns.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            victims = list(self._links)
            self._links.clear()
        for link in victims:
            self._close(link)

    def freeze(self) -> None:
        """Keep every connection open but pass nothing on: a server that hangs."""
        self._frozen.set()

    hang = freeze

    def drop_idle(self, after: float | None, *, silently: bool = True) -> None:
        """Forget connections idle for ``after`` seconds (None: never)."""
        self._idle_silently = silently
        self._idle_after = after

    def lose_answer(self, marker: bytes, how: str = "reset") -> None:
        """The next request containing ``marker`` is passed on; its answer is lost."""
        assert how in {"reset", "hang"}
        with self._lock:
            self._lose = (marker, how)

    def restore(self) -> None:
        self._frozen.clear()
        if self._listener is None and not self._closed:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self._frozen.clear()
        self.cut()
        with self._lock:
            victims = list(self._links)
        for link in victims:
            self._close(link)
