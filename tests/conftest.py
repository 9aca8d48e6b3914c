"""Shared pytest fixtures.

Service fixtures (PostgreSQL, OpenBao, the bot process) are lazy: they import their heavy
modules and start processes only when a test requests them, so `pytest tests/unit` needs no
services at all. Session-scoped services start once (a couple of seconds) and are shared.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.emulators.slack_api import SlackEmulator
    from tests.integration.services import (
        BotProcess,
        OpenBaoServer,
        PostgresServer,
        VaultDatabase,
    )


def _ensure_no_proxy() -> None:
    """Loopback traffic must never go through a proxy (slack_sdk and requests honour them)."""
    for name in ("NO_PROXY", "no_proxy"):
        entries = [e for e in os.environ.get(name, "").split(",") if e.strip()]
        for host in ("127.0.0.1", "localhost"):
            if host not in entries:
                entries.append(host)
        os.environ[name] = ",".join(entries)


_ensure_no_proxy()

RunBot = Callable[..., "BotProcess"]
BOTS_KEY = pytest.StashKey[list["BotProcess"]]()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with scram password logins."""
    from tests.integration.services import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoServer]:
    """An in-memory `bao server -dev` with a random root token."""
    from tests.integration.services import OpenBaoServer

    server = OpenBaoServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vault_db(postgres: PostgresServer, openbao: OpenBaoServer) -> VaultDatabase:
    """OpenBao's database engine wired to a `payments` database (role payments-readonly)."""
    from tests.integration.services import setup_vault_db

    return setup_vault_db(postgres, openbao)


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    """A fresh Slack Web API emulator per test."""
    from tests.emulators.slack_api import SlackEmulator

    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def bot_db_url(postgres: PostgresServer) -> Iterator[str]:
    """A brand-new database for the bot's own state, per test (SQLAlchemy URL)."""
    name = f"bot_{secrets.token_hex(6)}"
    postgres.create_database(name)
    yield postgres.sqlalchemy_url(name)
    postgres.drop_database(name)


@pytest.fixture
def run_bot(
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    bot_db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[RunBot]:
    """Factory: `run_bot(policy, env=None, port=None) -> BotProcess` (started and healthy).

    Every bot started here is stopped at teardown. When a test fails, the bots' logs are
    attached to its report (see `pytest_runtest_makereport`).
    """
    from tests.integration.services import (
        BotProcess,
        bot_environment,
        free_port,
        write_policy,
    )

    bots: list[BotProcess] = []
    request.node.stash[BOTS_KEY] = bots
    signing_secret = secrets.token_hex(16)

    def factory(
        policy: dict[str, Any] | str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> BotProcess:
        workdir = Path(tempfile.mkdtemp(prefix=f"bot{len(bots)}-", dir=tmp_path))
        policy_path = write_policy(policy, workdir)
        chosen_port = port or free_port()
        environment = bot_environment(
            slack, openbao, bot_db_url, policy_path, chosen_port, signing_secret, env
        )
        if "PORT" in (env or {}):
            chosen_port = int(environment["PORT"])
        bot = BotProcess(environment, chosen_port, policy_path, workdir, slack)
        bots.append(bot)
        return bot.start()

    yield factory

    for bot in bots:
        bot.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of bots a failing test started, so the failure explains itself."""
    report = yield
    bots = item.stash.get(BOTS_KEY, [])
    if report.failed and bots:
        for index, bot in enumerate(bots):
            report.sections.append((f"bot {index} log ({bot.log_path})", bot.log_text()[-20000:]))
    return report
