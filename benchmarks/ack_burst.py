"""A burst of concurrent slash commands against the bot, next to a floor measured in the same run.

Starts the real services the integration tests use (a throwaway PostgreSQL cluster as the bot's
database, an OpenBao dev server with the database engine, the Slack emulator), then:

1. the floor: ``benchmarks.floor_app`` (a Bolt app that only acks and posts one message, served
   as the bot is) takes N concurrent signed ``/debug-access`` commands from C client threads;
2. the bot (``python -m bot serve``) takes the same burst of N access requests;
3. a few of those requests are approved one after another, Approve click -> credentials DM,
   next to the raw Vault sequence the bot performs for that grant (token create, read of the
   database path with that token, wrap), timed directly with hvac, plus one Slack post.

It prints each figure next to its floor and the ratio, and writes them as JSON. A benchmark, not
a test: nothing is asserted about speed, and the figures depend on the machine and its load.

    .venv/bin/python -m benchmarks.ack_burst [--requests 100] [--clients 10] [--approvals 10]
        [--json PATH] [--profile PATH]

``--profile PATH`` records the bot's burst with py-spy (``pip install -e '.[bench]'``) as
collapsed stacks (one line per stack, ``;``-separated, with its sample count), and the
approvals that follow it into PATH with ``.approve`` before its suffix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
from slack_sdk import WebClient

from benchmarks.harness import (
    bot_on_own_database,
    figure,
    machine,
    ms,
    percentile,
    print_table,
    settle,
    text_contains,
)
from bot.slack.ids import ActionId
from bot.vault.kinds.dynamic_secret import grant_policy_name
from bot.vault.setup import DEFAULT_TOKEN_ROLE
from tests.conftest import _ensure_no_proxy
from tests.emulators.slack_api import Call, SlackEmulator
from tests.emulators.slack_client import SlackRequestSender
from tests.integration.flows import (
    ALICE,
    approval_message,
)
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
    free_port,
    setup_vault_db,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOURCE = "payments-db"
REQUEST_ID = re.compile(r"Request #(\d+)")


@dataclass
class Burst:
    """One burst: each request's ack latency, and when the last ack and last follow-up landed."""

    acks: list[float]
    acked_in: float
    handled_in: float
    #: When the last Slack call of the burst's follow-up work came (App Homes included).
    settled_in: float
    #: Requests answered with anything but 200: Bolt answers 404 "unhandled request" when no
    #: listener thread acked within its ack timeout (3 s).
    failed: int = 0
    #: Of those, how many the listener still ran later (Slack had been told it failed).
    failed_yet_done: int = 0

    @property
    def n(self) -> int:
        return len(self.acks)


@dataclass
class Fired:
    """What ``fire`` sent: per request its ack latency, status and response key."""

    acks: list[float]
    statuses: list[int]
    keys: list[str]
    wall0: float
    acked_in: float

    def answered(self) -> list[int]:
        """Indexes of the requests answered 200."""
        return [i for i, status in enumerate(self.statuses) if status == 200]


def fire(
    url: str,
    signing_secret: str,
    slack: SlackEmulator,
    requests: int,
    clients: int,
    text: Callable[[int], str],
    user: Callable[[int], str],
) -> Fired:
    """Send ``requests`` signed slash commands from ``clients`` threads at once. ``wall0`` is
    the start on time.time, comparable with the emulator's ``Call.time``."""
    local = threading.local()

    def sender() -> SlackRequestSender:
        if not hasattr(local, "sender"):
            local.sender = SlackRequestSender(url, signing_secret, slack)
        return local.sender  # type: ignore[no-any-return]

    def one(i: int) -> tuple[float, int, str]:
        s = sender()
        t0 = time.perf_counter()
        sent = s.slash(user(i), text(i))
        return time.perf_counter() - t0, sent.status_code, str(sent.response_key)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        wall0, t0 = time.time(), time.perf_counter()
        results = list(pool.map(one, range(requests)))
        acked_in = time.perf_counter() - t0
    return Fired(
        [r[0] for r in results], [r[1] for r in results], [r[2] for r in results], wall0, acked_in
    )


def last_arrival(calls: list[Call], since: float) -> float:
    return max(c.time for c in calls) - since


# ---------------------------------------------------------------------------- the floor


