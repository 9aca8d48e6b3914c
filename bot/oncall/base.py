"""The one interface every on-call provider implements, and what it answers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# How long a provider's answer is trusted, and how long to wait before asking again after a
# failure (so an outage costs one timeout per interval, not one per click).
ANSWER_TTL = timedelta(seconds=60)
RETRY_AFTER = timedelta(seconds=15)


@dataclass(frozen=True)
class OnCall:
    """Who a source says is on call at one instant.

    ``available`` is False when the source could not be asked (PagerDuty down, Slack refused):
    ``users`` is then empty and ``note`` says why, in words fit to show an approver.
    """

    source: str
    users: tuple[str, ...]
    available: bool = True
    note: str | None = None


class OnCallUnavailable(Exception):
    """A source could not say who is on call. ``str(err)`` is a short, user-safe reason.

    Sources return ``OnCall(available=False)`` rather than raise it; the resolver still treats
    a raised one the same way, so a provider that raises cannot break the approval flow.
    """


class OnCallSource(Protocol):
    """A provider of "who is on call now" for one rotation.

    ``current`` must be cheap enough to call on every button click (providers that go over the
    network cache briefly) and must not raise on provider outages.
    """

    @property
    def name(self) -> str:
        """The rotation's name in the policy."""

    def current(self, now: datetime) -> OnCall:
        """The Slack user ids on call at ``now`` (timezone-aware)."""


class TimedCache(Generic[K, V]):
    """Answers remembered until a deadline, measured on the caller's clock (the ``now`` it
    passes), so tests move time by passing a later instant. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[datetime, datetime, V]] = {}

    def get(self, key: K, now: datetime) -> V | None:
        """The value stored for ``key`` if ``now`` falls in ``[stored, stored + ttl)``."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        stored, expires, value = entry
        return value if stored <= now < expires else None

    def put(self, key: K, value: V, now: datetime, ttl: timedelta) -> None:
        with self._lock:
            self._entries[key] = (now, now + ttl, value)
