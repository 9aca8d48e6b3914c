"""From a resource's ``approvers`` list to the people who can approve right now.

Each entry, in order, becomes one tier: a rotation name is whoever its source has on call; a
run of consecutive Slack user ids is one tier together (``approvers: [U0ALICE, U0BOB]`` asks
both at once, as a plain list always has). The requester is removed from every tier. The first tier
with anyone left is the primary; later non-empty tiers are escalation levels. Tiers that yield
nobody (the source is unreachable, nobody is on call, only the requester is) stay in the list
with a note saying why and where the request went instead, so the approvers and the audit trail
see the fallback.

Whether a click counts is decided afresh at the moment of the click: a listed user id always
counts; someone from a rotation counts only while on call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from slack_sdk import WebClient

from bot.domain.permissions import eligible_approvers
from bot.oncall.base import OnCall, OnCallSource, OnCallUnavailable
from bot.oncall.config import (
    PagerDutyRotationConfig,
    RotationConfig,
    StaticRotationConfig,
    UsergroupRotationConfig,
    is_slack_user_id,
)
from bot.oncall.pagerduty import DEFAULT_API_URL, PagerDutySource
from bot.oncall.static import StaticSource
from bot.oncall.usergroup import SlackUsergroups, UsergroupSource
from bot.ports import ApproverDirectory, ApproverTier

__all__ = [
    "ApproverResolver",
    "ApproverTier",
    "OnCallConfigError",
    "UnknownApprover",
    "build_resolver",
    "build_sources",
]

log = logging.getLogger(__name__)

NOBODY_ON_CALL = "nobody on call"
ONLY_REQUESTER = "only the requester is on call"
REQUESTER_LISTED = "the requester cannot approve their own request"


class UnknownApprover(LookupError):
    """An approver entry is neither a Slack user id nor a rotation the resolver knows. The
    policy validation makes this a bug, not a user error."""


class OnCallConfigError(Exception):
    """The rotations cannot be served as configured (a PagerDuty rotation without a token)."""


class ApproverResolver:
    """``bot.ports.ApproverDirectory`` over on-call sources keyed by rotation name."""

    def __init__(
        self, sources: Mapping[str, OnCallSource], usergroups: SlackUsergroups | None = None
    ) -> None:
        self.sources = dict(sources)
        self.usergroups = usergroups

    def tiers(
        self, approver_entries: Sequence[str], requester: str, now: datetime
    ) -> list[ApproverTier]:
        """One tier per distinct entry, in order; empty tiers carry a note (see module doc)."""
        answers = [self._tier(entry, requester, now) for entry in _group(approver_entries)]
        tiers: list[ApproverTier] = []
        for index, (tier, reason) in enumerate(answers):
            if tier.users:
                tiers.append(tier)
                continue
            later = next((t for t, _ in answers[index + 1 :] if t.users), None)
            if later is not None:
                reason = f"{reason}: fell back to the next source ({later.source})"
            tiers.append(ApproverTier(tier.source, (), reason))
        return tiers

    def may_approve(
        self, user: str, approver_entries: Sequence[str], requester: str, now: datetime
    ) -> bool:
        """Whether ``user`` may approve at ``now``, the moment of the click: never the
        requester; a listed Slack user id always; a rotation's member only while on call."""
        if user == requester:
            return False
        if user in approver_entries and is_slack_user_id(user):
            return True
        for entry in dict.fromkeys(approver_entries):
            if is_slack_user_id(entry):
                continue
            if user in self._ask(self._source(entry), now).users:
                return True
        return False

    def in_any_group(self, user: str, groups: Sequence[str]) -> bool:
        """Whether ``user`` is in one of these Slack user groups (False without Slack)."""
        return self.usergroups is not None and self.usergroups.in_any(user, groups)

    # ------------------------------------------------------------------ internals

    def _source(self, entry: str) -> OnCallSource:
        source = self.sources.get(entry)
        if source is None:
            raise UnknownApprover(
                f"approver {entry!r} is neither a Slack user id nor a defined rotation"
            )
        return source

    @staticmethod
    def _ask(source: OnCallSource, now: datetime) -> OnCall:
        try:
            return source.current(now)
        except OnCallUnavailable as exc:
            log.warning("rotation %s unavailable: %s", source.name, exc)
            return OnCall(source.name, (), available=False, note=str(exc) or "unavailable")

    def _tier(
        self, entry: str | tuple[str, ...], requester: str, now: datetime
    ) -> tuple[ApproverTier, str]:
        """The tier for one entry (or a run of listed user ids), and why it is empty if it is."""
        if isinstance(entry, tuple):
            users = tuple(eligible_approvers(requester, entry))
            source = ", ".join(entry)
            if not users:
                return ApproverTier(source, (), REQUESTER_LISTED), REQUESTER_LISTED
            return ApproverTier(source, users, None), ""
        answer = self._ask(self._source(entry), now)
        users = tuple(eligible_approvers(requester, answer.users))
        if not answer.available:
            reason = answer.note or f"{entry} unavailable"
        elif users:
            reason = ""
        elif answer.users:
            reason = ONLY_REQUESTER
        else:
            reason = answer.note or NOBODY_ON_CALL
        return ApproverTier(entry, users, answer.note if users else reason), reason


