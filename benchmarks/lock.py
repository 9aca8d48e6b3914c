"""The kill switch under load: from ``/debug-access lock @user`` to the last of the user's grants
confirmed revoked by Vault, with ``--grants`` (default 20) active grants (issue 12).

Starts the real services the integration tests use (a throwaway PostgreSQL cluster as the bot's
database, an OpenBao dev server with the database engine, the Slack emulator) and the bot as a
process (``python -m bot serve``). The user's grants are real: each one asked for with the slash
command and approved with the Approve button, so each is a Vault token and a database lease, as
in production. Then an admin locks the user, and the benchmark measures:

* lock -> the admin's answer (the bot answers once every revocation was confirmed or handed to
  the retries);
* lock -> the last grant marked revoked in the bot's database (which it does only after Vault
  confirmed the lease and the token gone), and how many of the credentials Vault still knows;
* the floor: a plain sequential hvac loop that revokes and confirms as many other credentials,
  made the same way, one after another.

A benchmark, not a test: nothing is asserted about speed.

    .venv/bin/python -m benchmarks.lock [--grants 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import bot_on_own_database, figure, machine, ms, print_table
from benchmarks.scale import (
    approve,
    database,
    live_in_vault,
    make_credentials,
    revoke_and_confirm,
    services,
    submit,
    wait_ended,
)
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import policy_for

ADMIN = "U0SECADMIN"
USER = "U0REQUESTER"


def wait_active(conn: psycopg.Connection[Any], grants: int) -> list[tuple[Any, ...]]:
    """The ``grants`` grants once all are active (the last DM may arrive just before its
    grant's commit): (id, token accessor, lease id) each."""
    deadline = time.monotonic() + 60
    query = 'SELECT id, token_accessor, lease_id FROM "grant" WHERE status = %s'
    while True:
        rows = conn.execute(query, ("active",)).fetchall()
        if len(rows) >= grants or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def run_lock(grants: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    with services() as (postgres, openbao, vault_db):
        policy = policy_for(vault_db.path, admins=[ADMIN])
        with (
            SlackEmulator() as slack,
            bot_on_own_database(slack, postgres, openbao, vault_db, workdir, policy=policy) as (
                bot,
                name,
            ),
            database(postgres, name) as conn,
        ):
            # The floor, once the bot has written its token role to Vault.
            floor_credentials = make_credentials(openbao, vault_db, grants)
            admin = openbao.client()
            t0 = time.perf_counter()
            for accessor, lease in floor_credentials:
                revoke_and_confirm(admin, accessor, lease)
            floor = time.perf_counter() - t0

            for index in range(grants):
                request_id, _receipt = submit(bot, slack, USER, f"INC-{index} lock benchmark")
                approve(bot, slack, request_id)
            rows = wait_active(conn, grants)
            grant_ids = [int(r[0]) for r in rows]
            credentials = [(str(r[1]), str(r[2])) for r in rows]

            started = time.time()
            sent = bot.sender.slash(ADMIN, f"lock <@{USER}> lock benchmark")
            key = str(sent.response_key)
            answer = slack.wait_for("response_url", lambda c: c.params.get("key") == key, 300)
            answered = answer.time - started
            ended = wait_ended(conn, grant_ids, timeout=300)
            last = max((row[1] for row in ended if row[1] is not None), default=None)
            to_last = last.timestamp() - started if last is not None else None
            still_live = live_in_vault(openbao, credentials)
            text = str(answer.params.get("text"))
    figures = [
        figure(
            f"lock -> last of {grants} grants revoked",
            "ms",
            ms(to_last) if to_last is not None else None,
            ms(floor),
        ),
        figure("lock -> the admin's answer", "ms", ms(answered), ms(floor)),
    ]
    return {
        "benchmark": "lock",
        "baseline": f"a sequential hvac revoke-and-confirm loop over {grants} other credentials",
        "grants": grants,
        "revoked": sum(1 for row in ended if row[0] == "revoked"),
        "still_live_in_vault": still_live,
        "answer": text,
        "machine": machine(),
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=20, help="the locked user's active grants")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run_lock(args.grants)
    print(f"\n== lock: {result['baseline']}")
    print(f"   {result['machine']['cpus']} CPUs, load {result['machine']['load_average']}")
    print(
        f"   revoked {result['revoked']} of {args.grants}; still live in Vault: "
        f"{result['still_live_in_vault']}; the admin was told: {result['answer']}"
    )
    print_table(result["figures"], floor="baseline", width=44)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
