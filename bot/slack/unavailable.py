"""One answer for "not now": the database is unavailable, or the bot is shutting down.

Every Slack surface gets the same treatment, decided here and nowhere else, so the listeners stay
thin: they never catch ``StoreUnavailable``; ``guard`` (wrapped around every listener by
``bot.slack.listeners.register_all``) and the draining middleware (``bot.slack.drain``) call
``answer``:

* a slash command not yet acknowledged: the ack carries the message (ephemeral); once acked, its
  ``response_url`` does;
* a button in a message: its ``response_url`` (ephemeral); in the App Home (no response_url): a DM;
* a form not yet acknowledged: an error under its first field, so the form stays open with what
  was typed and the user can submit again; once acked (the form has closed): a DM;
* events (the App Home opening): nothing to say, the next opening redraws it.

Why inside the listener and not in Bolt's error handler: when a listener raises after ``ack()``,
Bolt resets the ack it has not sent yet, and a refused database connection fails within the
10 ms Bolt takes to notice the ack: Slack then got a 404 after 3 s instead of the ack (measured).
Answering must not fail the request a second time: a Slack error here is logged and dropped.

Too late is "not now" too: Slack gives a request 3 s to be acknowledged, then tells the user it
failed. A listener that only gets to run after ``ACK_DEADLINE`` (it waited for a thread) does
nothing at all, so a request the user saw fail is never carried out behind their back (and then
again when they retry).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, Args, BoltResponse, Respond
from slack_sdk import WebClient
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.slack.notifier import SLACK_FAILURES, error_code
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

STORE_UNAVAILABLE = (
    "debug-access cannot reach its database right now, so this did not go through. "
    "Please try again in a minute."
)
UNEXPECTED = (
    "debug-access hit an unexpected error while handling this, so it may not have gone through. "
    "Check the App Home, and try again in a minute."
)
SHUTTING_DOWN = (
    "debug-access is restarting, so this did not go through. Please try again in a minute."
)

#: The request context key holding when the request arrived (``time.monotonic()``), set by the
#: HTTP transport (``bot.server``).
RECEIVED_AT = "debug_access_received_at"
#: A listener that starts this many seconds after its request arrived is too late to ack it
#: (Slack waits 3 s) and does nothing.
ACK_DEADLINE = 2.5

#: Hands a step on to run after the ack (``bot.slack.drain.Drain.later``).
Later = Callable[[Callable[[], None]], None]


def kind(body: dict[str, Any]) -> str:
    """What Slack sent: ``command``, ``block_actions``, ``view_submission``, ``event_callback``."""
    if "command" in body:
        return "command"
    return str(body.get("type") or "unknown")


def _user(body: dict[str, Any]) -> str | None:
    user = body.get("user_id") or (body.get("user") or {}).get("id")
    return str(user) if user else None


def _first_input_block(body: dict[str, Any]) -> str | None:
    values = ((body.get("view") or {}).get("state") or {}).get("values") or {}
    return next(iter(values), None)


def answer(
    body: dict[str, Any],
    text: str,
    *,
    ack: Ack,
    respond: Respond | None,
    client: WebClient | None,
) -> BoltResponse | None:
    """Tell the person behind ``body`` that ``text``: in the ack when it has not been sent yet
    (returning it), else by ``respond`` or a DM."""
    what = kind(body)
    if ack.response is None:
        if what == "command":
            return ack(text=f":hourglass: {text}", response_type="ephemeral")
        block = _first_input_block(body) if what == "view_submission" else None
        if block is not None:
            return ack(response_action="errors", errors={block: text})
        acked = ack()
    else:
        acked = None
    if what in {"command", "block_actions", "view_submission"}:
        _tell(body, f":hourglass: {text}", respond, client)
    return acked


Handler = Callable[..., None]


def run_inline(step: Callable[[], None]) -> None:
    """A ``Later`` that runs the step at once, on the listener's thread."""
    step()


def guard(handler: Handler, later: Later = run_inline) -> Callable[[Args], None]:
    """``handler`` as a Bolt listener whose ``StoreUnavailable`` becomes ``answer``'s message,
    and whose other failures after the ack keep the ack and tell the user it went wrong.

    Bolt passes the listener the arguments its parameters name; the wrapper takes them all
    (``args``) and hands the handler the ones it asks for, plus ``later`` if it names it: the
    handler acks, then passes its slow work to ``later``, which runs it off the listener thread
    (``bot.slack.drain``) with the same treatment of failures."""
    wanted = list(inspect.signature(handler).parameters)

    def run(args: Args) -> None:
        received = (getattr(args, "context", None) or {}).get(RECEIVED_AT)
        waited = time.monotonic() - received if isinstance(received, float) else 0.0
        if waited > ACK_DEADLINE:
            log.warning(
                "a %s waited %.1fs for a listener thread: too late to acknowledge, not carried out",
                kind(args.body),
                waited,
            )
            return

        def follow_up(step: Callable[[], None]) -> None:
            later(_FollowUp(step, args))

        values = {name: follow_up if name == "later" else getattr(args, name) for name in wanted}
        _shielded(lambda: handler(**values), args)

    run.__name__ = run.__qualname__ = getattr(handler, "__name__", "listener")
    run.__doc__ = handler.__doc__
    return run


class _FollowUp:
    """A listener's step after its ack: run shielded, or, when the bot stops before it could
    start (``bot.slack.drain``), ``dropped``: the user hears "restarting, try again"."""

    def __init__(self, step: Callable[[], None], args: Args) -> None:
        self.step = step
        self.args = args

    def __call__(self) -> None:
        _shielded(self.step, self.args)

    def dropped(self) -> None:
        _tell(self.args.body, f":hourglass: {SHUTTING_DOWN}", self.args.respond, self.args.client)


def _shielded(step: Callable[[], None], args: Args) -> None:
    try:
        step()
    except (StoreUnavailable, PoolTimeout) as exc:  # no connection free: as good as down
        log.warning("%s while handling a %s", exc, kind(args.body))
        answer(args.body, STORE_UNAVAILABLE, ack=args.ack, respond=args.respond, client=args.client)
    except Exception as exc:
        if args.ack.response is None:
            raise  # not acked yet: Bolt's error handler logs it and answers 500
        # Acked already: raising would make Bolt drop the ack it has not sent yet (Slack
        # then shows the user a failure after 3 s), and a follow-up has nobody to raise to.
        # Keep the ack; say it went wrong.
        log.error(
            "unhandled %s after the ack of a %s: %s", type(exc).__name__, kind(args.body), exc
        )
        _tell(args.body, f":warning: {UNEXPECTED}", args.respond, args.client)


def _tell(
    body: dict[str, Any], text: str, respond: Respond | None, client: WebClient | None
) -> None:
    try:
        if body.get("response_url") and respond is not None:
            respond(text=text, response_type="ephemeral", replace_original=False)
            return
        user = _user(body)
        if user is None or client is None:
            return
        channel = client.conversations_open(users=user)["channel"]["id"]
        client.chat_postMessage(channel=channel, text=text)
    except SLACK_FAILURES as exc:
        log.error("could not tell %s that it did not go through: %s", _user(body), error_code(exc))
