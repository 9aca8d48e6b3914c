"""The digest's chart: what it counts (pure), that it draws a PNG for any input, and that a
chart that cannot be made never holds up or undoes the text digest."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from bot.domain.digest import Approval, RequestRecord
from bot.domain.digest_chart import ResourceUse, usage_by_resource
from bot.slack.digest_chart import render_usage_chart

NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)
SINCE = NOW - timedelta(days=14)


def record(
    n: int,
    resource: str,
    issued: timedelta | None,
    held: timedelta | None,
    wait: int,
    break_glass: bool = False,
) -> RequestRecord:
    created = NOW - (issued or timedelta(days=1)) - timedelta(seconds=wait)
    issued_at = NOW - issued if issued is not None else None
    return RequestRecord(
        request_id=n,
        requester="U0CAROL",
        resource=resource,
        reason="r",
        duration_asked=timedelta(hours=1),
        status="ended",
        created_at=created,
        approvals=() if break_glass else (Approval("U0ALICE", created + timedelta(seconds=wait)),),
        break_glass=break_glass,
        issued_at=issued_at,
        ended_at=issued_at + held if issued_at is not None and held is not None else None,
    )


def test_usage_counts_grants_hours_and_the_median_wait_per_resource() -> None:
    records = [
        record(1, "payments-db", timedelta(days=2), timedelta(hours=1), wait=60),
        record(2, "payments-db", timedelta(days=3), timedelta(minutes=30), wait=300),
        record(3, "payments-db", timedelta(days=4), timedelta(hours=2), wait=120),
        record(4, "orders-logs", timedelta(hours=3), None, wait=30),  # still held: until now
        record(5, "orders-logs", timedelta(days=20), timedelta(hours=9), wait=10),  # too old
        record(6, "orders-logs", None, None, wait=10),  # never issued
        record(7, "ssh", timedelta(days=1), timedelta(hours=1), wait=0, break_glass=True),
    ]
    uses = usage_by_resource(records, SINCE, NOW)
    assert uses == [
        ResourceUse("payments-db", 3, 3.5, timedelta(seconds=120)),
        ResourceUse("orders-logs", 1, 3.0, timedelta(seconds=30)),
        ResourceUse("ssh", 1, 1.0, None),  # break-glass waits for nobody
    ]


@pytest.mark.parametrize("count", [0, 1, 30])
def test_the_chart_is_a_png_for_any_number_of_resources(count: int) -> None:
    uses = [
        ResourceUse(f"resource-with-a-rather-long-name-{n}", n + 1, 0.5 * n, timedelta(minutes=n))
        for n in range(count)
    ]
    png = render_usage_chart(uses, 14)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width == 720
        assert image.height < 600  # at most twelve rows
    assert len(png) < 60_000


class Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def chat_postMessage(self, **kw: Any) -> dict[str, str]:
        self.calls.append(("post", kw))
        return {"channel": kw["channel"], "ts": f"1.{len(self.calls)}"}

    def files_upload_v2(self, **kw: Any) -> None:
        self.calls.append(("upload", kw))


def test_a_chart_that_fails_is_skipped_with_a_line_and_the_digest_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bot.domain.digest import build_digest
    from bot.policy import parse_policy
    from bot.slack.notifier import SlackNotifier

    policy = parse_policy(
        "channels: {audit: C0AUDIT}\nresources:\n  db:\n    grant: {type: dynamic_secret, "
        "path: database/creds/x}\n    max_duration: 1h\n    approvers: [U0ALICE]\n",
        "p.yml",
    )
    digest = build_digest(
        [], window_start=SINCE, window_end=NOW, now=NOW, chain_ok=True, tz=ZoneInfo("UTC")
    )
    client = Client()
    notifier = SlackNotifier(client, policy)  # type: ignore[arg-type]

    def broken() -> list[ResourceUse]:
        raise RuntimeError("the chart query failed")

    with caplog.at_level(logging.WARNING):
        assert notifier.post_digest(digest, usage=broken) is True
    assert [name for name, _ in client.calls] == ["post"]
    assert "digest chart skipped: RuntimeError" in caplog.text

    client.calls.clear()
    assert notifier.post_digest(digest, usage=lambda: [ResourceUse("db", 1, 1.0, None)]) is True
    (_text, upload) = client.calls
    assert upload[0] == "upload" and upload[1]["thread_ts"] == "1.1"
    assert upload[1]["content"].startswith(b"\x89PNG")
