"""TokenKeeper's decisions, with a fake Vault client: when it logs in again, when it gives up,
how often it retries. The real-OpenBao behaviour is in tests/integration/test_vault_login.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from bot.vault_login import (
    RETRY_SECONDS,
    AppRoleLogin,
    Login,
    TokenKeeper,
    TokenLogin,
    VaultLoginError,
)


class FakeTokenAPI:
    def __init__(self, vault: FakeVault) -> None:
        self.vault = vault

    def lookup_self(self) -> dict[str, Any]:
        return self.vault.lookup(self.vault.client.token)

    def renew_self(self, increment: str) -> dict[str, Any]:
        self.vault.renewals += 1
        return {"auth": {"lease_duration": self.vault.renew_grants}}


class FakeVault:
    """Tokens by name: alive (with ttl) or dead; or the whole server down."""

    def __init__(self) -> None:
        self.alive: dict[str, dict[str, Any]] = {}
        self.down = False
        self.renewals = 0
        self.renew_grants = 60
        self.client = FakeClient(self)

    def lookup(self, token: str | None) -> dict[str, Any]:
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        if token not in self.alive:
            raise hvac.exceptions.Forbidden("permission denied")
        return {"data": self.alive[token]}


class FakeClient:
    def __init__(self, vault: FakeVault) -> None:
        self.token: str | None = None
        self.auth = type("Auth", (), {})()
        self.auth.token = FakeTokenAPI(vault)


class ScriptedLogin(Login):
    """Hands out token-1, token-2, ... (or fails, or is slow), counting attempts."""

    method = "approle"

    def __init__(self, vault: FakeVault, fail: bool = False, delay: float = 0.0) -> None:
        self.vault, self.fail, self.delay = vault, fail, delay
        self.attempts = 0
        self._lock = threading.Lock()

    def login(self, client: hvac.Client) -> None:
        with self._lock:
            self.attempts += 1
            number = self.attempts
        time.sleep(self.delay)
        if self.fail:
            raise hvac.exceptions.InvalidRequest("invalid role or secret ID")
        token = f"token-{number}"
        self.vault.alive[token] = {"ttl": 3600, "renewable": True, "creation_ttl": 3600}
        client.token = token


def keeper_with(
    login_fail: bool = False, delay: float = 0.0
) -> tuple[TokenKeeper, FakeVault, ScriptedLogin]:
    vault = FakeVault()
    login = ScriptedLogin(vault)
    keeper = TokenKeeper(vault.client, login)  # type: ignore[arg-type]
    keeper.log_in()
    login.fail, login.delay = login_fail, delay
    return keeper, vault, login


def test_a_403_with_a_live_token_is_about_the_call_not_the_token() -> None:
    keeper, _vault, login = keeper_with()
    assert keeper.login_again_after_denied("token-1") is False
    assert login.attempts == 1, "logged in again although the token was alive"
    assert keeper.status().ready


def test_a_403_with_a_dead_token_logs_in_again_once() -> None:
    keeper, vault, login = keeper_with()
    del vault.alive["token-1"]
    assert keeper.login_again_after_denied("token-1") is True
    assert keeper.login_again_after_denied("token-1") is True  # already replaced
    assert login.attempts == 2 and keeper.client.token == "token-2"


def test_failed_log_ins_are_not_repeated_by_every_waiting_thread() -> None:
    keeper, vault, login = keeper_with(login_fail=True, delay=0.2)
    del vault.alive["token-1"]
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(keeper.login_again_after_denied("token-1")))
        for _ in range(8)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [False] * 8
    assert login.attempts == 2, "each waiting thread tried its own log-in"  # 1 = the first log-in
    assert time.monotonic() - started < 1.5


def test_a_renewal_capped_by_max_ttl_is_not_tried_again() -> None:
    vault = FakeVault()
    keeper = TokenKeeper(vault.client, TokenLogin("fixed-token"))  # type: ignore[arg-type]
    vault.alive["fixed-token"] = {
        "ttl": 10,
        "renewable": True,
        "creation_ttl": 40,
        "explicit_max_ttl": 50,
    }
    keeper.log_in()
    vault.renew_grants = 10  # Vault grants less than asked: the max TTL is near
    waits = [keeper.tend() for _ in range(5)]
    assert vault.renewals == 1
    assert all(wait >= 1 for wait in waits), waits
    assert keeper.status().dies_unrenewed


def test_an_outage_after_the_token_expired_is_retried_calmly_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = FakeVault()
    now = [1000.0]
    keeper = TokenKeeper(
        vault.client,
        ScriptedLogin(vault),  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    keeper.log_in()
    vault.down = True
    now[0] += 4000  # the token's hour is over
    with caplog.at_level(logging.DEBUG, logger="bot.vault_login"):
        waits = [keeper.tend() for _ in range(10)]
    assert waits == [RETRY_SECONDS] * 10
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert not keeper.status().ready
    vault.down = False
    keeper.tend()
    assert keeper.status().ready


def test_a_periodic_token_with_an_explicit_max_ttl_will_die() -> None:
    vault = FakeVault()
    vault.alive["t"] = {"ttl": 3600, "renewable": True, "period": 3600, "explicit_max_ttl": 7200}
    keeper = TokenKeeper(vault.client, TokenLogin("t"))  # type: ignore[arg-type]
    keeper.log_in()
    assert keeper.status().dies_unrenewed
    vault.alive["t"]["explicit_max_ttl"] = 0
    keeper.tend()
    assert not keeper.status().dies_unrenewed


def test_a_token_file_that_is_not_text_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes("hvs.secret".encode("utf-16"))
    keeper = TokenKeeper(FakeVault().client, TokenLogin(token_file=path))  # type: ignore[arg-type]
    with pytest.raises(VaultLoginError, match="is not UTF-8 text"):
        keeper.log_in()


class _RevokeSelf:
    """Just enough of ``hvac.Client`` to see whether the token was revoked."""

    def __init__(self) -> None:
        self.revoked = 0
        self.auth = SimpleNamespace(token=SimpleNamespace(revoke_self=self._revoke))

    def _revoke(self) -> None:
        self.revoked += 1


@pytest.mark.parametrize(
    ("method", "revoked"),
    [
        ("approle", 1),  # a token made for this process: revoked when it is done
        ("token", 0),  # VAULT_TOKEN, shared with the running bot: left alone
    ],
)
def test_a_one_off_process_gives_up_only_a_token_it_logged_in_for(
    method: str, revoked: int
) -> None:
    # Built here, not at collection: a login remembers its secret for the log masking.
    login: Login = (
        AppRoleLogin("role", "approle-secret-id-of-this-test")
        if method == "approle"
        else TokenLogin("s.the-running-bots-token-of-this-test")
    )
    client = _RevokeSelf()
    TokenKeeper(client, login).give_up_token()  # type: ignore[arg-type]
    assert client.revoked == revoked
