"""Graceful stop for the Slack side: refuse new work, let the work in flight finish.

Bolt acknowledges a request and runs the rest of its listener (deciding, issuing in Vault,
delivering the DM) on its listener executor, after the HTTP answer has gone. Stopping the process
then would cut an approval between "issued" and "delivered". ``Drain`` owns that executor and
counts what runs on it, so shutdown can wait for exactly the work that was accepted; meanwhile
its middleware answers every new request at once with "restarting, try again in a minute"
(``bot.slack.unavailable``), so Slack never waits on a bot that is going away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from slack_bolt import Ack, BoltResponse, Respond
from slack_sdk import WebClient

from bot.slack import unavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Threads running Bolt listeners (the same as the HTTP server's thread pool).
LISTENER_THREADS = 8


class _CountingExecutor(ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not finished yet."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="slack-listener")
        self._busy = 0
        self._changed = threading.Condition()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._changed:
            self._busy += 1

        def run() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

        try:
            return super().submit(run)
        except BaseException:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()
            raise

    def busy(self) -> int:
        with self._changed:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs; False if something still did after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True


class Drain:
    """The listener executor plus the switch that stops taking new requests."""

    def __init__(self, workers: int = LISTENER_THREADS) -> None:
        self.executor = _CountingExecutor(workers)
        self.closing = threading.Event()

    def middleware(
        self,
        body: dict[str, Any],
        next: Callable[[], BoltResponse | None],
        ack: Ack,
        respond: Respond | None,
        client: WebClient,
    ) -> BoltResponse | None:
        """Global Bolt middleware: once closing, answer instead of starting anything."""
        if not self.closing.is_set():
            return next()
        log.info("refused a %s while shutting down", unavailable.kind(body))
        return unavailable.answer(
            body, unavailable.SHUTTING_DOWN, ack=ack, respond=respond, client=client
        )

    def close(self, timeout: float) -> bool:
        """Stop taking requests and wait up to ``timeout`` seconds for those in flight.
        Returns whether they all finished."""
        self.closing.set()
        busy = self.executor.busy()
        if busy:
            log.info("shutting down: waiting for %d Slack request(s) in flight", busy)
        finished = self.executor.wait_idle(timeout)
        if not finished:
            log.error(
                "shutting down with %d Slack request(s) still running after %.0fs",
                self.executor.busy(),
                timeout,
            )
        return finished
