"""The Vault / OpenBao issuer: the only module of debug-access that imports hvac.

Why it works the way it does
----------------------------
* **Vault bounds the lifetime, not the bot.** Every grant is a fresh *service token* whose TTL is
  the approved duration and whose ``explicit_max_ttl`` is the approved maximum. The dynamic secret
  (for example PostgreSQL credentials) is read *with that token*, so its lease is a child of it:
  when the token expires or is revoked, Vault revokes the lease and the database drops the user.
  If the bot crashes, loses its database or is never restarted, access still ends on time.
* **Orphans.** Grant tokens are created from a token role with ``orphan=true``. A non-orphan token
  dies with its parent, so rotating or losing the bot's own token would end every running grant.
* **Least privilege.** A ``vault_path`` resource gets a per-resource policy
  ``debug-access-grant-<resource>`` that allows only ``read`` on that one path, and the token gets
  no ``default`` policy. The token never leaves the bot. A ``vault_policies`` resource hands the
  user a token with exactly the operator-chosen policies plus ``debug-access-self-lookup`` (only
  ``vault token lookup``), and *not* ``default``, whose ``renew-self`` would let the holder extend
  their own access. Both kinds are renewable, by the bot alone (renew-accessor), for approved
  extensions; the role's and the token's max TTL still bound them.
* **Deliver without Slack seeing the secret.** Values are response-wrapped (single use, short TTL);
  the wrapping token's accessor tells whether somebody already unwrapped it.
* **Revoke and prove it.** ``revoke`` revokes the lease (lease id in the URL, so a path-scoped
  policy suffices; ``sync`` so errors surface) and the token by accessor; both are idempotent.
  ``confirm_revoked`` asks Vault whether both are really gone: Vault's own expiry revocation gives
  up after a few attempts and marks leases irrevocable, so the bot verifies instead of trusting it.
* **Errors are safe to show.** hvac and requests errors become ``IssuerError`` with a short message
  (operation, path, HTTP status, Vault's error text). Tokens, passwords and wrapped values never
  appear in messages, and the original exception is dropped (``from None``) where it could carry
  one. Idempotent calls are retried a few times on connection errors, 5xx and 429; token creation,
  dynamic-secret reads and wrapping are never retried (each call creates something new).

OpenBao behaviours this module relies on (checked against OpenBao 2.x):
* ``PUT sys/leases/revoke/<lease_id>`` with ``{"sync": true}`` answers 204, also for a lease that
  does not exist (already revoked or expired).
* ``sys/leases/lookup`` for a gone lease answers 400 ``invalid lease``.
* ``auth/token/revoke-accessor`` for an unknown accessor answers 200 with the warning
  ``No token found with this accessor``; ``auth/token/lookup-accessor`` answers 400
  ``1 error occurred: * invalid accessor``.
* An invalid or expired client token answers 403 ``permission denied`` (not 401).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.issuer import (
    DynamicSecret,
    GrantSpec,
    GrantToken,
    IssuerError,
    SecretValue,
    WrappedSecret,
)
from bot.vault_login import TokenKeeper

__all__ = [
    "BOT_POLICY_HCL",
    "DEFAULT_TOKEN_ROLE",
    "GRANT_POLICY_PREFIX",
    "ROLE_EXPLICIT_MAX_TTL",
    "ResourceGrantShape",
    "SetupReport",
    "VaultIssuer",
    "bot_policy_hcl",
    "grant_policy_hcl",
    "grant_policy_name",
    "utc_now",
]

T = TypeVar("T")

DEFAULT_TOKEN_ROLE = "debug-access-grant"  # noqa: S105 - a role name, not a secret
GRANT_POLICY_PREFIX = "debug-access-grant-"
#: Upper bound the token role puts on every grant token, whatever the request asks for.
ROLE_EXPLICIT_MAX_TTL = timedelta(hours=24)
#: ``check()`` complains when the bot's own token has less than this left.
_LOW_TOKEN_TTL = timedelta(minutes=10)
_MAX_DETAIL = 300

_INVALID_LEASE = "invalid lease"
# Vault's error texts (lower case) meaning "that token is gone already". Not secrets.
_INVALID_ACCESSOR = ("invalid accessor", "bad token")
_ACCESSOR_GONE = (*_INVALID_ACCESSOR, "no token found with this accessor")

_STATUS: dict[type[Exception], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}
_TRANSIENT_VAULT_ERRORS: tuple[type[Exception], ...] = (
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.VaultDown,
    hvac.exceptions.UnexpectedError,  # other 5xx (504...) and 412 from performance standbys
)
_TRANSIENT_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.+*/-]+$")


def _check_path(path: str) -> None:
    if not path or not _SAFE_PATH.match(path):
        raise ValueError(f"not a usable Vault path or name: {path!r}")


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def grant_policy_name(resource: str) -> str:
    """Name of the per-resource grant policy (Vault stores policy names in lower case)."""
    return f"{GRANT_POLICY_PREFIX}{resource.lower()}"


SELF_LOOKUP_POLICY = "debug-access-self-lookup"
SELF_LOOKUP_HCL = 'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}\n'


def grant_policy_hcl(vault_path: str) -> str:
    """The per-resource grant policy: ``read`` on exactly one path, nothing else."""
    _check_path(vault_path)
    return f'path "{vault_path}" {{\n  capabilities = ["read"]\n}}\n'


def bot_policy_hcl(
    token_role: str = DEFAULT_TOKEN_ROLE, lease_prefixes: Sequence[str] = ("database/creds/",)
) -> str:
    """The least-privilege policy for the bot's own token in production (AppRole / Kubernetes)."""
    _check_path(token_role)
    lines = [
        "# debug-access bot: least-privilege policy for the bot's own token (production mode).",
        "# In this mode the operator creates the grant policies (debug-access-grant-<resource>)",
        f"# and the token role auth/token/roles/{token_role}; the bot only checks that they exist.",
        "# No sudo, no revoke-prefix / revoke-force, no token creation outside the role.",
        "",
        "# Create one orphan grant token per approved request, only through the role.",
        f'path "auth/token/create/{token_role}" {{\n  capabilities = ["create", "update"]\n}}',
        "# Read the role (setup check / doctor).",
        f'path "auth/token/roles/{token_role}" {{\n  capabilities = ["read"]\n}}',
        "# Revoke and verify grant tokens by accessor; renew the bot-held ones within max TTL.",
        'path "auth/token/revoke-accessor" {\n  capabilities = ["update"]\n}',
        'path "auth/token/lookup-accessor" {\n  capabilities = ["update"]\n}',
        'path "auth/token/renew-accessor" {\n  capabilities = ["update"]\n}',
        "# The bot's own token.",
        'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}',
        'path "auth/token/renew-self" {\n  capabilities = ["update"]\n}',
        "# Revoke / renew only the leases of the dynamic-secret engines grants read from.",
    ]
    for prefix in lease_prefixes:
        _check_path(prefix)
        base = prefix.rstrip("/") + "/"
        lines.append(f'path "sys/leases/revoke/{base}*" {{\n  capabilities = ["update"]\n}}')
        lines.append(f'path "sys/leases/renew/{base}*" {{\n  capabilities = ["update"]\n}}')
    lines += [
        "# Verify that a lease is gone (the lease id travels in the body).",
        'path "sys/leases/lookup" {\n  capabilities = ["update"]\n}',
        "# Deliver credentials response-wrapped.",
        'path "sys/wrapping/wrap" {\n  capabilities = ["update"]\n}',
        "# Doctor: what may this token do?",
        'path "sys/capabilities-self" {\n  capabilities = ["update"]\n}',
    ]
    return "\n".join(lines) + "\n"


