"""``ssh_certificate``: Vault's SSH engine signs the requester's public key with the grant token.

The grant token carries one generated policy, ``debug-access-grant-<resource>``, that may only
``update`` ``<mount>/sign/<role>``: it can sign, nothing else. The bot, never the user, chooses
what goes into the certificate:

* ``valid_principals`` from the policy (a user-supplied principal would be privilege escalation);
* ``ttl`` = the approved duration, so the certificate's ``valid before`` is the grant's expiry;
* ``key_id`` naming the request and the requester, which sshd writes to its log at every login:
  the host's own log then ties each session to the request that allowed it.

The operator configures the SSH secrets engine (CA key, the role with ``allow_user_certificates``,
``allowed_users`` covering the principals, ``allow_user_key_ids``); ``debug-access check`` reads
it back. A certificate has no lease and cannot be revoked in Vault: revoking the grant token ends
nothing on the hosts, which is why this kind is not ``recallable``.
"""

from __future__ import annotations

from bot.domain.grant_kinds import SshCertificateGrant
from bot.domain.ssh_keys import parse_public_key
from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue
from bot.vault.client import VaultClient, seconds
from bot.vault.kinds.base import PolicyDocument, policy_hcl
from bot.vault.kinds.dynamic_secret import grant_policy_name


def key_id(spec: GrantSpec) -> str:
    """What sshd logs for each login with the certificate (no user text: ids only)."""
    return f"debug-access request #{spec.request_id} for {spec.requester} ({spec.resource})"


class SshCertificateStrategy:
    """``GrantStrategy`` for ``SshCertificateGrant``."""

    def token_policies(self, resource: str, grant: SshCertificateGrant) -> tuple[str, ...]:
        return (grant_policy_name(resource),)

    def policy_documents(
        self, resource: str, grant: SshCertificateGrant
    ) -> tuple[PolicyDocument, ...]:
        return (
            PolicyDocument(grant_policy_name(resource), policy_hcl(grant.sign_path, ("update",))),
        )

    def endpoint(self, grant: SshCertificateGrant) -> str | None:
        return grant.sign_path

    def lease_prefixes(self, grant: SshCertificateGrant) -> tuple[str, ...]:
        return ()  # a signed certificate has no lease

    def obtain(
        self, vault: VaultClient, token: GrantToken, grant: SshCertificateGrant, spec: GrantSpec
    ) -> Obtained:
        """Sign the request's public key with the grant token. Never retried: a retry could sign
        twice (harmless, but the audit trail would name only one serial)."""
        if spec.public_key is None:
            raise IssuerError("the request carries no SSH public key to sign")
        key = parse_public_key(spec.public_key, grant.key_policy())  # checked again, at the edge
        secret_token = token.token.reveal()
        client = vault.grant_client(secret_token)
        path = grant.sign_path
        resp = vault.call(
            "signing with",
            path,
            lambda: client.write(
                path,
                public_key=key.line,
                valid_principals=",".join(grant.principals),
                ttl=f"{seconds(spec.ttl)}s",
                cert_type="user",
                key_id=key_id(spec),
            ),
            retry=False,
            secrets=[secret_token],
            bot_token=False,
        )
        data = resp.get("data") if isinstance(resp, dict) else None
        signed = data.get("signed_key") if isinstance(data, dict) else None
        if not isinstance(signed, str) or not signed.strip():
            raise IssuerError(f"{path} returned no signed certificate")
        return Obtained(
            values={"certificate": SecretValue(signed.strip())},
            verbatim=True,
            audit={
                "serial": str(data.get("serial_number", "")) if isinstance(data, dict) else "",
                "key_id": key_id(spec),
                "principals": list(grant.principals),
                "key_fingerprint": key.fingerprint,
            },
            instructions=(
                "Save the certificate next to your key, as `<key>-cert.pub` (for "
                "`~/.ssh/id_ed25519` that is `~/.ssh/id_ed25519-cert.pub`), then log in as "
                + " or ".join(f"`{p}`" for p in grant.principals)
                + ", e.g. `ssh -i ~/.ssh/id_ed25519 "
                + grant.principals[0]
                + "@<host>`.",
            ),
        )
