"""The daily digest's arithmetic: what happened in a window, what is live, what needs a human.

Pure: the caller loads ``RequestRecord``s (one per request, with its grant if it had one) and the
audit chain's verdict; ``build_digest`` only counts, filters and sorts. Nothing here knows about
Slack or the database, so every rule is unit-tested with synthetic records.

The window is half-open, ``[window_start, window_end)``: a digest that fires at 09:00 counts an
event at exactly 09:00 in the next digest, never in both.

Some findings are not limited to the window, because they stay true until someone acts: failed
revocations, grants still live past their expiry, and break-glass access nobody has reviewed.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Request statuses as stored (``bot.domain.requests.RequestStatus`` values). Plain strings so that
# a status this module does not know yet is carried along rather than rejected.
PENDING = "pending"
DENIED = "denied"
FAILED = "failed"
WITHDRAWN = "withdrawn"
EXPIRED_UNANSWERED = "expired"
# Ends of a request that had approvals (one of two, say) but was not approved in the end.
_NOT_APPROVED = frozenset({PENDING, DENIED, WITHDRAWN, EXPIRED_UNANSWERED})

# Revocation normally lands within seconds of expiry; past this it is worth a human's look.
LATE_GRACE = timedelta(minutes=2)
# "A approves B's requests and B approves A's", at least this many times each way in the window.
MUTUAL_APPROVAL_THRESHOLD = 2
WORKING_HOURS = (time(8), time(19))


@dataclass(frozen=True)
class Approval:
    """One approver's Approve, at the moment it was given."""

    approver: str
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _aware(self.at))


@dataclass(frozen=True)
class RequestRecord:
    """One request and, if it was issued, its grant: everything the digest reads about it.

    ``decided_at`` is when the request left PENDING: approved, denied, withdrawn or expired
    unanswered (``status == "expired"``). ``issued_at`` is set once Vault issued a grant;
    ``ended_at`` once Vault confirmed it gone. ``revoke_failed`` means a revocation failed and has
    not yet succeeded. All times are timezone-aware.
    """

    request_id: int
    requester: str
    resource: str
    reason: str
    duration_asked: timedelta
    status: str
    created_at: datetime
    approvals: tuple[Approval, ...] = ()
    denied_by: str | None = None
    decided_at: datetime | None = None
    break_glass: bool = False
    reviewed_by: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    revoke_attempts: int = 0
    revoke_failed: bool = False

    def __post_init__(self) -> None:
        # All in UTC: Python subtracts two times of the same zone by their wall clocks, which
        # is an hour off across a change of daylight saving time.
        for name in ("created_at", "decided_at", "issued_at", "expires_at", "ended_at"):
            moment = getattr(self, name)
            if moment is not None:
                object.__setattr__(self, name, _aware(moment))

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(approval.approver for approval in self.approvals)


@dataclass(frozen=True)
class Counts:
    requested: int = 0
    approved: int = 0
    denied: int = 0
    expired_unanswered: int = 0
    break_glass: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return (
            self.requested
            + self.approved
            + self.denied
            + self.expired_unanswered
            + self.break_glass
            + self.failed
        )


@dataclass(frozen=True)
class GrantLine:
    """A grant that was live at some point in the window, and how long it was held."""

    record: RequestRecord
    held: timedelta
    ended: bool


class AttentionKind(enum.StrEnum):
    """Findings that need a human, most urgent first (the order they are listed in)."""

    REVOCATION_FAILED = "revocation_failed"  # live in Vault now: before anything else
    USER_LOCKED = "user_locked"
    LATE_REVOCATION = "late_revocation"
    UNREVIEWED_BREAK_GLASS = "unreviewed_break_glass"
    NOTICE_GIVEN_UP = "notice_given_up"  # someone was never told what happened to them
    MUTUAL_APPROVALS = "mutual_approvals"
    OUTSIDE_HOURS = "outside_hours"