#: The bot's production policy for the default token role and PostgreSQL-style lease prefixes
#: (``database/creds/``). Use ``bot_policy_hcl()`` for other roles or engines.
BOT_POLICY_HCL = bot_policy_hcl()


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _duration(delta: timedelta, what: str) -> str:
    seconds = _seconds(delta)
    if seconds < 1:
        raise IssuerError(f"{what} must be at least one second")
    return f"{seconds}s"


@dataclass(frozen=True)
class ResourceGrantShape:
    """What ``ensure_setup`` needs to know about one configured resource."""

    name: str
    vault_path: str | None = None
    vault_policies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.vault_path is None) == (not self.vault_policies):
            raise ValueError(
                f"resource {self.name!r} needs exactly one of vault_path or vault_policies"
            )
        if self.vault_path is not None:
            _check_path(self.vault_path)
        for policy in self.vault_policies:
            _check_path(policy)


@dataclass(frozen=True)
class SetupReport:
    """What ``ensure_setup`` did. Every entry is a short human-readable sentence."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    not_created: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def lines(self) -> list[str]:
        return (
            [f"created: {x}" for x in self.created]
            + [f"updated: {x}" for x in self.updated]
            + [f"already present: {x}" for x in self.present]
            + [f"not created: {x}" for x in self.not_created]
        )


class _Report:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.updated: list[str] = []
        self.present: list[str] = []
        self.not_created: list[str] = []

    def freeze(self) -> SetupReport:
        return SetupReport(
            tuple(self.created), tuple(self.updated), tuple(self.present), tuple(self.not_created)
        )


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT_VAULT_ERRORS + _TRANSIENT_NETWORK_ERRORS)


def _vault_errors(exc: hvac.exceptions.VaultError) -> str:
    """Vault's error text, flattened (OpenBao wraps some in a multi-error block)."""
    errors = exc.errors
    if isinstance(errors, str):
        parts = [errors]
    elif isinstance(errors, list):
        parts = [str(e) for e in errors]
    else:
        parts = [str(exc.args[0]) if exc.args and exc.args[0] else ""]
    lines: list[str] = []
    for part in parts:
        for raw in part.splitlines():
            line = raw.strip().lstrip("*").strip()
            if line and not re.fullmatch(r"\d+ errors? occurred:", line):
                lines.append(line)
    return "; ".join(lines)


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    return text


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
        _check_path(token_role)
        self._client = client
        #: Keeps the bot's token alive and logs in again after a 403 (None: a fixed token).
        self.keeper = keeper
        self.token_role = token_role
        #: Default TTL for ``wrap`` callers: how long a user has to unwrap.
        self.wrap_ttl = wrap_ttl
        self._clock = clock
        self._retry_attempts = max(1, retry_attempts)
        self._retry_wait = retry_wait
        self._retry_sleep = retry_sleep

    @classmethod
    def from_settings(
        cls,
        addr: str,
        token: str,
        namespace: str | None = None,
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        **kw: Any,
    ) -> VaultIssuer:
        """Build from plain settings. ``kw`` goes to ``__init__`` (token_role, wrap_ttl, ...)."""
        client = hvac.Client(
            url=addr, token=token, namespace=namespace, verify=verify, timeout=timeout
        )
        return cls(client, **kw)

    def __repr__(self) -> str:
        return f"VaultIssuer(addr={self._addr!r}, token_role={self.token_role!r})"

    @property
    def _addr(self) -> str:
        return str(self._client.url)

    # ------------------------------------------------------------------ plumbing

    def _after_denied(self, fn: Callable[[], T], *, idempotent: bool) -> T:
        """Run ``fn`` (a call made with the bot's token). On 403, log in again once; then retry
        it if it is idempotent, else re-raise (the next call has a fresh token)."""
        token = self._client.token
        try:
            return fn()
        except hvac.exceptions.Forbidden:
            if self.keeper is None or not self.keeper.login_again_after_denied(token):
                raise
            if not idempotent:
                raise
            return fn()

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Idempotent calls with the bot's token: retried on transient errors, and once after
        logging in again on a 403."""
        retrying = Retrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_exponential(multiplier=self._retry_wait, max=max(self._retry_wait, 2.0)),
            retry=retry_if_exception(_is_transient),
            sleep=self._retry_sleep,
            reraise=True,
        )
        return retrying(lambda: self._after_denied(fn, idempotent=True))

    def _error(
        self, op: str, path: str, exc: Exception, secrets: Iterable[str | None] = ()
    ) -> IssuerError:
        """A user-safe IssuerError for ``exc``; callers raise it ``from None``."""
        hide = [self._client.token, *secrets]
        if isinstance(exc, hvac.exceptions.VaultError):
            status = _STATUS.get(type(exc))
            detail = _vault_errors(exc) or type(exc).__name__
            prefix = f"{status} " if status else ""
            if isinstance(exc, hvac.exceptions.InvalidPath) and not exc.errors:
                detail = "nothing at that path"
            msg = f"Vault {op} {path} failed: {prefix}{detail}"
        elif isinstance(exc, requests.exceptions.Timeout):
            msg = f"Vault at {self._addr} timed out during {op} {path}"
        elif isinstance(exc, requests.exceptions.RequestException):
            msg = f"Vault at {self._addr} is unreachable ({type(exc).__name__}) during {op} {path}"
        else:  # pragma: no cover - defensive
            msg = f"Vault {op} {path} failed: {type(exc).__name__}"
        msg = _redact(msg, hide)
        if len(msg) > _MAX_DETAIL:
            msg = msg[: _MAX_DETAIL - 3] + "..."
        return IssuerError(msg)

    def _call(
        self,
        op: str,
        path: str,
        fn: Callable[[], T],
        *,
        retry: bool,
        secrets: Iterable[str | None] = (),
        bot_token: bool = True,
    ) -> T:
        """Call ``fn``; ``retry`` only for idempotent calls. ``bot_token=False`` for calls made
        with a grant token, whose 403 says nothing about the bot's own token."""
        try:
            if retry:
                return self._retrying(fn)
            return self._after_denied(fn, idempotent=False) if bot_token else fn()
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error(op, path, exc, secrets) from None

    def _grant_client(self, token: str) -> hvac.Client:
        """A client with the grant token and everything else of the bot's client.

        It shares the bot client's requests session (TLS, proxies, mounted adapters) and its
        address, namespace and timeout; only the X-Vault-Token header differs.
        """
        adapter = self._client.adapter
        kwargs: dict[str, Any] = dict(getattr(adapter, "_kwargs", None) or {})
        return hvac.Client(
            url=adapter.base_uri,
            token=token,
            namespace=adapter.namespace,
            session=adapter.session,
            cert=kwargs.get("cert"),
            verify=kwargs.get("verify", True),
            timeout=kwargs.get("timeout", 30),
            proxies=kwargs.get("proxies"),
        )

    # ------------------------------------------------------------------ setup / doctor

    def ensure_setup(self, resources: Sequence[ResourceGrantShape]) -> SetupReport:
        """Create the grant policies and the token role when missing or different.

        With an admin token (a dev server) this is all the Vault setup the bot needs. With the
        production least-privilege token writes answer 403: that is reported, not raised, on the
        assumption that the operator created those objects (see the README).
        """
        report = _Report()
        allowed: set[str] = set()
        for resource in resources:
            if resource.vault_path is not None:
                name = grant_policy_name(resource.name)
                allowed.add(name)
                self._ensure_policy(name, grant_policy_hcl(resource.vault_path), report)
            allowed.update(p.lower() for p in resource.vault_policies)
        if any(resource.vault_policies for resource in resources):
            allowed.add(SELF_LOOKUP_POLICY)
            self._ensure_policy(SELF_LOOKUP_POLICY, SELF_LOOKUP_HCL, report)
        self._ensure_role(sorted(allowed), report)
        return report.freeze()

    def _read_setup(self, path: str) -> tuple[Mapping[str, Any] | None, bool]:
        """Read a set-up object; (None, False) when this token may not even look."""
        try:
            response = self._retrying(lambda: self._client.read(path))
        except hvac.exceptions.Forbidden:
            return None, False
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error("read", path, exc) from None
        if not response:
            return None, True
        return (response.get("data") or response), True

    def _write_setup(
        self,
        path: str,
        what: str,
        data: Mapping[str, Any],
        current: Mapping[str, Any] | None,
        readable: bool,
        report: _Report,
    ) -> None:
        """Write a set-up object; without permission, report instead of failing (the
        operator may have created it under a least-privilege token)."""
        try:
            self._retrying(lambda: self._client.write_data(path, data=dict(data)))
        except hvac.exceptions.Forbidden:
            if not readable:
                report.not_created.append(
                    f"could not check or create {what} (403 permission denied), "
                    "assuming the operator did"
                )
            elif current is None:
                report.not_created.append(
                    f"{what} does not exist and could not be created (403 permission denied): "
                    "the operator must create it"
                )
            else:
                report.not_created.append(
                    f"{what} differs from the expected settings and could not be updated "
                    "(403 permission denied), assuming the operator set it up on purpose"
                )
            return
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error("write", path, exc) from None
        (report.created if current is None else report.updated).append(what)

    def _ensure_policy(self, name: str, hcl: str, report: _Report) -> None:
        path = f"sys/policy/{name}"
        what = f"policy {name}"
        current, readable = self._read_setup(path)
        if current is not None and str(current.get("rules") or "").strip() == hcl.strip():
            report.present.append(what)
            return
        self._write_setup(path, what, {"policy": hcl}, current, readable, report)

    def _desired_role(self, allowed_policies: list[str]) -> dict[str, Any]:
        return {
            "orphan": True,
            "renewable": True,
            "token_type": "service",
            "allowed_policies": allowed_policies,
            "disallowed_policies": ["root"],
            "token_explicit_max_ttl": _seconds(ROLE_EXPLICIT_MAX_TTL),
        }

    @staticmethod
    def _role_matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        def policies(value: Any) -> set[str]:
            return {str(p) for p in (value or [])}

        return (
            bool(current.get("orphan")) == desired["orphan"]
            and bool(current.get("renewable")) == desired["renewable"]
            and current.get("token_type") in ("service", "default-service")
            and policies(current.get("allowed_policies")) == policies(desired["allowed_policies"])
            and policies(current.get("disallowed_policies"))
            == policies(desired["disallowed_policies"])
            and int(current.get("token_explicit_max_ttl") or 0) == desired["token_explicit_max_ttl"]
        )

    def _ensure_role(self, allowed_policies: list[str], report: _Report) -> None:
        path = f"auth/token/roles/{self.token_role}"
        what = f"token role {self.token_role}"
        desired = self._desired_role(allowed_policies)
        current, readable = self._read_setup(path)
        if current is not None and self._role_matches(current, desired):
            report.present.append(what)
            return
        self._write_setup(path, what, desired, current, readable, report)

    def check(self) -> list[str]:
        """The doctor: problems in plain words, ``[]`` when the bot can work with this Vault."""
        problems: list[str] = []
        try:
            seal = self._retrying(lambda: self._client.sys.read_seal_status())
        except requests.exceptions.RequestException as exc:
            return [f"Vault at {self._addr} is unreachable ({type(exc).__name__})"]
        except hvac.exceptions.VaultError as exc:
            return [str(self._error("read", "sys/seal-status", exc))]
        if not seal.get("initialized", True):
            return [f"Vault at {self._addr} is not initialized"]
        if seal.get("sealed"):
            return [f"Vault at {self._addr} is sealed: unseal it first"]

        try:
            me = self._retrying(lambda: self._client.auth.token.lookup_self())
        except hvac.exceptions.Forbidden:
            return [
                "the bot's Vault token is invalid or expired, or may not read "
                "auth/token/lookup-self (403 permission denied)"
            ]
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            return [str(self._error("lookup", "auth/token/lookup-self", exc))]
        data = me.get("data") or {}
        ttl = int(data.get("ttl") or 0)
        kept_alive = self.keeper is not None and not self.keeper.status().dies_unrenewed
        if 0 < ttl < _seconds(_LOW_TOKEN_TTL) and not kept_alive:
            problems.append(
                f"the bot's Vault token expires in {ttl} seconds: renew it or log in again"
            )

        role_path = f"auth/token/roles/{self.token_role}"
        try:
            role = self._retrying(lambda: self._client.read(role_path))
        except hvac.exceptions.Forbidden:
            problems.append(
                f"cannot read token role {self.token_role} (403 permission denied): "
                f'the bot policy needs read on "{role_path}"'
            )
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            problems.append(str(self._error("read", role_path, exc)))
        else:
            if role is None:
                problems.append(
                    f"token role {self.token_role} does not exist: run the setup with an admin "
                    "token or create it as the README describes"
                )
            else:
                rdata = role.get("data") or {}
                if not rdata.get("orphan"):
                    problems.append(
                        f"token role {self.token_role} does not create orphan tokens "
                        "(orphan=false): grants would die with the bot's token"
                    )
                if rdata.get("token_type") not in ("service", "default-service"):
                    problems.append(
                        f"token role {self.token_role} does not issue service tokens: "
                        "leases would not be tied to the grant token"
                    )

        problems += self._check_capabilities()
        return problems

    def _check_capabilities(self) -> list[str]:
        needed = {
            f"auth/token/create/{self.token_role}": {"create", "update"},
            "auth/token/revoke-accessor": {"update"},
            "auth/token/lookup-accessor": {"update"},
            "sys/leases/lookup": {"update"},
            "sys/wrapping/wrap": {"update"},
        }
        try:
            resp = self._retrying(
                lambda: self._client.write_data(
                    "sys/capabilities-self", data={"paths": sorted(needed)}
                )
            )
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            return [str(self._error("check capabilities on", "sys/capabilities-self", exc))]
        caps: Mapping[str, Any] = (resp.get("data") or resp) if isinstance(resp, dict) else {}
        problems = []
        for path, wanted in sorted(needed.items()):
            have = set(caps.get(path) or [])
            if "deny" in have or ("root" not in have and not have & wanted):
                problems.append(f"the bot's Vault token may not {'/'.join(sorted(wanted))} {path}")
        return problems

    # ------------------------------------------------------------------ the Issuer protocol

    def create_grant_token(self, spec: GrantSpec) -> GrantToken:
        """Create the orphan grant token. Not idempotent: never retried."""
        if (spec.vault_path is None) == (not spec.vault_policies):
            raise IssuerError(
                f"resource {spec.resource} needs exactly one of vault_path or vault_policies"
            )
        for_path = spec.vault_path is not None
        policies = (
            [grant_policy_name(spec.resource)]
            if for_path
            else [*(p.lower() for p in spec.vault_policies), SELF_LOOKUP_POLICY]
        )
        payload = {
            "policies": policies,
            "ttl": _duration(spec.ttl, "the grant TTL"),
            "explicit_max_ttl": _duration(spec.max_ttl, "the grant max TTL"),
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
        path = f"auth/token/create/{self.token_role}"
        now = self._clock()
        resp = self._call(
            "token creation via",
            path,
            lambda: self._client.write_data(path, data=payload),
            retry=False,
        )
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

    def read_dynamic_secret(self, token: GrantToken, path: str) -> DynamicSecret:
        """Read ``path`` with the grant token, so the lease is its child. Never retried."""
        secret_token = token.token.reveal()
        client = self._grant_client(secret_token)  # shares the session: do not close it
        now = self._clock()
        resp = self._call(
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
        values = {k: SecretValue(v) for k, v in data.items() if isinstance(v, str)}
        return DynamicSecret(
            lease_id=str(lease_id),
            lease_expires_at=now + timedelta(seconds=int(resp.get("lease_duration") or 0)),
            values=values,
        )

    def wrap(self, values: Mapping[str, str], ttl: timedelta) -> WrappedSecret:
        """Response-wrap ``values`` (single use). Not retried: each call mints a new token."""
        payload = dict(values)
        ttl_s = _duration(ttl, "the wrapping TTL")
        resp = self._call(
            "wrap via",
            "sys/wrapping/wrap",
            lambda: self._client.sys.wrap(payload=payload, ttl=ttl_s),
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
        now = self._clock()
        seconds = max(int((until - now).total_seconds()), 1)
        token = self._call(
            "renew",
            "auth/token/renew-accessor",
            lambda: self._client.write_data(
                "auth/token/renew-accessor",
                data={"accessor": token_accessor, "increment": f"{seconds}s"},
            ),
            retry=False,
        )
        expiry = now + timedelta(
            seconds=int(((token or {}).get("auth") or {}).get("lease_duration") or 0)
        )
        if lease_id:
            _check_path(lease_id)
            path = f"sys/leases/renew/{lease_id}"
            lease = self._call(
                "renew",
                path,
                lambda: self._client.write_data(path, data={"increment": seconds}),
                retry=False,
            )
            lease_seconds = int((lease or {}).get("lease_duration") or 0)
            expiry = min(expiry, now + timedelta(seconds=lease_seconds))
        return expiry

    def revoke(self, token_accessor: str | None, lease_id: str | None) -> None:
        """Revoke the lease, then the token. Gone already counts as success.

        The token is revoked even when the lease revocation fails (that also ends the lease,
        asynchronously); the first failure is raised afterwards.
        """
        failure: IssuerError | None = None
        if lease_id:
            try:
                self._revoke_lease(lease_id)
            except IssuerError as exc:
                failure = exc
        if token_accessor:
            try:
                self._revoke_accessor(token_accessor)
            except IssuerError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _revoke_lease(self, lease_id: str) -> None:
        path = f"sys/leases/revoke/{lease_id}"
        # 204 also when the lease does not exist (already revoked or expired).
        self._call(
            "revocation of",
            path,
            lambda: self._client.write_data(path, data={"sync": True}),
            retry=True,
        )

    def _revoke_accessor(self, accessor: str) -> None:
        path = "auth/token/revoke-accessor"
        try:
            # OpenBao: 204 when revoked, 200 + warning "No token found with this accessor"
            # when the token is already gone.
            self._retrying(lambda: self._client.write_data(path, data={"accessor": accessor}))
        except hvac.exceptions.InvalidRequest as exc:
            text = _vault_errors(exc).lower()
            if any(marker in text for marker in _ACCESSOR_GONE):
                return  # some Vault versions answer 400 for an unknown accessor
            raise self._error("revocation via", path, exc) from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error("revocation via", path, exc) from None

    def confirm_revoked(self, token_accessor: str | None, lease_id: str | None) -> bool:
        """True only when Vault says the lease and the token (those given) are gone."""
        if lease_id and not self._lease_gone(lease_id):
            return False
        return not (token_accessor and not self._accessor_gone(token_accessor))

    def _lease_gone(self, lease_id: str) -> bool:
        path = "sys/leases/lookup"
        try:
            self._retrying(lambda: self._client.write_data(path, data={"lease_id": lease_id}))
        except hvac.exceptions.InvalidRequest as exc:
            if _INVALID_LEASE in _vault_errors(exc).lower():
                return True
            raise self._error("lookup via", path, exc) from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error("lookup via", path, exc) from None
        return False

    def _accessor_gone(self, accessor: str) -> bool:
        path = "auth/token/lookup-accessor"
        try:
            self._retrying(lambda: self._client.write_data(path, data={"accessor": accessor}))
        except hvac.exceptions.InvalidRequest as exc:
            if any(marker in _vault_errors(exc).lower() for marker in _INVALID_ACCESSOR):
                return True
            raise self._error("lookup via", path, exc) from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise self._error("lookup via", path, exc) from None
        return False
