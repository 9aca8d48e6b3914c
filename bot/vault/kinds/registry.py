"""Which strategy serves which grant kind: the one table to extend with a new kind."""

from __future__ import annotations

from typing import Any

from bot.domain.grant_kinds import GRANT_TYPES, GrantKind
from bot.vault.kinds.base import GrantStrategy
from bot.vault.kinds.dynamic_secret import DynamicSecretStrategy
from bot.vault.kinds.ssh_certificate import SshCertificateStrategy
from bot.vault.kinds.vault_token import VaultTokenStrategy

_STRATEGIES: dict[str, GrantStrategy[Any]] = {
    "dynamic_secret": DynamicSecretStrategy(),
    "vault_token": VaultTokenStrategy(),
    "ssh_certificate": SshCertificateStrategy(),
}
if set(_STRATEGIES) != set(GRANT_TYPES):  # pragma: no cover - caught by any test run
    raise RuntimeError(
        f"grant kinds without a Vault strategy: {set(GRANT_TYPES) ^ set(_STRATEGIES)}"
    )


def strategy_for(grant: GrantKind) -> GrantStrategy[Any]:
    """The strategy for ``grant``'s kind."""
    return _STRATEGIES[grant.type]
