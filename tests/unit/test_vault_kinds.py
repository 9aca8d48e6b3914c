"""Each grant kind's Vault strategy, without a Vault: what is set up, what the token carries,
which leases the bot must manage, and what the requester receives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.domain.grant_kinds import GRANT_TYPES, DynamicSecretGrant, VaultTokenGrant
from bot.issuer import GrantToken, Obtained, SecretValue
from bot.vault import SELF_LOOKUP_POLICY, grant_policy_hcl, lease_prefixes
from bot.vault.kinds.registry import strategy_for

DB = DynamicSecretGrant("database/creds/payments-readonly")
TOKEN = VaultTokenGrant(("Orders-Logs-Read",))


def test_every_grant_kind_has_a_strategy() -> None:
    examples = {DB.type: DB, TOKEN.type: TOKEN}
    assert set(examples) == set(GRANT_TYPES)
    for grant in examples.values():
        assert strategy_for(grant) is strategy_for(grant)


def test_dynamic_secret_sets_up_one_read_policy_on_its_path() -> None:
    strategy = strategy_for(DB)
    assert strategy.token_policies("payments-DB", DB) == ("debug-access-grant-payments-db",)
    (document,) = strategy.policy_documents("payments-DB", DB)
    assert document.name == "debug-access-grant-payments-db"
    assert document.hcl == grant_policy_hcl(DB.path)
    assert (
        document.hcl == 'path "database/creds/payments-readonly" {\n  capabilities = ["read"]\n}\n'
    )


def test_vault_token_carries_the_named_policies_and_self_lookup() -> None:
    strategy = strategy_for(TOKEN)
    assert strategy.token_policies("orders-logs", TOKEN) == ("orders-logs-read", SELF_LOOKUP_POLICY)
    assert [d.name for d in strategy.policy_documents("orders-logs", TOKEN)] == [SELF_LOOKUP_POLICY]


def test_only_leased_kinds_need_lease_prefixes() -> None:
    assert lease_prefixes([DB, TOKEN, DynamicSecretGrant("aws/creds/deploy")]) == (
        "aws/creds/",
        "database/creds/",
    )
    assert lease_prefixes([TOKEN]) == ()


def test_vault_token_obtains_the_token_itself_without_asking_vault() -> None:
    token = GrantToken(
        accessor="acc", token=SecretValue("hvs.x"), expires_at=datetime.now(UTC), policies=()
    )
    vault: Any = None  # any call to Vault would fail
    obtained = strategy_for(TOKEN).obtain(vault, token, TOKEN)
    assert obtained == Obtained(values={"token": token.token})
    assert obtained.lease_id is None and obtained.lease_expires_at is None


def test_a_lease_has_both_an_id_and_an_expiry() -> None:
    with pytest.raises(ValueError, match="both an id and an expiry"):
        Obtained(values={}, lease_id="database/creds/x/1")
