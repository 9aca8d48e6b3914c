"""The benchmarks run: reduced runs prove ``benchmarks.ack_burst`` and ``benchmarks.scale``
still work end to end.

Nothing here is about speed (the figures depend on the machine and its load); only that each
benchmark completes against the real services and writes its figures as well-formed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ack_burst, lock, scale

pytestmark = pytest.mark.integration

FIGURE_KEYS = {"name", "unit", "bot", "floor", "ratio"}


def test_ack_burst_reduced_run_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "ack_burst.json"

    ack_burst.main(["--requests", "10", "--clients", "5", "--approvals", "2", "--json", str(out)])

    result = json.loads(out.read_text())
    assert {"requests", "clients", "approvals", "machine", "figures", "samples_ms"} <= set(result)
    assert result["requests"] == 10
    names = [f["name"] for f in result["figures"]]
    assert {"ack p50", "ack p99", "acks per second", "approve -> credentials DM p50"} <= set(names)
    for found in result["figures"]:
        assert set(found) == FIGURE_KEYS, found
    assert len(result["samples_ms"]["bot_acks"]) == 10
    assert len(result["samples_ms"]["floor_acks"]) == 10


def _figures_of(result: dict[str, object], expected: set[str]) -> dict[str, dict[str, object]]:
    figures = result["figures"]
    assert isinstance(figures, list)
    for found in figures:
        assert set(found) - {"goal"} == FIGURE_KEYS, found
    by_name = {str(f["name"]): f for f in figures}
    assert expected <= set(by_name), sorted(by_name)
    return by_name


def test_scale_reduced_run_of_all_writes_its_figures(tmp_path: Path) -> None:
    """``python -m benchmarks.scale all`` reduced: flat with 3/15 pending and 2 samples, expiry
    of 10 grants, start-up with 10 grants; each wrote its figures, keyed by sub-benchmark."""
    out = tmp_path / "scale.json"

    scale.main(
        [
            *("all", "--small", "3", "--pending", "15", "--samples", "2", "--grants", "10"),
            *("--lead", "2", "--spread", "1", "--ticking", "1", "--json", str(out)),
        ]
    )

    results = json.loads(out.read_text())
    assert set(results) == {"flat", "expiry", "startup"}
    flat, expiry, startup = results["flat"], results["expiry"], results["startup"]
    assert {"small_backlog", "large_backlog", "samples", "machine", "figures"} <= set(flat)
    _figures_of(
        flat,
        {
            f"{what} {p}"
            for what in (
                "request -> receipt",
                "approve -> credentials DM",
                "app_home_opened -> views.publish",
            )
            for p in ("p50", "p90")
        },
    )
    assert len(flat["samples_ms"]["large_home"]) == 2
    # The seeded pending requests are ones the approver may decide: her Home lists them.
    assert flat["home_waiting_listed"]["large"] >= 5

    by_name = _figures_of(
        expiry,
        {
            "first expiry -> last confirmed revoked",
            "expiry lag p50",
            "expiry lag p99",
            "expiry lag max",
            "grants revoked in the bot's database",
            "grants still live in Vault",
        },
    )
    assert by_name["grants revoked in the bot's database"]["bot"] == 10
    assert by_name["grants still live in Vault"]["bot"] == 0
    assert expiry["baseline_confirmed"] == 10

    by_name = _figures_of(
        startup, {"spawn -> /readyz 200", "RSS when ready", "RSS after 1 s of ticking"}
    )
    assert all(f["bot"] and f["floor"] for f in by_name.values())
    assert startup["grants"] == 10


def test_lock_reduced_run_revokes_every_grant_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "lock.json"

    lock.main(["--grants", "3", "--json", str(out)])

    result = json.loads(out.read_text())
    assert (result["grants"], result["revoked"], result["still_live_in_vault"]) == (3, 3, 0)
    assert "3 of 3 active grant(s) revoked" in result["answer"]
    by_name = _figures_of(
        result, {"lock -> last of 3 grants revoked", "lock -> the admin's answer"}
    )
    assert all(isinstance(f["bot"], float) and f["bot"] > 0 for f in by_name.values())
