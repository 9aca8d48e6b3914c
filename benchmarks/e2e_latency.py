"""How long the real loop takes: slash command ack, approve -> credentials DM, revoke -> confirmed.

Starts the same real services the integration tests use (a throwaway PostgreSQL cluster, an
OpenBao dev server with the database engine, the bot as a process, the Slack emulator), then
runs N full cycles one after another and prints percentiles. A benchmark, not a test: it
asserts nothing about speed and its figures depend on the machine.

    .venv/bin/python -m benchmarks.e2e_latency [--cycles 20]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import percentile
from bot.slack.ids import ActionId
from tests.conftest import _ensure_no_proxy
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    REQUESTER,
    approval_message,
    credentials_message,
    policy_for,
    reply_to,
)
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    bot_environment,
    free_port,
    setup_vault_db,
    write_policy,
)


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name:<34} n={len(ms):<3} p50={statistics.median(ms):7.1f} ms  "
        f"p95={percentile(ms, 0.95):7.1f} ms  max={max(ms):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    _ensure_no_proxy()
    postgres, openbao = PostgresServer().start(), OpenBaoServer().start()
    try:
        vault_db = setup_vault_db(postgres, openbao)
        postgres.create_database("bench_bot")
        with SlackEmulator() as slack:
            workdir = Path(tempfile.mkdtemp(prefix="bench-"))
            port = free_port()
            env = bot_environment(
                slack,
                openbao,
                postgres.sqlalchemy_url("bench_bot"),
                write_policy(policy_for(vault_db.path), workdir),
                port,
                secrets.token_hex(16),
                {"LOG_LEVEL": "WARNING"},
            )
            started = time.perf_counter()
            bot = BotProcess(env, port, workdir / "policy.yml", workdir, slack).start()
            print(
                f"bot ready (schema, Vault set-up, timers) in "
                f"{(time.perf_counter() - started) * 1000:.0f} ms"
            )
            acks, receipts, issues, revokes = [], [], [], []
            try:
                for cycle in range(1, args.cycles + 1):
                    t0 = time.perf_counter()
                    sent = bot.sender.slash(REQUESTER, f"payments-db 30m BENCH-{cycle} timing")
                    acks.append(time.perf_counter() - t0)
                    reply_to(slack, str(sent.response_key))
                    receipts.append(time.perf_counter() - t0)
                    message = approval_message(slack, cycle)
                    t1 = time.perf_counter()
                    bot.sender.click(ALICE, message, ActionId.APPROVE)
                    credentials = credentials_message(slack, REQUESTER, cycle)
                    issues.append(time.perf_counter() - t1)
                    t2 = time.perf_counter()
                    click = bot.sender.click(REQUESTER, credentials, ActionId.REVOKE)
                    reply_to(slack, str(click.response_key), timeout=30)
                    revokes.append(time.perf_counter() - t2)
            finally:
                bot.stop()
            report("slash command -> HTTP ack", acks)
            report("slash command -> receipt posted", receipts)
            report("Approve click -> credentials DM", issues)
            report("Revoke click -> Vault-confirmed", revokes)
    finally:
        openbao.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