@contextmanager
def floor_process(slack: SlackEmulator, workdir: Path) -> Iterator[tuple[str, str]]:
    """``python -m benchmarks.floor_app`` on a free port; yields (events URL, signing secret)."""
    port, secret = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_API_URL": slack.base_url,
        "PORT": str(port),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log_path = workdir / "floor.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.floor_app"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        probe = SlackRequestSender(f"http://127.0.0.1:{port}/slack/events", secret, slack)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"floor app exited:\n{log_path.read_text()[-2000:]}")
            try:
                if probe.get("/healthz").status_code == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor app not healthy:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield probe.bot_url, secret
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def floor_burst(slack: SlackEmulator, workdir: Path, requests: int, clients: int) -> Burst:
    with floor_process(slack, workdir) as (url, secret):

        def burst(n: int) -> Burst:
            tag = f"FLOOR-{secrets.token_hex(3)}"
            sent = fire(url, secret, slack, n, clients, lambda i: f"{tag} {i}", lambda i: "U0FLOOR")
            answered = sent.answered()
            posts = slack.wait_for_count(
                "chat.postMessage",
                len(answered),
                lambda c: tag in str(c.params.get("text", "")),
                timeout=60 + n,
            )
            handled_in = last_arrival(posts, sent.wall0)
            settled_in = settle(slack, sent.wall0)
            posted = slack.calls("chat.postMessage")
            done = sum(1 for c in posted if tag in str(c.params.get("text")))
            failed = n - len(answered)
            return Burst(
                sent.acks, sent.acked_in, handled_in, settled_in, failed, done - len(answered)
            )

        burst(clients)  # warm-up: every client connected, every listener thread started
        return burst(requests)


# ---------------------------------------------------------------------------- the bot


def requester(i: int) -> str:
    return f"U0BENCH{i:04d}"


def bot_burst(
    bot: BotProcess, slack: SlackEmulator, requests: int, clients: int
) -> tuple[Burst, list[tuple[int, str]]]:
    """The burst of access requests; returns it and each (request id, requester).

    A warm-up of ``list`` commands first (as many as clients, followed to their answers), so
    that connections, listener threads and the database pool are there, as for the floor."""
    warm = set(
        fire(bot.url, bot.signing_secret, slack, clients, clients, lambda i: "list", requester).keys
    )
    slack.wait_for_count("response_url", clients, lambda c: c.params.get("key") in warm, 60)
    sent = fire(
        bot.url,
        bot.signing_secret,
        slack,
        requests,
        clients,
        lambda i: f"{RESOURCE} 30m BENCH-{i} burst benchmark",
        requester,
    )
    answered = sent.answered()
    wanted = {sent.keys[i] for i in answered}
    receipts = slack.wait_for_count(
        "response_url",
        len(wanted),
        lambda c: c.params.get("key") in wanted,
        timeout=60 + 2 * requests,
    )
    made: list[tuple[int, str]] = []
    for i in answered:
        call = next(c for c in receipts if c.params.get("key") == sent.keys[i])
        match = REQUEST_ID.search(str(call.params.get("text")))
        if match is None:
            raise RuntimeError(f"no request id in the receipt: {call.params.get('text')!r}")
        made.append((int(match.group(1)), requester(i)))
    handled_in = last_arrival(receipts, sent.wall0)
    settled_in = settle(slack, sent.wall0)
    unacked = set(sent.keys) - wanted
    late = sum(1 for c in slack.calls("response_url") if c.params.get("key") in unacked)
    failed = requests - len(answered)
    return Burst(sent.acks, sent.acked_in, handled_in, settled_in, failed, late), made


def approve_to_dm(
    bot: BotProcess, slack: SlackEmulator, made: list[tuple[int, str]], approvals: int
) -> list[float]:
    """Approve the first ``approvals`` requests one after another: click -> credentials DM,
    to when the emulator received the DM (not polled: polling would round to its interval)."""
    timings = []
    for request_id, _user in made[:approvals]:
        message = approval_message(slack, request_id)
        marker = f"(request #{request_id}) is ready"
        t0 = time.time()
        sent = bot.sender.click(ALICE, message, ActionId.APPROVE)
        if sent.status_code != 200:
            raise RuntimeError(f"approve click answered {sent.status_code}: {sent.text[:100]}")
        dm = slack.wait_for("chat.postMessage", text_contains(marker), timeout=60)
        timings.append(dm.time - t0)
    return timings


def raw_vault_sequence(
    openbao: OpenBaoServer, vault_db: VaultDatabase, slack: SlackEmulator, times: int
) -> list[float]:
    """What issuing that grant costs at the floor: the bot's Vault calls made directly with
    hvac (token create on the bot's role, read with that token, wrap), then one Slack post."""
    admin = openbao.client()
    session = admin.adapter.session  # as the bot's grant client shares its session
    web = WebClient(token=slack.bot_token, base_url=slack.base_url)
    payload = {
        "policies": [grant_policy_name(RESOURCE)],
        "ttl": "1800s",
        "explicit_max_ttl": "1800s",
        "renewable": True,
        "no_default_policy": True,
    }
    timings, accessors = [], []
    for _ in range(times):
        t0 = time.perf_counter()
        auth = admin.write_data(f"auth/token/create/{DEFAULT_TOKEN_ROLE}", data=payload)["auth"]
        grant = hvac.Client(url=openbao.addr, token=auth["client_token"], session=session)
        creds = grant.read(vault_db.path)
        admin.sys.wrap(payload=creds["data"], ttl="600s")
        web.chat_postMessage(channel="D0RAWFLOOR", text="credentials are ready")
        timings.append(time.perf_counter() - t0)
        accessors.append(auth["accessor"])
    for accessor in accessors:
        admin.auth.token.revoke_accessor(accessor)
    return timings


