"""Vault / OpenBao: the only package of debug-access that imports hvac.

* ``client``: calling Vault safely (retries, logging in again, errors without secrets).
* ``setup``: the token role, the grant policies, the bot's own least-privilege policy.
* ``checks``: the doctor.
* ``issuer``: ``VaultIssuer``, the ``bot.issuer.Issuer`` port: grant token, obtain, wrap, renew,
  revoke, confirm.
* ``kinds``: one strategy module per grant kind (``bot.domain.grant_kinds``) and their registry;
  the only modules here that know what a ``dynamic_secret`` or a ``vault_token`` is.
"""

from bot.vault.client import utc_now
from bot.vault.issuer import VaultIssuer
from bot.vault.kinds.dynamic_secret import (
    GRANT_POLICY_PREFIX,
    grant_policy_hcl,
    grant_policy_name,
)
from bot.vault.kinds.vault_token import SELF_LOOKUP_POLICY
from bot.vault.setup import (
    BOT_POLICY_HCL,
    DEFAULT_TOKEN_ROLE,
    ROLE_EXPLICIT_MAX_TTL,
    ResourceGrantShape,
    SetupReport,
    bot_policy_hcl,
    lease_prefixes,
)

__all__ = [
    "BOT_POLICY_HCL",
    "DEFAULT_TOKEN_ROLE",
    "GRANT_POLICY_PREFIX",
    "ROLE_EXPLICIT_MAX_TTL",
    "SELF_LOOKUP_POLICY",
    "ResourceGrantShape",
    "SetupReport",
    "VaultIssuer",
    "bot_policy_hcl",
    "grant_policy_hcl",
    "grant_policy_name",
    "lease_prefixes",
    "utc_now",
]
