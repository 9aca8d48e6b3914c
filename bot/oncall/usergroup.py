"""``type: usergroup`` rotations: every member of a Slack user group counts as on call.

Membership comes from ``usergroups.users.list`` (scope ``usergroups:read``), cached briefly:
the same lookup answers "is this user in group S…" for the policy's ``requesters``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.oncall.base import ANSWER_TTL, RETRY_AFTER, OnCall, OnCallUnavailable, TimedCache

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SlackUsergroups:
    """Members of Slack user groups, cached for ``ttl``; a failed lookup is remembered for
    ``retry_after`` so a Slack outage is not asked again on every click."""

    def __init__(
        self,
        client: WebClient,
        ttl: timedelta = ANSWER_TTL,
        retry_after: timedelta = RETRY_AFTER,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.retry_after = retry_after
        self.clock = clock
        self._cache: TimedCache[str, tuple[str, ...] | OnCallUnavailable] = TimedCache()

    def members(self, usergroup: str, now: datetime | None = None) -> tuple[str, ...]:
        """The user ids in ``usergroup``. Raises OnCallUnavailable if Slack cannot say."""
        now = self.clock() if now is None else now
        cached = self._cache.get(usergroup, now)
        if cached is None:
            cached = self._fetch(usergroup)
            ttl = self.retry_after if isinstance(cached, OnCallUnavailable) else self.ttl
            self._cache.put(usergroup, cached, now, ttl)
        if isinstance(cached, OnCallUnavailable):
            raise cached
        return cached

    def in_any(self, user: str, usergroups: Sequence[str], now: datetime | None = None) -> bool:
        """Whether ``user`` is in one of ``usergroups``; False for groups Slack cannot list
        (failing closed: an outage must not widen who may ask for access)."""
        for usergroup in usergroups:
            try:
                if user in self.members(usergroup, now):
                    return True
            except OnCallUnavailable:
                continue
        return False

    def _fetch(self, usergroup: str) -> tuple[str, ...] | OnCallUnavailable:
        try:
            response = self.client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as exc:
            reason = str(exc.response.get("error"))
        except OSError as exc:
            reason = type(exc).__name__
        else:
            return tuple(str(user) for user in response.get("users") or ())
        log.warning("could not list Slack user group %s: %s", usergroup, reason)
        return OnCallUnavailable(f"Slack user group {usergroup} unavailable ({reason})")


class UsergroupSource:
    """``OnCallSource``: the members of one Slack user group."""

    def __init__(self, name: str, usergroup: str, directory: SlackUsergroups) -> None:
        self._name = name
        self.usergroup = usergroup
        self.directory = directory

    @property
    def name(self) -> str:
        return self._name

    def current(self, now: datetime) -> OnCall:
        try:
            users = self.directory.members(self.usergroup, now)
        except OnCallUnavailable as exc:
            return OnCall(self.name, (), available=False, note=str(exc))
        if not users:
            return OnCall(self.name, (), note=f"nobody in Slack user group {self.usergroup}")
        return OnCall(self.name, users)
