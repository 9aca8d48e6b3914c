"""Vault set-up: the token role and the grant policies the configured grant kinds need, and the
least-privilege policy an operator gives the bot's own token in production.

With an admin token (a dev server) ``ensure_setup`` is all the Vault set-up the bot needs. With
the production least-privilege token its writes answer 403: that is reported, not raised, on the
assumption that the operator created those objects (see the README).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import hvac.exceptions

from bot.domain.grant_kinds import GrantKind
from bot.vault.client import VAULT_FAILURES, VaultClient, check_path, seconds
from bot.vault.kinds.base import PolicyDocument
from bot.vault.kinds.registry import strategy_for

DEFAULT_TOKEN_ROLE = "debug-access-grant"  # noqa: S105 - a role name, not a secret
#: Upper bound the token role puts on every grant token, whatever the request asks for.
ROLE_EXPLICIT_MAX_TTL = timedelta(hours=24)


def bot_policy_hcl(
    token_role: str = DEFAULT_TOKEN_ROLE,
    lease_prefixes: Sequence[str] = ("database/creds/",),
    *,
    take_back: bool = False,
    readable: Sequence[str] = (),
) -> str:
    """The least-privilege policy for the bot's own token in production (AppRole / Kubernetes).

    ``take_back``: also let the bot choose grant token ids (``sudo`` on the role's create path
    only) and revoke and look up a token by its value, so that a token creation whose answer
    was lost is revoked and confirmed gone instead of being left to expire by itself.

    ``readable``: paths ``check`` reads to prove each grant will work (the mount table, the
    grants' roles and policies: ``bot.vault.checks.readable_paths``); read-only.
    """
    check_path(token_role)
    lines = [
        "# debug-access bot: least-privilege policy for the bot's own token (production mode).",
        "# In this mode the operator creates the grant policies (debug-access-grant-<resource>)",
        f"# and the token role auth/token/roles/{token_role}; the bot only checks that they exist.",
        (
            "# sudo only to choose grant token ids; no revoke-prefix / revoke-force."
            if take_back
            else "# No sudo, no revoke-prefix / revoke-force, no token creation outside the role."
        ),
        "",
        "# Create one orphan grant token per approved request, only through the role.",
        f'path "auth/token/create/{token_role}" {{\n  capabilities = ["create", "update"]\n}}',
    ]
    if take_back:
        lines[-1:] = [
            "# ...choosing the token's id (sudo here does only that), so that a creation whose",
            "# answer was lost can be revoked by that id and confirmed gone.",
            f'path "auth/token/create/{token_role}" {{\n'
            '  capabilities = ["create", "update", "sudo"]\n}',
            'path "auth/token/revoke" {\n  capabilities = ["update"]\n}',
            'path "auth/token/lookup" {\n  capabilities = ["update"]\n}',
        ]
    lines += [
        "# Read the role (setup check / doctor).",
        f'path "auth/token/roles/{token_role}" {{\n  capabilities = ["read"]\n}}',
        "# Revoke and verify grant tokens by accessor; renew the bot-held ones within max TTL.",
        'path "auth/token/revoke-accessor" {\n  capabilities = ["update"]\n}',
        'path "auth/token/lookup-accessor" {\n  capabilities = ["update"]\n}',
        'path "auth/token/renew-accessor" {\n  capabilities = ["update"]\n}',
        "# The bot's own token.",
        'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}',
        'path "auth/token/renew-self" {\n  capabilities = ["update"]\n}',
        "# Revoke / renew only the leases of the dynamic-secret engines grants read from.",
    ]
    for prefix in lease_prefixes:
        check_path(prefix)
        base = prefix.rstrip("/") + "/"
        lines.append(f'path "sys/leases/revoke/{base}*" {{\n  capabilities = ["update"]\n}}')
        lines.append(f'path "sys/leases/renew/{base}*" {{\n  capabilities = ["update"]\n}}')
    lines += [
        "# Verify that a lease is gone (the lease id travels in the body).",
        'path "sys/leases/lookup" {\n  capabilities = ["update"]\n}',
        "# Deliver credentials response-wrapped.",
        'path "sys/wrapping/wrap" {\n  capabilities = ["update"]\n}',
        "# Doctor: what may this token do?",
        'path "sys/capabilities-self" {\n  capabilities = ["update"]\n}',
    ]
    if readable:
        lines.append(
            "# Doctor (`check`): is each grant's engine mounted, its role and policies there?"
        )
        for path in readable:
            check_path(path)
            lines.append(f'path "{path}" {{\n  capabilities = ["read"]\n}}')
    return "\n".join(lines) + "\n"


#: The bot's production policy for the default token role and PostgreSQL-style lease prefixes
#: (``database/creds/``). Use ``bot_policy_hcl()`` for other roles or engines.
BOT_POLICY_HCL = bot_policy_hcl()


def lease_prefixes(grants: Sequence[GrantKind]) -> tuple[str, ...]:
    """The lease prefixes the bot must revoke and renew for these grants, sorted."""
    return tuple(sorted({p for grant in grants for p in strategy_for(grant).lease_prefixes(grant)}))


@dataclass(frozen=True)
class ResourceGrantShape:
    """What ``ensure_setup`` needs to know about one configured resource."""

    name: str
    grant: GrantKind


@dataclass(frozen=True)
class SetupReport:
    """What ``ensure_setup`` did. Every entry is a short human-readable sentence."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    not_created: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def lines(self) -> list[str]:
        return (
            [f"created: {x}" for x in self.created]
            + [f"updated: {x}" for x in self.updated]
            + [f"already present: {x}" for x in self.present]
            + [f"not created: {x}" for x in self.not_created]
        )


@dataclass
class _Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    not_created: list[str] = field(default_factory=list)

    def freeze(self) -> SetupReport:
        return SetupReport(
            tuple(self.created), tuple(self.updated), tuple(self.present), tuple(self.not_created)
        )


def ensure_setup(
    vault: VaultClient, token_role: str, resources: Sequence[ResourceGrantShape]
) -> SetupReport:
    """Create the grant policies and the token role when missing or different.

    Each resource's strategy says which policies its kind needs written and which its grant
    tokens carry; the role allows exactly the latter.
    """
    report = _Report()
    documents: dict[str, PolicyDocument] = {}
    allowed: set[str] = set()
    for resource in resources:
        strategy = strategy_for(resource.grant)
        for document in strategy.policy_documents(resource.name, resource.grant):
            documents.setdefault(document.name, document)
        allowed.update(strategy.token_policies(resource.name, resource.grant))
    for document in documents.values():
        _ensure_policy(vault, document, report)
    _ensure_role(vault, token_role, sorted(allowed), report)
    return report.freeze()


def _read_setup(vault: VaultClient, path: str) -> tuple[Mapping[str, Any] | None, bool]:
    """Read a set-up object; (None, False) when this token may not even look."""
    try:
        response = vault.retrying(lambda: vault.hvac.read(path))
    except hvac.exceptions.Forbidden:
        return None, False
    except VAULT_FAILURES as exc:
        raise vault.error("read", path, exc) from None
    if not response:
        return None, True
    return (response.get("data") or response), True


def _write_setup(
    vault: VaultClient,
    path: str,
    what: str,
    data: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    readable: bool,
    report: _Report,
) -> None:
    """Write a set-up object; without permission, report instead of failing (the operator may
    have created it under a least-privilege token)."""
    try:
        vault.retrying(lambda: vault.hvac.write_data(path, data=dict(data)))
    except hvac.exceptions.Forbidden:
        if not readable:
            report.not_created.append(
                f"could not check or create {what} (403 permission denied), "
                "assuming the operator did"
            )
        elif current is None:
            report.not_created.append(
                f"{what} does not exist and could not be created (403 permission denied): "
                "the operator must create it"
            )
        else:
            report.not_created.append(
                f"{what} differs from the expected settings and could not be updated "
                "(403 permission denied), assuming the operator set it up on purpose"
            )
        return
    except VAULT_FAILURES as exc:
        raise vault.error("write", path, exc) from None
    (report.created if current is None else report.updated).append(what)


def _ensure_policy(vault: VaultClient, document: PolicyDocument, report: _Report) -> None:
    path = f"sys/policy/{document.name}"
    what = f"policy {document.name}"
    current, readable = _read_setup(vault, path)
    if current is not None and str(current.get("rules") or "").strip() == document.hcl.strip():
        report.present.append(what)
        return
    _write_setup(vault, path, what, {"policy": document.hcl}, current, readable, report)


def _desired_role(allowed_policies: list[str]) -> dict[str, Any]:
    return {
        "orphan": True,
        "renewable": True,
        "token_type": "service",
        "allowed_policies": allowed_policies,
        "disallowed_policies": ["root"],
        "token_explicit_max_ttl": seconds(ROLE_EXPLICIT_MAX_TTL),
    }


def _role_matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    def policies(value: Any) -> set[str]:
        return {str(p) for p in (value or [])}

    return (
        bool(current.get("orphan")) == desired["orphan"]
        and bool(current.get("renewable")) == desired["renewable"]
        and current.get("token_type") in ("service", "default-service")
        and policies(current.get("allowed_policies")) == policies(desired["allowed_policies"])
        and policies(current.get("disallowed_policies")) == policies(desired["disallowed_policies"])
        and int(current.get("token_explicit_max_ttl") or 0) == desired["token_explicit_max_ttl"]
    )


def _ensure_role(
    vault: VaultClient, token_role: str, allowed_policies: list[str], report: _Report
) -> None:
    path = f"auth/token/roles/{token_role}"
    what = f"token role {token_role}"
    desired = _desired_role(allowed_policies)
    current, readable = _read_setup(vault, path)
    if current is not None and _role_matches(current, desired):
        report.present.append(what)
        return
    _write_setup(vault, path, what, desired, current, readable, report)
