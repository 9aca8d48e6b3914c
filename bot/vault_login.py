"""The bot's own Vault identity: log in, keep the token alive, log in again before it dies.

Why this exists
---------------
Every grant is issued *and revoked* with the bot's token. A token that quietly expires stops
both: grants can no longer be ended early, and the revocation timers fail until someone restarts
the bot. So the bot owns its token's life the way Vault Agent does:

* **Log-in methods** (``VAULT_AUTH_METHOD``, or implied by what is set): ``token`` (``VAULT_TOKEN``
  or ``VAULT_TOKEN_FILE``, re-read whenever the file changes, as Vault Agent rewrites it),
  ``approle`` (``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID``/``VAULT_SECRET_ID_FILE``), and the
  workload-identity methods ``kubernetes`` and ``jwt`` (the pod's service-account token file).
* **Renewal at half-life.** A renewable token is renewed once half of its TTL (its period, for a
  periodic token) has passed, so a missed beat or two still leaves time. When Vault grants less
  than was asked, the token is near its max TTL: the bot logs in again at once instead of riding
  the token to its end. A token that cannot be renewed is replaced by a new log-in at half-life.
* **A heartbeat.** The keeper looks its token up every few seconds. A token revoked or expired
  behind the bot's back is noticed within seconds (``/readyz`` goes red) and, where the method
  can log in again, replaced (``/readyz`` recovers by itself).
* **403 means "log in again once".** An expired or revoked client token answers 403 ``permission
  denied``; :meth:`TokenKeeper.login_again_after_denied` logs in again at most once per dead token
  (however many threads saw it die), and the issuer then retries only idempotent calls.
* **Grants stay orphans.** Nothing here touches the token role: grant tokens come from a role
  with ``orphan=true``, so replacing or losing the bot's token never ends a grant.

Secrets: every token and secret id read here is registered with :mod:`bot.logs` before use, and
error texts carry only method names, mount paths and Vault's own error strings.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import hvac
import hvac.exceptions
import requests

from bot.config import VaultLoginSettings
from bot.logs import remember_secret

log = logging.getLogger(__name__)

#: How often the keeper looks its token up when nothing else is due (detects revocation).
HEARTBEAT_SECONDS = 5.0
#: Renew (or log in again) once this fraction of the token's TTL is left.
RENEW_AT_FRACTION = 0.5
#: "About to expire" for readiness and ``check``: less than this is left and nothing can help.
LOW_TTL_SECONDS = 60
#: A failed renewal or log-in is tried again after this long (or sooner, if the token is dying).
RETRY_SECONDS = 2.0


class VaultLoginError(Exception):
    """Logging in to Vault failed; the message is safe to show (no secret in it)."""


def _read_secret_file(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultLoginError(f"cannot read {what} from {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise VaultLoginError(f"{what} file {path} is not UTF-8 text") from None
    if not value:
        raise VaultLoginError(f"{what} file {path} is empty")
    remember_secret(value)
    return value


def _vault_error_text(exc: Exception) -> str:
    if isinstance(exc, hvac.exceptions.VaultError):
        errors = exc.errors if isinstance(exc.errors, list) else [exc.errors or type(exc).__name__]
        return "; ".join(" ".join(str(e).split()) for e in errors)[:200]
    return type(exc).__name__


class Login(ABC):
    """One way of obtaining a Vault token for the bot."""

    method: ClassVar[str]

    @abstractmethod
    def login(self, client: hvac.Client) -> None:
        """Set ``client.token`` to a fresh (or the configured) token."""

    @property
    def can_log_in_again(self) -> bool:
        """Whether a new log-in can yield a *different* token (a plain VAULT_TOKEN cannot)."""
        return True

    @property
    def fresh_on_demand(self) -> bool:
        """Whether a log-in *now* yields a fresh token (AppRole, Kubernetes, JWT), rather than
        whatever someone else last put in place (a token file)."""
        return True

    def changed(self) -> bool:
        """Whether the credential behind this log-in changed since the last log-in."""
        return False

    def describe(self) -> str:
        return self.method


class TokenLogin(Login):
    """``VAULT_TOKEN``, or ``VAULT_TOKEN_FILE`` re-read when its content changes."""

    method = "token"

    def __init__(self, token: str | None = None, token_file: Path | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("give exactly one of token or token_file")
        self._token = token
        self._file = token_file
        self._file_stamp: tuple[int, int] | None = None
        if token:
            remember_secret(token)

    def _stamp(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        try:
            stat = self._file.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def login(self, client: hvac.Client) -> None:
        if self._file is None:
            client.token = self._token
            return
        stamp = self._stamp()
        client.token = _read_secret_file(self._file, "the Vault token")
        self._file_stamp = stamp

    @property
    def can_log_in_again(self) -> bool:
        return self._file is not None

    @property
    def fresh_on_demand(self) -> bool:
        return False  # a token file changes when Vault Agent rewrites it, not when we read it

    def changed(self) -> bool:
        return self._file is not None and self._stamp() != self._file_stamp

    def describe(self) -> str:
        return f"token (file {self._file})" if self._file else "token"


class AppRoleLogin(Login):
    """AppRole: a role id plus a secret id (given, or read from a file at every log-in)."""

    method = "approle"

    def __init__(
        self,
        role_id: str,
        secret_id: str | None = None,
        secret_id_file: Path | None = None,
        mount: str = "approle",
    ) -> None:
        if (secret_id is None) == (secret_id_file is None):
            raise ValueError("give exactly one of secret_id or secret_id_file")
        self._role_id = role_id
        self._secret_id = secret_id
        self._secret_id_file = secret_id_file
        self.mount = mount
        if secret_id:
            remember_secret(secret_id)

    def login(self, client: hvac.Client) -> None:
        secret_id = (
            self._secret_id
            if self._secret_id_file is None
            else _read_secret_file(self._secret_id_file, "the AppRole secret id")
        )
        client.auth.approle.login(
            role_id=self._role_id, secret_id=secret_id, mount_point=self.mount
        )

    def describe(self) -> str:
        return f"approle (mount {self.mount})"


class _ServiceAccountLogin(Login):
    """Workload identity: present the pod's service-account JWT (re-read at every log-in, since
    Kubernetes rotates projected tokens) and log in as ``role``."""

    def __init__(self, role: str, jwt_file: Path, mount: str | None = None) -> None:
        self.role = role
        self.jwt_file = jwt_file
        self.mount = mount or self.method

    def describe(self) -> str:
        return f"{self.method} (mount {self.mount}, role {self.role})"


class KubernetesLogin(_ServiceAccountLogin):
    """Vault's ``kubernetes`` method: Vault checks the JWT with the cluster's TokenReview API."""

    method = "kubernetes"

    def login(self, client: hvac.Client) -> None:
        jwt = _read_secret_file(self.jwt_file, "the service-account token")
        client.auth.kubernetes.login(role=self.role, jwt=jwt, mount_point=self.mount)


class JwtLogin(_ServiceAccountLogin):
    """Vault's ``jwt`` method: Vault checks the JWT's signature against the issuer's keys."""

    method = "jwt"

    def login(self, client: hvac.Client) -> None:
        jwt = _read_secret_file(self.jwt_file, "the service-account token")
        client.auth.jwt.jwt_login(role=self.role, jwt=jwt, path=self.mount)


