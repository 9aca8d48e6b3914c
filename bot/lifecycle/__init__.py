"""The request lifecycle, one module per stage, composed into ``AccessLifecycle``:

submit.py     command -> request (routing to approvers, break-glass, extension requests)
decide.py     decision (approve / deny / withdraw / escalate / expire unanswered / review)
grants.py     Vault issue -> schedule -> revoke (and applying an approved extension)
reconcile.py  restart: rebuild timers, finish what a crash interrupted
base.py       the edges, row access, views, and telling people (audit channel, App Home)
"""

from bot.lifecycle.base import SYSTEM_ACTOR, EndReason, SubmitResult
from bot.lifecycle.decide import DecideMixin
from bot.lifecycle.grants import CLAIM_TIMEOUT, RETRY_BACKOFF, GrantMixin, retry_delay
from bot.lifecycle.reconcile import ReconcileMixin
from bot.lifecycle.submit import SubmitMixin


class AccessLifecycle(SubmitMixin, DecideMixin, ReconcileMixin, GrantMixin):
    """Every use case of debug-access, wired to its edges (see ``LifecycleBase``)."""


__all__ = [
    "CLAIM_TIMEOUT",
    "RETRY_BACKOFF",
    "SYSTEM_ACTOR",
    "AccessLifecycle",
    "EndReason",
    "SubmitResult",
    "retry_delay",
]
