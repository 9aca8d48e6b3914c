"""Talking to Vault safely: retries, logging in again, and errors that never carry a secret.

Every other module of ``bot.vault`` calls Vault through ``VaultClient``, so the rules live once:
* hvac and requests errors become ``IssuerError`` with a short message (operation, path, HTTP
  status, Vault's error text). Tokens, passwords and wrapped values never appear in messages,
  and the original exception is dropped (``from None``) where it could carry one.
* Every call has a timeout (``VAULT_TIMEOUT``, a few seconds): a Vault that accepts connections
  and never answers costs one timeout, and the caller hears of it.
* Idempotent calls are retried a few times on connection errors, 5xx and 429, but not after a
  timeout (a hung Vault would cost a timeout per attempt).
* Calls that create something (a token, a database user, a wrapping token) are never sent twice
  unless Vault cannot have received the first: each goes out on a *new* connection (a pooled
  keep-alive connection may have been dropped by Vault or a load balancer while idle, and a
  request on it can fail after reaching Vault or without reaching it, undistinguishably), and
  only a failure to connect is retried. A timeout or a reset after sending is reported as
  ``maybe_done``: the caller must treat what it asked for as possibly existing.
* A 403 on the bot's own token means it may have been replaced: log in again once.
* "Is it gone?" is one question (``answers_gone``): Vault says so with a 400 and a known text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import urllib3.exceptions
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.issuer import IssuerError
from bot.metrics import VAULT_ERRORS
from bot.vault_login import TokenKeeper

T = TypeVar("T")

_MAX_DETAIL = 300
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
#: What a call to Vault may raise; everything else is a bug, not Vault's answer.
VAULT_FAILURES: tuple[type[Exception], ...] = (
    hvac.exceptions.VaultError,
    requests.exceptions.RequestException,
)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.+*/-]+$")


def check_path(path: str) -> None:
    """Refuse a path or name that could break out of the HCL or URL it is put in."""
    if not path or not _SAFE_PATH.match(path):
        raise ValueError(f"not a usable Vault path or name: {path!r}")


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def duration(delta: timedelta, what: str) -> str:
    """A Vault duration (``"300s"``); Vault reads 0 as "the default", so refuse it."""
    whole = seconds(delta)
    if whole < 1:
        raise IssuerError(f"{what} must be at least one second")
    return f"{whole}s"


def _never_sent(exc: BaseException) -> bool:
    """The connection could not be made, so Vault cannot have received the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(
        exc, requests.exceptions.SSLError
    ):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _is_transient(exc: BaseException) -> bool:
    """Worth another try for an idempotent call: Vault busy or failing over, or a connection
    that broke. Not a read timeout: a Vault that hangs would cost a timeout per attempt."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return False
    return isinstance(exc, (*_TRANSIENT_VAULT_ERRORS, requests.exceptions.ConnectionError))


def vault_errors(exc: hvac.exceptions.VaultError) -> str:
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


class VaultClient:
    """The bot's hvac client with the calling rules above, and the clock answers are read by."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        keeper: TokenKeeper | None = None,
        clock: Callable[[], datetime] = utc_now,
        retry_attempts: int = 4,
        retry_wait: float = 0.2,
        retry_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hvac = client
        #: Keeps the bot's token alive and logs in again after a 403 (None: a fixed token).
        self.keeper = keeper
        self.clock = clock
        self._retry_attempts = max(1, retry_attempts)
        self._retry_wait = retry_wait
        self._retry_sleep = retry_sleep

    @property
    def addr(self) -> str:
        return str(self.hvac.url)

    @property
    def timeout(self) -> float:
        """Seconds each Vault call may take (connect, and again for the answer)."""
        kwargs = getattr(self.hvac.adapter, "_kwargs", None) or {}
        return float(kwargs.get("timeout") or 30)

    def _retrying(self, retry: Callable[[BaseException], bool]) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_exponential(multiplier=self._retry_wait, max=max(self._retry_wait, 2.0)),
            retry=retry_if_exception(retry),
            sleep=self._retry_sleep,
            reraise=True,
        )

    def _new_connection(self) -> None:
        """Make the next request open a new connection: drop the idle pooled ones (in-flight
        ones are unaffected and closed when returned). Pooled connections may have been
        closed or forgotten by Vault or a load balancer while idle, and a write sent on one
        may fail without a way to tell whether Vault received it."""
        self.hvac.adapter.session.close()

    def _after_denied(self, fn: Callable[[], T], *, idempotent: bool) -> T:
        """Run ``fn`` (a call made with the bot's token). On 403, log in again once; then retry
        it if it is idempotent, else re-raise (the next call has a fresh token)."""
        token = self.hvac.token
        try:
            return fn()
        except hvac.exceptions.Forbidden:
            if self.keeper is None or not self.keeper.login_again_after_denied(token):
                raise
            if not idempotent:
                raise
            return fn()

    def retrying(self, fn: Callable[[], T]) -> T:
        """Idempotent calls with the bot's token: retried on transient errors, and once after
        logging in again on a 403. Raises hvac/requests errors as they are."""
        return self._retrying(_is_transient)(lambda: self._after_denied(fn, idempotent=True))

    def once(self, fn: Callable[[], T], *, bot_token: bool = True) -> T:
        """A call that creates something: sent on a new connection and retried only when it
        could not connect (so Vault never received it). ``bot_token=False`` for calls made
        with a grant token, whose 403 says nothing about the bot's own token."""

        def attempt() -> T:
            self._new_connection()
            return self._after_denied(fn, idempotent=False) if bot_token else fn()

        return self._retrying(_never_sent)(attempt)

    def error(
        self, op: str, path: str, exc: Exception, secrets: Iterable[str | None] = ()
    ) -> IssuerError:
        """A user-safe IssuerError for ``exc``; callers raise it ``from None``."""
        VAULT_ERRORS.labels(operation=op).inc()
        hide = [self.hvac.token, *secrets]
        unreachable = maybe_done = False
        if isinstance(exc, hvac.exceptions.VaultError):
            status = _STATUS.get(type(exc))
            detail = vault_errors(exc) or type(exc).__name__
            prefix = f"{status} " if status else ""
            if isinstance(exc, hvac.exceptions.InvalidPath) and not exc.errors:
                detail = "nothing at that path"
            msg = f"Vault {op} {path} failed: {prefix}{detail}"
        elif _never_sent(exc):
            unreachable = True
            msg = f"could not reach Vault at {self.addr} (no connection) for {op} {path}"
        elif isinstance(exc, requests.exceptions.ReadTimeout):
            maybe_done = True
            msg = f"Vault at {self.addr} did not answer within {self.timeout:g}s during {op} {path}"
        elif isinstance(exc, requests.exceptions.RequestException):
            maybe_done = True
            msg = (
                f"Vault at {self.addr} dropped the connection ({type(exc).__name__}) "
                f"during {op} {path}"
            )
        else:  # pragma: no cover - defensive
            msg = f"Vault {op} {path} failed: {type(exc).__name__}"
        msg = _redact(msg, hide)
        if len(msg) > _MAX_DETAIL:
            msg = msg[: _MAX_DETAIL - 3] + "..."
        return IssuerError(msg, unreachable=unreachable, maybe_done=maybe_done)

    def call(
        self,
        op: str,
        path: str,
        fn: Callable[[], T],
        *,
        retry: bool,
        secrets: Iterable[str | None] = (),
        bot_token: bool = True,
    ) -> T:
        """Call ``fn``; ``retry`` for idempotent calls, else ``once``. ``bot_token=False`` for
        calls made with a grant token, whose 403 says nothing about the bot's own token."""
        try:
            if retry:
                return self.retrying(fn)
            return self.once(fn, bot_token=bot_token)
        except VAULT_FAILURES as exc:
            raise self.error(op, path, exc, secrets) from None

    def answers_gone(
        self, op: str, path: str, data: Mapping[str, Any], gone: Iterable[str]
    ) -> bool:
        """Write ``data`` to ``path`` (idempotent: retried); True when Vault answers 400 with one
        of the ``gone`` texts, meaning the lease, token or accessor asked about does not exist.

        Revoking and confirming a revocation ask Vault this same question in several places.
        """
        try:
            self.retrying(lambda: self.hvac.write_data(path, data=dict(data)))
        except hvac.exceptions.InvalidRequest as exc:
            text = vault_errors(exc).lower()
            if any(marker in text for marker in gone):
                return True
            raise self.error(op, path, exc) from None
        except VAULT_FAILURES as exc:
            raise self.error(op, path, exc) from None
        return False

    def grant_client(self, token: str) -> hvac.Client:
        """A client with the grant token and everything else of the bot's client.

        It shares the bot client's requests session (TLS, proxies, mounted adapters) and its
        address, namespace and timeout; only the X-Vault-Token header differs. Do not close it.
        """
        adapter = self.hvac.adapter
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
