"""Tables. Lease ids and token accessors are stored; secret values never are.

Times are timezone-aware UTC. SQLite forgets the zone, so ``utc()`` re-attaches it on read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus

__all__ = [
    "AccessRequest",
    "AuditEvent",
    "AuditHead",
    "Decision",
    "DigestRun",
    "Grant",
    "GrantStatus",
    "Notice",
    "PasskeyCredential",
    "RequestMessage",
    "SshPublicKey",
    "StepUpLink",
    "UserLock",
    "utc",
]


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(**kwargs: object) -> object:
    return Field(sa_type=DateTime(timezone=True), **kwargs)  # type: ignore[call-overload]


class AccessRequest(SQLModel, table=True):
    """One ask for access, from submission to its final state."""

    __tablename__ = "access_request"
    # At most one pending extension per grant, even when two are asked for at the same moment.
    __table_args__ = (
        Index(
            "ux_one_pending_extension",
            "parent_id",
            unique=True,
            postgresql_where=text("status = 'pending' AND parent_id IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND parent_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    requester: str = Field(index=True, max_length=32)
    resource: str = Field(index=True, max_length=64)
    duration_seconds: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    # A plain string column, not a database enum: new states need no ALTER TYPE migration.
    status: str = Field(default=RequestStatus.PENDING.value, index=True, max_length=16)
    origin_channel: str | None = Field(default=None, max_length=32)
    created_at: datetime = _when()  # type: ignore[assignment]
    updated_at: datetime = _when()  # type: ignore[assignment]
    decided_by: str | None = Field(default=None, max_length=32)
    decided_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    failure: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # "access", or "extension" of the grant of request ``parent_id``.
    kind: str = Field(default="access", max_length=16)
    parent_id: int | None = Field(default=None, foreign_key="access_request.id", index=True)
    break_glass: bool = False
    reviewed_by: str | None = Field(default=None, max_length=32)
    reviewed_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    approvals_required: int = 1
    # Everyone asked so far (JSON list), how far it escalated, and why routing looked as it did.
    asked: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    escalation_level: int = 0
    asked_sources: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    routing_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    pending_until: datetime | None = _when(default=None)  # type: ignore[assignment]
    # The SSH public key (one line, no comment) a certificate grant signs; public by nature.
    public_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # When the last approver tier was asked (None: only the first, at created_at): the next
    # escalation is due escalate_after later.
    escalated_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    # The timers' hold (bot.store.due): no replica's tick takes up this row's due work before
    # then (one is working on it, or it failed and waits for its retry). Not a due time.
    next_attempt_at: datetime | None = _when(default=None)  # type: ignore[assignment]


class RequestMessage(SQLModel, table=True):
    """A Slack message that shows a request, so every copy can be updated after a decision."""

    __tablename__ = "request_message"
    __table_args__ = (UniqueConstraint("channel", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", index=True)
    kind: str = Field(max_length=16)  # "approval" | "credentials" | "audit" (thread root)
    channel: str = Field(max_length=32)
    ts: str = Field(max_length=32)


class Decision(SQLModel, table=True):
    """An approver's verdict. One per approver and request: a retried click cannot count twice."""

    __tablename__ = "decision"
    __table_args__ = (UniqueConstraint("request_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", index=True)
    approver: str = Field(max_length=32)
    verdict: str = Field(max_length=8)  # "approve" | "deny"
    decided_at: datetime = _when()  # type: ignore[assignment]


class Grant(SQLModel, table=True):
    """What Vault issued for an approved request: references only, never the secret itself."""

    __tablename__ = "grant"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_request.id", unique=True)
    status: str = Field(default=GrantStatus.ISSUING.value, index=True, max_length=16)
    token_accessor: str | None = Field(default=None, max_length=128)
    lease_id: str | None = Field(default=None, max_length=512)
    issued_at: datetime = _when()  # type: ignore[assignment]
    expires_at: datetime | None = _when(default=None, index=True)  # type: ignore[assignment]
    claimed_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    ended_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    end_reason: str | None = Field(default=None, max_length=32)
    ended_by: str | None = Field(default=None, max_length=32)
    revoke_attempts: int = 0
    # Wrapped delivery: the wrapping token's accessor (not the token), when it must have been
    # unwrapped by, and whether it was (None until checked).
    wrap_accessor: str | None = Field(default=None, max_length=128)
    collect_by: datetime | None = _when(default=None)  # type: ignore[assignment]
    collected: bool | None = None
    # When a failed revocation is due again.
    next_retry_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The timers' hold, as on AccessRequest.
    next_attempt_at: datetime | None = _when(default=None)  # type: ignore[assignment]


class AuditEvent(SQLModel, table=True):
    """Append-only audit trail; each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True)  # type: ignore[assignment]
    actor: str = Field(max_length=32)
    action: str = Field(index=True, max_length=32)
    request_id: int | None = Field(default=None, index=True)
    resource: str | None = Field(default=None, max_length=64)
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    """A single row that serialises appends to the chain.

    Every append first updates this row, which takes a row lock on PostgreSQL and the write
    lock on SQLite, so two concurrent appends can never both build on the same previous hash.
    """

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    last_hash: str = Field(max_length=64)
    count: int = 0


class DigestRun(SQLModel, table=True):
    """One row per posted digest window, so replicas firing the same cron job post it once."""

    __tablename__ = "digest_run"

    id: int | None = Field(default=None, primary_key=True)
    window_end: datetime = _when(unique=True)  # type: ignore[assignment]
    posted_at: datetime = _when()  # type: ignore[assignment]


class SshPublicKey(SQLModel, table=True):
    """The SSH public key a user registered once on the App Home, for certificate grants.

    Public keys only: the domain refuses anything that looks like a private key before a row is
    written. One per user; registering again replaces it (the audit trail keeps each fingerprint).
    """

    __tablename__ = "ssh_public_key"

    user: str = Field(primary_key=True, max_length=32)
    public_key: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(max_length=64)
    registered_at: datetime = _when()  # type: ignore[assignment]


class Notice(SQLModel, table=True):
    """A message a person must get even if Slack is down when it is written (an outbox).

    The lifecycle writes a notice in the transaction that records what it reports (a grant
    revoked because its credentials could not be delivered), and sends it after; one that Slack
    refuses stays queued and is retried until it goes out, by any replica, or is given up.
    ``claimed_until`` keeps two replicas from sending one notice at the same moment; a sender
    that dies holding it lets the claim lapse. Plain text only, never a secret.
    """

    __tablename__ = "notice"

    id: int | None = Field(default=None, primary_key=True)
    user: str = Field(max_length=32)
    text: str = Field(sa_column=Column(Text, nullable=False))
    request_id: int | None = Field(default=None, foreign_key="access_request.id", index=True)
    created_at: datetime = _when()  # type: ignore[assignment]
    # Unsent notices are due at ``next_attempt_at``; ``sent_at`` is set once Slack took it.
    next_attempt_at: datetime = _when(index=True)  # type: ignore[assignment]
    attempts: int = 0
    claimed_until: datetime | None = _when(default=None)  # type: ignore[assignment]
    sent_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    last_error: str | None = Field(default=None, max_length=200)
    #: What to do with it: ``dm`` sends ``text`` to ``user``. Other kinds tell Slack afterwards
    #: what was done while it was down (the command line): see ``bot.lifecycle.notices``.
    kind: str = Field(default="dm", max_length=16, sa_column_kwargs={"server_default": "dm"})
    #: Set when Slack refused it for good (the recipient or channel is gone) or for too long:
    #: never tried again, and recorded in the audit trail (``bot.lifecycle.notices``).
    given_up_at: datetime | None = _when(default=None)  # type: ignore[assignment]


class UserLock(SQLModel, table=True):
    """An admin's lock on a user (the kill switch): while it stands (``lifted_at`` empty) the
    user gets nothing new, approves nothing, and their grants were revoked when it was placed.

    A row per lock, never deleted: lifting sets ``lifted_at``, so the history stays for the
    digest and the auditors. At most one standing lock per user (a partial unique index).
    """

    __tablename__ = "user_lock"
    __table_args__ = (
        Index(
            "ux_one_standing_lock",
            "user",
            unique=True,
            postgresql_where=text("lifted_at IS NULL"),
            sqlite_where=text("lifted_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user: str = Field(max_length=32)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    locked_by: str = Field(max_length=32)
    #: ``slack`` or ``cli``: where the admin acted.
    locked_via: str = Field(max_length=16)
    locked_at: datetime = _when()  # type: ignore[assignment]
    lifted_by: str | None = Field(default=None, max_length=32)
    lifted_via: str | None = Field(default=None, max_length=16)
    lifted_at: datetime | None = _when(default=None)  # type: ignore[assignment]


class PasskeyCredential(SQLModel, table=True):
    """A passkey (WebAuthn credential) a user registered for step-up. Public material only:
    the private key never leaves the authenticator. ``sign_count`` is the authenticator's
    counter at its last use; an assertion that does not move it forward is refused."""

    __tablename__ = "passkey_credential"

    id: int | None = Field(default=None, primary_key=True)
    #: One passkey per person (unique): see ``bot.lifecycle.step_up.ALREADY_ENROLLED``.
    user: str = Field(index=True, unique=True, max_length=32)
    #: The credential id, base64url (as the browser reports it).
    credential_id: str = Field(unique=True, max_length=1024)
    #: The COSE public key, base64url.
    public_key: str = Field(sa_column=Column(Text, nullable=False))
    sign_count: int = 0
    created_at: datetime = _when()  # type: ignore[assignment]
    last_used_at: datetime | None = _when(default=None)  # type: ignore[assignment]


class StepUpLink(SQLModel, table=True):
    """A single-use link to the passkey page, bound to one user, one purpose (enrol or approve
    a request) and an expiry. Only the token's SHA-256 is kept: the link is a bearer secret.
    ``challenge`` is the WebAuthn challenge the page must sign (random, not a secret);
    ``used_at`` is set by the one use that succeeds, in the same transaction that checks it."""

    __tablename__ = "step_up_link"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, max_length=64)
    purpose: str = Field(max_length=16)
    user: str = Field(max_length=32)
    request_id: int | None = Field(default=None, foreign_key="access_request.id", index=True)
    challenge: str = Field(max_length=128)
    created_at: datetime = _when()  # type: ignore[assignment]
    expires_at: datetime = _when()  # type: ignore[assignment]
    used_at: datetime | None = _when(default=None)  # type: ignore[assignment]
    #: A break-glass link's request as asked (JSON: resource, duration, reason, channel, public
    #: key): it is created only once the requester confirms. No secrets.
    payload: str | None = Field(default=None, sa_column=Column(Text))
    #: Passkey answers refused on this link (each audited); at ``MAX_REFUSALS`` it is spent, so
    #: whoever holds the link cannot make the bot write audit events without end.
    refusals: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
