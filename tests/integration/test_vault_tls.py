"""VAULT_CACERT against a real OpenBao serving TLS (``-dev-tls``, its own generated CA): the bot
verifies Vault's certificate with the given bundle, and without it refuses to talk at all."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.config import VaultLoginSettings
from bot.vault_login import VaultLoginError, connect
from tests.integration.services import LOOPBACK, find_bao, free_port_pair, tail

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(address, root token, CA file) of an OpenBao dev server with a generated TLS CA."""
    base = tmp_path_factory.mktemp("bao-tls")
    token = "root-" + secrets.token_hex(8)
    port = free_port_pair()
    log_path = base / "bao.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(base)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(find_bao()),
                "server",
                "-dev",
                "-dev-tls",
                f"-dev-tls-cert-dir={base}",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address={LOOPBACK}:{port}",
                "-dev-no-store-token",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=base,
            start_new_session=True,
        )
    addr, ca = f"https://{LOOPBACK}:{port}", base / "vault-ca.pem"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, tail(log_path)
            with contextlib.suppress(requests.RequestException, OSError):
                if (
                    ca.exists()
                    and requests.get(f"{addr}/v1/sys/health", verify=str(ca), timeout=1).status_code
                    == 200
                ):
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"TLS OpenBao did not start:\n{tail(log_path)}")
        yield addr, token, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_vault_cacert_verifies_vaults_certificate(tls_openbao: tuple[str, str, Path]) -> None:
    addr, token, ca = tls_openbao
    keeper = connect(VaultLoginSettings(vault_addr=addr, vault_token=token, vault_cacert=ca))
    assert keeper.status().valid
    assert keeper.client.auth.token.lookup_self()["data"]["id"] == token


def test_without_the_ca_the_bot_refuses_an_unknown_certificate(
    tls_openbao: tuple[str, str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addr, token, _ca = tls_openbao
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(VaultLoginError, match="give its CA bundle in VAULT_CACERT") as caught:
        connect(VaultLoginSettings(vault_addr=addr, vault_token=token))
    assert token not in str(caught.value)
