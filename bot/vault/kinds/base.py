"""What a grant kind decides in Vault: the contract each strategy module fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.domain.grant_kinds import GrantKind
from bot.issuer import GrantSpec, GrantToken, Obtained
from bot.vault.client import VaultClient

K_contra = TypeVar("K_contra", bound=GrantKind, contravariant=True)


@dataclass(frozen=True)
class PolicyDocument:
    """A Vault policy the set-up writes (with an admin token) for a grant kind."""

    name: str
    hcl: str


def policy_hcl(path: str, capabilities: tuple[str, ...] = ("read",)) -> str:
    """One ``path`` block: the shape of every policy the bot writes."""
    quoted = ", ".join(f'"{c}"' for c in capabilities)
    return f'path "{path}" {{\n  capabilities = [{quoted}]\n}}\n'


class GrantStrategy(Protocol[K_contra]):
    """How one kind of grant (``bot.domain.grant_kinds``) is set up, issued and delivered.

    Revoking, renewing and confirming need no strategy: a grant is its token plus, when
    ``obtain`` returned one, a lease; the issuer ends (or extends) the lease if there is one,
    then the token, whatever the kind.
    """

    def token_policies(self, resource: str, grant: K_contra) -> tuple[str, ...]:
        """The policies of the orphan grant token, which the token role must allow."""
        ...

    def policy_documents(self, resource: str, grant: K_contra) -> tuple[PolicyDocument, ...]:
        """The policies the set-up writes for this grant (kinds that use the operator's own
        policies write none, or only a helper policy)."""
        ...

    def endpoint(self, grant: K_contra) -> str | None:
        """The Vault path the grant token reads or writes (``check`` verifies that its engine
        is mounted and its role exists); None when the token itself is the grant."""
        ...

    def lease_prefixes(self, grant: K_contra) -> tuple[str, ...]:
        """Lease prefixes the bot must revoke and renew (for its least-privilege policy)."""
        ...

    def obtain(
        self, vault: VaultClient, token: GrantToken, grant: K_contra, spec: GrantSpec
    ) -> Obtained:
        """What the requester receives, obtained with the grant token (never retried)."""
        ...