def _group(entries: Sequence[str]) -> list[str | tuple[str, ...]]:
    """Rotation names stay single; consecutive Slack user ids become one tuple (one tier)."""
    grouped: list[str | tuple[str, ...]] = []
    run: list[str] = []
    for entry in dict.fromkeys(entries):
        if is_slack_user_id(entry):
            run.append(entry)
            continue
        if run:
            grouped.append(tuple(run))
            run = []
        grouped.append(entry)
    if run:
        grouped.append(tuple(run))
    return grouped


def build_sources(
    rotations: Mapping[str, RotationConfig],
    slack_client: WebClient,
    pagerduty_token: str | None,
    pagerduty_url: str = DEFAULT_API_URL,
    usergroups: SlackUsergroups | None = None,
) -> dict[str, OnCallSource]:
    """One source per rotation in the policy. Raises OnCallConfigError when a PagerDuty
    rotation exists but no API token was configured."""
    token = (pagerduty_token or "").strip()
    needs_token = sorted(
        name for name, config in rotations.items() if isinstance(config, PagerDutyRotationConfig)
    )
    if needs_token and not token:
        raise OnCallConfigError(
            f"rotation(s) {', '.join(needs_token)} read PagerDuty, but PAGERDUTY_TOKEN is not "
            "set: add the API token (read-only is enough) or remove those rotations"
        )
    directory = usergroups or SlackUsergroups(slack_client)
    sources: dict[str, OnCallSource] = {}
    for name, config in rotations.items():
        if isinstance(config, StaticRotationConfig):
            sources[name] = StaticSource(config.to_static_rotation(name))
        elif isinstance(config, PagerDutyRotationConfig):
            sources[name] = PagerDutySource(
                name,
                token=token,
                slack_client=slack_client,
                schedule_id=config.schedule_id,
                escalation_policy_id=config.escalation_policy_id,
                escalation_level=config.escalation_level,
                api_url=pagerduty_url,
            )
        elif isinstance(config, UsergroupRotationConfig):
            sources[name] = UsergroupSource(name, config.usergroup, directory)
    return sources


def build_resolver(
    rotations: Mapping[str, RotationConfig],
    slack_client: WebClient,
    pagerduty_token: str | None,
    pagerduty_url: str = DEFAULT_API_URL,
) -> ApproverResolver:
    """The resolver the bot runs with: every rotation, plus user group membership for the
    policy's ``requesters``, sharing one user group cache."""
    usergroups = SlackUsergroups(slack_client)
    return ApproverResolver(
        build_sources(rotations, slack_client, pagerduty_token, pagerduty_url, usergroups),
        usergroups,
    )


def _conforms(resolver: ApproverResolver) -> ApproverDirectory:
    """Never called: lets mypy prove the resolver is a ``bot.ports.ApproverDirectory``."""
    return resolver
