"""The command line's decisions, for when Slack is down: ``requests``, ``approve``, ``deny``,
``revoke``, ``lock`` and ``unlock``, each acting as the admin named by ``--as USER_ID`` (or
``$DEBUG_ACCESS_ADMIN``).

A thin edge: parse, call the running bot's lifecycle (``bot.runtime.attach_lifecycle``: its
database and Vault token, no timers of its own), print what happened. The rules are the
lifecycle's with ``via=Via.CLI`` (``bot.domain.permissions``): the identity must be an admin
and, to approve or deny, an approver of the resource who is not the requester; to revoke, an
admin may end any grant. Who may run this is whoever has the bot's environment: that shell is
the trust boundary, which is why no passkey is asked for, and every action is audited
``via: cli``.

A new admin command is a handler ``(attached, args) -> exit code`` and a few lines in
``add_commands`` (``_admin_command`` gives it ``--as``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bot.domain.durations import format_duration
from bot.domain.identifiers import MAX_ROW_ID, SLACK_USER_ID
from bot.domain.permissions import check_may_use_command_line
from bot.domain.requests import RequestStatus
from bot.domain.text import one_line
from bot.errors import ConfigProblem

if TYPE_CHECKING:
    from bot.ports import RequestView
    from bot.runtime import Attached

#: Where ``--as`` is read from when it is not given.
ADMIN_ENV = "DEBUG_ACCESS_ADMIN"
#: Exit status when the action was taken but did not end as asked (credentials not delivered,
#: a revocation Vault has not confirmed yet). Refusals and mistakes exit 2, as everywhere.
NOT_AS_ASKED = 1

Handler = Callable[["Attached", argparse.Namespace], int]

_RULES = """\
who may: the identity (--as, or $DEBUG_ACCESS_ADMIN) must be in the policy's `admins` (by user
id; a user group needs Slack to answer). approve/deny: it must also be an approver of the
resource who is not the requester, as in Slack. revoke: an admin may end any grant. The shell
with the bot's environment (its Vault token and database) is the trust boundary, so no passkey
is asked for; every action is audited via: cli. Slack is told at once, or by the running bot
once Slack answers again. Exit 0 done, 1 done but not as asked (see the message), 2 refused or
a mistake (nothing changed)."""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin commands to the ``debug-access`` parser."""
    listing = _admin_command(
        sub, "requests", "list pending requests and active grants (Slack down)", cmd_requests
    )
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every request, newest first")
    which.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in RequestStatus],
        help="only these statuses (repeatable; default: the open ones)",
    )
    listing.add_argument("--limit", type=int, default=200, help="at most this many (200)")
    listing.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    for name, what, handler in (
        ("approve", "approve request ID as the admin (Slack down)", cmd_approve),
        ("deny", "deny request ID as the admin (Slack down)", cmd_deny),
        ("revoke", "end the grant of request ID now as the admin (Slack down)", cmd_revoke),
    ):
        _admin_command(sub, name, what, handler).add_argument(
            "request_id", type=_request_id, metavar="ID"
        )
    lock = _admin_command(
        sub, "lock", "lock USER: revoke all their access, refuse anything new", cmd_lock
    )
    lock.add_argument("user", type=_user_id, metavar="USER_ID")
    lock.add_argument("reason", nargs="+", help="why (audited, in every digest until unlocked)")
    _admin_command(sub, "unlock", "lift USER's lock", cmd_unlock).add_argument(
        "user", type=_user_id, metavar="USER_ID"
    )
    _admin_command(
        sub, "passkey-reset", "remove USER's passkey (lost): they register a new one", cmd_reset
    ).add_argument("user", type=_user_id, metavar="USER_ID")


def _admin_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    what: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=what,
        description=f"{what[0].upper()}{what[1:]}.\n\n{_RULES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER_ID",
        default=os.environ.get(ADMIN_ENV),
        help=f"the admin's Slack user id (default: ${ADMIN_ENV})",
    )
    parser.set_defaults(func=lambda args: _run(handler, args))
    return parser


