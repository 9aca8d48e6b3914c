"""``type: pagerduty`` rotations: who PagerDuty has on call right now.

Reads ``GET /oncalls`` for one schedule, or one level of an escalation policy, with ``since``
and ``until`` both set to the instant asked about, then maps each PagerDuty user to a Slack
user by email (``/users/{id}`` when the on-call entry carries no email, then Slack's
``users.lookupByEmail``).

Plain ``requests`` with a short timeout rather than PagerDuty's client library: we need two GET
endpoints, and the library (``python-pagerduty``, successor of the deprecated ``pdpyras``)
retries with growing back-off, which is the opposite of what a button click needs. When
PagerDuty is unreachable the answer is "unavailable" at once and the resolver falls back to the
next approver source.

The API token is sent in a header only; it is never logged, and it is registered with
``bot.logs`` so it is masked even if a library logs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.text import quote as without_markup
from bot.logs import remember_secret
from bot.oncall.base import ANSWER_TTL, RETRY_AFTER, OnCall, OnCallUnavailable, TimedCache

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.pagerduty.com"
ACCEPT = "application/vnd.pagerduty+json;version=2"
PAGE_SIZE = 100
MAX_PAGES = 50
# A PagerDuty user's Slack account rarely changes: remember the mapping longer than who is on
# call.
USER_MAP_TTL = timedelta(hours=1)


class _NotFound(OnCallUnavailable):
    """PagerDuty answered 404 for the object asked about."""


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class PagerDutySource:
    """``OnCallSource`` reading PagerDuty's REST API v2.

    Give exactly one of ``schedule_id`` or ``escalation_policy_id`` (with ``escalation_level``).
    Answers are cached for ``ttl``; after a failure PagerDuty is not asked again for
    ``retry_after``. Both are measured on the ``now`` passed to ``current``.
    """

    def __init__(
        self,
        name: str,
        *,
        token: str,
        slack_client: WebClient,
        schedule_id: str | None = None,
        escalation_policy_id: str | None = None,
        escalation_level: int = 1,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 5.0,
        ttl: timedelta = ANSWER_TTL,
        retry_after: timedelta = RETRY_AFTER,
        session: requests.Session | None = None,
    ) -> None:
        if (schedule_id is None) == (escalation_policy_id is None):
            raise ValueError("give exactly one of schedule_id or escalation_policy_id")
        if not token.strip():
            raise ValueError("a PagerDuty API token is required")
        remember_secret(token)
        self._name = name
        self.schedule_id = schedule_id
        self.escalation_policy_id = escalation_policy_id
        self.escalation_level = escalation_level
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.ttl = ttl
        self.retry_after = retry_after
        self.slack = slack_client
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Token token={token}", "Accept": ACCEPT}
        self._lock = threading.Lock()
        self._answers: TimedCache[None, OnCall] = TimedCache()
        # PagerDuty user id -> Slack user id, "" for "no Slack account matches".
        self._slack_ids: TimedCache[str, str] = TimedCache()
        self._emails: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PagerDutySource({self._name!r}, {self.target})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def target(self) -> str:
        """``schedule PABC123`` or ``escalation policy PXYZ level 2``, for messages."""
        if self.schedule_id is not None:
            return f"schedule {self.schedule_id}"
        return f"escalation policy {self.escalation_policy_id} level {self.escalation_level}"

    def current(self, now: datetime) -> OnCall:
        # One caller asks PagerDuty; clicks arriving meanwhile wait for that answer.
        with self._lock:
            cached = self._answers.get(None, now)
            if cached is not None:
                return cached
            try:
                answer = self._ask(now)
            except OnCallUnavailable as exc:
                log.warning("rotation %s: %s", self._name, exc)
                answer = OnCall(self._name, (), available=False, note=str(exc))
            ttl = self.ttl if answer.available else self.retry_after
            self._answers.put(None, answer, now, ttl)
            return answer

    # ------------------------------------------------------------------ PagerDuty

    def _ask(self, now: datetime) -> OnCall:
        users: dict[str, str] = {}
        for entry in self._oncalls(now):
            user = entry.get("user")
            if isinstance(user, dict) and isinstance(user.get("id"), str):
                users.setdefault(user["id"], str(user.get("summary") or user.get("name") or ""))
                if isinstance(user.get("email"), str) and user["email"]:
                    self._emails[user["id"]] = user["email"]
        if not users:
            return OnCall(self._name, (), note=f"nobody on call in PagerDuty {self.target}")
        slack_ids: list[str] = []
        unmatched: list[str] = []
        for pd_id, label in users.items():
            slack_id = self._slack_id(pd_id, now)
            if slack_id is None:
                # A PagerDuty display name is third-party text shown in Slack: no markup.
                unmatched.append(without_markup(label or pd_id, limit=80))
            elif slack_id not in slack_ids:
                slack_ids.append(slack_id)
        note = None
        if unmatched:
            note = f"no Slack account matches the email of PagerDuty user(s) {', '.join(unmatched)}"
        return OnCall(self._name, tuple(slack_ids), note=note)

    def _oncalls(self, now: datetime) -> Iterator[dict[str, Any]]:
        params: list[tuple[str, str | int]] = [
            ("since", _iso(now)),
            ("until", _iso(now)),
            ("time_zone", "UTC"),
            ("include[]", "users"),
            ("limit", PAGE_SIZE),
        ]
        if self.schedule_id is not None:
            params.append(("schedule_ids[]", self.schedule_id))
        else:
            params += [
                ("escalation_policy_ids[]", str(self.escalation_policy_id)),
                ("escalation_levels[]", self.escalation_level),
            ]
        offset = 0
        for _page in range(MAX_PAGES):
            try:
                body = self._get("/oncalls", [*params, ("offset", offset)])
            except _NotFound:
                raise OnCallUnavailable(f"PagerDuty has no {self.target} (HTTP 404)") from None
            entries = body.get("oncalls")
            if not isinstance(entries, list):
                raise OnCallUnavailable("PagerDuty sent an unreadable on-call list")
            for entry in entries:
                if isinstance(entry, dict) and self._covers(entry, now):
                    yield entry
            if not body.get("more") or not entries:
                return
            offset += len(entries)
        log.warning("rotation %s: stopped reading on-calls after %d pages", self._name, MAX_PAGES)

    def _covers(self, entry: dict[str, Any], now: datetime) -> bool:
        """Belt and braces over PagerDuty's own filter: only an entry for the right level
        whose period includes ``now`` counts (no start/end means permanently on call)."""
        if self.escalation_policy_id is not None and entry.get("escalation_level") not in (
            None,
            self.escalation_level,
        ):
            return False
        start, end = _parse_time(entry.get("start")), _parse_time(entry.get("end"))
        return (start is None or start <= now) and (end is None or now < end)

    def _get(
        self,
        path: str,
        params: list[tuple[str, str | int]] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._session.get(
                self.api_url + path, params=params, headers=self._headers, timeout=self.timeout
            )
        except requests.Timeout:
            raise OnCallUnavailable("PagerDuty unreachable (timed out)") from None
        except requests.RequestException as exc:
            raise OnCallUnavailable(f"PagerDuty unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise OnCallUnavailable(f"PagerDuty unreachable (HTTP {status})")
        if status in (401, 403):
            log.error("PagerDuty refused the API token (HTTP %d): check PAGERDUTY_TOKEN", status)
            raise OnCallUnavailable(f"PagerDuty refused the bot's API token (HTTP {status})")
        if status == 404:
            raise _NotFound("PagerDuty answered HTTP 404")
        if status >= 300:
            raise OnCallUnavailable(f"PagerDuty answered HTTP {status}")
        try:
            body = response.json()
        except ValueError:
            raise OnCallUnavailable("PagerDuty sent an unreadable answer") from None
        if not isinstance(body, dict):
            raise OnCallUnavailable("PagerDuty sent an unreadable answer")
        return body

    # ------------------------------------------------------------------ PagerDuty -> Slack

    def _slack_id(self, pd_id: str, now: datetime) -> str | None:
        """The Slack user id for a PagerDuty user, or None when no Slack account matches."""
        cached = self._slack_ids.get(pd_id, now)
        if cached is not None:
            return cached or None
        email = self._emails.get(pd_id) or self._email(pd_id)
        slack_id = self._lookup_by_email(email) if email else None
        # Remember "no match" for the short TTL only: the person may join Slack any minute.
        if slack_id is None:
            self._slack_ids.put(pd_id, "", now, self.ttl)
        else:
            self._slack_ids.put(pd_id, slack_id, now, USER_MAP_TTL)
        return slack_id

    def _email(self, pd_id: str) -> str | None:
        try:
            body = self._get(f"/users/{quote(pd_id, safe='')}")
        except _NotFound:
            return None
        user = body.get("user")
        email = user.get("email") if isinstance(user, dict) else None
        return email if isinstance(email, str) and email else None

    def _lookup_by_email(self, email: str) -> str | None:
        try:
            response = self.slack.users_lookupByEmail(email=email)
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error == "users_not_found":
                return None
            raise OnCallUnavailable(
                f"Slack could not match PagerDuty users by email ({error})"
            ) from None
        except OSError as exc:
            raise OnCallUnavailable(
                f"Slack could not match PagerDuty users by email ({type(exc).__name__})",
            ) from None
        user = response.get("user")
        if not isinstance(user, dict) or user.get("deleted") or not user.get("id"):
            return None
        return str(user["id"])
