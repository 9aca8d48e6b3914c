"""Liveness and readiness: ``/healthz`` says the process runs, ``/readyz`` says it can do its job.

Why two: a bot whose Vault token died still *runs*, and restarting it would not help when Vault
or the database is the problem, so liveness must stay green; but it can neither issue nor revoke,
and an operator (or Kubernetes, or a load balancer) must see that within seconds. Readiness is
a list of named checks, each answering ``None`` (fine) or a one-line problem. They read state
that background work keeps fresh (the Vault token keeper's heartbeat, the Socket Mode
connection) or make one cheap call (``SELECT 1``), so a probe answers in milliseconds and
recovers by itself when the dependency does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

#: A readiness check: ``None`` when fine, else what is wrong (one line, no secrets).
Check = Callable[[], "str | None"]


@dataclass
class Readiness:
    """Named checks; ready when every one of them answers ``None``."""

    checks: dict[str, Check] = field(default_factory=dict)

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def report(self) -> tuple[bool, dict[str, str]]:
        """Run every check. A check that raises counts as failed, with its exception's type."""
        results: dict[str, str] = {}
        for name, check in list(self.checks.items()):  # a check may be added meanwhile
            try:
                problem = check()
            except Exception as exc:  # a probe must answer, whatever broke
                problem = f"check failed: {type(exc).__name__}"
            results[name] = "ok" if problem is None else problem
        ok = all(value == "ok" for value in results.values())
        return ok, results

    def body(self) -> tuple[bool, bytes]:
        """The JSON a probe gets: ``{"ready": bool, "checks": {name: "ok" | problem}}``."""
        ok, results = self.report()
        if not ok:
            log.warning(
                "not ready: %s", "; ".join(f"{k}: {v}" for k, v in results.items() if v != "ok")
            )
        return ok, json.dumps({"ready": ok, "checks": results}).encode()


#: A probe waits this long for a check that does I/O; a hung dependency is a failed check.
CHECK_TIMEOUT = 2.0


def bounded(check: Check, what: str, timeout: float = CHECK_TIMEOUT) -> Check:
    """``check`` run in its own thread, at most one at a time, waited for ``timeout`` seconds.

    A database that hangs (accepts, never answers) would otherwise hold every probe, and with
    them the server threads that also answer /healthz and Slack. Probes arriving while a check
    hangs wait for that same check (no pile of stuck threads) and fail after ``timeout``.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness")
    lock = threading.Lock()
    running: list[Future[str | None]] = []

    def run() -> str | None:
        with lock:
            if not running or running[0].done():
                running[:] = [executor.submit(check)]
            future = running[0]
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            return f"{what} did not answer within {timeout:g}s"

    return run


def database_check(engine: Engine) -> Check:
    """The database answers ``SELECT 1`` within ``CHECK_TIMEOUT``."""

    def check() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"the database is unreachable ({type(exc).__name__})"
        return None

    return bounded(check, "the database")