def _request_id(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"not a request id: {one_line(text)!s}")
    return value


def _user_id(text: str) -> str:
    if not SLACK_USER_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a Slack user id (U… or W…): {one_line(text)!s}")
    return text


def _run(handler: Handler, args: argparse.Namespace) -> int:
    actor = args.actor
    if not actor:
        raise ConfigProblem(f"name the admin you act as: --as USER_ID (or ${ADMIN_ENV})")
    if not SLACK_USER_ID.fullmatch(actor):
        raise ConfigProblem(f"--as {one_line(actor)}: not a Slack user id (U… or W…)")
    with _attached(actor) as attached:
        lifecycle = attached.lifecycle
        check_may_use_command_line(actor, lifecycle.edges.is_admin(actor))
        return handler(attached, args)


@contextmanager
def _attached(actor: str) -> Iterator[Attached]:
    from bot.configuration import load_configuration
    from bot.logs import configure_logging
    from bot.runtime import attach_lifecycle

    settings, policy = load_configuration()
    # Warnings and errors only (Slack refusing is one): the command prints its own outcome.
    configure_logging("WARNING", settings.log_format)
    attached = attach_lifecycle(settings, policy, actor)
    try:
        yield attached
    finally:
        attached.close()


# -- the commands ---------------------------------------------------------------------------------


def cmd_requests(attached: Attached, args: argparse.Namespace) -> int:
    """Pending requests and active grants (or ``--status``/``--all``), one line each."""
    if args.all:
        statuses = None
    elif args.status:
        statuses = [RequestStatus(s) for s in args.status]
    else:
        statuses = [s for s in RequestStatus if s.is_open]
    views = attached.lifecycle.listing(statuses, limit=max(1, args.limit))
    if args.json:
        print(json.dumps([_as_json(v) for v in views], indent=2))  # noqa: T201
        return 0
    if not views:
        print("no requests")  # noqa: T201
    for view in views:
        print(request_line(view))  # noqa: T201
    return 0


def cmd_approve(attached: Attached, args: argparse.Namespace) -> int:
    return _decide(attached, args.request_id, args.actor, approve=True)


def cmd_deny(attached: Attached, args: argparse.Namespace) -> int:
    return _decide(attached, args.request_id, args.actor, approve=False)


def _decide(attached: Attached, request_id: int, actor: str, approve: bool) -> int:
    from bot.lifecycle import Via

    view = attached.lifecycle.decide(request_id, actor, approve, via=Via.CLI)
    code = 0
    if not approve:
        _say(f"request #{view.id} denied by {actor} via CLI; nothing was issued")
    elif view.status is RequestStatus.PENDING:
        _say(
            f"request #{view.id}: approval by {actor} recorded "
            f"({len(view.approved_by)} of {view.approvals_required}); it still waits for "
            "another approver"
        )
    elif view.status is RequestStatus.ACTIVE:
        expires = f", expires {view.expires_at:%Y-%m-%d %H:%M UTC}" if view.expires_at else ""
        what = "extended" if view.is_extension else "issued"
        _say(
            f"request #{view.id} approved by {actor} via CLI: credentials {what} and "
            f"delivered to {view.requester} by Slack DM{expires}"
        )
    elif view.status is RequestStatus.FAILED:
        code = NOT_AS_ASKED
        view = attached.lifecycle.get(view.id)  # after the clean-up, not as it failed
        if view.ended_at is not None:
            aftermath = "Vault confirmed the grant is revoked"
        elif view.end_reason is not None:
            aftermath = "the grant is being revoked; the bot retries until Vault confirms"
        else:
            aftermath = "no grant was recorded"
        _say(
            f"request #{view.id} approved by {actor} via CLI, but it failed: "
            f"{one_line(view.failure or 'unknown')}; {aftermath}. The requester is told by "
            "Slack DM (now, or when Slack answers)"
        )
    else:
        _say(f"request #{view.id} approved by {actor} via CLI; it is {view.status.label}")
    _say_slack(attached)
    return code


