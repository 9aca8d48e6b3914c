"""The doctor: can the bot work with this Vault, and if not, what to do, in plain words.

Read-only: nothing here writes to Vault (``debug-access vault-setup`` does, ``bot.vault.setup``).
Beyond the bot's own token and role, every configured grant is followed to what its first
approval will need: the secrets engine mounted where its path points, the role that path names,
and every policy its grant token will carry. An unmounted engine used to pass and fail the first
approval with a 404. What the bot's token may not read is reported as not verified, never as
fine (``vault-policy`` prints a policy that lets it read them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import hvac.exceptions
import requests

from bot.vault.client import VAULT_FAILURES, VaultClient, seconds
from bot.vault.kinds.registry import strategy_for
from bot.vault.setup import ResourceGrantShape

#: ``check()`` complains when the bot's own token has less than this left.
LOW_TOKEN_TTL = timedelta(minutes=10)


def check(vault: VaultClient, token_role: str) -> list[str]:
    """Problems in plain words, ``[]`` when the bot can work with this Vault."""
    problems: list[str] = []
    try:
        seal = vault.retrying(lambda: vault.hvac.sys.read_seal_status())
    except requests.exceptions.RequestException as exc:
        return [f"Vault at {vault.addr} is unreachable ({type(exc).__name__})"]
    except hvac.exceptions.VaultError as exc:
        return [str(vault.error("read", "sys/seal-status", exc))]
    if not seal.get("initialized", True):
        return [f"Vault at {vault.addr} is not initialized"]
    if seal.get("sealed"):
        return [f"Vault at {vault.addr} is sealed: unseal it first"]

    try:
        me = vault.retrying(lambda: vault.hvac.auth.token.lookup_self())
    except hvac.exceptions.Forbidden:
        return [
            "the bot's Vault token is invalid or expired, or may not read "
            "auth/token/lookup-self (403 permission denied)"
        ]
    except VAULT_FAILURES as exc:
        return [str(vault.error("lookup", "auth/token/lookup-self", exc))]
    data = me.get("data") or {}
    ttl = int(data.get("ttl") or 0)
    kept_alive = vault.keeper is not None and not vault.keeper.status().dies_unrenewed
    if 0 < ttl < seconds(LOW_TOKEN_TTL) and not kept_alive:
        problems.append(f"the bot's Vault token expires in {ttl} seconds: renew it or log in again")

    problems += _check_role(vault, token_role)
    problems += _check_capabilities(vault, token_role)
    return problems


def _check_role(vault: VaultClient, token_role: str) -> list[str]:
    role_path = f"auth/token/roles/{token_role}"
    try:
        role = vault.retrying(lambda: vault.hvac.read(role_path))
    except hvac.exceptions.Forbidden:
        return [
            f"cannot read token role {token_role} (403 permission denied): "
            f'the bot policy needs read on "{role_path}"'
        ]
    except VAULT_FAILURES as exc:
        return [str(vault.error("read", role_path, exc))]
    if role is None:
        return [
            f"token role {token_role} does not exist: run the setup with an admin "
            "token or create it as the README describes"
        ]
    problems = []
    rdata = role.get("data") or {}
    if not rdata.get("orphan"):
        problems.append(
            f"token role {token_role} does not create orphan tokens "
            "(orphan=false): grants would die with the bot's token"
        )
    if rdata.get("token_type") not in ("service", "default-service"):
        problems.append(
            f"token role {token_role} does not issue service tokens: "
            "leases would not be tied to the grant token"
        )
    return problems


def _check_capabilities(vault: VaultClient, token_role: str) -> list[str]:
    needed = {
        f"auth/token/create/{token_role}": {"create", "update"},
        "auth/token/revoke-accessor": {"update"},
        "auth/token/lookup-accessor": {"update"},
        "sys/leases/lookup": {"update"},
        "sys/wrapping/wrap": {"update"},
    }
    try:
        resp = vault.retrying(
            lambda: vault.hvac.write_data("sys/capabilities-self", data={"paths": sorted(needed)})
        )
    except VAULT_FAILURES as exc:
        return [str(vault.error("check capabilities on", "sys/capabilities-self", exc))]
    caps: Mapping[str, Any] = (resp.get("data") or resp) if isinstance(resp, dict) else {}
    problems = []
    for path, wanted in sorted(needed.items()):
        have = set(caps.get(path) or [])
        if "deny" in have or ("root" not in have and not have & wanted):
            problems.append(f"the bot's Vault token may not {'/'.join(sorted(wanted))} {path}")
    return problems


#: ``<verb>/<role>`` at the end of an engine path, and where that engine keeps the role:
#: database/aws ``creds``, ssh ``sign``, pki ``issue``, database ``static-creds``.
_ROLE_PATH = re.compile(r"^(?P<verb>creds|sign|issue|static-creds)/(?P<role>[^/]+)$")
_ROLES_OF = {"static-creds": "static-roles"}


def readable_paths(resources: Sequence[ResourceGrantShape]) -> list[str]:
    """What ``check_grants`` reads, for the bot's least-privilege policy (``vault-policy``):
    the mount table, each grant's role and each policy its grant token carries."""
    paths = {"sys/mounts"}
    for shape in resources:
        strategy = strategy_for(shape.grant)
        endpoint = strategy.endpoint(shape.grant)
        if endpoint is not None:
            head, _, tail = endpoint.rpartition("/")
            mount, _, verb = head.rpartition("/")
            if verb in {"creds", "sign", "issue", "static-creds"}:
                paths.add(f"{mount}/{_ROLES_OF.get(verb, 'roles')}/{tail}")
        paths |= {f"sys/policies/acl/{p}" for p in strategy.token_policies(shape.name, shape.grant)}
    return sorted(paths)


