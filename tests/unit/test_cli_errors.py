"""Operator mistakes get one line and exit 2, never a traceback (issue 11): a missing .env, a
SQLite file that is not there (not created, not "intact: 0 events"), an unreachable
PostgreSQL, ``postgres://`` URLs, a broken pipe, a digest with nowhere to go; and the CLI's
``--version`` and ``vault-policy`` reading ``.env`` like every other command."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.audit import AuditAction, append_event
from bot.cli import main
from bot.config import DatabaseSettings
from bot.store import schema
from bot.store.db import make_engine, transaction

REPO = Path(__file__).resolve().parents[2]
POLICY = """
resources:
  payments-db:
    grant: {type: dynamic_secret, path: payments/creds/readonly}
    max_duration: 1h
    approvers: [U0ALICE]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory and an environment with none of the bot's variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "VAULT_", "DATABASE_", "DEBUG_ACCESS_")):
            monkeypatch.delenv(name)
    return tmp_path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("debug-access: "), err
    return err


def test_a_missing_env_file_says_how_to_make_one(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve"]) == 2
    assert "cp .env.example .env" in one_line_error(capsys)


def test_verifying_a_database_that_is_not_there_creates_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{workdir / 'typo.db'}")
    assert main(["audit", "verify"]) == 2
    assert "no database at" in one_line_error(capsys)
    assert main(["db", "current"]) == 1  # not migrated yet, and nothing created to say so
    assert "database: none (not migrated yet)" in capsys.readouterr().out
    assert not (workdir / "typo.db").exists()


def test_an_unreachable_postgresql_is_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://bot:secret-pw@127.0.0.1:1/bot")
    assert main(["db", "current"]) == 2
    err = one_line_error(capsys)
    assert "cannot reach the database at 127.0.0.1:1/bot" in err
    assert "secret-pw" not in err


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_mean_psycopg(scheme: str) -> None:
    url = DatabaseSettings(database_url=f"{scheme}://u:p@db:5432/bot").database_url
    assert url == "postgresql+psycopg://u:p@db:5432/bot"


def test_a_digest_with_no_audit_channel_fails(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "policy.yml").write_text(POLICY)
    db = workdir / "bot.db"
    schema.upgrade(make_engine(f"sqlite:///{db}"))
    for name, value in {
        "DATABASE_URL": f"sqlite:///{db}",
        "SLACK_BOT_TOKEN": "xoxb-1-placeholder-but-long-enough",
        "SLACK_SIGNING_SECRET": "s" * 32,
        "VAULT_TOKEN": "hvs.placeholder-long-enough",
        "DEBUG_ACCESS_POLICY": str(workdir / "policy.yml"),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["digest", "--now"]) == 2
    assert "no audit channel" in one_line_error(capsys)


def test_version_and_vault_policy_from_env_file(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("debug-access ")
    (workdir / "mine.yml").write_text(POLICY)
    (workdir / ".env").write_text(f"DEBUG_ACCESS_POLICY={workdir / 'mine.yml'}\n")
    assert main(["vault-policy"]) == 0
    assert 'path "sys/leases/revoke/payments/creds/*"' in capsys.readouterr().out


def test_an_export_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    """``audit export … | head``: the pipe closes early; before, a BrokenPipeError traceback."""
    db = tmp_path / "bot.db"
    engine = make_engine(f"sqlite:///{db}")
    schema.upgrade(engine)
    at = datetime(2026, 11, 2, tzinfo=UTC)
    with transaction(engine) as session:
        for n in range(3000):
            append_event(
                session, at=at, actor="U0ALICE", action=AuditAction.REQUESTED, request_id=n
            )
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        f"{sys.executable} -m bot audit export --since 2026-11-01 | head -c 100",
        shell=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(result.stdout) == 100
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
