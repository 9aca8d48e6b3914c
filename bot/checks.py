"""``debug-access check``: is this installation ready? Each check says what is wrong in plain
words and what to do, without ever printing a secret.

Read-only: it changes nothing anywhere (``debug-access vault-setup`` writes the Vault policies
and token role). It proves what the first approval will need: every grant's engine mounted, its
role present and its policies written (``bot.vault.checks``), the Slack bot token and, in Socket
Mode, the app-level token, and the audit and approvals channels."""

from __future__ import annotations

import sys
from collections.abc import Callable
from urllib.parse import urlsplit

from slack_sdk.errors import SlackApiError
from sqlalchemy import text

from bot.configuration import load_configuration
from bot.errors import ConfigProblem
from bot.slack.notifier import error_code


def _say(ok: bool, what: str, mark: str | None = None) -> None:
    mark = mark or ("ok " if ok else "FAIL")
    print(f"[{mark}] {what}")  # noqa: T201


def run_checks() -> int:
    try:
        settings, policy = load_configuration()
    except ConfigProblem as exc:
        _say(False, str(exc))
        return 1
    _say(
        True,
        f"environment and policy {settings.debug_access_policy} "
        f"({len(policy.resources)} resources, delivery: {policy.delivery})",
    )
    for deprecation in policy.deprecations():
        _say(True, deprecation, "warn")
    if policy.uses_step_up() and settings.public_url is not None:
        # load_configuration already refused a step-up policy without PUBLIC_URL.
        _say(
            True,
            f"passkey step-up: page at {settings.public_url}/passkey "
            f"(RP id {urlsplit(settings.public_url).hostname}; approvers' browsers must reach it)",
        )
    failures = 0

    def attempt(what: str, check: Callable[[], list[str]]) -> None:
        nonlocal failures
        try:
            problems = check()
        except SlackApiError as exc:
            problems = [f"Slack answered {error_code(exc)}"]
        except Exception as exc:  # a doctor reports every failure, whatever it is
            problems = [" ".join(f"{type(exc).__name__}: {exc}".split())]
        _say(not problems, what + ("" if not problems else ": " + "; ".join(problems)))
        failures += bool(problems)

    def database() -> list[str]:
        from bot.store.db import make_engine

        with make_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return []

    def vault() -> list[str]:
        from bot.runtime import build_issuer, vault_shapes

        issuer = build_issuer(settings)
        if issuer.keeper is not None:
            token = issuer.keeper.status()
            _say(
                True,
                f"vault log-in {issuer.keeper.login_method.describe()}: {token.summary()}",
                "info" if not token.dies_unrenewed else "warn",
            )
            if token.dies_unrenewed:
                _say(
                    False,
                    "the bot's Vault token can be neither renewed nor replaced: the "
                    "bot stops working when it expires. Use a periodic token, "
                    "VAULT_TOKEN_FILE kept by Vault Agent, AppRole or Kubernetes "
                    "log-in (see the README)",
                    "warn",
                )
        problems = list(issuer.check())
        if problems:
            return problems  # the token or its role is wrong: the grants cannot be followed
        found = issuer.check_grants(vault_shapes(policy))
        for what in found.unverified:
            _say(
                True,
                f"not verified: {what} (the bot's token may not read it; "
                "`debug-access vault-policy` prints a policy that may)",
                "warn",
            )
        return found.problems

    def slack() -> list[str]:
        from bot.slack.app import build_web_client

        client = build_web_client(settings)
        client.auth_test()
        problems = []
        if settings.socket_mode and settings.slack_app_token is not None:
            try:
                client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
            except SlackApiError as exc:
                problems.append(f"the app-level token (SLACK_APP_TOKEN): {error_code(exc)}")
        for role, channel in (
            ("audit", policy.channels.audit),
            ("approvals", policy.channels.approvals),
        ):
            if not channel:
                continue
            try:
                client.conversations_info(channel=channel)
            except SlackApiError as exc:
                code = error_code(exc)
                if code == "missing_scope":
                    _say(
                        True,
                        f"not verified: the {role} channel {channel} (add the "
                        "channels:read scope, see manifest.yml)",
                        "warn",
                    )
                else:
                    problems.append(f"the {role} channel {channel}: {code}")
        return problems

    attempt(f"database {settings.database_url.split('@')[-1]}", database)
    attempt(f"vault {settings.vault_addr}", vault)
    attempt(f"slack {settings.slack_api_url}", slack)
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_checks())
