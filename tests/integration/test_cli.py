"""The operator's commands: `check` reaches every dependency and says what is wrong; an invalid
policy stops `serve` with the file, key and problem; `vault-policy` prints a usable policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import policy_for
from tests.integration.services import OpenBaoServer, VaultDatabase, admin_policy, write_policy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "SLACK_"))}
    full.update(env, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost")
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def base_env(slack: SlackEmulator, openbao: OpenBaoServer, tmp_path: Path) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "s" * 32,
        "SLACK_API_URL": slack.base_url,
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'check.db'}",
    }


def test_check_passes_against_working_dependencies(
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    openbao.client().sys.create_or_update_policy(
        name="orders-logs-read", policy='path "secret/data/orders/*" { capabilities = ["read"] }'
    )
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    env = {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}
    assert run_cli(["vault-setup"], env, tmp_path).returncode == 0
    result = run_cli(["check"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 4
    assert "[info] vault log-in token: the token never expires" in result.stdout
    assert base_env["VAULT_TOKEN"] not in result.stdout + result.stderr


def test_check_names_each_broken_dependency(
    base_env: dict[str, str],
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    env = {
        **base_env,
        "DEBUG_ACCESS_POLICY": str(policy),
        "VAULT_TOKEN": "not-a-real-token",
        "SLACK_BOT_TOKEN": "xoxb-wrong",
    }
    result = run_cli(["check"], env, tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("[FAIL] vault") for line in lines), result.stdout
    assert any(line.startswith("[FAIL] slack") and "invalid_auth" in line for line in lines), (
        result.stdout
    )
    assert any(line.startswith("[ok ] database") for line in lines)
    assert "not-a-real-token" not in result.stdout + result.stderr


def test_check_follows_each_grant_to_its_engine_role_and_policies_and_changes_nothing(
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    slack: SlackEmulator,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    """Before: with the engine unmounted, `check` said ok (it also wrote the policies it then
    found) and the first approval failed with a 404."""
    root = openbao.client()
    suffix = os.urandom(3).hex()
    resources: dict[str, Any] = {
        f"unmounted-{suffix}": {"grant": {"type": "dynamic_secret", "path": "nosuch/creds/x"}},
        f"no-role-{suffix}": {
            "grant": {"type": "dynamic_secret", "path": f"{vault_db.mount}/creds/no-such-role"}
        },
        f"fine-{suffix}": {"grant": {"type": "dynamic_secret", "path": vault_db.path}},
    }
    for resource in resources.values():
        resource.update(max_duration="1h", approvers=["U0ALICE"])
    gone = "C0GONE"
    slack.missing_channels.add(gone)
    policy = write_policy({"channels": {"audit": gone}, "resources": resources}, tmp_path)
    env = {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}
    grant_policies = [f"debug-access-grant-{name}" for name in resources]

    result = run_cli(["check"], env, tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert f"resource unmounted-{suffix}: no secrets engine is mounted at nosuch/" in out, out
    assert f"resource no-role-{suffix}: database engine at database/ has no role" in out, out
    for name in grant_policies:  # read-only: named as missing, and still missing after
        assert f"Vault policy {name} does not exist" in out, out
        assert root.read(f"sys/policies/acl/{name}") is None
    assert "the audit channel C0GONE: channel_not_found" in out, out
    parts = [part.strip() for line in out.splitlines() for part in line.split("; ")]
    fine = [part for part in parts if f"resource fine-{suffix}" in part]
    assert fine == [  # the working grant's only problem: its policy is not written yet
        f"resource fine-{suffix}: Vault policy {grant_policies[2]} does not exist: run "
        "`debug-access vault-setup` with an admin token, or create it"
    ], fine

    assert run_cli(["vault-setup"], env, tmp_path).returncode == 0
    for name in grant_policies:
        assert root.read(f"sys/policies/acl/{name}") is not None
    after = run_cli(["check"], env, tmp_path).stdout
    assert "Vault policy" not in after  # what is left is the role and the channel
    assert f"resource no-role-{suffix}: database engine at database/ has no role" in after


def test_invalid_policy_stops_serve_naming_file_key_and_problem(
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    policy = write_policy(
        {
            "resources": {
                "payments-db": {
                    "grant": {"type": "dynamic_secret", "path": "database/creds/x"},
                    "max_duration": "4 hours",
                    "approvers": ["U0ALICE"],
                }
            }
        },
        tmp_path,
    )
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
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    result = run_cli(["vault-policy"], {"DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'path "sys/leases/revoke/database/creds/*"' in result.stdout
    root = openbao.client()
    root.sys.create_or_update_policy(name="debug-access-cli-test", policy=result.stdout)
    token = root.auth.token.create(policies=["debug-access-cli-test"], no_parent=True, ttl="1h")[
        "auth"
    ]["client_token"]
    # The operator's one-time set-up with the admin token: role + policies.
    root.sys.create_or_update_policy(
        name="orders-logs-read", policy='path "secret/data/orders/*" { capabilities = ["read"] }'
    )
    setup = run_cli(["vault-setup"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}, tmp_path)
    assert setup.returncode == 0, setup.stdout
    check = run_cli(
        ["check"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy), "VAULT_TOKEN": token}, tmp_path
    )
    assert "[ok ] vault" in check.stdout, check.stdout
    # ...and enough for `check` to follow every grant: nothing left unverified.
    assert "not verified" not in check.stdout, check.stdout
    assert "sudo" not in result.stdout.replace("No sudo", "")
    take_back = run_cli(
        ["vault-policy", "--take-back"], {"DEBUG_ACCESS_POLICY": str(policy)}, tmp_path
    )
    assert take_back.returncode == 0, take_back.stderr
    assert '["create", "update", "sudo"]' in take_back.stdout
    root.sys.create_or_update_policy(name="debug-access-cli-take-back", policy=take_back.stdout)


def _approle(openbao: OpenBaoServer, ttl: str = "1h") -> tuple[str, str, str]:
    """An AppRole mount + role for the bot; returns (mount, role_id, secret_id)."""
    root = openbao.client()
    mount = "approle-cli"
    if f"{mount}/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle", path=mount)
    policies = [admin_policy(root, "cli-admin")]
    root.auth.approle.create_or_update_approle(
        "bot", token_policies=policies, token_ttl=ttl, mount_point=mount
    )
    role_id = root.auth.approle.read_role_id("bot", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("bot", mount_point=mount)["data"]["secret_id"]
    return mount, role_id, secret_id


def test_check_shows_the_login_method_ttl_and_renewability(
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    mount, role_id, secret_id = _approle(openbao)
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    env = {k: v for k, v in base_env.items() if k != "VAULT_TOKEN"}
    env.update(
        DEBUG_ACCESS_POLICY=str(policy),
        VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID_FILE=str(secret_file),
        VAULT_AUTH_MOUNT=mount,
    )
    result = run_cli(["check"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("[info] vault log-in"))
    assert f"approle (mount {mount})" in line
    assert "renewable, kept alive by the bot" in line
    left = int(line.split("s left")[0].rsplit(" ", 1)[-1])
    assert 3500 < left <= 3600
    assert secret_id not in result.stdout + result.stderr


def test_check_warns_when_the_token_will_die_unrenewed(
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    token = openbao.client().auth.token.create(ttl="2h", renewable=False)["auth"]["client_token"]
    result = run_cli(
        ["check"], {**base_env, "DEBUG_ACCESS_POLICY": str(policy), "VAULT_TOKEN": token}, tmp_path
    )
    warnings = [x for x in result.stdout.splitlines() if x.startswith("[warn]")]
    assert len(warnings) == 2, result.stdout
    assert "not renewable, will expire unrenewed" in warnings[0]
    assert "Use a periodic token" in warnings[1]


def test_a_failed_vault_login_stops_serve_in_one_line(
    base_env: dict[str, str],
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    mount, role_id, _secret = _approle(openbao)
    env = {k: v for k, v in base_env.items() if k != "VAULT_TOKEN"}
    env.update(
        DEBUG_ACCESS_POLICY=str(policy),
        VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID="wrong-secret-id-0123",
        VAULT_AUTH_MOUNT=mount,
    )
    result = run_cli(["serve"], env, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("debug-access: Vault approle"), result.stderr
    assert "wrong-secret-id-0123" not in result.stderr


def test_ambiguous_vault_login_is_refused(base_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["serve"], {**base_env, "VAULT_ROLE_ID": "r"}, tmp_path)
    assert result.returncode == 2
    assert "choose the log-in with VAULT_AUTH_METHOD" in result.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    before = run_cli(["db", "current"], env, tmp_path)
    assert before.returncode == 1
    assert "database: none (not migrated yet)" in before.stdout
    assert not (tmp_path / "fresh.db").exists()  # looking created nothing
    refused = run_cli(["audit", "verify"], env, tmp_path)
    assert refused.returncode == 2
    assert "no database at" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    (tmp_path / "fresh.db").touch()  # a database, empty: not migrated
    refused = run_cli(["audit", "verify"], env, tmp_path)
    assert refused.returncode == 2
    assert "run `debug-access db upgrade` first" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr

    upgraded = run_cli(["db", "upgrade"], env, tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    head = upgraded.stdout.split("database schema at ")[1].split(" ")[0]
    after = run_cli(["db", "current"], env, tmp_path)
    assert after.returncode == 0
    assert after.stdout.splitlines() == [f"database: {head}", f"this release: {head}"]
    assert run_cli(["audit", "verify"], env, tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"SLACK_BOT_TOKEN": "xoxb-wrong-token-0123"},
            "Slack refused the bot's token (SLACK_BOT_TOKEN): invalid_auth",
        ),
        ({"SLACK_API_URL": "http://127.0.0.1:9/api/"}, "cannot reach Slack"),
        (
            {"DATABASE_URL": "postgres://bot:pw-0123@127.0.0.1:9/bot"},
            "cannot reach the database at 127.0.0.1:9/bot",
        ),
    ],
    ids=["bad bot token", "slack unreachable", "postgres unreachable"],
)
def test_serve_stops_in_one_line_when_a_dependency_refuses(
    base_env: dict[str, str],
    vault_db: VaultDatabase,
    tmp_path: Path,
    override: dict[str, str],
    expected: str,
) -> None:
    """Before: a refused Slack token or an unreachable PostgreSQL ended `serve` in a traceback."""
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    env = {**base_env, "DEBUG_ACCESS_POLICY": str(policy), **override}
    result = run_cli(["serve"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"debug-access: {expected}"), result.stderr
    assert "wrong-token-0123" not in result.stderr and "pw-0123" not in result.stderr


def test_check_proves_the_socket_mode_app_token(
    base_env: dict[str, str],
    slack: SlackEmulator,
    vault_db: VaultDatabase,
    tmp_path: Path,
) -> None:
    """In Socket Mode the app-level token is what connects: `check` opens a connection URL
    with it (apps.connections.open) instead of trusting its shape."""
    policy = write_policy(policy_for(vault_db.path), tmp_path)
    env = {**base_env, "DEBUG_ACCESS_POLICY": str(policy)}
    wrong = run_cli(["check"], {**env, "SLACK_APP_TOKEN": "xapp-1-A0APP-1-wrong"}, tmp_path)
    assert wrong.returncode == 1
    assert "the app-level token (SLACK_APP_TOKEN): invalid_auth" in wrong.stdout, wrong.stdout
    assert "xapp-1-A0APP-1-wrong" not in wrong.stdout + wrong.stderr
    # The right token, for an app whose Socket Mode is off (no Socket Mode server attached):
    # Slack's own answer is passed on.
    right = run_cli(["check"], {**env, "SLACK_APP_TOKEN": slack.app_token}, tmp_path)
    assert "(SLACK_APP_TOKEN): not_allowed_token_type" in right.stdout, right.stdout
