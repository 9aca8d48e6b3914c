"""``debug-access check``: is this installation ready? Each check says what is wrong in plain
words and what to do, without ever printing a secret."""

from __future__ import annotations

import sys
from collections.abc import Callable

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

        # Prepare Vault exactly as `serve` would at start (idempotent), then examine it: with an
        # admin token the role gets created; with a least-privilege one, what is missing shows.
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
        issuer.ensure_setup(vault_shapes(policy))
        return list(issuer.check())

    def slack() -> list[str]:
        from bot.slack.app import build_web_client

        response = build_web_client(settings).auth_test()
        return [] if response.get("ok") else [str(response.get("error"))]

    attempt(f"database {settings.database_url.split('@')[-1]}", database)
    attempt(f"vault {settings.vault_addr}", vault)
    attempt(f"slack {settings.slack_api_url}", slack)
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_checks())
