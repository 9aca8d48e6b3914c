"""``VaultIssuer``: the grant token, what it obtains, wrapping, renewal, revocation and its proof.

* **Vault bounds the lifetime, not the bot.** Every grant is a fresh *service token* whose TTL is
  the approved duration and whose ``explicit_max_ttl`` is the approved maximum. What the grant
  gives is obtained *with that token* (a dynamic secret's lease is its child): when the token
  expires or is revoked, Vault ends the access. If the bot crashes, loses its database or is
  never restarted, access still ends on time.
* **Orphans.** Grant tokens come from a token role with ``orphan=true``: a non-orphan token dies
  with its parent, so rotating the bot's own token would end every running grant.
* **Least privilege, per kind.** The grant kind's strategy (``bot.vault.kinds``) picks the
  token's policies; never ``default``, whose ``renew-self`` would let a holder extend their own
  access. Tokens are renewable by the bot alone (renew-accessor), for approved extensions.
* **A creation whose answer was lost can be taken back.** Where the bot's token has ``sudo`` on
  the role's create path (and ``update`` on ``auth/token/lookup`` and ``auth/token/revoke``), the
  bot chooses each grant token's id itself. If the answer to the creation is lost (a timeout, a
  reset after sending), it revokes that id and has Vault confirm it does not exist; only then
  does it say nothing is left. Without those capabilities it cannot name such a token, and says
  so (the token ends by itself at its TTL; nobody holds its value).
* **Revoke and prove it.** ``revoke`` revokes the lease (if any; lease id in the URL, so a
  path-scoped policy suffices; ``sync`` so errors surface), then the token by accessor; both
  idempotent. ``confirm_revoked`` asks Vault whether both are gone: Vault's own expiry
  revocation gives up after a few attempts and marks leases irrevocable.

OpenBao behaviours relied on (OpenBao 2.x):
* ``PUT sys/leases/revoke/<lease_id>`` with ``{"sync": true}`` answers 204, also for a lease that
  does not exist (already revoked or expired); ``sys/leases/lookup`` for it answers 400
  ``invalid lease``.
* ``auth/token/revoke-accessor`` for an unknown accessor answers 200 with the warning
  ``No token found with this accessor``; ``auth/token/lookup-accessor`` answers 400
  ``1 error occurred: * invalid accessor``.
* An invalid or expired client token answers 403 ``permission denied`` (not 401).
* ``auth/token/create/<role>`` with an ``id`` answers 400 ``root or sudo privileges required to
  specify token id`` unless the caller has ``sudo`` on that path. ``auth/token/revoke`` of a token
  that does not exist answers 204; ``auth/token/lookup`` of one answers 403 ``bad token``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import hvac
import hvac.exceptions

from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue, WrappedSecret
from bot.vault.checks import GrantFindings, check_grants
from bot.vault.checks import check as check_vault
from bot.vault.client import (
    VAULT_FAILURES,
    VaultClient,
    check_path,
    duration,
    utc_now,
    vault_errors,
)
from bot.vault.kinds.registry import strategy_for
from bot.vault.setup import DEFAULT_TOKEN_ROLE, ResourceGrantShape, SetupReport, ensure_setup
from bot.vault_login import TokenKeeper

# Vault's error texts (lower case) meaning "that is gone already". Not secrets.
_INVALID_LEASE = ("invalid lease",)
_INVALID_ACCESSOR = ("invalid accessor", "bad token")
_ACCESSOR_GONE = (*_INVALID_ACCESSOR, "no token found with this accessor")


class VaultIssuer:
    """``bot.issuer.Issuer`` backed by Vault or OpenBao through hvac."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        token_role: str = DEFAULT_TOKEN_ROLE,
        wrap_ttl: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = utc_now,
        retry_attempts: int = 4,
        retry_wait: float = 0.2,
        retry_sleep: Callable[[float], None] = time.sleep,
        keeper: TokenKeeper | None = None,
    ) -> None:
        check_path(token_role)
        self._vault = VaultClient(
            client,
            keeper=keeper,
            clock=clock,
            retry_attempts=retry_attempts,
            retry_wait=retry_wait,
            retry_sleep=retry_sleep,
        )
        self.token_role = token_role
        #: Default TTL for ``wrap`` callers: how long a user has to unwrap.
        self.wrap_ttl = wrap_ttl
        #: May the bot choose grant token ids (sudo on the create path)? None: not known yet.
        self._chooses_ids: bool | None = None

    @classmethod
    def from_settings(
        cls,
        addr: str,
        token: str,
        namespace: str | None = None,
        *,
        verify: bool | str = True,
        timeout: float = 5.0,
        **kw: Any,
    ) -> VaultIssuer:
        """Build from plain settings. ``kw`` goes to ``__init__`` (token_role, wrap_ttl, ...)."""
        client = hvac.Client(
            url=addr, token=token, namespace=namespace, verify=verify, timeout=timeout
        )
        return cls(client, **kw)

    def __repr__(self) -> str:
        return f"VaultIssuer(addr={self._vault.addr!r}, token_role={self.token_role!r})"

    @property
    def keeper(self) -> TokenKeeper | None:
        """Keeps the bot's token alive and logs in again after a 403 (None: a fixed token)."""
        return self._vault.keeper

    # ------------------------------------------------------------------ set-up / doctor

    def ensure_setup(self, resources: Sequence[ResourceGrantShape]) -> SetupReport:
        """Create the grant policies and the token role when missing or different."""
        return ensure_setup(self._vault, self.token_role, resources)

    def check_grants(self, resources: Sequence[ResourceGrantShape]) -> GrantFindings:
        """Read-only: each grant's engine mounted, its role present, its policies written."""
        return check_grants(self._vault, resources)

    def check(self) -> list[str]:
        """The doctor: problems in plain words, ``[]`` when the bot can work with this Vault."""
        return check_vault(self._vault, self.token_role)

    # ------------------------------------------------------------------ the Issuer protocol

    def _may_choose_ids(self, path: str) -> bool:
        """Whether the bot's token has sudo on the create path (asked once, remembered).

        Asked plainly: no retry, no log-in again after a 403. Any failure means "not this time"
        and leaves the creation itself to meet (and report) whatever is wrong."""
        if self._chooses_ids is None:
            try:
                resp = self._vault.hvac.write_data("sys/capabilities-self", data={"paths": [path]})
            except VAULT_FAILURES:
                return False  # ask again next time
            data = (resp.get("data") or resp) if isinstance(resp, dict) else {}
            caps = set(data.get(path) or [])
            self._chooses_ids = bool(caps & {"sudo", "root"})
        return self._chooses_ids

    def _take_back(self, token_id: str) -> bool:
        """Revoke the token with this id, if it exists; True when Vault confirms it does not."""
        body = {"token": token_id}
        try:
            self._vault.retrying(
                lambda: self._vault.hvac.write_data("auth/token/revoke", data=body)
            )
            self._vault.retrying(
                lambda: self._vault.hvac.write_data("auth/token/lookup", data=body)
            )
        except hvac.exceptions.Forbidden as exc:
            return "bad token" in vault_errors(exc).lower()  # else: the bot may not look up
        except VAULT_FAILURES:
            return False  # Vault still unreachable, or the bot may not revoke
        return False  # still there

    def create_grant_token(self, spec: GrantSpec) -> GrantToken:
        """Create the orphan grant token. Not idempotent: sent once (retried only when Vault
        cannot have received it). When the answer is lost, take back the token it may have
        made if its id is known; else report it as possibly existing (``maybe_done``)."""
        path = f"auth/token/create/{self.token_role}"
        policies = list(strategy_for(spec.grant).token_policies(spec.resource, spec.grant))
        # URL-safe and without dots, as Vault requires of a chosen id; as secret as Vault's own.
        token_id = SecretValue(secrets.token_urlsafe(32)) if self._may_choose_ids(path) else None
        payload = {
            "policies": policies,
            "ttl": duration(spec.ttl, "the grant TTL"),
            "explicit_max_ttl": duration(spec.max_ttl, "the grant max TTL"),
            "display_name": f"debug-access-{spec.resource}-{spec.request_id}",
            "meta": {
                "request_id": str(spec.request_id),
                "requester": spec.requester,
                "resource": spec.resource,
            },
            # Renewable by the bot (renew-accessor) for approved extensions. Never `default`:
            # its renew-self would let a user-held token's holder extend their own access.
            "renewable": True,
            "no_default_policy": True,
        }
        if token_id is not None:
            payload["id"] = token_id.reveal()
        now = self._vault.clock()
        try:
            resp = self._vault.call(
                "token creation via",
                path,
                lambda: self._vault.hvac.write_data(path, data=payload),
                retry=False,
                secrets=[token_id.reveal() if token_id else None],
            )
        except IssuerError as exc:
            if exc.maybe_done and token_id is not None and self._take_back(token_id.reveal()):
                raise IssuerError(
                    f"{exc}; the token it may have created was revoked (Vault confirmed)",
                    unreachable=True,
                ) from None
            raise
        auth = (resp.get("auth") if isinstance(resp, dict) else None) or {}
        token = auth.get("client_token")
        accessor = auth.get("accessor")
        if not token or not accessor:
            raise IssuerError(f"Vault token creation via {path} returned no token")
        got = tuple(str(p) for p in (auth.get("policies") or auth.get("token_policies") or []))
        lease = int(auth.get("lease_duration") or 0)
        unexpected = set(got) - set(policies)
        if unexpected or lease <= 0:
            # Never hand out more than approved, nor a token without an end: take it back.
            self.revoke(str(accessor), None)
            reason = (
                f"extra policies {sorted(unexpected)}" if unexpected else "a token without a TTL"
            )
            raise IssuerError(f"Vault token creation via {path} gave {reason}; revoked it")
        return GrantToken(
            accessor=str(accessor),
            token=SecretValue(str(token)),
            expires_at=now + timedelta(seconds=lease),
            policies=got,
        )

    def obtain(self, token: GrantToken, spec: GrantSpec) -> Obtained:
        """What the grant gives, obtained with the grant token by its kind's strategy."""
        return strategy_for(spec.grant).obtain(self._vault, token, spec.grant, spec)

    def wrap(self, values: Mapping[str, str], ttl: timedelta) -> WrappedSecret:
        """Response-wrap ``values`` (single use). Not retried: each call mints a new token."""
        payload = dict(values)
        ttl_s = duration(ttl, "the wrapping TTL")
        resp = self._vault.call(
            "wrap via",
            "sys/wrapping/wrap",
            lambda: self._vault.hvac.sys.wrap(payload=payload, ttl=ttl_s),
            retry=False,
            secrets=list(payload.values()),
        )
        wrap_info = (resp.get("wrap_info") if isinstance(resp, dict) else None) or {}
        wrapping_token = wrap_info.get("token")
        if not wrapping_token:
            raise IssuerError("Vault wrap via sys/wrapping/wrap returned no wrapping token")
        return WrappedSecret(str(wrapping_token), str(wrap_info.get("accessor") or ""))

    def renew(self, token_accessor: str, lease_id: str | None, until: datetime) -> datetime:
        """Extend the grant token (by accessor: the bot never keeps the token) and its lease to
        ``until``. Returns the expiry Vault granted: min of the token's and the lease's, which a
        role's max TTL may cap below ``until``. Not retried: a renewal is not idempotent."""
        now = self._vault.clock()
        seconds = max(int((until - now).total_seconds()), 1)
        token = self._vault.call(
            "renew",
            "auth/token/renew-accessor",
            lambda: self._vault.hvac.write_data(
                "auth/token/renew-accessor",
                data={"accessor": token_accessor, "increment": f"{seconds}s"},
            ),
            retry=False,
        )
        expiry = now + timedelta(
            seconds=int(((token or {}).get("auth") or {}).get("lease_duration") or 0)
        )
        if lease_id:
            check_path(lease_id)
            path = f"sys/leases/renew/{lease_id}"
            lease = self._vault.call(
                "renew",
                path,
                lambda: self._vault.hvac.write_data(path, data={"increment": seconds}),
                retry=False,
            )
            lease_seconds = int((lease or {}).get("lease_duration") or 0)
            expiry = min(expiry, now + timedelta(seconds=lease_seconds))
        return expiry

    def revoke(self, token_accessor: str | None, lease_id: str | None) -> None:
        """Revoke the lease, then the token. Gone already counts as success.

        The token is revoked even when Vault refuses the lease revocation (that also ends the
        lease, asynchronously); the first failure is raised afterwards. When Vault does not
        answer at all, the token is not tried: that would only double the wait before the
        caller hears of it and raises the alarm.
        """
        failure: IssuerError | None = None
        if lease_id:
            path = f"sys/leases/revoke/{lease_id}"
            try:
                # 204 also when the lease does not exist (already revoked or expired).
                self._vault.call(
                    "revocation of",
                    path,
                    lambda: self._vault.hvac.write_data(path, data={"sync": True}),
                    retry=True,
                )
            except IssuerError as exc:
                if exc.unreachable:
                    raise
                failure = exc
        if token_accessor:
            try:
                # OpenBao: 204 when revoked, 200 + warning when already gone; some Vault
                # versions answer 400 for an unknown accessor, which counts as gone too.
                self._vault.answers_gone(
                    "revocation via",
                    "auth/token/revoke-accessor",
                    {"accessor": token_accessor},
                    _ACCESSOR_GONE,
                )
            except IssuerError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def confirm_revoked(self, token_accessor: str | None, lease_id: str | None) -> bool:
        """True only when Vault says the lease and the token (those given) are gone."""
        if lease_id and not self._vault.answers_gone(
            "lookup via", "sys/leases/lookup", {"lease_id": lease_id}, _INVALID_LEASE
        ):
            return False
        return not token_accessor or self._vault.answers_gone(
            "lookup via",
            "auth/token/lookup-accessor",
            {"accessor": token_accessor},
            _INVALID_ACCESSOR,
        )
