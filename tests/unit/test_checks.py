"""``debug-access check`` says how to rewrite a policy that still uses the legacy grant keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot import checks
from bot.policy import parse_policy
from tests.unit.test_policy import LEGACY_POLICY


def test_check_prints_a_deprecation_line_per_legacy_grant(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the policy matters here: the database is in memory, Vault and Slack fail fast (the
    # stand-in settings have nothing to log in with) and are reported as failures.
    settings = SimpleNamespace(
        debug_access_policy="policy.yml",
        database_url="sqlite://",
        vault_addr="http://vault.invalid",
        slack_api_url="http://slack.invalid",
    )
    policy = parse_policy(LEGACY_POLICY)
    monkeypatch.setattr(checks, "load_configuration", lambda: (settings, policy))
    assert checks.run_checks() == 1
    warnings = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[warn]")]
    assert warnings == [
        "[warn] resources.payments-db: vault_path is deprecated; write grant: "
        "{type: dynamic_secret, path: database/creds/payments-readonly}",
        "[warn] resources.orders-logs: vault_policies is deprecated; write grant: "
        "{type: vault_token, policies: [orders-logs-read, orders-metrics]}",
    ]