@dataclass(frozen=True)
class Attention:
    """One finding.

    ``people`` are the requester (revocations, break-glass), the approver then the requester
    (outside hours), the pair (mutual approvals), the locked user then the admin (a lock), or
    the person never told (a notice given up).
    ``at`` is when it happened or was due; ``late_by`` how late a revocation was (or is, while
    ``still_live``); ``note`` the admin's reason for a lock, or why a notice was given up.
    """

    kind: AttentionKind
    request_ids: tuple[int, ...]
    people: tuple[str, ...]
    resource: str | None = None
    at: datetime | None = None
    late_by: timedelta | None = None
    still_live: bool = False
    attempts: int = 0
    times: tuple[int, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class LockRecord:
    """A lock standing now: listed in every digest until it is lifted, and at the top of the
    locked user's App Home."""

    user: str
    locked_by: str
    reason: str
    locked_at: datetime


@dataclass(frozen=True)
class GivenUpNotice:
    """A direct message the notice outbox gave up on (``bot.lifecycle.notices``): Slack refused
    it for good or for too long, so its recipient was never told. ``reason`` is Slack's error
    code, or ``bot.domain.notices.TOO_OLD``."""

    recipient: str
    reason: str
    at: datetime
    request_id: int | None = None


@dataclass(frozen=True)
class Digest:
    window_start: datetime
    window_end: datetime
    now: datetime
    tz: ZoneInfo
    counts: Counts
    grants: tuple[GrantLine, ...]
    active: tuple[RequestRecord, ...]
    attention: tuple[Attention, ...]
    chain_ok: bool
    chain_problem: str | None = None

    @property
    def needs_attention(self) -> int:
        """How many findings need a human, a broken audit chain included."""
        return len(self.attention) + (0 if self.chain_ok else 1)

    @property
    def is_empty(self) -> bool:
        """Nothing happened in the window and nothing needs anyone: a one-line digest."""
        return (
            self.counts.total == 0
            and not self.grants
            and not self.active
            and self.needs_attention == 0
        )


def build_digest(
    records: Iterable[RequestRecord],
    *,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
    chain_ok: bool,
    chain_problem: str | None = None,
    tz: ZoneInfo,
    working_hours: tuple[time, time] = WORKING_HOURS,
    mutual_threshold: int = MUTUAL_APPROVAL_THRESHOLD,
    locks: Iterable[LockRecord] = (),
    given_up: Iterable[GivenUpNotice] = (),
) -> Digest:
    """Summarise ``records`` for the window ``[window_start, window_end)`` as seen at ``now``.

    ``records`` may include requests from before the window (grants still live, unresolved
    findings); each rule decides for itself whether the window matters.
    """
    start, end, now = _aware(window_start), _aware(window_end), _aware(now)
    if start >= end:
        raise ValueError("the digest window must start before it ends")
    rows = list(records)

    def inside(moment: datetime | None) -> bool:
        return moment is not None and start <= moment < end

    counts = Counts(
        requested=sum(1 for r in rows if inside(r.created_at)),
        approved=sum(
            1
            for r in rows
            if r.approvals and r.status not in _NOT_APPROVED and inside(r.decided_at)
        ),
        denied=sum(1 for r in rows if r.status == DENIED and inside(r.decided_at)),
        expired_unanswered=sum(
            1 for r in rows if r.status == EXPIRED_UNANSWERED and inside(r.decided_at)
        ),
        break_glass=sum(1 for r in rows if r.break_glass and inside(r.created_at)),
        # Issuing follows approval within seconds, so a failure is dated by its decision.
        failed=sum(1 for r in rows if r.status == FAILED and inside(r.decided_at or r.created_at)),
    )
    grants = tuple(
        GrantLine(
            record=r,
            held=held_for(r, end, now),
            ended=r.ended_at is not None and r.ended_at <= min(end, now),
        )
        for r in sorted(rows, key=lambda r: (_issued(r), r.request_id))
        if _live_during(r, start, end)
    )
    active = tuple(
        sorted(
            (r for r in rows if _live_at(r, now)),
            key=lambda r: (r.expires_at or _FAR_FUTURE, r.request_id),
        )
    )
    attention = (
        _failed_revocations(rows)
        + _standing_locks(locks)
        + _late_revocations(rows, start, end, now)
        + _unreviewed_break_glass(rows)
        + _given_up_notices(given_up, start, end)
        + _mutual_approvals(rows, start, end, mutual_threshold)
        + _outside_hours(rows, start, end, tz, working_hours)
    )
    return Digest(
        window_start=start,
        window_end=end,
        now=now,
        tz=tz,
        counts=counts,
        grants=grants,
        active=active,
        attention=attention,
        chain_ok=chain_ok,
        chain_problem=None if chain_ok else (chain_problem or "the audit chain did not verify"),
    )


def held_for(record: RequestRecord, window_end: datetime, now: datetime) -> timedelta:
    """How long the grant was held up to the window's end (or now, if that is earlier)."""
    if record.issued_at is None:
        return timedelta(0)
    until = min(record.ended_at or now, window_end, now)
    return max(until - record.issued_at, timedelta(0))


def is_outside_hours(
    moment: datetime, tz: ZoneInfo, working_hours: tuple[time, time] = WORKING_HOURS
) -> bool:
    """Whether ``moment`` falls on a weekend or outside ``[start, end)`` on the wall clock of
    ``tz`` (so 07:30 UTC is inside Berlin's working day in summer and outside it in winter)."""
    local = moment.astimezone(tz)
    opens, closes = working_hours
    return local.weekday() >= 5 or not opens <= local.time() < closes


# -- the rules ------------------------------------------------------------------------------------

_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("digest times must be timezone-aware")
    return moment.astimezone(UTC)


def _issued(record: RequestRecord) -> datetime:
    return record.issued_at or record.created_at


def _live_during(record: RequestRecord, start: datetime, end: datetime) -> bool:
    """The grant existed at some moment of ``[start, end)``."""
    if record.issued_at is None or record.issued_at >= end:
        return False
    return record.ended_at is None or record.ended_at >= start


def _live_at(record: RequestRecord, now: datetime) -> bool:
    if record.issued_at is None or record.issued_at > now:
        return False
    return record.ended_at is None or record.ended_at > now


def _standing_locks(locks: Iterable[LockRecord]) -> tuple[Attention, ...]:
    """Every lock still standing, whenever it was placed: someone must decide to lift it."""
    return tuple(
        Attention(
            kind=AttentionKind.USER_LOCKED,
            request_ids=(),
            people=(lock.user, lock.locked_by),
            at=_aware(lock.locked_at),
            note=lock.reason,
        )
        for lock in sorted(locks, key=lambda lock: _aware(lock.locked_at))
    )


def _given_up_notices(
    notices: Iterable[GivenUpNotice], start: datetime, end: datetime
) -> tuple[Attention, ...]:
    """DMs given up in the window: someone must tell the person another way (or not at all, if
    they have left)."""
    return tuple(
        Attention(
            kind=AttentionKind.NOTICE_GIVEN_UP,
            request_ids=(n.request_id,) if n.request_id is not None else (),
            people=(n.recipient,),
            at=_aware(n.at),
            note=n.reason,
        )
        for n in sorted(notices, key=lambda n: _aware(n.at))
        if start <= _aware(n.at) < end
    )


def _failed_revocations(rows: list[RequestRecord]) -> tuple[Attention, ...]:
    return tuple(
        Attention(
            kind=AttentionKind.REVOCATION_FAILED,
            request_ids=(r.request_id,),
            people=(r.requester,),
            resource=r.resource,
            at=r.expires_at,
            still_live=True,
            attempts=r.revoke_attempts,
        )
        for r in sorted(rows, key=lambda r: r.request_id)
        if r.revoke_failed
    )


def _late_revocations(
    rows: list[RequestRecord], start: datetime, end: datetime, now: datetime
) -> tuple[Attention, ...]:
    """Grants that ended more than the grace after their expiry (in the window), or are still
    live that long after it. A failing revocation is already listed as such."""
    found = []
    for r in rows:
        if r.issued_at is None or r.expires_at is None or r.revoke_failed:
            continue
        due = r.expires_at + LATE_GRACE
        if r.ended_at is not None:
            if r.ended_at > due and start <= r.ended_at < end:
                found.append(
                    Attention(
                        kind=AttentionKind.LATE_REVOCATION,
                        request_ids=(r.request_id,),
                        people=(r.requester,),
                        resource=r.resource,
                        at=r.expires_at,
                        late_by=r.ended_at - r.expires_at,
                    )
                )
        elif now > due:
            found.append(
                Attention(
                    kind=AttentionKind.LATE_REVOCATION,
                    request_ids=(r.request_id,),
                    people=(r.requester,),
                    resource=r.resource,
                    at=r.expires_at,
                    late_by=now - r.expires_at,
                    still_live=True,
                )
            )
    return tuple(sorted(found, key=lambda a: (not a.still_live, a.at or _FAR_FUTURE)))


def _unreviewed_break_glass(rows: list[RequestRecord]) -> tuple[Attention, ...]:
    return tuple(
        Attention(
            kind=AttentionKind.UNREVIEWED_BREAK_GLASS,
            request_ids=(r.request_id,),
            people=(r.requester,),
            resource=r.resource,
            at=r.issued_at or r.created_at,
        )
        for r in sorted(rows, key=lambda r: (r.created_at, r.request_id))
        if r.break_glass and r.reviewed_by is None
    )


def _approvals_in(
    rows: list[RequestRecord], start: datetime, end: datetime
) -> list[tuple[RequestRecord, Approval]]:
    return [(r, a) for r in rows for a in r.approvals if start <= a.at < end]


def _mutual_approvals(
    rows: list[RequestRecord], start: datetime, end: datetime, threshold: int
) -> tuple[Attention, ...]:
    """Pairs who approved each other's requests at least ``threshold`` times each way."""
    given: Counter[tuple[str, str]] = Counter()
    requests: dict[tuple[str, str], list[int]] = {}
    for record, approval in _approvals_in(rows, start, end):
        pair = (approval.approver, record.requester)
        given[pair] += 1
        requests.setdefault(pair, []).append(record.request_id)
    found = []
    for (a, b), count in sorted(given.items()):
        back = given.get((b, a), 0)
        if a < b and count >= threshold and back >= threshold:
            ids = sorted({*requests[(a, b)], *requests[(b, a)]})
            found.append(
                Attention(
                    kind=AttentionKind.MUTUAL_APPROVALS,
                    request_ids=tuple(ids),
                    people=(a, b),
                    times=(count, back),
                )
            )
    return tuple(found)


def _outside_hours(
    rows: list[RequestRecord],
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    working_hours: tuple[time, time],
) -> tuple[Attention, ...]:
    return tuple(
        Attention(
            kind=AttentionKind.OUTSIDE_HOURS,
            request_ids=(record.request_id,),
            people=(approval.approver, record.requester),
            resource=record.resource,
            at=approval.at,
        )
        for record, approval in sorted(
            _approvals_in(rows, start, end), key=lambda pair: (pair[1].at, pair[0].request_id)
        )
        if is_outside_hours(approval.at, tz, working_hours)
    )
