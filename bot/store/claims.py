"""Guarded updates: the one way a request or a grant changes, race-safe across replicas.

Two replicas (or two Slack clicks) may act on the same row at once. Each change is therefore a
single UPDATE whose WHERE clause states what must still be true; the database applies it to at
most one caller, and ``rowcount == 1`` tells that caller it won (it "claimed" the row). Nobody
reads a status, decides, and writes it back.

A status change derives its guard from the state machine, so the SQL cannot drift from the
rules: to move a request to X the row must be in one of the states from which X is allowed
(``bot.domain.requests.ALLOWED_TRANSITIONS``), and likewise for grants
(``bot.domain.grants.GRANT_TRANSITIONS``). A move the state machine forbids never matches a row.
Callers add what else must hold (a deadline not passed, a claim still theirs). Changes that
leave the status alone (recording a review, an escalation step, a collection check, claiming a
queued notice) use ``claim`` with their own conditions.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, update
from sqlmodel import Session, col

from bot.domain.grants import GrantStatus, grant_sources
from bot.domain.requests import RequestStatus, request_sources
from bot.store.models import AccessRequest, Grant, Notice

S = TypeVar("S", RequestStatus, GrantStatus)


def request_guard(
    target: RequestStatus, only_from: Collection[RequestStatus] = ()
) -> ColumnElement[bool]:
    """``status IN (every state a request may move to target from)``, narrowed to
    ``only_from`` when given (each of which must itself be allowed)."""
    return col(AccessRequest.status).in_(_sources(request_sources(target), only_from, target))


def grant_guard(
    target: GrantStatus, only_from: Collection[GrantStatus] = ()
) -> ColumnElement[bool]:
    """``status IN (every state a grant may move to target from)``, as ``request_guard``."""
    return col(Grant.status).in_(_sources(grant_sources(target), only_from, target))


def request_in(*statuses: RequestStatus) -> ColumnElement[bool]:
    """A condition for a claim that leaves the status alone (``claim``): the request is in one
    of ``statuses`` (still pending, say, while an approval is recorded)."""
    return col(AccessRequest.status).in_(sorted(s.value for s in statuses))


def grant_in(*statuses: GrantStatus) -> ColumnElement[bool]:
    """As ``request_in``, for a grant (still active, say, while its expiry is extended)."""
    return col(Grant.status).in_(sorted(s.value for s in statuses))


def move_request(
    session: Session,
    request_id: int,
    target: RequestStatus,
    now: datetime,
    *when: ColumnElement[bool],
    only_from: Collection[RequestStatus] = (),
    **values: object,
) -> bool:
    """Move a request to ``target`` (setting ``values`` too) if the state machine allows it
    from the row's current state and every ``when`` holds. Returns whether this call did."""
    return claim(
        session,
        AccessRequest,
        request_id,
        request_guard(target, only_from),
        *when,
        status=target.value,
        updated_at=now,
        **values,
    )


def move_grant(
    session: Session,
    grant_id: int,
    target: GrantStatus,
    *when: ColumnElement[bool],
    only_from: Collection[GrantStatus] = (),
    **values: object,
) -> bool:
    """Move a grant to ``target`` as ``move_request`` moves a request."""
    return claim(
        session,
        Grant,
        grant_id,
        grant_guard(target, only_from),
        *when,
        status=target.value,
        **values,
    )


def claim(
    session: Session,
    model: type[AccessRequest] | type[Grant] | type[Notice],
    key: int,
    *when: ColumnElement[bool],
    **values: object,
) -> bool:
    """Update row ``key`` of ``model`` with ``values`` only if every ``when`` holds; return
    whether it did (so of two racing callers exactly one gets True)."""
    statement = update(model).where(col(model.id) == key, *when).values(**values)
    return session.exec(statement).rowcount == 1


def _sources(allowed: frozenset[S], only_from: Collection[S], target: S) -> list[str]:
    if not set(only_from) <= allowed:
        illegal = ", ".join(sorted(s.value for s in set(only_from) - allowed))
        raise ValueError(f"the state machine has no move from {illegal} to {target.value}")
    return sorted(s.value for s in (set(only_from) if only_from else allowed))
