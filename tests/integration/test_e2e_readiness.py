"""``/readyz`` tells the truth, end to end: it fails within seconds when the database or the
bot's Vault token breaks, recovers by itself when they come back, and ``/healthz`` (alive)
stays green throughout. The database sits behind a cuttable TCP proxy; the Vault token comes
from a file, as Vault Agent would write it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.flows import policy_for, wait_until
from tests.integration.proxy import CuttableProxy
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
    admin_policy,
)

pytestmark = pytest.mark.integration

ADMIN = "readyz-admin"


def readiness(bot: BotProcess) -> tuple[int, dict[str, Any]]:
    response = bot.sender.get("/readyz")
    return response.status_code, response.json()


def becomes(bot: BotProcess, status: int, within: float) -> tuple[float, dict[str, Any]]:
    """Wait until /readyz answers ``status``; return how long it took and the body."""
    start = time.monotonic()
    body = wait_until(
        lambda: (lambda r: r[1] if r[0] == status else None)(readiness(bot)),
        timeout=within,
        what=f"/readyz to answer {status}",
    )
    assert bot.sender.get("/healthz").status_code == 200, "liveness must not follow readiness"
    return time.monotonic() - start, body


def test_readyz_follows_the_database_and_the_vault_token(
    run_bot: Any,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    bot_db_url: str,
    tmp_path: Path,
) -> None:
    root = openbao.client()
    admin_policy(root, ADMIN)
    first = root.auth.token.create(policies=[ADMIN], ttl="1h")["auth"]["client_token"]
    token_file = tmp_path / "vault-token"
    token_file.write_text(first)
    proxy = CuttableProxy(postgres.host, postgres.port)
    proxied_url = bot_db_url.replace(f":{postgres.port}/", f":{proxy.port}/")
    try:
        bot = run_bot(
            policy_for(vault_db.path),
            env={
                "VAULT_TOKEN": "",
                "VAULT_TOKEN_FILE": str(token_file),
                "DATABASE_URL": proxied_url,
            },
        )
        status, body = readiness(bot)
        assert status == 200, body
        assert body == {"ready": True, "checks": {"database": "ok", "vault": "ok"}}

        proxy.cut()
        took, body = becomes(bot, 503, within=10)
        assert took < 5, f"/readyz noticed the database after {took:.1f}s"
        assert body["checks"]["database"].startswith("the database is unreachable")
        assert body["checks"]["vault"] == "ok"
        proxy.restore()
        becomes(bot, 200, within=10)

        proxy.freeze()  # PostgreSQL hangs: probes must still answer, and say so
        took, body = becomes(bot, 503, within=10)
        assert took < 5, f"/readyz answered after {took:.1f}s while the database hung"
        assert body["checks"]["database"] == "the database did not answer within 2s"
        answered = time.monotonic()
        assert bot.sender.get("/readyz").status_code == 503
        assert time.monotonic() - answered < 3
        proxy.restore()
        becomes(bot, 200, within=10)

        root.auth.token.revoke(first)
        took, body = becomes(bot, 503, within=15)
        assert took < 8, f"/readyz noticed the dead token after {took:.1f}s"
        assert "403" in body["checks"]["vault"]
        assert first not in str(body)
        second = root.auth.token.create(policies=[ADMIN], ttl="1h")["auth"]["client_token"]
        token_file.write_text(second)  # Vault Agent writes a fresh token
        took, _ = becomes(bot, 200, within=15)
        assert took < 8
        assert "the token file changed" in bot.log_text()
    finally:
        proxy.close()
