"""The state gauges of ``/metrics``, read from the database at scrape time.

Counting rows at scrape time (three indexed COUNTs) instead of keeping gauges in memory: every
replica reports the whole system, a restart loses nothing, and a grant revoked by another
replica is never left counted here. When the database does not answer, the gauges are left out
of that scrape (an absent series, which the alert rules treat as such) rather than reported 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus
from bot.store.models import AccessRequest, Grant, UserLock
from bot.store.user_locks import requester_is_locked

log = logging.getLogger(__name__)

#: Grants that still give (or may give) access: not yet confirmed revoked.
LIVE_GRANTS = [
    GrantStatus.ISSUING,
    GrantStatus.DELIVERING,
    GrantStatus.ACTIVE,
    GrantStatus.REVOKING,
]


class StateGauges(Collector):
    """``debug_access_active_grants``, ``debug_access_pending_requests``,
    ``debug_access_grants_overdue`` (past ``expires_at``, Vault has not confirmed them gone),
    ``debug_access_users_locked`` and ``debug_access_locked_live_grants`` (grants of a locked
    user that Vault has not confirmed revoked: a lock that has not finished its work)."""

    def __init__(self, engine: Engine, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        live = [s.value for s in LIVE_GRANTS]
        try:
            with Session(self.engine) as session:
                active = session.exec(
                    select(func.count()).where(Grant.status == GrantStatus.ACTIVE.value)
                ).one()
                pending = session.exec(
                    select(func.count()).where(AccessRequest.status == RequestStatus.PENDING.value)
                ).one()
                overdue = session.exec(
                    select(func.count()).where(
                        col(Grant.status).in_(live), col(Grant.expires_at) <= self.now()
                    )
                ).one()
                locked = session.exec(
                    select(func.count()).where(col(UserLock.lifted_at).is_(None))
                ).one()
                locked_live = session.exec(
                    select(func.count())
                    .select_from(Grant)
                    .join(AccessRequest, col(AccessRequest.id) == col(Grant.request_id))
                    .where(col(Grant.status).in_(live), requester_is_locked())
                ).one()
        except Exception as exc:  # a scrape must not fail because the database did
            log.warning("metrics: could not read the state gauges: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "debug_access_active_grants", "Grants whose credentials are live.", value=active
        )
        yield GaugeMetricFamily(
            "debug_access_pending_requests", "Requests waiting for a decision.", value=pending
        )
        yield GaugeMetricFamily(
            "debug_access_grants_overdue",
            "Grants past their expiry that Vault has not confirmed revoked: page on this.",
            value=overdue,
        )
        yield GaugeMetricFamily(
            "debug_access_users_locked",
            "Users an admin has locked, not yet unlocked.",
            value=locked,
        )
        yield GaugeMetricFamily(
            "debug_access_locked_live_grants",
            "Grants of locked users that Vault has not confirmed revoked: page on this.",
            value=locked_live,
        )
