"""Where Slack work runs, and its graceful stop: refuse new work, let the work in flight finish.

Two thread pools, so that an ack never waits behind earlier requests' work:

* ``executor``, Bolt's listener executor, runs the listeners up to and including their ack
  (parsing, validating; the modal a trigger id must open within 3 s). Bolt's HTTP thread waits
  for the ack by polling it, for at most 3 s: while every listener thread was busy with the
  follow-up of earlier requests, a new request's ack waited in this pool's queue (measured in
  ``benchmarks/ack_burst.py``: 35-39 of 100 burst commands not acked in 3 s).
* ``follow_ups`` runs what a listener hands on after its ack (``later``): deciding, issuing in
  Vault, delivering the DM, answering on ``response_url``. Bounded, so a burst queues here
  instead of starting unbounded threads against the database and Vault.

Stopping the process in the middle would cut an approval between "issued" and "delivered".
``Drain`` counts what runs on both pools, so shutdown can wait for exactly the work that was
accepted; meanwhile its middleware answers every new request at once with "restarting, try
again in a minute" (``bot.slack.unavailable``), so Slack never waits on a bot that is going away.
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

#: Threads running Bolt listeners up to their ack (the same as the HTTP server's thread pool).
LISTENER_THREADS = 8
#: Threads running the work listeners hand on after their ack.
FOLLOW_UP_THREADS = 8


class _CountingExecutor(ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not finished yet."""

    def __init__(self, max_workers: int, name: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=name)
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
            future = super().submit(run)
        except BaseException:
            self._finished()
            raise
        # A call cancelled before it ran (``Drain.close``) never reaches ``run``'s finally.
        future.add_done_callback(lambda done: self._finished() if done.cancelled() else None)
        return future

    def _finished(self) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

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
    """The listener and follow-up executors plus the switch that stops taking new requests."""

    def __init__(
        self, workers: int = LISTENER_THREADS, follow_up_workers: int = FOLLOW_UP_THREADS
    ) -> None:
        self.executor = _CountingExecutor(workers, "slack-listener")
        self.follow_ups = _CountingExecutor(follow_up_workers, "slack-follow-up")
        self.closing = threading.Event()
        self._queued: list[tuple[Future[None], Callable[[], None]]] = []
        self._queued_lock = threading.Lock()

    def later(self, step: Callable[[], None]) -> None:
        """Run ``step`` (a listener's work after its ack) on the follow-up pool. A step with a
        ``dropped`` method is told so if the bot stops before the step could start."""
        future = self.follow_ups.submit(step)
        with self._queued_lock:
            self._queued = [(f, s) for f, s in self._queued if not f.done()]
            self._queued.append((future, step))

    def _drop_queued(self) -> int:
        """Cancel the follow-ups that have not started: acked, so Slack showed no error, and
        the process is about to go; each is told "restarting, try again" instead of nothing."""
        with self._queued_lock:
            queued, self._queued = self._queued, []
        dropped = 0
        for future, step in queued:
            if not future.cancel():
                continue  # running or done: it finishes, or dies with the process
            dropped += 1
            tell = getattr(step, "dropped", None)
            if callable(tell):
                try:
                    tell()
                except Exception:  # telling is best effort while stopping
                    log.exception("could not tell a user their request was dropped")
        return dropped

    def busy(self) -> int:
        """Listeners and follow-ups not finished yet."""
        return self.executor.busy() + self.follow_ups.busy()

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
        busy = self.busy()
        if busy:
            log.info("shutting down: waiting for %d Slack request(s) in flight", busy)
        deadline = time.monotonic() + timeout
        # Listeners first: one still running may yet hand its follow-up on.
        finished = self.executor.wait_idle(timeout) and self.follow_ups.wait_idle(
            max(0.0, deadline - time.monotonic())
        )
        if not finished:
            dropped = self._drop_queued()
            log.error(
                "shutting down with %d Slack request(s) still running after %.0fs; %d acked "
                "but not started were dropped, their users told to try again",
                self.busy(),
                timeout,
                dropped,
            )
        return finished
