"""The request lifecycle, one module per use case, read top to bottom:

edges.py      what every use case talks to (database, policy, Vault, Slack, clock, approvers)
submit.py     command -> request: routing to approvers, break-glass, asking for an extension
ssh_keys.py   the SSH public key a request signs: registered on the App Home, or pasted
decide.py     decision: approve / deny (enough approvals go on to issue or extend)
step_up.py    passkey step-up: an approval counts once confirmed with a passkey on the page
withdraw.py   the requester takes a waiting request back
escalate.py   nobody decided in time: ask the next approver tier
expire.py     nobody decided before pending_ttl: the request expires
review.py     an approver reviews break-glass access afterwards
issue.py      Vault issue -> deliver (and the collection check of wrapped delivery)
notices.py    messages that must reach someone even if Slack is down then (an outbox)
extend.py     an approved extension renews its parent grant
revoke.py     revoke: end a grant (expiry, early, cleanup), retried until Vault confirms
lock.py       an admin's kill switch: lock a user (revoke, deny, refuse), and unlock
due.py        what the database says is due now (expiry, retries, escalation, what a crash
              interrupted), and the use case that does it: the timers' work list
views.py      reading requests as Slack shows them
announce.py   telling people: the audit channel, request messages, App Homes
rows.py       loading rows and moving a request inside a transaction
routing.py    which approver tiers are staffed now

Every status change of a request or a grant is a guarded UPDATE derived from the state
machines (``bot.store.claims``). The use cases receive what they use and call each other
explicitly; ``AccessLifecycle`` wires them in dependency order and keeps the public methods
the Slack listeners and the tests call; ``due_work`` is what the timer tick runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from bot.domain.digest import LockRecord
from bot.domain.requests import RequestStatus, ValidRequest
from bot.issuer import Issuer
from bot.lifecycle.announce import Announcer
from bot.lifecycle.decide import Decide
from bot.lifecycle.due import Due, DueWork, OwnedElsewhere
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges, EndReason, Via
from bot.lifecycle.escalate import Escalate
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import Issue
from bot.lifecycle.lock import LockReport, LockUsers
from bot.lifecycle.notices import Notices
from bot.lifecycle.review import Review
from bot.lifecycle.revoke import CLAIM_TIMEOUT, RETRY_BACKOFF, EndGrant, RevokeEarly, retry_delay
from bot.lifecycle.ssh_keys import SshKeys
from bot.lifecycle.step_up import PageStart, StepUp, StepUpSettings
from bot.lifecycle.submit import Submit, SubmitResult
from bot.lifecycle.views import Views
from bot.lifecycle.withdraw import Withdraw
from bot.policy import Policy, Resource
from bot.ports import ApproverDirectory, Clock, Notifier, RequestView, WorkLocks
from bot.store.locks import LocalLocks
from bot.store.models import UserLock


class AccessLifecycle:
    """Every use case of debug-access, wired to its edges; one entry point for the callers."""

    def __init__(
        self,
        *,
        engine: Engine,
        policy: Policy,
        issuer: Issuer,
        notifier: Notifier,
        clock: Clock,
        approvers: ApproverDirectory,
        locks: WorkLocks | None = None,
        step_up: StepUpSettings | None = None,
    ) -> None:
        edges = Edges(engine, policy, issuer, notifier, clock, approvers, locks or LocalLocks())
        self.edges = edges
        self.policy = policy
        # Built in dependency order: each use case is given the ones it calls.
        self.views = views = Views(edges)
        tell = Announcer(edges)
        self.ending = EndGrant(edges, views, tell)
        self.notices = Notices(edges, views, tell)
        self.issuing = Issue(edges, views, tell, self.ending, self.notices)
        self.extension = ApplyExtension(edges, views, tell)
        self.expiry = ExpirePending(edges, views, tell)
        self.withdrawal = Withdraw(edges, views, tell)
        self.decision = Decide(edges, views, tell, self.issuing, self.extension, self.expiry)
        self.reviewing = Review(edges, views, tell)
        self.escalation = Escalate(edges, views, tell)
        self.early_revocation = RevokeEarly(edges, views, self.ending, self.withdrawal)
        self.locking = LockUsers(edges, views, tell, self.ending)
        self.ssh_keys = SshKeys(edges)
        self.submission = Submit(edges, views, tell, self.issuing, self.ssh_keys)
        self.step_up = StepUp(
            edges, views, self.decision, self.submission, step_up or StepUpSettings()
        )
        self.due = Due(
            edges,
            views,
            self.issuing,
            self.extension,
            self.ending,
            self.expiry,
            self.escalation,
            self.notices,
            self.locking,
        )

    # -- command -> request -----------------------------------------------------------------------

    def submit(
        self,
        requester: str,
        valid: ValidRequest,
        origin_channel: str | None,
        break_glass: bool = False,
        public_key: str | None = None,
    ) -> SubmitResult:
        return self.submission.submit(requester, valid, origin_channel, break_glass, public_key)

    def register_ssh_key(self, user: str, text: str) -> str:
        """Keep ``user``'s SSH public key for later requests; returns its fingerprint."""
        return self.ssh_keys.register(user, text).fingerprint

    def check_public_key(self, user: str, resource: str, pasted: str | None) -> None:
        """Whether a request for ``resource`` would have an acceptable SSH key (quick enough to
        run before acknowledging a form); raises the user's error otherwise."""
        self.ssh_keys.key_for_request(user, resource, self.edges.resource(resource), pasted)

    def registered_key_fingerprint(self, user: str) -> str | None:
        return self.ssh_keys.registered_fingerprint(user)

    def request_extension(self, request_id: int, actor: str, duration_text: str) -> SubmitResult:
        return self.submission.request_extension(request_id, actor, duration_text)

    def check_extension(
        self, request_id: int, actor: str, duration_text: str
    ) -> tuple[RequestView, Resource, timedelta]:
        return self.submission.check_extension(request_id, actor, duration_text)

    def check_may_extend(self, request_id: int, actor: str) -> tuple[RequestView, Resource]:
        return self.submission.check_may_extend(request_id, actor)

    # -- decision ---------------------------------------------------------------------------------

    def decide(
        self,
        request_id: int,
        actor: str,
        approve: bool,
        *,
        via: str = Via.SLACK,
        stepped_up: bool = False,
    ) -> RequestView:
        return self.decision.decide(request_id, actor, approve, via=via, stepped_up=stepped_up)

    # -- passkey step-up --------------------------------------------------------------------------

    def approval_needs_step_up(self, request_id: int) -> bool:
        return self.step_up.required_for_approval(request_id)

    def start_step_up(self, request_id: int, actor: str) -> str:
        """Approve clicked where a passkey is needed: the clicker's answer, with the link."""
        return self.step_up.start_approval(request_id, actor)

    def break_glass_needs_step_up(self, resource: str) -> bool:
        return self.step_up.required_for_break_glass(resource)

    def start_break_glass_step_up(
        self,
        requester: str,
        valid: ValidRequest,
        origin_channel: str | None,
        public_key: str | None = None,
    ) -> str:
        """Break-glass where a passkey is needed: the requester's answer, with the link."""
        return self.step_up.start_break_glass(requester, valid, origin_channel, public_key)

    def passkey_enrolment(self, user: str) -> str:
        """A message for ``user`` with a fresh single-use link to register a passkey."""
        return self.step_up.enrolment_text(user)

    def has_passkey(self, user: str) -> bool:
        return self.step_up.has_passkey(user)

    def reset_passkey(self, user: str, actor: str, via: str = Via.SLACK) -> int:
        return self.step_up.reset(user, actor, via)

    def step_up_begin(self, token: str) -> PageStart:
        return self.step_up.begin(token)

    def step_up_finish(self, token: str, credential: dict[str, Any]) -> str:
        return self.step_up.finish(token, credential)

    def withdraw(self, view: RequestView) -> RequestView:
        return self.withdrawal.withdraw(view)

    def escalate(self, request_id: int) -> bool:
        return self.escalation.escalate(request_id)

    def expire_pending(self, request_id: int) -> bool:
        return self.expiry.expire_pending(request_id)

    def review(self, request_id: int, actor: str) -> RequestView:
        return self.reviewing.review(request_id, actor)

    # -- grant: collect, revoke -------------------------------------------------------------------

    def check_collected(self, grant_id: int) -> bool | None:
        return self.issuing.check_collected(grant_id)

    def revoke_early(self, request_id: int, actor: str, *, via: str = Via.SLACK) -> RequestView:
        return self.early_revocation.revoke_early(request_id, actor, via=via)

    def end_grant(self, grant_id: int, reason: str, actor: str = SYSTEM_ACTOR) -> bool:
        return self.ending.end_grant(grant_id, reason, actor)

    # -- the kill switch --------------------------------------------------------------------------

    def lock_user(self, user: str, actor: str, reason: str, via: str = Via.SLACK) -> LockReport:
        return self.locking.lock(user, actor, reason, via)

    def unlock_user(self, user: str, actor: str, via: str = Via.SLACK) -> None:
        self.locking.unlock(user, actor, via)

    def standing_locks(self) -> list[UserLock]:
        return self.locking.standing()

    def lock_of(self, user: str) -> LockRecord | None:
        return self.locking.lock_of(user)

    # -- what the timers run ----------------------------------------------------------------------

    def due_work(self) -> tuple[DueWork, ...]:
        """Every kind of work the database says is due, in the order a tick takes it up."""
        return self.due.work()

    def periodic_work(self) -> tuple[tuple[str, Callable[[], int]], ...]:
        """Work that claims its own rows (the notice outbox, the purge of old step-up links),
        run after each tick's due rows."""
        return self.due.also()

    # -- queries ----------------------------------------------------------------------------------

    def get(self, request_id: int) -> RequestView:
        return self.views.get(request_id)

    def open_requests_of(self, user: str) -> list[RequestView]:
        return self.views.open_requests_of(user)

    def listing(
        self, statuses: Sequence[RequestStatus] | None = None, limit: int = 200
    ) -> list[RequestView]:
        """Everyone's requests in ``statuses`` (None: every status), newest first."""
        return self.views.listing(statuses, limit)

    def waiting_for(self, user: str, limit: int | None = None) -> list[RequestView]:
        return self.views.waiting_for(user, limit)

    def recent_decisions(self, user: str, limit: int = 5) -> list[RequestView]:
        return self.views.recent_decisions(user, limit)


__all__ = [
    "CLAIM_TIMEOUT",
    "RETRY_BACKOFF",
    "SYSTEM_ACTOR",
    "AccessLifecycle",
    "DueWork",
    "EndReason",
    "LockReport",
    "OwnedElsewhere",
    "PageStart",
    "StepUpSettings",
    "SubmitResult",
    "Via",
    "retry_delay",
]
