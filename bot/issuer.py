"""The interface between the request lifecycle and the secrets backend (Vault or OpenBao).

The lifecycle never imports hvac: it talks to an ``Issuer``. That keeps the use cases testable
with a fake and keeps every Vault detail (paths, token roles, error mapping) in ``bot.vault``.

Issuing is split in two steps on purpose. ``create_grant_token`` makes the orphan token whose TTL
is the approved duration; the lifecycle commits its accessor to the database *before* it calls
``read_dynamic_secret``. If the bot dies between the two steps, the database still knows which
token to revoke, and Vault ends the token on its own at the approved expiry anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.logs import remember_secret


class IssuerError(Exception):
    """Vault refused or failed. The message is safe to show to users: it never holds a secret."""


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
    vault_path: str | None = None
    vault_policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantToken:
    """The orphan token that bounds the grant's lifetime inside Vault itself."""

    accessor: str
    token: SecretValue
    expires_at: datetime
    policies: tuple[str, ...]


@dataclass(frozen=True)
class DynamicSecret:
    """A leased secret read with the grant token (for example database credentials)."""

    lease_id: str
    lease_expires_at: datetime
    values: Mapping[str, SecretValue] = field(default_factory=dict)


class Issuer(Protocol):
    """Issue, deliver and revoke grants. ``bot.vault.VaultIssuer`` is the real one."""

    def create_grant_token(self, spec: GrantSpec) -> GrantToken:
        """Create an orphan, non-renewable-by-the-user token with TTL = spec.ttl."""

    def read_dynamic_secret(self, token: GrantToken, path: str) -> DynamicSecret:
        """Read a leased secret at ``path`` *with the grant token*, so the lease dies with it.

        Not idempotent in Vault (each read makes a new database user): never retried blindly.
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
