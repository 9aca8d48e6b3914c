"""A request's life: validation of what was asked, and the states it may move through.

    PENDING --approve--> APPROVED --issued--> ACTIVE --end--> REVOKING --confirmed--> ENDED
       |  (N approvals,     |                                     ^   (retries until Vault
       |   or break-glass)  +--issue failed--> FAILED             |    confirms; never skips)
       +--deny--> DENIED                        ACTIVE -----------+
       +--withdraw--> WITHDRAWN
       +--pending_ttl passes--> EXPIRED

An extension is a request of its own (kind "extension") that walks PENDING -> APPROVED and
then, instead of issuing, renews its parent grant: APPROVED -> ENDED, or FAILED.

APPROVED is the short window while Vault issues; the database row moving PENDING -> APPROVED is
the atomic claim that makes two simultaneous Approve clicks issue one credential.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.durations import (
    MINIMUM_GRANT,
    DurationError,
    check_grant_duration,
    format_duration,
    parse_duration,
)
from bot.domain.errors import Conflict, UserError
from bot.domain.text import quote

MAX_REASON_LENGTH = 500
MIN_REASON_LENGTH = 3


class BreakGlassLimits(Protocol):
    """How long access without approval may last (``bot.policy.BreakGlass``)."""

    @property
    def max_duration(self) -> timedelta: ...


class ResourceLimits(Protocol):
    """What a request is checked against: the durations of a policy resource
    (``bot.policy.Resource``), read through this so the domain needs no policy model."""

    @property
    def default_duration(self) -> timedelta | None: ...

    @property
    def max_duration(self) -> timedelta: ...

    @property
    def break_glass(self) -> BreakGlassLimits | None: ...


class UnknownResource(UserError):
    """The resource is not in the policy."""


class ReasonError(UserError):
    """The reason is missing or unusable."""


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    REVOKING = "revoking"
    ENDED = "ended"
    DENIED = "denied"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        """Still needs someone or something to act on it."""
        return self in _OPEN

    @property
    def label(self) -> str:
        return _LABELS[self]


_OPEN = frozenset(
    {RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.ACTIVE, RequestStatus.REVOKING}
)
_LABELS = {
    RequestStatus.PENDING: "waiting for approval",
    RequestStatus.APPROVED: "approved, issuing",
    RequestStatus.ACTIVE: "active",
    RequestStatus.REVOKING: "being revoked",
    RequestStatus.ENDED: "ended",
    RequestStatus.DENIED: "denied",
    RequestStatus.FAILED: "failed",
    RequestStatus.WITHDRAWN: "withdrawn",
    RequestStatus.EXPIRED: "expired unanswered",
}

ALLOWED_TRANSITIONS: Mapping[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.PENDING: frozenset(
        {
            RequestStatus.APPROVED,
            RequestStatus.DENIED,
            RequestStatus.WITHDRAWN,
            RequestStatus.EXPIRED,
        }
    ),
    RequestStatus.APPROVED: frozenset(
        {RequestStatus.ACTIVE, RequestStatus.FAILED, RequestStatus.ENDED}
    ),
    RequestStatus.ACTIVE: frozenset({RequestStatus.REVOKING}),
    RequestStatus.REVOKING: frozenset({RequestStatus.ENDED}),
    RequestStatus.ENDED: frozenset(),
    RequestStatus.DENIED: frozenset(),
    RequestStatus.FAILED: frozenset(),
    RequestStatus.WITHDRAWN: frozenset(),
    RequestStatus.EXPIRED: frozenset(),
}


def request_sources(target: RequestStatus) -> frozenset[RequestStatus]:
    """Every state from which a request may move to ``target`` (the guard of a claim)."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


def check_transition(current: RequestStatus, target: RequestStatus) -> None:
    """Raise Conflict unless ``current -> target`` is a move the state machine allows."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise Conflict(f"This request is {current.label}; it cannot become {target.label}.")


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every policy check and may be stored."""

    resource: str
    duration: timedelta
    reason: str


def clean_reason(text: str) -> str:
    """Normalise a reason: strip control characters, collapse whitespace, enforce length.

    Escaping for Slack happens when rendering; this only makes the stored text sane.
    """
    printable = "".join(
        " " if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} else ch for ch in text
    )
    reason = " ".join(printable.split())
    if len(reason) < MIN_REASON_LENGTH:
        raise ReasonError(
            "Please give a reason (an incident or ticket id helps), for example "
            "`INC-4211 checkout errors`."
        )
    if len(reason) > MAX_REASON_LENGTH:
        raise ReasonError(
            f"The reason is too long ({len(reason)} characters, at most {MAX_REASON_LENGTH})."
        )
    return reason


def validate_request(
    resources: Mapping[str, ResourceLimits],
    resource: str,
    duration_text: str | None,
    reason: str,
) -> ValidRequest:
    """Check a request against the policy. Raises UserError naming what is wrong."""
    wanted = resources.get(resource)
    if wanted is None:
        known = ", ".join(f"`{name}`" for name in sorted(resources))
        raise UnknownResource(f"Unknown resource `{quote(resource)}`. You can ask for: {known}.")
    if duration_text is None or not duration_text.strip():
        if wanted.default_duration is None:
            raise DurationError(
                f"Say how long you need `{resource}` for, for example "
                f"`/debug-access {resource} 30m <reason>` (at most "
                f"{format_duration(wanted.max_duration)})."
            )
        duration = wanted.default_duration
    else:
        duration = check_grant_duration(parse_duration(duration_text), wanted.max_duration)
    return ValidRequest(resource=resource, duration=duration, reason=clean_reason(reason))


def validate_break_glass(resource_name: str, resource: ResourceLimits, duration: timedelta) -> None:
    """Break-glass skips approval, so it is allowed only where the policy says, and shorter."""
    if resource.break_glass is None:
        raise UserError(f"`{resource_name}` has no break-glass access; ask for approval instead.")
    limit = resource.break_glass.max_duration
    if duration > limit:
        raise DurationError(
            f"Break-glass access to `{resource_name}` lasts at most {format_duration(limit)}."
        )


def extension_limit(
    issued_at: datetime, expires_at: datetime, extra: timedelta, max_duration: timedelta
) -> datetime:
    """The new expiry for an extension, refusing any that would exceed ``max_duration`` in total
    (counted from the moment the grant was issued)."""
    new_expiry = expires_at + extra
    ceiling = issued_at + max_duration
    if new_expiry > ceiling:
        room = max(ceiling - expires_at, timedelta(0))
        raise DurationError(
            f"That would exceed the resource's {format_duration(max_duration)} in total; at most "
            f"{format_duration(room)} more can be granted."
            if room >= MINIMUM_GRANT
            else f"This grant is already at the resource's {format_duration(max_duration)} maximum."
        )
    return new_expiry
