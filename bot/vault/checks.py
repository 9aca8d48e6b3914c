"""The doctor: can the bot work with this Vault, and if not, what to do, in plain words."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import hvac.exceptions
import requests

from bot.vault.client import VAULT_FAILURES, VaultClient, seconds

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