# ---------------------------------------------------------------------------- profiling


@contextmanager
def py_spy(pid: int, output: Path | None) -> Iterator[None]:
    """Record ``pid`` with py-spy (collapsed stacks, every thread, idle ones too) while the
    block runs. ``--nonblocking``: the bot is not paused to be sampled, so the burst is barely
    slowed (a blocking 250 Hz sample made it several times slower)."""
    if output is None:
        yield
        return
    spy = Path(sys.executable).parent / "py-spy"
    proc = subprocess.Popen(
        [
            *(str(spy), "record", "--pid", str(pid), "--rate", "100", "--nonblocking"),
            *("--threads", "--idle", "--format", "raw", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # let py-spy attach before the burst starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode not in (0, -signal.SIGINT):
            print(f"py-spy exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")


# ---------------------------------------------------------------------------- report


def figures(
    bot: Burst, floor: Burst, approve: list[float], raw: list[float]
) -> list[dict[str, Any]]:
    found = [
        figure("ack p50", "ms", ms(statistics.median(bot.acks)), ms(statistics.median(floor.acks))),
        figure("ack p99", "ms", ms(percentile(bot.acks, 0.99)), ms(percentile(floor.acks, 0.99))),
        figure(
            "acks per second",
            "1/s",
            round(bot.n / bot.acked_in, 1),
            round(floor.n / floor.acked_in, 1),
        ),
        figure(
            "handled per second (follow-up posted)",
            "1/s",
            round((bot.n - bot.failed) / bot.handled_in, 1),
            round((floor.n - floor.failed) / floor.handled_in, 1),
        ),
        figure("requests not acked (Bolt's 404)", "", bot.failed, floor.failed),
        figure("... of which still done later", "", bot.failed_yet_done, floor.failed_yet_done),
        figure(
            "burst settled (last Slack call)",
            "s",
            round(bot.settled_in, 2),
            round(floor.settled_in, 2),
        ),
    ]
    found.append(
        figure(
            "approve -> credentials DM p50",
            "ms",
            ms(statistics.median(approve)) if approve else None,
            ms(statistics.median(raw)) if raw else None,
        )
    )
    return found


# ---------------------------------------------------------------------------- run


def run(
    postgres: PostgresServer,
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    *,
    requests: int = 100,
    clients: int = 10,
    approvals: int = 10,
    profile: Path | None = None,
) -> dict[str, Any]:
    """The whole benchmark against services already running; returns the JSON document."""
    clients = max(1, min(clients, requests))
    approvals = min(approvals, requests)
    workdir = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = machine()
    with SlackEmulator() as slack:
        floor = floor_burst(slack, workdir, requests, clients)
        with bot_on_own_database(slack, postgres, openbao, vault_db, workdir) as (bot, _db):
            assert bot.pid is not None
            with py_spy(bot.pid, profile):
                burst, made = bot_burst(bot, slack, requests, clients)
            approvals_profile = (
                profile.with_suffix(".approve" + profile.suffix) if profile else None
            )
            with py_spy(bot.pid, approvals_profile):
                approve = approve_to_dm(bot, slack, made, approvals)
            raw = raw_vault_sequence(openbao, vault_db, slack, approvals)
    found = figures(burst, floor, approve, raw)
    return {
        "benchmark": "ack_burst",
        "started_at": started_at,
        "requests": requests,
        "clients": clients,
        "approvals": approvals,
        "machine": {**load_before, "load_average_after": machine()["load_average"]},
        "figures": found,
        "samples_ms": {
            "bot_acks": [ms(s) for s in burst.acks],
            "floor_acks": [ms(s) for s in floor.acks],
            "approve_to_dm": [ms(s) for s in approve],
            "raw_vault_sequence": [ms(s) for s in raw],
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="slash commands in the burst")
    parser.add_argument("--clients", type=int, default=10, help="client threads sending them")
    parser.add_argument("--approvals", type=int, default=10, help="approve -> DM samples")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the bot's burst (and its approvals) into this file"
    )
    args = parser.parse_args(argv)
    _ensure_no_proxy()
    postgres, openbao = PostgresServer().start(), OpenBaoServer().start()
    try:
        vault_db = setup_vault_db(postgres, openbao)
        result = run(
            postgres,
            openbao,
            vault_db,
            requests=args.requests,
            clients=args.clients,
            approvals=args.approvals,
            profile=args.profile,
        )
    finally:
        openbao.stop()
        postgres.stop()
    print(
        f"{result['requests']} slash commands from {result['clients']} clients, "
        f"{result['approvals']} approvals; {result['machine']['cpus']} CPUs, "
        f"load {result['machine']['load_average']}"
    )
    print_table(result["figures"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
