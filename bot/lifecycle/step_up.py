"""Passkey step-up: an approval of a step-up resource counts only once the approver confirms it
with their passkey on the bot's own page.

The threat is a taken-over Slack session (a stolen cookie, an unlocked laptop): it can click
Approve, but it cannot produce the approver's passkey, which is bound to the bot's origin
(PUBLIC_URL) by the browser. The flow:

1. Approve clicked -> ``start_approval``: the same checks as a decision (a listed approver, not
   the requester, still pending), the click audited (``step_up_requested``) and a single-use
   link to the page returned for the clicker alone. Without a registered passkey the answer is
   an enrolment link instead.
2. The page posts the link token to ``begin``: the link's rules (``bot.domain.step_up``) and the
   WebAuthn options with the link's challenge.
3. The page posts the passkey's answer to ``finish``: challenge, origin, RP id, signature, user
   verification and sign counter are checked, the link is spent in the same transaction, and only
   then ``Decide.decide(..., stepped_up=True)`` records the approval.

Link tokens are bearer secrets: only their hashes are stored, and no log line or error holds one.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.permissions import check_may_decide
from bot.domain.requests import RequestStatus, ValidRequest
from bot.domain.step_up import (
    DEFAULT_LINK_TTL,
    MAX_REFUSALS,
    LinkPurpose,
    LinkState,
    RelyingParty,
    RequestState,
    StepUpRefused,
    check_credential_owner,
    check_link,
    check_sign_count,
    link_url,
    new_link_token,
    refused_text,
    token_hash,
)
from bot.lifecycle.decide import Decide
from bot.lifecycle.edges import Edges, via_details, via_suffix
from bot.lifecycle.lock import check_not_locked, refuse_locked
from bot.lifecycle.submit import Submit
from bot.lifecycle.views import Views
from bot.ports import RequestView
from bot.store.db import transaction
from bot.store.models import PasskeyCredential, StepUpLink, utc

log = logging.getLogger(__name__)

RP_NAME = "debug-access"
#: One passkey per person, registered from Slack once (trust on first use): were a Slack session
#: enough to add another, whoever took it over would add their own and approve with it.
ALREADY_ENROLLED = (
    "You already have a passkey registered. To replace a lost one, ask a debug-access admin "
    "to remove the old one first."
)
#: How long the browser waits for the person to touch their authenticator (milliseconds).
CEREMONY_TIMEOUT_MS = 120_000
#: A used or expired link is kept this long (a page reopened soon after still says "already
#: used" or "expired", not "not a link of ours"), then purged: the audit trail is the record.
LINK_RETENTION = timedelta(days=1)
#: At most this many links are purged per timer tick: one tick never holds a long DELETE.
PURGE_BATCH = 500


def purge_links(engine: Engine, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` links used or expired more than ``LINK_RETENTION`` before ``now``,
    oldest first; returns how many went. Safe on every replica at once: a row two of them pick
    is deleted by one, and the other's DELETE just counts it out. It reads first: most ticks
    find nothing, and then take no write lock (SQLite has one for the whole database)."""
    before = now - LINK_RETENTION
    done = or_(col(StepUpLink.used_at) < before, col(StepUpLink.expires_at) < before)
    oldest = select(StepUpLink.id).where(done).order_by(col(StepUpLink.id)).limit(limit)
    with Session(engine) as session:
        found = list(session.exec(oldest))
    if not found:
        return 0
    with transaction(engine) as session:
        result = session.exec(delete(StepUpLink).where(col(StepUpLink.id).in_(found), done))
        return int(result.rowcount)


@dataclass(frozen=True)
class StepUpSettings:
    """Where the page lives (None: step-up is not configured) and how long a link works."""

    public_url: str | None = None
    link_ttl: timedelta = DEFAULT_LINK_TTL


@dataclass(frozen=True)
class PageStart:
    """What the page shows and asks the browser for, for one link."""

    purpose: LinkPurpose
    #: HTML, every value escaped here: what exactly is being approved (or enrolled).
    summary_html: str
    #: WebAuthn options as JSON (``PublicKeyCredentialCreationOptionsJSON`` / ``...Request...``).
    options: dict[str, Any]


