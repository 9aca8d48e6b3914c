"""Passkey step-up links: the rules, without Slack, the database or WebAuthn.

A step-up link is a bearer secret the bot sends to one Slack user (an approver confirming an
approval, or anyone enrolling a passkey). Only its SHA-256 hash is stored, so a database dump
holds no usable link. A link is good once, for a short time, for the purpose it was made for;
an approval link is also only good while its request is still waiting for that approver. Each
refusal says in plain words what happened and what to do, because the person reading it is on
a small web page, not in Slack.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

#: How long a link works when the settings do not say otherwise: long enough to find the laptop
#: with the passkey, short enough that a forwarded or leaked link is soon worthless.
DEFAULT_LINK_TTL = timedelta(minutes=15)
#: Where the page lives under PUBLIC_URL.
PAGE_PATH = "/passkey"


class LinkPurpose(enum.StrEnum):
    ENROL = "enrol"
    APPROVE = "approve"
    #: A requester confirming their own break-glass request before it is created and issued.
    BREAK_GLASS = "break_glass"


class StepUpRefused(Exception):
    """A link or an assertion that does not count; ``str(exc)`` is safe to show the holder
    (never the token, never key material)."""


def new_link_token() -> str:
    """A fresh link token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a link token (hex SHA-256): enough to find the link, useless
    to whoever reads it."""
    return hashlib.sha256(token.encode()).hexdigest()


def link_url(public_url: str, token: str) -> str:
    """The address of the page for ``token``. The token travels in the fragment, which browsers
    never send to a server: it stays out of access logs, proxies and Referer headers, and the
    page's script posts it in a request body."""
    return f"{public_url.rstrip('/')}{PAGE_PATH}#{token}"


@dataclass(frozen=True)
class RelyingParty:
    """Who the passkeys are bound to: the page's origin and its host as the WebAuthn RP id."""

    origin: str
    rp_id: str

    @classmethod
    def from_public_url(cls, public_url: str) -> RelyingParty:
        parts = urlsplit(public_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{public_url!r} is not an http(s) URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # The link is PUBLIC_URL + /passkey#token and the page's script posts to /passkey/...
            raise ValueError("must be an origin (scheme, host and port), with no path or query")
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1"):
            # Browsers offer WebAuthn only in a secure context.
            raise ValueError("must be https:// (plain http works only for localhost)")
        return cls(origin=f"{parts.scheme}://{parts.netloc}", rp_id=parts.hostname)


#: Passkey answers a link may have refused before it is spent: enough for a person fumbling with
#: the wrong authenticator, few enough that a link cannot be used to flood the audit trail.
MAX_REFUSALS = 5


def refused_text(reason: str, spent: bool) -> str:
    """What the page says of a refused passkey answer; the last one allowed also says the link
    is spent now."""
    if not spent:
        return reason
    return (
        f"{reason} This link no longer works after {MAX_REFUSALS} refused attempts: click the "
        "button in Slack again for a new one."
    )


@dataclass(frozen=True)
class LinkState:
    """What a stored link says about itself."""

    purpose: LinkPurpose
    user: str
    request_id: int | None
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class RequestState:
    """What an approval link needs to know of its request at the moment it is used."""

    pending: bool
    decided_by_user: bool


def check_link(
    link: LinkState | None,
    purpose: LinkPurpose,
    now: datetime,
    request: RequestState | None = None,
) -> LinkState:
    """The link if it may be used now for ``purpose``; otherwise StepUpRefused saying why."""
    if link is None or link.purpose is not purpose:
        raise StepUpRefused(
            "This link is not valid. Use the newest link the bot sent you in Slack."
        )
    if link.used_at is not None:
        raise StepUpRefused(
            "This link was already used. Each link works once: click the button in Slack "
            "again for a new one."
        )
    if link.expires_at <= now:
        raise StepUpRefused("This link has expired. Click the button in Slack again for a new one.")
    if purpose is LinkPurpose.APPROVE:
        if request is None or not request.pending:
            raise StepUpRefused(
                f"Request #{link.request_id} has already been decided (or has ended): "
                "there is nothing left to approve."
            )
        if request.decided_by_user:
            raise StepUpRefused(f"You already decided on request #{link.request_id}.")
    return link


def check_credential_owner(owner: str | None, link_user: str) -> None:
    """An approval counts only with a passkey of the person the link was made for: someone
    else holding the link (forwarded, leaked, shoulder-surfed) has no passkey of theirs."""
    if owner is None:
        raise StepUpRefused(
            "This passkey is not registered with debug-access. Register one from the bot's "
            "Home tab in Slack first."
        )
    if owner != link_user:
        raise StepUpRefused(
            "This passkey belongs to someone else. The link works only with the passkey of "
            "the approver it was sent to."
        )


def check_sign_count(stored: int, presented: int) -> None:
    """A cloned or replayed authenticator shows a counter that did not move forward. Counters
    that stay 0 are allowed: many synced passkeys do not count at all."""
    if (stored > 0 or presented > 0) and presented <= stored:
        raise StepUpRefused(
            "This passkey's signature counter went backwards, which is what a copied "
            "authenticator or a replayed answer looks like. The approval was not counted."
        )
