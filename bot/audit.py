"""The audit trail: an append-only, hash-chained record of every lifecycle event.

Each row's hash is SHA-256 over the previous row's hash and the row's canonical content, so
editing, deleting or reordering a row breaks every hash after it. ``verify_chain`` finds the
first broken row. Details are plain facts (durations, who, lease ids); never secret values.

Every state change appends its event here, in its own transaction, so this is also where the
Prometheus counters of outcomes and revocations are fed (``bot.metrics``): once the transaction
has committed, never for one rolled back.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy import event as orm_events
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from bot.metrics import count_committed
from bot.store.models import AuditEvent, AuditHead, utc

GENESIS_HASH = "0" * 64


class AuditAction(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"
    ISSUED = "issued"
    DELIVERED = "delivered"
    REVOKED = "revoked"
    EXPIRED = "expired"
    FAILED = "failed"
    REVOKE_FAILED = "revoke_failed"
    ESCALATED = "escalated"
    REQUEST_EXPIRED = "request_expired"
    BREAK_GLASS = "break_glass"
    REVIEWED = "reviewed"
    EXTENDED = "extended"
    COLLECTED = "collected"
    NOT_COLLECTED = "not_collected"
    SSH_KEY_REGISTERED = "ssh_key_registered"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    #: Approve clicked on a step-up resource: a passkey link went to the approver.
    STEP_UP_REQUESTED = "step_up_requested"
    #: A valid step-up link was used with a passkey that did not verify (or not the approver's).
    STEP_UP_REFUSED = "step_up_refused"
    PASSKEY_REGISTERED = "passkey_registered"
    #: An admin removed a user's passkey (lost, or registered by someone else).
    PASSKEY_RESET = "passkey_reset"
    #: A queued notice Slack refused for good (recipient or channel gone) or for too long.
    NOTICE_GIVEN_UP = "notice_given_up"


def canonical_content(
    at: datetime,
    actor: str,
    action: str,
    request_id: int | None,
    resource: str | None,
    details: str,
) -> str:
    """The exact text that is hashed: stable key order, UTC ISO time, no whitespace."""
    return json.dumps(
        {
            "at": utc(at).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "request_id": request_id,
            "resource": resource,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def chain_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def append_event(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: AuditAction,
    request_id: int | None = None,
    resource: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (it commits with the state change)."""
    # One round trip locks the head row (appends queue here, in chain order) and reads it.
    last = session.exec(
        update(AuditHead)
        .where(col(AuditHead.id) == 1)
        .values(count=AuditHead.count + 1)
        .returning(col(AuditHead.last_hash))
    ).first()
    if last is None:
        session.add(AuditHead(id=1, last_hash=GENESIS_HASH, count=1))
        session.flush()
        prev_hash = GENESIS_HASH
    else:
        prev_hash = str(last[0])
    details_text = json.dumps(
        dict(details or {}), sort_keys=True, separators=(",", ":"), default=str
    )
    content = canonical_content(at, actor, action.value, request_id, resource, details_text)
    event = AuditEvent(
        at=utc(at),
        actor=actor,
        action=action.value,
        request_id=request_id,
        resource=resource,
        details=details_text,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, content),
    )
    session.add(event)
    session.flush()
    session.exec(update(AuditHead).where(col(AuditHead.id) == 1).values(last_hash=event.hash))
    session.info.setdefault(_APPENDED, []).append(action.value)
    return event


_APPENDED = "debug_access_audit_actions"


@orm_events.listens_for(OrmSession, "after_commit")
def _count_appended(session: OrmSession) -> None:
    count_committed(session.info.pop(_APPENDED, []))


@orm_events.listens_for(OrmSession, "after_rollback")
def _forget_appended(session: OrmSession) -> None:
    session.info.pop(_APPENDED, None)


def ensure_chain_head(engine: Engine) -> None:
    """Seed the chain head once, at start, so concurrent first appends never race to create it."""
    with Session(engine) as session:
        if session.get(AuditHead, 1) is not None:
            return
        session.add(AuditHead(id=1, last_hash=GENESIS_HASH, count=0))
        try:
            session.commit()
        except IntegrityError:  # another replica seeded it first
            session.rollback()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


def verify_events(events: Iterable[AuditEvent], head_hash: str | None = None) -> ChainReport:
    """Walk events in id order and report the first one whose link or hash does not hold."""
    prev = GENESIS_HASH
    checked = 0
    for event in events:
        checked += 1
        if event.prev_hash != prev:
            return ChainReport(
                False,
                checked,
                event.id,
                "does not follow the previous row (a row was deleted or moved)",
            )
        content = canonical_content(
            event.at, event.actor, event.action, event.request_id, event.resource, event.details
        )
        if chain_hash(prev, content) != event.hash:
            return ChainReport(False, checked, event.id, "its content was changed")
        prev = event.hash
    if head_hash is not None and head_hash != prev:
        return ChainReport(False, checked, None, "the newest rows were deleted")
    return ChainReport(True, checked)


def verify_chain(session: Session) -> ChainReport:
    """Verify the whole stored chain, including that its tail matches the chain head."""
    events = session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))
    head = session.get(AuditHead, 1)
    return verify_events(events, head.last_hash if head else None)