@dataclass(frozen=True)
class TokenStatus:
    """What the keeper knows about its token, for ``/readyz`` and ``check``."""

    method: str
    valid: bool
    #: Seconds left at ``checked_at``; None for a token that never expires (a root token).
    ttl: int | None
    renewable: bool
    #: The token can neither be renewed nor replaced by a new log-in: it will die.
    dies_unrenewed: bool
    problem: str | None = None

    @property
    def ready(self) -> bool:
        """Valid, and not about to die for good."""
        return self.valid and not (
            self.dies_unrenewed and self.ttl is not None and self.ttl < LOW_TTL_SECONDS
        )

    def summary(self) -> str:
        if not self.valid:
            return f"no valid token ({self.problem or 'unknown'})"
        if self.ttl is None:
            return "the token never expires (a root token?)"
        left = f"{self.ttl}s left"
        renew = "renewable" if self.renewable else "not renewable"
        fate = "will expire unrenewed" if self.dies_unrenewed else "kept alive by the bot"
        return f"{left}, {renew}, {fate}"


@dataclass
class _TokenFacts:
    token: str
    ttl: int | None  # None: never expires
    renewable: bool
    periodic: bool  # renewable for ever ...
    bounded: bool  # ... unless an explicit max TTL ends it anyway
    basis: int  # the TTL one renewal asks for: the period, or the TTL the token was created with
    seen_at: float


