"""How Socket Mode clients survive Slack's everyday connection events.

For each candidate client this measures, against the Socket Mode emulator on loopback:

(a) ``refresh``: ack latency of the first slash command after an idle
    ``{"type": "disconnect", "reason": "refresh_requested"}``. The command is pushed
    ``--refresh-delays`` seconds after the disconnect (0 s: straight after; 0.5 s: the user
    types a moment later). Slack's limit is 3 s.
(b) ``drop``: the TCP connection is closed without a WebSocket close frame (as proxies and NAT
    gateways do; ``reset`` variant: a TCP RST). Time until the client is connected again (a new
    connection greeted with hello), and the client process's CPU use over that window, at
    least 1 s (from /proc/PID/stat; 100% = one core busy).
(c) commands lost: during the drop window one slash command is pushed every
    ``--command-every`` seconds; a command counts as lost when it is not acked within 3 s of
    being pushed (what a user sees as a failure), whether it is acked later or never.

Each client runs in its own process (a minimal Bolt ``App`` with a ``/bench`` command that acks)
so the CPU figures are the client's alone. A benchmark, not a test: it asserts nothing and its
figures depend on the machine.

    .venv/bin/python -m benchmarks.socket_mode_faults [--trials 3] [--clients builtin,...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLACK_LIMIT = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

CANDIDATES: dict[str, str] = {
    "builtin": "slack_sdk built-in client, defaults (Bolt's SocketModeHandler)",
    "builtin-ping1": "built-in client, ping_interval=1 (the only knob for dead connections)",
    "websocket-client": "websocket-client adapter, defaults (ping_interval=10)",
    "bot": "bot.slack.socket_mode.SocketModeTransport (what the bot uses)",
}


# ---------------------------------------------------------------------------- the client side


def run_child(candidate: str, api_url: str, app_token: str, bot_token: str) -> None:
    """Connect one candidate client, print READY, serve until stdin closes."""
    import logging

    from slack_bolt import Ack, App
    from slack_sdk import WebClient

    logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    client = WebClient(token=bot_token, base_url=api_url)
    app = App(client=client, signing_secret="unused", request_verification_enabled=False)

    @app.command("/bench")
    def bench(ack: Ack, command: dict[str, Any]) -> None:
        ack(f"ok {command.get('text', '')}")

    handler: Any
    if candidate == "builtin":
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        handler = SocketModeHandler(app, app_token, web_client=client)  # type: ignore[no-untyped-call]
        handler.connect()
    elif candidate == "builtin-ping1":
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        handler = SocketModeHandler(
            app,
            app_token,
            web_client=client,  # type: ignore[no-untyped-call]
            ping_interval=1,
        )
        handler.connect()
    elif candidate == "websocket-client":
        from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler as WsHandler

        handler = WsHandler(app, app_token, web_client=client)
        handler.connect()
    elif candidate == "bot":
        from bot.slack.socket_mode import SocketModeTransport

        handler = SocketModeTransport(app, app_token, client)
        handler.start()
    else:
        raise SystemExit(f"unknown candidate {candidate}")
    print("READY", flush=True)
    sys.stdin.read()
    with contextlib.suppress(Exception):
        handler.close()
    os._exit(0)


# ---------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Result:
    """Figures for one candidate."""

    name: str
    refresh_latency: dict[float, list[float]] = field(default_factory=dict)
    refresh_lost: int = 0
    drop: dict[str, list[tuple[float, float, int, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Harness:
    """One candidate process wired to fresh Slack and Socket Mode emulators."""

    def __init__(self, candidate: str) -> None:
        from tests.emulators.slack_api import SlackEmulator
        from tests.emulators.socket_mode import SocketModeEmulator

        self.slack = SlackEmulator().start()
        self.sm = SocketModeEmulator().start().attach(self.slack)
        env = dict(
            os.environ,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.socket_mode_faults",
                "--child",
                candidate,
                self.slack.base_url,
                self.slack.app_token,
                self.slack.bot_token,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if "BENCH_LOG_LEVEL" in os.environ else subprocess.DEVNULL,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"{candidate} did not start: {line!r}")
        self.sm.wait_for_connection(timeout=10)
        self.counter = 0

    def command(self) -> str:
        self.counter += 1
        return self.sm.push(
            "slash_commands",
            {
                "command": "/bench",
                "text": str(self.counter),
                "user_id": "U0BENCH",
                "channel_id": "C0BENCH",
                "team_id": "T0TEAM",
                "api_app_id": "A0APP",
                "trigger_id": f"{self.counter}.1.x",
                "response_url": self.slack.response_url(),
            },
        )

    def ack_latency(self, envelope_id: str, timeout: float) -> float | None:
        with contextlib.suppress(AssertionError):
            self.sm.wait_for_ack(envelope_id, timeout)
        return self.sm.ack_latency(envelope_id)

    def settle(self) -> None:
        """A command acks now: the client is connected and idle."""
        latency = self.ack_latency(self.command(), 60)
        if latency is None:
            raise RuntimeError("client does not ack at all")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.sm.stop()
        self.slack.stop()


def measure_refresh(h: Harness, delay: float, idle: float) -> float | None:
    """Idle, then refresh_requested, then (after ``delay``) one command: its ack latency."""
    h.settle()
    time.sleep(idle)  # idle: the client sits in its blocking read
    h.sm.disconnect("refresh_requested")
    time.sleep(delay)
    return h.ack_latency(h.command(), 15)


def measure_drop(
    h: Harness, reset: bool, every: float, limit: float
) -> tuple[float, float, int, int]:
    """Drop without a close frame: (seconds to reconnect, CPU share, commands sent, lost)."""
    h.settle()
    time.sleep(1.0)
    pid = h.proc.pid
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    old = h.sm.drop(reset=reset)
    sent: list[str] = []
    stop = threading.Event()

    def pusher() -> None:
        while not stop.is_set():
            sent.append(h.command())
            stop.wait(every)

    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    reconnected: float | None
    try:
        h.sm.wait_for_connection(after=old.id, timeout=limit)
        reconnected = time.monotonic() - t0
    except AssertionError:
        reconnected = None
    # CPU over at least 1 s: /proc counts in 10 ms ticks, so a shorter window is noise.
    floor = t0 + 1.0 - time.monotonic()
    if floor > 0:
        time.sleep(floor)
    cpu1 = cpu_seconds(pid)
    t1 = time.monotonic()
    stop.set()
    thread.join()
    sent.append(h.command())  # one more right after the reconnect
    lost = 0
    for envelope_id in sent:
        latency = h.ack_latency(envelope_id, SLACK_LIMIT + 1)
        if latency is None or latency > SLACK_LIMIT:
            lost += 1
    share = (cpu1 - cpu0) / (t1 - t0)
    return (reconnected if reconnected is not None else float("inf")), share, len(sent), lost


# ---------------------------------------------------------------------------- report


def fmt(values: list[float]) -> str:
    finite = [v for v in values if v != float("inf")]
    if not values:
        return "-"
    text = f"median {statistics.median(values):.2f} max {max(values):.2f}"
    if len(finite) < len(values):
        text += f" ({len(values) - len(finite)} never)"
    return text


def run_candidate(name: str, args: argparse.Namespace) -> Result:
    result = Result(name)
    for delay in args.refresh_delays:
        latencies: list[float] = []
        for _ in range(args.trials):
            h = Harness(name)
            try:
                latency = measure_refresh(h, delay, args.idle)
            finally:
                h.close()
            latencies.append(latency if latency is not None else float("inf"))
        result.refresh_latency[delay] = latencies
        result.refresh_lost += sum(1 for v in latencies if v > SLACK_LIMIT)
    for variant, reset in (("fin", False), ("reset", True)):
        runs: list[tuple[float, float, int, int]] = []
        for _ in range(args.trials):
            h = Harness(name)
            try:
                runs.append(measure_drop(h, reset, args.command_every, args.drop_limit))
            finally:
                h.close()
        result.drop[variant] = runs
    return result


def report(result: Result) -> None:
    print(f"\n== {result.name}: {CANDIDATES[result.name]}")
    for delay, latencies in result.refresh_latency.items():
        over = sum(1 for v in latencies if v > SLACK_LIMIT)
        print(
            f"  (a) refresh_requested, command +{delay:.1f}s: ack latency "
            f"{fmt(latencies)} s; over 3 s: {over}/{len(latencies)}"
        )
    for variant, runs in result.drop.items():
        reconnect = [r[0] for r in runs]
        cpu = [r[1] * 100 for r in runs]
        sent = sum(r[2] for r in runs)
        lost = sum(r[3] for r in runs)
        print(
            f"  (b) drop ({variant}, no close frame): reconnect {fmt(reconnect)} s; "
            f"CPU over the window {fmt(cpu)} % of a core"
        )
        print(f"  (c) drop ({variant}): commands lost (not acked within 3 s) {lost}/{sent}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("CANDIDATE", "API", "APP", "BOT"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--clients",
        default=",".join(CANDIDATES),
        help=f"comma-separated, of: {', '.join(CANDIDATES)}",
    )
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--idle",
        type=float,
        default=2.0,
        help="seconds idle before the refresh (the client sits in a read)",
    )
    parser.add_argument(
        "--refresh-delays", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.5]
    )
    parser.add_argument("--command-every", type=float, default=1.0)
    parser.add_argument(
        "--drop-limit",
        type=float,
        default=90.0,
        help="give up waiting for a reconnect after this many seconds",
    )
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child)
        return 0
    from tests.conftest import _ensure_no_proxy

    _ensure_no_proxy()
    for name in args.clients.split(","):
        report(run_candidate(name, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
