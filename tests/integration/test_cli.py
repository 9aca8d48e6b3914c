"""The operator's commands: `check` reaches every dependency and says what is wrong; an invalid
policy stops `serve` with the file, key and problem; `vault-policy` prints a usable policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import policy_for
from tests.integration.services import OpenBaoServer, VaultDatabase, write_policy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "SLACK_"))}
    full.update(env, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost")
    return subprocess.run([sys.executable, "-m", "bot", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def base_env(slack: SlackEmulator, openbao: OpenBaoServer, tmp_path: Path) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "s" * 32,
            "SLACK_API_URL": slack.base_url, "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'check.db'}"}


def test_check_passes_against_working_dependencies(
    base_env: dict[str, str], vault_db: VaultDatabase, tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    result = run_cli(["check"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 4
    assert base_env["VAULT_TOKEN"] not in result.stdout + result.stderr


def test_check_names_each_broken_dependency(
    base_env: dict[str, str], vault_db: VaultDatabase, tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    env = {**base_env, "DEBUG_ACCESS_POLICY": str(policy), "VAULT_TOKEN": "not-a-real-token",
           "SLACK_BOT_TOKEN": "xoxb-wrong"}
    result = run_cli(["check"], env, tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("[FAIL] vault") for line in lines), result.stdout
    assert any(line.startswith("[FAIL] slack") and "invalid_auth" in line for line in lines), (
        result.stdout)
    assert any(line.startswith("[ok ] database") for line in lines)
    assert "not-a-real-token" not in result.stdout + result.stderr


def test_invalid_policy_stops_serve_naming_file_key_and_problem(
    base_env: dict[str, str], tmp_path: Path,
) -> None:
    policy = write_policy({"resources": {"payments-db": {
        "vault_path": "database/creds/x", "max_duration": "4 hours", "approvers": ["U0ALICE"]}}},
        tmp_path)
    result = run_cli(["serve"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert result.returncode == 2
    assert f"{policy}: resources.payments-db.max_duration:" in result.stderr
    assert "is not a duration" in result.stderr


def test_missing_environment_is_explained(tmp_path: Path) -> None:
    result = run_cli(["serve"], {}, tmp_path)
    assert result.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "VAULT_TOKEN"):
        assert name in result.stderr


def test_vault_policy_is_accepted_by_vault_and_enough_for_a_grant(
    base_env: dict[str, str], openbao: OpenBaoServer, vault_db: VaultDatabase, tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    result = run_cli(["vault-policy"], {"DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'path "sys/leases/revoke/database/creds/*"' in result.stdout
    root = openbao.client()
    root.sys.create_or_update_policy(name="debug-access-cli-test", policy=result.stdout)
    token = root.auth.token.create(policies=["debug-access-cli-test"], no_parent=True,
                                   ttl="1h")["auth"]["client_token"]
    # The operator's one-time set-up (here: a run with the admin token creates role + policies).
    setup = run_cli(["check"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert setup.returncode == 0, setup.stdout
    check = run_cli(["check"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy),
                                "VAULT_TOKEN": token}, tmp_path)
    assert "[ok ] vault" in check.stdout, check.stdout