class TokenKeeper:
    """Owns the bot's token on one ``hvac.Client``: logs in, renews, logs in again.

    Thread-safe: issuing threads read ``client.token`` while the keeper's own thread replaces it.
    ``status()`` never waits on Vault or on a lock, so a probe answers even while Vault hangs.
    """

    def __init__(
        self,
        client: hvac.Client,
        login: Login,
        *,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.client = client
        self.login_method = login
        self._clock = clock
        self._heartbeat = heartbeat
        self._lock = threading.RLock()
        self._facts: _TokenFacts | None = None
        self._problem: str | None = "not logged in yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: A token Vault would not renew for as long as asked (near its max TTL): not again.
        self._capped_token: str | None = None
        #: The dead token a log-in last failed for, and when: others give up at once meanwhile.
        self._failed_login: tuple[str | None, float] | None = None
        self._warned_dying = False
        self._upkeep_failing = False

    # ------------------------------------------------------------------ log-in and facts

    def log_in(self) -> None:
        """Log in (or take the configured token) and learn its TTL. Raises VaultLoginError."""
        with self._lock:
            try:
                self.login_method.login(self.client)
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                self._problem = f"log-in failed: {_vault_error_text(exc)}"
                raise VaultLoginError(
                    f"Vault {self.login_method.describe()} log-in failed: {_vault_error_text(exc)}"
                ) from None
            if self.client.token:
                remember_secret(str(self.client.token))
            self._look_up()
            log.info("vault log-in (%s): %s", self.login_method.describe(), self.status().summary())

    def _look_up(self) -> None:
        """Refresh the facts from ``lookup-self``; a 403 means the token is dead."""
        token = str(self.client.token)
        try:
            data = self.client.auth.token.lookup_self().get("data") or {}
        except hvac.exceptions.Forbidden:
            self._facts = None
            self._problem = "the token is invalid or expired (403)"
            raise
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            self._problem = f"cannot look the token up: {_vault_error_text(exc)}"
            raise
        ttl = int(data.get("ttl") or 0)
        period = int(data.get("period") or 0)
        creation = int(data.get("creation_ttl") or 0)
        self._facts = _TokenFacts(
            token=token,
            ttl=ttl if ttl > 0 else None,
            renewable=bool(data.get("renewable")),
            periodic=period > 0,
            bounded=int(data.get("explicit_max_ttl") or 0) > 0,
            basis=period or creation or ttl,
            seen_at=self._clock(),
        )
        self._problem = None

    def _left(self) -> float | None:
        facts = self._facts
        if facts is None or facts.ttl is None:
            return None
        return facts.ttl - (self._clock() - facts.seen_at)

    def status(self) -> TokenStatus:
        """What is known now (no Vault call): the heartbeat keeps it at most seconds old."""
        facts = self._facts
        can_again = self.login_method.can_log_in_again
        if facts is None:
            return TokenStatus(
                self.login_method.method, False, None, False, not can_again, self._problem
            )
        left = self._left()
        ttl = None if left is None else max(math.ceil(left), 0)
        if ttl == 0:
            return TokenStatus(
                self.login_method.method,
                False,
                0,
                facts.renewable,
                not can_again,
                "the token has expired",
            )
        forever = facts.renewable and facts.periodic and not facts.bounded
        return TokenStatus(
            method=self.login_method.method,
            valid=self._problem is None,
            ttl=ttl,
            renewable=facts.renewable,
            dies_unrenewed=ttl is not None and not can_again and not forever,
            problem=self._problem,
        )

    # ------------------------------------------------------------------ keeping it alive

    def login_again_after_denied(self, failed_token: str | None) -> bool:
        """A call made with ``failed_token`` got 403: log in again if, and only if, that token
        is dead; once per dead token, however many threads saw it die.

        A 403 also answers a call the token's policy does not allow (``ensure_setup`` with a
        least-privilege token meets several): the token is then looked up, found alive, and
        nothing else happens. Returns True when the client now holds a different token (so the
        caller may retry an idempotent call), False otherwise.
        """
        with self._lock:
            if self.client.token != failed_token:
                return True  # another thread already replaced it
            failed = self._failed_login
            if (
                failed is not None
                and failed[0] == failed_token
                and self._clock() - failed[1] < RETRY_SECONDS
            ):
                return False  # a log-in for this very token just failed: do not queue another
            try:
                self._look_up()
                return False  # alive: the 403 was about the call, not the token
            except hvac.exceptions.Forbidden:
                pass  # dead indeed
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
                return False  # cannot tell; the heartbeat will find out
            if not self.login_method.can_log_in_again:
                self._problem = "the token is invalid or expired (403), and VAULT_TOKEN is fixed"
                return False
            try:
                self.log_in()
            except (
                VaultLoginError,
                hvac.exceptions.VaultError,
                requests.exceptions.RequestException,
            ) as exc:
                repeated = self._failed_login is not None and self._failed_login[0] == failed_token
                self._failed_login = (failed_token, self._clock())
                (log.debug if repeated else log.error)(
                    "vault: logging in again after a 403 failed: %s", exc
                )
                return False
            return bool(self.client.token != failed_token)

    def _renew(self, facts: _TokenFacts) -> bool:
        """Renew for ``facts.basis`` seconds; False when Vault granted less (near max TTL)."""
        resp = self.client.auth.token.renew_self(increment=f"{facts.basis}s")
        auth: Mapping[str, Any] = (resp or {}).get("auth") or {}
        granted = int(auth.get("lease_duration") or 0)
        self._look_up()
        log.info("vault: renewed the bot's token for %ss", granted)
        if granted < facts.basis:
            self._capped_token = facts.token
            return False
        return True

    def _near_end(self, facts: _TokenFacts, left: float) -> None:
        """Half the TTL is gone: renew; where that is no longer possible, log in again."""
        renewed = facts.renewable and facts.token != self._capped_token and self._renew(facts)
        if renewed:
            return
        if self.login_method.fresh_on_demand:
            log.info("vault: token near its end (%ds left); logging in again", int(left))
            self.log_in()
        elif not self._warned_dying:
            self._warned_dying = True
            log.warning(
                "vault: the bot's token cannot be renewed any further and will expire "
                "in %ds unless a new one is provided",
                int(left),
            )

    def tend(self) -> float:
        """One round of upkeep. Returns the seconds until the next round is due."""
        with self._lock:
            try:
                if self.login_method.changed():
                    log.info("vault: the token file changed; reading it again")
                    self.log_in()
                elif self._facts is None:
                    self.log_in()
                else:
                    self._look_up()
                facts, left = self._facts, self._left()
                if (
                    facts is not None
                    and left is not None
                    and left <= facts.basis * RENEW_AT_FRACTION
                ):
                    self._near_end(facts, left)
                if self._upkeep_failing:
                    self._upkeep_failing = False
                    log.info("vault: token upkeep works again")
                facts, left = self._facts, self._left()
                if facts is None or left is None:
                    return self._heartbeat
                until_half = left - facts.basis * RENEW_AT_FRACTION
                if until_half <= 0:  # acted already (or cannot): next look at the heartbeat
                    return self._heartbeat
                return max(0.5, min(self._heartbeat, until_half))
            except hvac.exceptions.Forbidden:
                if self.login_again_after_denied(self.client.token):
                    return self._heartbeat
                return RETRY_SECONDS
            except (
                VaultLoginError,
                hvac.exceptions.VaultError,
                requests.exceptions.RequestException,
            ) as exc:
                text = exc if isinstance(exc, VaultLoginError) else _vault_error_text(exc)
                if not self._upkeep_failing:
                    self._upkeep_failing = True
                    log.warning(
                        "vault: token upkeep failed, trying again every %ss: %s",
                        RETRY_SECONDS,
                        text,
                    )
                else:
                    log.debug("vault: token upkeep still failing: %s", text)
                left = self._left()
                if left is None or left <= 4 * RETRY_SECONDS:
                    return RETRY_SECONDS
                return max(1.0, min(RETRY_SECONDS, left / 4))

    def start(self) -> None:
        """Run :meth:`tend` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    wait = self.tend()
                except Exception:  # the keeper must never die: log and keep going
                    log.exception("vault: token upkeep crashed")
                    wait = RETRY_SECONDS
                self._stop.wait(wait)

        self._thread = threading.Thread(target=loop, name="vault-token", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def give_up_token(self) -> None:
        """Revoke the token this keeper logged in for, when it made one (AppRole, Kubernetes,
        JWT): a one-off process (the command line) must not leave a live token behind. A
        configured ``VAULT_TOKEN`` is the running bot's too, and is left alone."""
        if isinstance(self.login_method, TokenLogin):
            return
        try:
            self.client.auth.token.revoke_self()
        except Exception as exc:  # it expires on its own; say so and go on
            log.warning("vault: could not revoke the command line's token: %s", type(exc).__name__)


def login_from_settings(settings: VaultLoginSettings) -> Login:
    """The ``Login`` that ``bot.config.Settings`` asks for (validated there)."""
    method = settings.vault_login_method
    mount = settings.vault_auth_mount
    if method == "approle":
        secret = settings.vault_secret_id
        return AppRoleLogin(
            settings.vault_role_id or "",
            secret.get_secret_value() if secret is not None else None,
            settings.vault_secret_id_file,
            mount=mount or "approle",
        )
    if method == "kubernetes":
        return KubernetesLogin(settings.vault_auth_role or "", settings.vault_jwt_file, mount)
    if method == "jwt":
        return JwtLogin(settings.vault_auth_role or "", settings.vault_jwt_file, mount)
    token = settings.vault_token
    return TokenLogin(
        token.get_secret_value() if token is not None else None, settings.vault_token_file
    )


def connect(settings: VaultLoginSettings, *, timeout: float | None = None) -> TokenKeeper:
    """A client for ``settings.vault_addr`` (TLS per VAULT_CACERT, namespace, timeout per
    VAULT_TIMEOUT) and its keeper, logged in. Raises VaultLoginError with a one-line reason
    when the log-in fails."""
    verify: bool | str = str(settings.vault_cacert) if settings.vault_cacert else True
    client = hvac.Client(
        url=settings.vault_addr,
        namespace=settings.vault_namespace,
        verify=verify,
        timeout=timeout if timeout is not None else settings.vault_timeout,
    )
    keeper = TokenKeeper(client, login_from_settings(settings))
    try:
        keeper.log_in()
    except hvac.exceptions.Forbidden:
        raise VaultLoginError(
            f"the Vault token ({keeper.login_method.describe()}) is invalid or expired "
            "(403 permission denied)"
        ) from None
    except requests.exceptions.SSLError:
        raise VaultLoginError(
            f"Vault at {settings.vault_addr} presented a TLS certificate this machine does not "
            "trust: give its CA bundle in VAULT_CACERT"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise VaultLoginError(
            f"Vault at {settings.vault_addr} is unreachable ({type(exc).__name__})"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise VaultLoginError(f"Vault log-in failed: {_vault_error_text(exc)}") from None
    return keeper