def cmd_revoke(attached: Attached, args: argparse.Namespace) -> int:
    from bot.lifecycle import Via

    view = attached.lifecycle.revoke_early(args.request_id, args.actor, via=Via.CLI)
    code = 0
    if view.status is RequestStatus.ENDED:
        _say(
            f"request #{view.id}: grant revoked by {args.actor} via CLI; Vault confirmed the "
            "credentials are gone"
        )
    elif view.status is RequestStatus.WITHDRAWN:
        _say(f"request #{view.id} withdrawn by {args.actor} via CLI")
    else:
        code = NOT_AS_ASKED
        _say(
            f"request #{view.id}: revocation started by {args.actor} via CLI but Vault has not "
            f"confirmed it ({view.status.label}); the bot retries until it does"
        )
    _say_slack(attached)
    return code


def cmd_lock(attached: Attached, args: argparse.Namespace) -> int:
    from bot.lifecycle import Via
    from bot.lifecycle.lock import lock_text

    report = attached.lifecycle.lock_user(args.user, args.actor, " ".join(args.reason), Via.CLI)
    _say(plain(lock_text(report)))
    _say_slack(attached)
    return NOT_AS_ASKED if report.still_revoking or report.in_delivery else 0


def cmd_unlock(attached: Attached, args: argparse.Namespace) -> int:
    from bot.lifecycle import Via

    attached.lifecycle.unlock_user(args.user, args.actor, Via.CLI)
    _say(f"{args.user} is unlocked by {args.actor} via CLI: they may ask and approve again")
    _say_slack(attached)
    return 0


def cmd_reset(attached: Attached, args: argparse.Namespace) -> int:
    from bot.lifecycle import Via

    removed = attached.lifecycle.reset_passkey(args.user, args.actor, Via.CLI)
    _say(f"{args.user}: {removed} passkey(s) removed by {args.actor} via CLI")
    _say_slack(attached)
    return 0


# -- printing -------------------------------------------------------------------------------------

_MENTION = re.compile(r"<@([A-Z0-9]+)>")


def plain(text: str) -> str:
    """A message written for Slack, for a terminal: ``<@U1>`` as ``U1``, on one line."""
    return one_line(_MENTION.sub(r"\1", text))


def _say(text: str) -> None:
    print(one_line(text))  # noqa: T201


def _say_slack(attached: Attached) -> None:
    queued = attached.outbox.queued
    if not queued:
        return
    kinds = ", ".join(f"{queued.count(k)} {k}" for k in dict.fromkeys(queued))
    print(  # noqa: T201
        f"Slack did not answer: {len(queued)} message(s) queued ({kinds}); the running bot "
        "sends them as soon as Slack takes them",
        file=sys.stderr,
    )


def request_line(view: RequestView) -> str:
    """One request on one line; the reason is the requester's text, so it is escaped."""
    if view.status is RequestStatus.PENDING:
        timing = f"asks {format_duration(view.duration)}"
    elif view.expires_at is not None:
        timing = f"until {view.expires_at:%Y-%m-%d %H:%M UTC}"
    else:
        timing = format_duration(view.duration)
    kind = "extension" if view.is_extension else ("break-glass" if view.break_glass else "access")
    fields = [f"#{view.id}", view.status.value, view.requester, view.resource, timing, kind]
    return "  ".join(one_line(field) for field in fields) + f'  reason: "{one_line(view.reason)}"'


def _as_json(view: RequestView) -> dict[str, object]:
    return {
        "id": view.id,
        "status": view.status.value,
        "kind": view.kind,
        "break_glass": view.break_glass,
        "requester": view.requester,
        "resource": view.resource,
        "duration_seconds": int(view.duration.total_seconds()),
        "reason": view.reason,
        "created_at": view.created_at.isoformat(),
        "expires_at": view.expires_at.isoformat() if view.expires_at else None,
        "decided_by": view.decided_by,
        "approved_by": list(view.approved_by),
        "approvers": list(view.approvers),
    }
