"""The standing user locks, read the way the lifecycle asks: is this user locked, which of these
users are, and every lock standing now (the digest, the App Home, the command line).

A lock stands while ``lifted_at`` is empty; the partial unique index ``ux_one_standing_lock``
keeps it to one per user, even when two admins lock the same person at the same moment.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, exists
from sqlmodel import Session, col, select

from bot.store.models import AccessRequest, UserLock


def standing(session: Session, user: str) -> UserLock | None:
    """``user``'s standing lock, if any."""
    return session.exec(
        select(UserLock).where(UserLock.user == user, col(UserLock.lifted_at).is_(None))
    ).first()


def locked_among(session: Session, users: Collection[str]) -> set[str]:
    """Which of ``users`` are locked now (one query, whatever their number)."""
    if not users:
        return set()
    rows = session.exec(
        select(UserLock.user).where(
            col(UserLock.user).in_(list(users)), col(UserLock.lifted_at).is_(None)
        )
    )
    return set(rows)


def all_standing(session: Session) -> list[UserLock]:
    """Every lock standing now, oldest first."""
    return list(
        session.exec(
            select(UserLock)
            .where(col(UserLock.lifted_at).is_(None))
            .order_by(col(UserLock.locked_at), col(UserLock.id))
        )
    )


def requester_is_locked() -> ColumnElement[bool]:
    """A condition on ``access_request`` rows: their requester is locked now (the timers use it
    to finish what a lock started, on any replica, after any restart)."""
    return exists().where(
        and_(
            col(UserLock.user) == col(AccessRequest.requester),
            col(UserLock.lifted_at).is_(None),
        )
    )