class StepUp:
    def __init__(
        self,
        edges: Edges,
        views: Views,
        decision: Decide,
        submission: Submit,
        settings: StepUpSettings,
    ) -> None:
        self.edges = edges
        self.views = views
        self.decision = decision
        self.submission = submission
        self.settings = settings

    # -- Slack side ------------------------------------------------------------------------------

    def required_for_approval(self, request_id: int) -> bool:
        """Whether approving this request needs a passkey (the policy's ``step_up``)."""
        view = self.views.get(request_id)
        return (
            not view.break_glass and self.edges.policy.approval_step_up(view.resource) is not None
        )

    def start_approval(self, request_id: int, actor: str) -> str:
        """Approve was clicked on a step-up request: the answer for the clicker alone, with a
        link to confirm on the page (or, without a passkey yet, a link to register one)."""
        view = self.views.get(request_id)
        resource = self.edges.resource(view.resource)
        now = self.edges.clock.now()
        allowed = self.edges.approvers.may_approve(actor, resource.approvers, view.requester, now)
        check_may_decide(actor, view.requester, [actor] if allowed else [])
        refuse_locked(self.edges, actor, "approve requests")
        if view.status is not RequestStatus.PENDING:
            raise self.views.already_decided(request_id)
        if actor in view.approved_by:
            raise Conflict(f"You already decided on request #{request_id}.")
        if not self._has_passkey(actor):
            return (
                f"Approving `{view.resource}` needs your passkey, and you have not registered "
                f"one yet. {self._enrolment_text(actor)} Then click *Approve* again."
            )
        token = self._new_link(actor, LinkPurpose.APPROVE, request_id, audit=True)
        minutes = self._ttl_text()
        return (
            f"To approve request #{request_id} (<@{view.requester}>, `{view.resource}` for "
            f"{format_duration(view.duration)}), confirm with your passkey: "
            f"<{link_url(self._public_url(), token)}|open the passkey page>. The approval counts "
            f"only once you confirm there. The link is yours alone, works once and for {minutes}."
        )

    def required_for_break_glass(self, resource: str) -> bool:
        """Whether break-glass access to ``resource`` needs the requester's passkey."""
        return self.edges.policy.break_glass_step_up(resource) is not None

    def start_break_glass(
        self,
        requester: str,
        valid: ValidRequest,
        origin_channel: str | None,
        public_key: str | None = None,
    ) -> str:
        """A break-glass request on a step-up resource: checked now, created and issued only
        once the requester confirms on the page (the answer carries the link)."""
        self.submission.check_break_glass(requester, valid, public_key)
        if not self._has_passkey(requester):
            return (
                f"Break-glass access to `{valid.resource}` needs your passkey, and you have not "
                f"registered one yet. {self._enrolment_text(requester)} Then ask again."
            )
        payload = {
            "resource": valid.resource,
            "duration_seconds": int(valid.duration.total_seconds()),
            "reason": valid.reason,
            "origin_channel": origin_channel,
            "public_key": public_key,
        }
        token = self._new_link(
            requester, LinkPurpose.BREAK_GLASS, None, audit=True, payload=payload
        )
        return (
            f"Break-glass access to `{valid.resource}` for {format_duration(valid.duration)} "
            f"needs your passkey: <{link_url(self._public_url(), token)}|open the passkey page>. "
            f"Nothing is issued until you confirm there. The link is yours alone, works once "
            f"and for {self._ttl_text()}."
        )

    def enrolment_text(self, user: str) -> str:
        """A DM for ``user`` with a fresh link to register a passkey (the App Home's button).
        Not for a locked user: whoever holds the account must not plant a passkey of their own
        for after the unlock."""
        refuse_locked(self.edges, user, "register a passkey")
        return self._enrolment_text(user)

    def has_passkey(self, user: str) -> bool:
        return self._has_passkey(user)

    def reset(self, user: str, actor: str, via: str) -> int:
        """An admin removes ``user``'s passkey (lost, or registered by whoever held their Slack
        session before they enrolled): they register a new one from Slack, announced as every
        registration is. Returns how many were removed."""
        self.edges.check_admin(actor)
        refuse_locked(self.edges, actor, "reset passkeys")
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            rows = list(
                session.exec(select(PasskeyCredential).where(PasskeyCredential.user == user))
            )
            if not rows:
                raise Conflict(f"<@{user}> has no passkey registered.")
            for row in rows:
                session.delete(row)
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.PASSKEY_RESET,
                details={
                    "user": user,
                    "credentials": [row.credential_id[:16] for row in rows],
                    **via_details(via),
                },
            )
        self.edges.notifier.audit(
            None,
            AuditAction.PASSKEY_RESET,
            f":key: <@{actor}> removed the passkey of <@{user}>{via_suffix(via)}; they register "
            "a new one from the Home tab.",
            alert=True,
        )
        self.edges.notifier.tell(
            user,
            "An admin removed your debug-access passkey. Register a new one from the bot's Home "
            "tab before your next approval that needs it.",
        )
        return len(rows)

    # -- the page --------------------------------------------------------------------------------

    def begin(self, token: str) -> PageStart:
        """The page opened with ``token``: what it is for, and the WebAuthn options to ask the
        browser for. StepUpRefused (with a message for the page) when the link does not count."""
        rp = self._relying_party()
        with Session(self.edges.engine) as session:
            row = self._link_row(session, token)
            link = self._check(row)
            assert row is not None
            challenge = base64url_to_bytes(row.challenge)
            if link.purpose is LinkPurpose.ENROL:
                check_not_locked(session, link.user, "register a passkey")
                if self._has_passkey(link.user):
                    raise StepUpRefused(ALREADY_ENROLLED)
                existing = session.exec(
                    select(PasskeyCredential).where(PasskeyCredential.user == link.user)
                ).all()
                options_json = options_to_json(
                    generate_registration_options(
                        rp_id=rp.rp_id,
                        rp_name=RP_NAME,
                        user_name=link.user,
                        user_id=link.user.encode(),
                        user_display_name=f"{link.user} (debug-access)",
                        challenge=challenge,
                        timeout=CEREMONY_TIMEOUT_MS,
                        authenticator_selection=AuthenticatorSelectionCriteria(
                            resident_key=ResidentKeyRequirement.REQUIRED,
                            user_verification=UserVerificationRequirement.REQUIRED,
                        ),
                        exclude_credentials=[
                            PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id))
                            for c in existing
                        ],
                    )
                )
                summary = (
                    "<p>Register a passkey for Slack user "
                    f"<strong>{html.escape(link.user)}</strong>. You will confirm approvals "
                    "with it.</p>"
                )
            else:
                # No allow-list: the browser offers the passkeys it holds for this site, and the
                # server decides whose it is (so a wrong person's passkey gets a clear answer).
                options_json = options_to_json(
                    generate_authentication_options(
                        rp_id=rp.rp_id,
                        challenge=challenge,
                        timeout=CEREMONY_TIMEOUT_MS,
                        user_verification=UserVerificationRequirement.REQUIRED,
                    )
                )
                if link.purpose is LinkPurpose.BREAK_GLASS:
                    summary = break_glass_summary(_payload(row), link.user)
                else:
                    assert link.request_id is not None
                    summary = approval_summary(self.views.get(link.request_id), link.user)
        return PageStart(link.purpose, summary, json.loads(options_json))

    def finish(self, token: str, credential: dict[str, Any]) -> str:
        """The passkey's answer for ``token``: verified, the link spent, then the enrolment kept
        or the approval recorded. Returns what the page says; StepUpRefused otherwise."""
        rp = self._relying_party()
        now = self.edges.clock.now()
        refused: StepUpRefused | None = None
        with transaction(self.edges.engine) as session:
            row = self._link_row(session, token, lock=True)
            link = self._check(row)
            assert row is not None
            challenge = base64url_to_bytes(row.challenge)
            if link.purpose is LinkPurpose.ENROL:
                self._enrol(session, link, challenge, rp, credential)
            else:
                try:
                    stored = self._verify_assertion(session, link, challenge, rp, credential)
                except StepUpRefused as exc:
                    refused = exc  # nothing written: this transaction only lets go of the row
                else:
                    session.add(stored)
            if refused is None:
                self._spend(session, row, now)
        if refused is not None:
            # A valid link with a wrong passkey: worth a line in the audit trail, counted on
            # the link, after the row's lock above is released.
            assert row.id is not None
            raise StepUpRefused(self._record_refusal(row.id, link, str(refused)))
        if link.purpose is LinkPurpose.ENROL:
            self._announce_enrolment(link.user)
            return "Your passkey is registered. You can close this page."
        if link.purpose is LinkPurpose.BREAK_GLASS:
            asked = _payload(row)
            result = self.submission.submit(
                link.user,
                ValidRequest(
                    str(asked["resource"]),
                    timedelta(seconds=int(asked["duration_seconds"])),
                    str(asked["reason"]),
                ),
                asked.get("origin_channel"),
                break_glass=True,
                public_key=asked.get("public_key"),
                stepped_up=True,
            )
            return (
                f"Break-glass access #{result.view.id} to `{result.view.resource}` is "
                f"{result.view.status.label}; your credentials come by DM in Slack. "
                "You can close this page."
            )
        assert link.request_id is not None
        self.decision.decide(link.request_id, link.user, approve=True, stepped_up=True)
        view = self.views.get(link.request_id)
        if view.status is RequestStatus.PENDING:
            return (
                f"Approved request #{view.id}; it still needs "
                f"{view.approvals_required - len(view.approved_by)} more approval(s). "
                "You can close this page."
            )
        return (
            f"Approved request #{view.id}; it is now {view.status.label}. You can close this page."
        )

    # -- inside ----------------------------------------------------------------------------------

    def _enrol(
        self,
        session: Session,
        link: LinkState,
        challenge: bytes,
        rp: RelyingParty,
        credential: dict[str, Any],
    ) -> None:
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.rp_id,
                expected_origin=rp.origin,
                require_user_verification=True,
            )
        except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError, KeyError) as exc:
            log.info("passkey registration refused for %s: %s", link.user, exc)
            raise StepUpRefused(
                "Your browser's answer could not be verified for this site. Nothing was "
                "registered; ask for a new link and try again."
            ) from None
        check_not_locked(session, link.user, "register a passkey")
        if self._has_passkey(link.user):
            raise StepUpRefused(ALREADY_ENROLLED)
        credential_id = bytes_to_base64url(verified.credential_id)
        taken = session.exec(
            select(PasskeyCredential).where(PasskeyCredential.credential_id == credential_id)
        ).first()
        if taken is not None:
            raise StepUpRefused("This passkey is already registered.")
        now = self.edges.clock.now()
        session.add(
            PasskeyCredential(
                user=link.user,
                credential_id=credential_id,
                public_key=bytes_to_base64url(verified.credential_public_key),
                sign_count=verified.sign_count,
                created_at=now,
            )
        )
        try:
            # The unique index on ``user`` decides between two registrations finished at the
            # same moment (each saw no passkey yet): the second waits for the first, then fails.
            session.flush()
        except IntegrityError:
            raise StepUpRefused(ALREADY_ENROLLED) from None
        append_event(
            session,
            at=now,
            actor=link.user,
            action=AuditAction.PASSKEY_REGISTERED,
            details={"credential": credential_id[:16]},
        )

    def _verify_assertion(
        self,
        session: Session,
        link: LinkState,
        challenge: bytes,
        rp: RelyingParty,
        credential: dict[str, Any],
    ) -> PasskeyCredential:
        try:
            presented_id = bytes_to_base64url(base64url_to_bytes(str(credential["rawId"])))
        except (KeyError, ValueError, TypeError):
            raise StepUpRefused("The browser's answer is incomplete; try again.") from None
        # Locked until the commit: of two answers with the same counter (an authenticator and
        # its clone, each on its own link) the second reads the counter the first moved.
        stored = session.exec(
            select(PasskeyCredential)
            .where(PasskeyCredential.credential_id == presented_id)
            .with_for_update()
        ).first()
        check_credential_owner(stored.user if stored else None, link.user)
        assert stored is not None
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.rp_id,
                expected_origin=rp.origin,
                credential_public_key=base64url_to_bytes(stored.public_key),
                # The counter rule is the domain's (check_sign_count, below), with its message.
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except (InvalidAuthenticationResponse, InvalidJSONStructure, ValueError, KeyError) as exc:
            log.info("passkey assertion refused for %s: %s", link.user, exc)
            raise StepUpRefused(
                "Your passkey's answer could not be verified for this page (wrong site, "
                "wrong challenge or a bad signature). The approval was not counted."
            ) from None
        check_sign_count(stored.sign_count, verified.new_sign_count)
        stored.sign_count = verified.new_sign_count
        stored.last_used_at = self.edges.clock.now()
        return stored

    def _announce_enrolment(self, user: str) -> None:
        """Out loud, after the commit: a passkey registered by someone holding the user's Slack
        session (the threat step-up answers) is then seen by the user and the audit channel."""
        try:
            self.edges.notifier.audit(
                None,
                AuditAction.PASSKEY_REGISTERED,
                f"passkey registered for <@{user}>",
                alert=True,
            )
            self.edges.notifier.tell(
                user,
                "A passkey was registered for you on debug-access; approvals that need one "
                "will ask for it. If this was not you, tell the debug-access admins now.",
            )
        except Exception:  # the enrolment stands; Slack being down must not undo it
            log.exception("could not announce the passkey registration of %s", user)

    @staticmethod
    def _spend(session: Session, row: StepUpLink, now: datetime) -> None:
        """Mark the link used, once: a guarded UPDATE, so that of two answers posted at the
        same moment (SQLite has no row lock) only one counts."""
        spent = session.exec(
            update(StepUpLink)
            .where(col(StepUpLink.id) == row.id, col(StepUpLink.used_at).is_(None))
            .values(used_at=now)
        )
        if spent.rowcount != 1:
            raise StepUpRefused("This link was already used. Each link works once.")

    def _record_refusal(self, link_id: int, link: LinkState, reason: str) -> str:
        """Count a refused answer on the link and audit it; the ``MAX_REFUSALS``-th spends the
        link, so each link writes at most that many events. The count is one guarded UPDATE
        (its row lock orders racing refusals on PostgreSQL), and a link already spent, by a
        success or by this rule, is not counted or audited again. Returns the page's text."""
        now = self.edges.clock.now()
        unspent = (col(StepUpLink.id) == link_id, col(StepUpLink.used_at).is_(None))
        with transaction(self.edges.engine) as session:
            counted = session.exec(
                update(StepUpLink)
                .where(*unspent)
                .values(refusals=StepUpLink.refusals + 1)
                .returning(col(StepUpLink.refusals))
            ).first()
            if counted is None:
                return reason
            spent = int(counted[0]) >= MAX_REFUSALS
            details: dict[str, Any] = {"reason": reason[:200]}
            if spent:
                session.exec(update(StepUpLink).where(*unspent).values(used_at=now))
                details["link_spent"] = f"after {MAX_REFUSALS} refusals"
            append_event(
                session,
                at=now,
                actor=link.user,
                action=AuditAction.STEP_UP_REFUSED,
                request_id=link.request_id,
                details=details,
            )
        if spent:
            log.warning(
                "step-up link %s of %s spent after %s refusals", link_id, link.user, MAX_REFUSALS
            )
        return refused_text(reason, spent)

    def _check(self, row: StepUpLink | None) -> LinkState:
        now = self.edges.clock.now()
        if row is None:
            return check_link(None, LinkPurpose.ENROL, now)  # raises: not a link of ours
        link = LinkState(
            purpose=LinkPurpose(row.purpose),
            user=row.user,
            request_id=row.request_id,
            expires_at=utc(row.expires_at),
            used_at=row.used_at,
        )
        request = None
        if link.purpose is LinkPurpose.APPROVE and link.request_id is not None:
            view = self.views.get(link.request_id)
            pending = view.status is RequestStatus.PENDING and (
                view.pending_until is None or view.pending_until > now
            )
            request = RequestState(pending=pending, decided_by_user=link.user in view.approved_by)
        return check_link(link, link.purpose, now, request)

    def _link_row(self, session: Session, token: str, lock: bool = False) -> StepUpLink | None:
        query = select(StepUpLink).where(StepUpLink.token_hash == token_hash(token))
        if lock:
            query = query.with_for_update()
        return session.exec(query).first()

    def _new_link(
        self,
        user: str,
        purpose: LinkPurpose,
        request_id: int | None,
        audit: bool = False,
        payload: dict[str, Any] | None = None,
    ) -> str:
        self._relying_party()  # refuse early when the page has no address
        token = new_link_token()
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            session.add(
                StepUpLink(
                    token_hash=token_hash(token),
                    purpose=purpose.value,
                    user=user,
                    request_id=request_id,
                    challenge=bytes_to_base64url(secrets.token_bytes(32)),
                    created_at=now,
                    expires_at=now + self.settings.link_ttl,
                    payload=json.dumps(payload) if payload is not None else None,
                )
            )
            if audit:
                view = self.views.get(request_id) if request_id is not None else None
                append_event(
                    session,
                    at=now,
                    actor=user,
                    action=AuditAction.STEP_UP_REQUESTED,
                    request_id=request_id,
                    resource=view.resource if view else (payload or {}).get("resource"),
                    details={"step_up": "passkey", "for": purpose.value},
                )
        return token

    def _enrolment_text(self, user: str) -> str:
        if self._has_passkey(user):
            raise Conflict(ALREADY_ENROLLED)
        token = self._new_link(user, LinkPurpose.ENROL, None)
        return (
            f"Register your passkey here: <{link_url(self._public_url(), token)}|register a "
            f"passkey> (the link is yours alone, works once and for {self._ttl_text()})."
        )

    def _has_passkey(self, user: str) -> bool:
        with Session(self.edges.engine) as session:
            found = session.exec(
                select(col(PasskeyCredential.id)).where(PasskeyCredential.user == user)
            ).first()
        return found is not None

    def _ttl_text(self) -> str:
        return format_duration(self.settings.link_ttl)

    def _public_url(self) -> str:
        if self.settings.public_url is None:
            raise NotAllowed(
                "Passkey step-up is not set up on this bot (PUBLIC_URL is missing); "
                "tell its operators."
            )
        return self.settings.public_url

    def _relying_party(self) -> RelyingParty:
        return RelyingParty.from_public_url(self._public_url())


def _payload(row: StepUpLink | None) -> dict[str, Any]:
    assert row is not None and row.payload is not None
    loaded = json.loads(row.payload)
    assert isinstance(loaded, dict)
    return loaded


def _definition_list(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in rows
    )
    return f"<dl>{cells}</dl>"


def break_glass_summary(asked: dict[str, Any], requester: str) -> str:
    """What the requester is about to take without approval, every value HTML-escaped."""
    return _definition_list(
        [
            ("Break-glass access to", str(asked["resource"])),
            ("For", format_duration(timedelta(seconds=int(asked["duration_seconds"])))),
            ("Reason", str(asked["reason"])),
            ("Requested by", requester),
        ]
    )


def approval_summary(view: RequestView, approver: str) -> str:
    """Exactly what the approver is approving, every value HTML-escaped (the reason is free
    text from the requester: it must not become markup on the bot's origin)."""
    rows = [
        ("Request", f"#{view.id}"),
        ("Requested by", view.requester),
        ("Resource", view.resource),
        ("For", format_duration(view.duration)),
        ("Reason", view.reason),
        ("Approving as", approver),
    ]
    return _definition_list(rows)
