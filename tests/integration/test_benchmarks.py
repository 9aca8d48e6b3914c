"""The benchmarks run: a reduced burst proves ``benchmarks.ack_burst`` still works end to end.

Nothing here is about speed (the figures depend on the machine and its load); only that the
benchmark completes against the real services and writes its figures as well-formed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ack_burst

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
