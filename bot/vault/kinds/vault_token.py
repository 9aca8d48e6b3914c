"""``vault_token``: the requester receives the grant token itself, with the operator's policies.

The token carries exactly the operator-chosen policies plus ``debug-access-self-lookup`` (only
``vault token lookup``), and *not* ``default``, whose ``renew-self`` would let the holder extend
their own access. There is no lease: revoking the token ends the grant.
"""

from __future__ import annotations

from bot.domain.grant_kinds import VaultTokenGrant
from bot.issuer import GrantSpec, GrantToken, Obtained
from bot.vault.client import VaultClient
from bot.vault.kinds.base import PolicyDocument, policy_hcl

SELF_LOOKUP_POLICY = "debug-access-self-lookup"
SELF_LOOKUP_HCL = policy_hcl("auth/token/lookup-self")


class VaultTokenStrategy:
    """``GrantStrategy`` for ``VaultTokenGrant``."""

    def token_policies(self, resource: str, grant: VaultTokenGrant) -> tuple[str, ...]:
        # Vault stores policy names in lower case; compare and request them that way.
        return (*(p.lower() for p in grant.policies), SELF_LOOKUP_POLICY)

    def policy_documents(self, resource: str, grant: VaultTokenGrant) -> tuple[PolicyDocument, ...]:
        # The operator owns the named policies; the bot writes only the self-lookup helper.
        return (PolicyDocument(SELF_LOOKUP_POLICY, SELF_LOOKUP_HCL),)

    def endpoint(self, grant: VaultTokenGrant) -> str | None:
        return None

    def lease_prefixes(self, grant: VaultTokenGrant) -> tuple[str, ...]:
        return ()

    def obtain(
        self, vault: VaultClient, token: GrantToken, grant: VaultTokenGrant, spec: GrantSpec
    ) -> Obtained:
        """Nothing to ask Vault: the token is what the requester gets."""
        return Obtained(values={"token": token.token})
