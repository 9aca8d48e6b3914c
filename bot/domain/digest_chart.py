"""What the digest's chart shows: per resource, over the last days, how many grants, how many
hours they were held, and how long people waited for an approval. Pure: the records come from
the database (``bot.digest``), the picture is drawn at the Slack edge
(``bot.slack.digest_chart``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.digest import RequestRecord

#: How far back the chart looks.
CHART_DAYS = 14


@dataclass(frozen=True)
class ResourceUse:
    resource: str
    grants: int
    hours_held: float
    #: The median wait from request to the approval that settled it; None without approvals.
    median_wait: timedelta | None


def usage_by_resource(
    records: Iterable[RequestRecord], since: datetime, now: datetime
) -> list[ResourceUse]:
    """Grants issued since ``since`` (held until they ended, or until ``now``), by resource,
    most hours first."""
    held: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    for record in records:
        if record.issued_at is None or record.issued_at < since:
            continue
        end = min(record.ended_at or now, now)
        held.setdefault(record.resource, []).append(
            max(0.0, (end - record.issued_at).total_seconds() / 3600)
        )
        if record.approvals and not record.break_glass:
            wait = record.approvals[-1].at - record.created_at
            waits.setdefault(record.resource, []).append(wait.total_seconds())
    uses = [
        ResourceUse(
            resource=resource,
            grants=len(hours),
            hours_held=sum(hours),
            median_wait=(
                timedelta(seconds=statistics.median(waits[resource]))
                if waits.get(resource)
                else None
            ),
        )
        for resource, hours in held.items()
    ]
    return sorted(uses, key=lambda use: (-use.hours_held, use.resource))