@dataclass
class GrantFindings:
    """What ``check_grants`` found: ``problems`` stop the bot from granting; ``unverified`` are
    what the bot's token may not read, so nobody knows."""

    problems: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def check_grants(vault: VaultClient, resources: Sequence[ResourceGrantShape]) -> GrantFindings:
    """Follow every resource's grant to its engine, role and policies (read-only)."""
    found = GrantFindings()
    mounts = _mounts(vault, found)
    seen_policies: set[str] = set()
    for shape in resources:
        strategy = strategy_for(shape.grant)
        endpoint = strategy.endpoint(shape.grant)
        if endpoint is not None and mounts is not None:
            _check_endpoint(vault, shape.name, endpoint, mounts, found)
        for policy in strategy.token_policies(shape.name, shape.grant):
            if policy not in seen_policies:
                seen_policies.add(policy)
                _check_policy(vault, shape.name, policy, found)
    return found


def _mounts(vault: VaultClient, found: GrantFindings) -> dict[str, str] | None:
    """Mounted secrets engines, path (``database/``) -> type; None when they may not be read."""
    try:
        listed = vault.retrying(lambda: vault.hvac.sys.list_mounted_secrets_engines())
    except hvac.exceptions.Forbidden:
        found.unverified.append("secrets engine mounts (the bot's token may not read sys/mounts)")
        return None
    except VAULT_FAILURES as exc:
        found.problems.append(str(vault.error("list", "sys/mounts", exc)))
        return None
    table = listed.get("data") or listed
    return {
        str(path): str((info or {}).get("type", "?"))
        for path, info in table.items()
        if isinstance(info, Mapping) and str(path).endswith("/")
    }


def _check_endpoint(
    vault: VaultClient,
    resource: str,
    endpoint: str,
    mounts: Mapping[str, str],
    found: GrantFindings,
) -> None:
    mount = max((m for m in mounts if endpoint.startswith(m)), key=len, default=None)
    if mount is None:
        first = endpoint.split("/", 1)[0]
        found.problems.append(
            f"resource {resource}: no secrets engine is mounted at {first}/ "
            f"(its grant uses {endpoint}): enable it, or fix the path in the policy"
        )
        return
    match = _ROLE_PATH.match(endpoint[len(mount) :])
    if match is None:
        return  # an engine path without a role in it: mounted is all there is to check
    role_path = f"{mount}{_ROLES_OF.get(match['verb'], 'roles')}/{match['role']}"
    if _read(vault, resource, role_path, f"role {role_path}", found) is _ABSENT:
        found.problems.append(
            f"resource {resource}: {mounts[mount]} engine at {mount} has no role "
            f"{match['role']} ({role_path} does not exist)"
        )


def _check_policy(vault: VaultClient, resource: str, policy: str, found: GrantFindings) -> None:
    path = f"sys/policies/acl/{policy}"
    if _read(vault, resource, path, f"policy {policy}", found) is _ABSENT:
        found.problems.append(
            f"resource {resource}: Vault policy {policy} does not exist: run "
            "`debug-access vault-setup` with an admin token, or create it"
        )


#: ``_read``'s answers besides what it read: nothing at the path, and nobody knows.
_ABSENT = object()
_UNKNOWN = object()


def _read(vault: VaultClient, resource: str, path: str, what: str, found: GrantFindings) -> object:
    """Read ``path`` for ``check``: what is there, ``_ABSENT`` when nothing is, or ``_UNKNOWN``
    when the token may not read it (noted as not verified) or Vault failed (a problem)."""
    try:
        answer = vault.retrying(lambda: vault.hvac.read(path))
    except hvac.exceptions.Forbidden:
        found.unverified.append(f"resource {resource}: {what}")
        return _UNKNOWN
    except VAULT_FAILURES as exc:
        found.problems.append(f"resource {resource}: {vault.error('read', path, exc)}")
        return _UNKNOWN
    return _ABSENT if answer is None else answer
