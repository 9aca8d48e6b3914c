"""A TCP proxy on loopback that a test can cut and restore, to break a dependency on purpose.

``freeze()`` keeps connections open and passes nothing on (a hung server); ``cut()`` drops every
open connection and answers new ones by closing them at once (what a
dead database or a failed load balancer looks like from the client); ``restore()`` forwards
again. Threads, no asyncio: a test drives it from its own thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

LOOPBACK = "127.0.0.1"


class CuttableProxy:
    """Forward ``127.0.0.1:port`` to ``target``, until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._frozen = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            if self._frozen.is_set():  # accept, then never answer
                with self._lock:
                    self._open.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self._frozen.is_set() and not self._closed:
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until ``restore()``."""
        self._cut = True
        with self._lock:
            victims = list(self._open)
        for sock in victims:
            self._drop(sock)

    def freeze(self) -> None:
        """Keep every connection open but pass nothing on: a server that hangs."""
        self._frozen.set()

    def restore(self) -> None:
        self._cut = False
        self._frozen.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
