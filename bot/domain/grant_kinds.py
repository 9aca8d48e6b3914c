"""What a grant is: one tagged union, defined once, that the policy parses and Vault acts on.

A resource's ``grant:`` names its kind with a ``type:`` discriminator, the way rotations do::

    grant: {type: dynamic_secret, path: database/creds/payments-readonly}
    grant: {type: vault_token, policies: [payments-debug]}
    grant: {type: ssh_certificate, role: ops, principals: [ops]}

Each kind validates itself here, so the policy file, the Vault set-up and the issuer agree on one
set of rules. Plain frozen dataclasses, no pydantic: ``bot.vault`` imports this module without
importing the policy (import-linter keeps Vault independent of the on-call code the policy uses),
and pydantic validates stdlib dataclasses and discriminated unions as they are.

Adding a kind means: a dataclass here (added to ``GrantKind`` and ``GRANT_KINDS``), and one
strategy module under ``bot/vault/kinds/`` registered by its ``type``. Nothing else branches on it:
the lifecycle and the Slack views read the capabilities every kind declares (``_Capabilities``)
instead of asking which kind they hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from bot.domain.ssh_keys import (
    ABSOLUTE_MIN_RSA_BITS,
    DEFAULT_MIN_RSA_BITS,
    SUPPORTED_KEY_TYPES,
    SshKeyPolicy,
)

__all__ = [
    "GRANT_KINDS",
    "GRANT_TYPES",
    "LEGACY_KEYS",
    "DynamicSecretGrant",
    "GrantKind",
    "SshCertificateGrant",
    "VaultTokenGrant",
    "from_legacy_key",
    "kind_of_type",
    "plain_vault_path",
    "vault_policy_name",
]

VAULT_POLICY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# A Unix user name an SSH certificate may name as principal (POSIX portable, as useradd takes).
SSH_PRINCIPAL = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# A Vault mount or role name segment.
VAULT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
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


class _Capabilities:
    """What the rest of the bot may ask of any grant kind, so that nothing asks *which* kind.

    The defaults describe a grant that Vault can end early and extend: a token, maybe a lease.
    """

    #: Can the bot end it early? (False: it lives until its own expiry, whatever the bot does.)
    recallable: ClassVar[bool] = True
    #: Can an approved extension renew it?
    renewable: ClassVar[bool] = True
    #: Is what the requester receives a secret? (False: DM it, never response-wrap it.)
    delivers_secret: ClassVar[bool] = True
    #: ``max_duration`` when the resource does not set one (None: the resource must set it).
    default_max_duration: ClassVar[timedelta | None] = None
    #: The pre-``grant:`` policy key this kind was written with, and the field it fills.
    legacy_key: ClassVar[str | None] = None
    legacy_field: ClassVar[str | None] = None

    def key_policy(self) -> SshKeyPolicy | None:
        """Which SSH public keys a request must bring (None: the kind needs no key)."""
        return None


@dataclass(frozen=True)
class DynamicSecretGrant(_Capabilities):
    """Read a leased dynamic secret (``database/creds/<role>``...) with the grant token.

    The requester receives the secret's values; its lease dies with the grant token.
    """

    path: str
    type: Literal["dynamic_secret"] = "dynamic_secret"

    legacy_key: ClassVar[str | None] = "vault_path"
    legacy_field: ClassVar[str | None] = "path"
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", plain_vault_path(self.path))

    def as_yaml(self) -> str:
        """How to write this grant in the policy file (for messages such as deprecations)."""
        return f"{{type: {self.type}, path: {self.path}}}"


@dataclass(frozen=True)
class VaultTokenGrant(_Capabilities):
    """Hand the requester a Vault token carrying exactly the operator-chosen policies."""

    policies: tuple[str, ...]
    type: Literal["vault_token"] = "vault_token"

    legacy_key: ClassVar[str | None] = "vault_policies"
    legacy_field: ClassVar[str | None] = "policies"
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    def __post_init__(self) -> None:
        policies = tuple(self.policies)
        if not policies:
            raise ValueError("policies needs at least one Vault policy name")
        object.__setattr__(self, "policies", tuple(vault_policy_name(p) for p in policies))

    def as_yaml(self) -> str:
        """How to write this grant in the policy file (for messages such as deprecations)."""
        return f"{{type: {self.type}, policies: [{', '.join(self.policies)}]}}"


@dataclass(frozen=True)
class SshCertificateGrant(_Capabilities):
    """Have Vault's SSH engine sign the requester's public key: a user certificate for the
    policy's principals, valid for the approved duration.

    A certificate cannot be recalled: whoever holds it (and the private key) can log in until it
    expires, and no Vault call changes that. So it ends by expiry only, it cannot be extended
    (a new request signs a new one), and it defaults to a short ``max_duration``. The principals
    come from here, never from the user; the certificate is not a secret (useless without the
    private key, which never leaves the requester's machine), so it is sent by DM.
    """

    role: str
    principals: tuple[str, ...]
    mount: str = "ssh"
    key_types: tuple[str, ...] = tuple(sorted(SUPPORTED_KEY_TYPES))
    min_rsa_bits: int = DEFAULT_MIN_RSA_BITS
    type: Literal["ssh_certificate"] = "ssh_certificate"

    recallable: ClassVar[bool] = False
    renewable: ClassVar[bool] = False
    delivers_secret: ClassVar[bool] = False
    default_max_duration: ClassVar[timedelta | None] = timedelta(hours=1)
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    def __post_init__(self) -> None:
        for label, name in (("mount", self.mount), ("role", self.role)):
            cleaned = name.strip().strip("/")
            if not VAULT_NAME.fullmatch(cleaned):
                raise ValueError(f"{label} {name!r} must be a plain Vault name such as ssh")
            object.__setattr__(self, label, cleaned)
        principals = tuple(self.principals)
        if not principals:
            raise ValueError("principals needs at least one Unix user name")
        for principal in principals:
            if not SSH_PRINCIPAL.fullmatch(principal):
                raise ValueError(f"principal {principal!r} is not a Unix user name")
        object.__setattr__(self, "principals", principals)
        object.__setattr__(self, "key_types", tuple(self.key_types))
        if self.min_rsa_bits < ABSOLUTE_MIN_RSA_BITS:
            raise ValueError(f"min_rsa_bits must be at least {ABSOLUTE_MIN_RSA_BITS}")
        self.key_policy()  # unknown key types fail here, at policy load

    def key_policy(self) -> SshKeyPolicy:
        return SshKeyPolicy.of(self.key_types, self.min_rsa_bits)

    @property
    def sign_path(self) -> str:
        """The one Vault path the grant token may write: ``<mount>/sign/<role>``."""
        return f"{self.mount}/sign/{self.role}"

    def as_yaml(self) -> str:
        """How to write this grant in the policy file."""
        return (
            f"{{type: {self.type}, mount: {self.mount}, role: {self.role}, "
            f"principals: [{', '.join(self.principals)}]}}"
        )


#: Every kind of grant; the policy's ``grant:`` is exactly one of them, told apart by ``type``.
GrantKind = DynamicSecretGrant | VaultTokenGrant | SshCertificateGrant
GRANT_KINDS: tuple[type[GrantKind], ...] = (
    DynamicSecretGrant,
    VaultTokenGrant,
    SshCertificateGrant,
)
GRANT_TYPES: tuple[str, ...] = tuple(kind.type for kind in GRANT_KINDS)
#: Policy keys from before ``grant:``, still read (with a deprecation warning).
LEGACY_KEYS: tuple[str, ...] = tuple(k.legacy_key for k in GRANT_KINDS if k.legacy_key)


def kind_of_type(type_name: object) -> type[GrantKind] | None:
    """The kind a ``type:`` value names, if any (for defaults read before validation)."""
    return next((k for k in GRANT_KINDS if k.type == type_name), None)


def from_legacy_key(key: str, value: Any) -> dict[str, Any]:
    """The ``grant:`` mapping a legacy key stands for: ``vault_path: p`` is
    ``grant: {type: dynamic_secret, path: p}``."""
    (kind,) = (k for k in GRANT_KINDS if k.legacy_key == key)
    assert kind.legacy_field is not None
    return {"type": kind.type, kind.legacy_field: value}
