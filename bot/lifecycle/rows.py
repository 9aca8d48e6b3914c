"""Reading a request or a grant as committed now, and moving a request the state machine's way
inside a use case's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import Session, select

from bot.domain.errors import Conflict, NotFound
from bot.domain.identifiers import is_row_id
from bot.domain.requests import RequestStatus, check_transition
from bot.store.claims import move_request
from bot.store.models import AccessRequest, Grant

RowT = TypeVar("RowT", AccessRequest, Grant)


def _fresh(session: Session, model: type[RowT], key: int, missing: str) -> RowT:
    """The row as committed now (refreshed: another transaction may just have moved it). An
    id no row can have is not looked up: the database would fail the query, not find nothing."""
    # One SELECT that also overwrites what the session may hold (an identity-map hit would
    # otherwise hand back a stale row, and a refresh after it cost a second round trip).
    row = session.get(model, key, populate_existing=True) if is_row_id(key) else None
    if row is None:
        raise NotFound(missing)
    return row


def load_request(session: Session, request_id: int) -> AccessRequest:
    return _fresh(session, AccessRequest, request_id, f"There is no request #{request_id}.")


def load_grant(session: Session, grant_id: int) -> Grant:
    return _fresh(session, Grant, grant_id, f"There is no grant {grant_id}.")


def grant_of(session: Session, request_id: int) -> Grant | None:
    return session.exec(select(Grant).where(Grant.request_id == request_id)).first()


def move(
    session: Session, request_id: int, target: RequestStatus, now: datetime, **values: Any
) -> AccessRequest:
    """Move a request that must move (the use case already holds it), or raise Conflict saying
    why it cannot; the transaction then rolls back."""
    if not move_request(session, request_id, target, now, **values):
        current = RequestStatus(load_request(session, request_id).status)
        check_transition(current, target)  # raises Conflict naming both states
        raise Conflict(f"Request #{request_id} changed while it was being updated.")
    return load_request(session, request_id)
