"""What the benchmarks share: statistics, the figure table and its JSON, the machine's load,
waiting for the bot to go quiet, and a bot process on a database of its own.

Nothing here asserts anything about speed.
"""

from __future__ import annotations

import os
import platform
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.emulators.slack_api import Call, SlackEmulator
from tests.integration.flows import policy_for
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
    bot_environment,
    free_port,
    write_policy,
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def figure(name: str, unit: str, bot: float | None, floor: float | None) -> dict[str, Any]:
    """One figure next to its floor (or baseline) and the ratio bot / floor."""
    return {
        "name": name,
        "unit": unit,
        "bot": bot,
        "floor": floor,
        "ratio": round(bot / floor, 2) if bot is not None and floor else None,
    }


def print_table(found: list[dict[str, Any]], floor: str = "floor", width: int = 40) -> None:
    def cell(value: float | None, unit: str) -> str:
        return "-" if value is None else f"{value} {unit}".strip()

    print(f"{'figure':<{width}} {'bot':>12} {floor:>12} {'ratio':>7} {'goal':>7}")
    for f in found:
        print(
            f"{f['name']:<{width}} {cell(f['bot'], f['unit']):>12} "
            f"{cell(f['floor'], f['unit']):>12} {cell(f['ratio'], ''):>7} "
            f"{f.get('goal') or '':>7}"
        )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (``/proc/PID/stat``), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(
    slack: SlackEmulator,
    since: float,
    quiet: float = 1.5,
    timeout: float = 300,
    pid: int | None = None,
    busy: float = 0.2,
) -> float:
    """Wait until the bot has made no Slack call for ``quiet`` seconds (its follow-up work, App
    Homes included, is done); return when its last call came, in seconds after ``since``.

    With ``pid``, the bot must also have been idle over those ``quiet`` seconds (used less than
    ``busy`` of one CPU): work that makes no Slack call for a while (building a Home over a
    large backlog) is not taken for quiet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = len(slack.calls())
        cpu0 = cpu_seconds(pid) if pid is not None else None
        time.sleep(quiet)
        cpu1 = cpu_seconds(pid) if pid is not None else None
        idle = cpu0 is None or cpu1 is None or cpu1 - cpu0 < busy * quiet
        if len(slack.calls()) == seen and idle:
            break
    return max(c.time for c in slack.calls()) - since


def text_contains(marker: str) -> Callable[[Call], bool]:
    return lambda call: marker in str(call.params.get("text", ""))


@contextmanager
def bot_on_own_database(
    slack: SlackEmulator,
    postgres: PostgresServer,
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    workdir: Path,
    overrides: dict[str, str] | None = None,
    start: bool = True,
    policy: dict[str, Any] | None = None,
) -> Iterator[tuple[BotProcess, str]]:
    """A bot (``python -m bot serve``, PostgreSQL as its database, ``policy`` or the tests'
    policy) on a new database of its own; yields it (started unless ``start`` is False) and the
    database's name. Stops the bot and drops the database afterwards."""
    database = f"bench_{secrets.token_hex(4)}"
    postgres.create_database(database)
    port = free_port()
    env = bot_environment(
        slack,
        openbao,
        postgres.sqlalchemy_url(database),
        write_policy(policy or policy_for(vault_db.path), workdir),
        port,
        secrets.token_hex(16),
        {"LOG_LEVEL": "WARNING", **(overrides or {})},
    )
    bot = BotProcess(env, port, workdir / "policy.yml", workdir, slack)
    try:
        if start:
            bot.start()
        yield bot, database
    finally:
        bot.stop()
        postgres.drop_database(database)
