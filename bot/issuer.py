"""The interface between the request lifecycle and the secrets backend (Vault or OpenBao).

The lifecycle never imports hvac: it talks to an ``Issuer``. That keeps the use cases testable
with a fake and keeps every Vault detail (paths, token roles, error mapping) in ``bot.vault``.

Issuing is split in two steps on purpose. ``create_grant_token`` makes the orphan token whose TTL
is the approved duration; the lifecycle commits its accessor to the database *before* it calls
``obtain``. If the bot dies between the two steps, the database still knows which token to
revoke, and Vault ends the token on its own at the approved expiry anyway.

The lifecycle never asks what kind of grant it issues (``bot.domain.grant_kinds``): the spec
carries the kind, and the issuer decides what creating the token and obtaining mean for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.grant_kinds import GrantKind
from bot.logs import remember_secret


class IssuerError(Exception):
    """Vault refused or failed. The message is safe to show to users: it never holds a secret.

    ``unreachable``: Vault gave no answer (refused, reset, timed out), as opposed to answering
    with an error. ``maybe_done``: the request may have reached Vault and been carried out
    although no answer came back (a timeout or a reset after sending): what it would have
    created may exist.
    """

    def __init__(self, message: str, *, unreachable: bool = False, maybe_done: bool = False):
        super().__init__(message)
        self.unreachable = unreachable or maybe_done
        self.maybe_done = maybe_done


class SecretValue:
    """A secret string that cannot leak through repr(), str() or f-strings by accident.

    Call ``reveal()`` at the one place that must hand the value on (wrapping or the DM).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class WrappedSecret(SecretValue):
    """A response-wrapping token (secret) and its accessor (not secret: it lets the bot ask
    Vault later whether the requester has unwrapped it, without being able to unwrap it)."""

    __slots__ = ("accessor",)

    def __init__(self, token: str, accessor: str) -> None:
        super().__init__(token)
        self.accessor = accessor


@dataclass(frozen=True)
class GrantSpec:
    """What the lifecycle asks the issuer for: one grant for one approved request."""

    request_id: int
    requester: str
    resource: str
    ttl: timedelta
    max_ttl: timedelta
    grant: GrantKind
    #: The OpenSSH public key line to sign, for kinds that need one (``grant.key_policy()``).
    public_key: str | None = None


@dataclass(frozen=True)
class GrantToken:
    """The orphan token that bounds the grant's lifetime inside Vault itself."""

    accessor: str
    token: SecretValue
    expires_at: datetime
    policies: tuple[str, ...]


@dataclass(frozen=True)
class Obtained:
    """What a grant gives the requester, obtained with the grant token.

    ``values`` is what the requester receives (database credentials, the grant token itself, or a
    signed SSH certificate).
    A lease, when the kind has one (a dynamic secret), is a child of the grant token: the bot
    records it to revoke and renew it, and it may end before the token does.
    """

    values: Mapping[str, SecretValue] = field(default_factory=dict)
    lease_id: str | None = None
    lease_expires_at: datetime | None = None
    #: What the audit trail records about it (ids, serials, fingerprints: never a value).
    audit: Mapping[str, object] = field(default_factory=dict)
    #: How to use it, shown with the delivery (plain mrkdwn written by the bot, no user text).
    instructions: tuple[str, ...] = ()
    #: Show each value alone in its own block, to be copied into a file as it is (a
    #: certificate), rather than as ``name: value`` lines.
    verbatim: bool = False

    def __post_init__(self) -> None:
        if (self.lease_id is None) != (self.lease_expires_at is None):
            raise ValueError("a lease has both an id and an expiry, or neither")


class Issuer(Protocol):
    """Issue, deliver and revoke grants. ``bot.vault.VaultIssuer`` is the real one."""

    def create_grant_token(self, spec: GrantSpec) -> GrantToken:
        """Create an orphan, non-renewable-by-the-user token with TTL = spec.ttl."""

    def obtain(self, token: GrantToken, spec: GrantSpec) -> Obtained:
        """Obtain what ``spec.grant`` gives *with the grant token*, so any lease dies with it.

        May not be idempotent in Vault (each dynamic-secret read makes a new database user):
        never retried blindly.
        """

    def wrap(self, values: Mapping[str, str], ttl: timedelta) -> WrappedSecret:
        """Response-wrap ``values``; return the single-use wrapping token and its accessor."""

    def revoke(self, token_accessor: str | None, lease_id: str | None) -> None:
        """Revoke the lease (if any) and the grant token. Idempotent: gone already is success."""

    def confirm_revoked(self, token_accessor: str | None, lease_id: str | None) -> bool:
        """Ask Vault whether both the lease and the token are really gone."""

    def renew(self, token_accessor: str, lease_id: str | None, until: datetime) -> datetime:
        """Extend the grant token (and its lease) to ``until``; return the expiry Vault actually
        granted, which a role's max TTL may cap below ``until``."""
