"""``dynamic_secret``: read a leased secret with the grant token; the lease dies with the token.

The grant token carries one generated policy, ``debug-access-grant-<resource>``, that may only
``read`` that one path: the token never leaves the bot, and it cannot read anything else.
"""

from __future__ import annotations

from datetime import timedelta

from bot.domain.grant_kinds import DynamicSecretGrant
from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue
from bot.vault.client import VaultClient, check_path
from bot.vault.kinds.base import PolicyDocument, policy_hcl

GRANT_POLICY_PREFIX = "debug-access-grant-"


def grant_policy_name(resource: str) -> str:
    """Name of the per-resource grant policy (Vault stores policy names in lower case)."""
    return f"{GRANT_POLICY_PREFIX}{resource.lower()}"


def grant_policy_hcl(vault_path: str) -> str:
    """The per-resource grant policy: ``read`` on exactly one path, nothing else."""
    check_path(vault_path)
    return policy_hcl(vault_path)


class DynamicSecretStrategy:
    """``GrantStrategy`` for ``DynamicSecretGrant``."""

    def token_policies(self, resource: str, grant: DynamicSecretGrant) -> tuple[str, ...]:
        return (grant_policy_name(resource),)

    def policy_documents(
        self, resource: str, grant: DynamicSecretGrant
    ) -> tuple[PolicyDocument, ...]:
        return (PolicyDocument(grant_policy_name(resource), grant_policy_hcl(grant.path)),)

    def endpoint(self, grant: DynamicSecretGrant) -> str | None:
        return grant.path

    def lease_prefixes(self, grant: DynamicSecretGrant) -> tuple[str, ...]:
        return (grant.path.rsplit("/", 1)[0] + "/",)

    def obtain(
        self, vault: VaultClient, token: GrantToken, grant: DynamicSecretGrant, spec: GrantSpec
    ) -> Obtained:
        """Read the path with the grant token, so the lease is its child. Never retried: each
        read makes a new database user."""
        path = grant.path
        secret_token = token.token.reveal()
        client = vault.grant_client(secret_token)
        now = vault.clock()
        resp = vault.call(
            "read of",
            path,
            lambda: client.read(path),
            retry=False,
            secrets=[secret_token],
            bot_token=False,
        )
        if resp is None:
            raise IssuerError(f"Vault read of {path} failed: 404 nothing at that path")
        lease_id = resp.get("lease_id") if isinstance(resp, dict) else None
        if not lease_id:
            raise IssuerError(f"{path} did not return a leased dynamic secret")
        data = resp.get("data") or {}
        return Obtained(
            values={k: SecretValue(v) for k, v in data.items() if isinstance(v, str)},
            lease_id=str(lease_id),
            lease_expires_at=now + timedelta(seconds=int(resp.get("lease_duration") or 0)),
        )
