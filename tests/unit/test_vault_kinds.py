"""Each grant kind's Vault strategy, without a Vault: what is set up, what the token carries,
which leases the bot must manage, and what the requester receives."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.grant_kinds import (
    GRANT_TYPES,
    DynamicSecretGrant,
    SshCertificateGrant,
    VaultTokenGrant,
)
from bot.domain.ssh_keys import PrivateKeyPasted
from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue
from bot.vault import SELF_LOOKUP_POLICY, grant_policy_hcl, lease_prefixes
from bot.vault.kinds.registry import strategy_for

DB = DynamicSecretGrant("database/creds/payments-readonly")
TOKEN = VaultTokenGrant(("Orders-Logs-Read",))
SSH = SshCertificateGrant(role="ops", principals=("ops", "deploy"), mount="ssh-prod")
# A real ed25519 public key (ssh-keygen -t ed25519), as a requester pastes it.
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMz+u+EdjFf13jahNvq4Jh+ZI+vAULVSR4MYHgVaHA1c alice@laptop"
)


def _token() -> GrantToken:
    return GrantToken(
        accessor="acc", token=SecretValue("hvs.x"), expires_at=datetime.now(UTC), policies=()
    )


def _spec(grant: Any, public_key: str | None = None) -> GrantSpec:
    return GrantSpec(
        request_id=42,
        requester="U0ALICE",
        resource="ops-host",
        ttl=timedelta(minutes=30),
        max_ttl=timedelta(hours=1),
        grant=grant,
        public_key=public_key,
    )


class FakeVault:
    """Records the one call a strategy makes with the grant token, and answers it."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.tokens: list[str] = []

    def grant_client(self, token: str) -> Any:
        vault = self
        self.tokens.append(token)

        class Client:
            def write(self, path: str, **data: Any) -> Any:
                vault.writes.append((path, data))
                return vault.answer

        return Client()

    def call(self, what: str, path: str, fn: Callable[[], Any], **options: Any) -> Any:
        assert options["retry"] is False  # signing is never retried
        return fn()


def test_every_grant_kind_has_a_strategy() -> None:
    examples = {DB.type: DB, TOKEN.type: TOKEN, SSH.type: SSH}
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
    token = _token()
    vault: Any = None  # any call to Vault would fail
    obtained = strategy_for(TOKEN).obtain(vault, token, TOKEN, _spec(TOKEN))
    assert obtained == Obtained(values={"token": token.token})
    assert obtained.lease_id is None and obtained.lease_expires_at is None


def test_a_lease_has_both_an_id_and_an_expiry() -> None:
    with pytest.raises(ValueError, match="both an id and an expiry"):
        Obtained(values={}, lease_id="database/creds/x/1")


def test_ssh_certificate_token_may_only_sign_with_its_role() -> None:
    strategy = strategy_for(SSH)
    assert strategy.token_policies("ops-host", SSH) == ("debug-access-grant-ops-host",)
    (document,) = strategy.policy_documents("ops-host", SSH)
    assert document.hcl == 'path "ssh-prod/sign/ops" {\n  capabilities = ["update"]\n}\n'
    assert lease_prefixes([SSH]) == ()


def test_ssh_certificate_signs_with_the_policys_principals_and_the_approved_ttl() -> None:
    vault = FakeVault(
        {"data": {"signed_key": "ssh-ed25519-cert-v01@openssh.com AAAA\n", "serial_number": "1a2b"}}
    )
    obtained = strategy_for(SSH).obtain(vault, _token(), SSH, _spec(SSH, PUBLIC_KEY))  # type: ignore[arg-type]
    ((path, data),) = vault.writes
    assert path == "ssh-prod/sign/ops" and vault.tokens == ["hvs.x"]
    assert data["valid_principals"] == "ops,deploy" and data["ttl"] == "1800s"
    assert data["cert_type"] == "user"
    assert data["key_id"] == "debug-access request #42 for U0ALICE (ops-host)"
    assert data["public_key"] == PUBLIC_KEY.rsplit(" ", 1)[0]  # the comment is not signed
    assert obtained.values["certificate"].reveal() == "ssh-ed25519-cert-v01@openssh.com AAAA"
    assert obtained.lease_id is None and obtained.verbatim
    assert obtained.audit["serial"] == "1a2b"
    assert obtained.audit["principals"] == ["ops", "deploy"]
    assert str(obtained.audit["key_fingerprint"]).startswith("SHA256:")
    assert any("`ops`" in line for line in obtained.instructions)


@pytest.mark.parametrize(
    ("public_key", "answer", "error"),
    [
        (None, {}, IssuerError),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----",
            {},
            PrivateKeyPasted,
        ),
        (PUBLIC_KEY, {"data": {}}, IssuerError),
        (PUBLIC_KEY, None, IssuerError),
    ],
)
def test_ssh_certificate_without_a_key_or_a_certificate_fails_closed(
    public_key: str | None, answer: Any, error: type[Exception]
) -> None:
    vault = FakeVault(answer)
    with pytest.raises(error):
        strategy_for(SSH).obtain(vault, _token(), SSH, _spec(SSH, public_key))  # type: ignore[arg-type]
    if public_key != PUBLIC_KEY:
        assert vault.writes == []  # nothing was sent to Vault
