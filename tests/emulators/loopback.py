"""Serving an emulator on 127.0.0.1 in a daemon thread: shared by the Slack and PagerDuty ones."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer:
    """Start/stop/`with` for an emulator whose handler class reaches it as ``emulator``.

    ``port`` 0 binds a free port; after a stop, a start binds the same port again (so a test can
    take a service down and bring it back where the bot expects it).
    """

    handler_class: type[BaseHTTPRequestHandler]
    thread_name = "emulator"

    def _init_server(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> Self:
        """Bind the loopback port and serve in a daemon thread (no-op when running)."""
        if self._server is not None:
            return self
        handler = type(
            f"Bound{self.handler_class.__name__}", (self.handler_class,), {"emulator": self}
        )
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            args=(0.05,),
            name=f"{self.thread_name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (connections are then refused); safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
