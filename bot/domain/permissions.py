"""Who may decide on a request and who may end a grant.

The rules are few and absolute: the requester never approves their own request, only a listed
approver decides, and only the requester or an approver of the resource may end a grant early.

The command line (``debug-access approve|deny|revoke --as USER``, for when Slack is down) adds
one rule in front of these and relaxes none: the identity must be an admin of debug-access (the
policy's ``admins``). To approve or deny it must also be an approver of the resource who is not
the requester, exactly as in Slack; to revoke, being an admin is enough (ending access is the
safe direction in an incident), but a request still waiting is denied, not revoked.
"""

from __future__ import annotations

from collections.abc import Collection

from bot.domain.errors import NotAllowed


def check_may_decide(actor: str, requester: str, approvers: Collection[str]) -> None:
    """Raise NotAllowed unless ``actor`` may approve or deny ``requester``'s request."""
    if actor == requester:
        raise NotAllowed("You cannot approve or deny your own request.")
    if actor not in approvers:
        raise NotAllowed("Only the approvers of this resource can approve or deny this request.")


def check_may_use_command_line(actor: str, admin: bool) -> None:
    """Raise NotAllowed unless ``actor`` may act through the command line at all: only an admin,
    since the command line names its identity instead of proving it (the shell is the proof)."""
    if not admin:
        raise NotAllowed(
            f"{actor} is not an admin of debug-access (the policy's `admins`), so it cannot "
            "act from the command line."
        )


def check_may_end(
    actor: str, requester: str, approvers: Collection[str], admin: bool = False
) -> None:
    """Raise NotAllowed unless ``actor`` may revoke (or withdraw) this request early: the
    requester, an approver of the resource, or (``admin``) an admin on the command line."""
    if not admin and actor != requester and actor not in approvers:
        raise NotAllowed("Only the requester or an approver of this resource can revoke it.")


def eligible_approvers(requester: str, approvers: Collection[str]) -> list[str]:
    """The approvers who can act on a request: everyone listed except the requester."""
    return [user for user in dict.fromkeys(approvers) if user != requester]


def check_may_request(
    user: str, resource: str, allowed: Collection[str], user_groups: Collection[str]
) -> None:
    """Raise NotAllowed unless the resource is open to everyone (``allowed`` empty), or lists the
    user or one of the Slack user groups the user belongs to."""
    if not allowed or user in allowed or any(group in allowed for group in user_groups):
        return
    raise NotAllowed(
        f"You are not among the people who may ask for `{resource}`. Its owners "
        "decide who may (the policy's `requesters`)."
    )
