"""What a grant is: one tagged union, defined once, that the policy parses and Vault acts on.

A resource's ``grant:`` names its kind with a ``type:`` discriminator, the way rotations do::

    grant: {type: dynamic_secret, path: database/creds/payments-readonly}
    grant: {type: vault_token, policies: [payments-debug]}

Each kind validates itself here, so the policy file, the Vault set-up and the issuer agree on one
set of rules. Plain frozen dataclasses, no pydantic: ``bot.vault`` imports this module without
importing the policy (import-linter keeps Vault independent of the on-call code the policy uses),
and pydantic validates stdlib dataclasses and discriminated unions as they are.

Adding a kind means: a dataclass here (added to ``GrantKind`` and ``GRANT_KINDS``), and one
strategy module under ``bot/vault/kinds/`` registered by its ``type``. Nothing else branches on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "GRANT_KINDS",
    "GRANT_TYPES",
    "LEGACY_KEYS",
    "DynamicSecretGrant",
    "GrantKind",
    "VaultTokenGrant",
    "from_legacy_key",
    "plain_vault_path",
    "vault_policy_name",
]

VAULT_POLICY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: Policies no grant may carry: ``root`` is everything; ``default`` carries renew-self, with
#: which the holder of a user-held token could extend their own access.
FORBIDDEN_POLICIES = frozenset({"root", "default"})
# Pydantic reads this on a stdlib dataclass: a misspelt key under `grant:` is an error.
_FORBID_EXTRA: dict[str, Any] = {"extra": "forbid"}


def plain_vault_path(value: str) -> str:
    """A single Vault path without globs, quotes or traversal; slashes at the ends removed.

    A grant policy is generated from it, so ``*``, ``+`` or ``..`` would widen what a grant reads.
    """
    cleaned = value.strip().strip("/")
    if not cleaned or any(c in cleaned for c in "*+ \"'\n") or ".." in cleaned:
        raise ValueError("must be a plain Vault path such as database/creds/payments-readonly")
    return cleaned


def vault_policy_name(name: str) -> str:
    """A Vault policy name a grant may carry (never ``root`` or ``default``)."""
    if not VAULT_POLICY_NAME.fullmatch(name) or name in FORBIDDEN_POLICIES:
        raise ValueError(f"{name!r} is not an allowed Vault policy name")
    return name


@dataclass(frozen=True)
class DynamicSecretGrant:
    """Read a leased dynamic secret (``database/creds/<role>``...) with the grant token.

    The requester receives the secret's values; its lease dies with the grant token.
    """

    path: str
    type: Literal["dynamic_secret"] = "dynamic_secret"

    #: Can the bot end it early? Revoking the lease and the token ends the access.
    recallable: ClassVar[bool] = True
    #: The pre-``grant:`` policy key this kind was written with, and the field it fills.
    legacy_key: ClassVar[str] = "vault_path"
    legacy_field: ClassVar[str] = "path"
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", plain_vault_path(self.path))

    def as_yaml(self) -> str:
        """How to write this grant in the policy file (for messages such as deprecations)."""
        return f"{{type: {self.type}, path: {self.path}}}"


@dataclass(frozen=True)
class VaultTokenGrant:
    """Hand the requester a Vault token carrying exactly the operator-chosen policies."""

    policies: tuple[str, ...]
    type: Literal["vault_token"] = "vault_token"

    #: Can the bot end it early? Revoking the token ends the access.
    recallable: ClassVar[bool] = True
    legacy_key: ClassVar[str] = "vault_policies"
    legacy_field: ClassVar[str] = "policies"
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    def __post_init__(self) -> None:
        policies = tuple(self.policies)
        if not policies:
            raise ValueError("policies needs at least one Vault policy name")
        object.__setattr__(self, "policies", tuple(vault_policy_name(p) for p in policies))

    def as_yaml(self) -> str:
        """How to write this grant in the policy file (for messages such as deprecations)."""
        return f"{{type: {self.type}, policies: [{', '.join(self.policies)}]}}"


#: Every kind of grant; the policy's ``grant:`` is exactly one of them, told apart by ``type``.
GrantKind = DynamicSecretGrant | VaultTokenGrant
GRANT_KINDS: tuple[type[DynamicSecretGrant] | type[VaultTokenGrant], ...] = (
    DynamicSecretGrant,
    VaultTokenGrant,
)
GRANT_TYPES: tuple[str, ...] = tuple(kind.type for kind in GRANT_KINDS)
#: Policy keys from before ``grant:``, still read (with a deprecation warning).
LEGACY_KEYS: tuple[str, ...] = tuple(kind.legacy_key for kind in GRANT_KINDS)


def from_legacy_key(key: str, value: Any) -> dict[str, Any]:
    """The ``grant:`` mapping a legacy key stands for: ``vault_path: p`` is
    ``grant: {type: dynamic_secret, path: p}``."""
    (kind,) = (k for k in GRANT_KINDS if k.legacy_key == key)
    return {"type": kind.type, kind.legacy_field: value}
