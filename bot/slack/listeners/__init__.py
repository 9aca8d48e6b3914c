"""Bolt listeners, one module per Slack surface. Each is thin: ack, parse, call the lifecycle,
render; what follows the ack goes to ``later``, so the listener thread is free for the next
ack at once (``bot.slack.drain``). Rules live in ``bot.domain``; effects in ``bot.lifecycle``.
Every listener is registered through ``_Guarded``, so a database outage gets one answer
everywhere (``bot.slack.unavailable``)."""

from collections.abc import Callable
from typing import Any, cast

from slack_bolt import App

from bot.lifecycle import AccessLifecycle
from bot.slack.listeners import actions, commands, home, views
from bot.slack.unavailable import Later, guard, run_inline


class _Guarded:
    """The app as the listener modules see it: ``app.command(...)``, ``app.action(...)`` and
    the like register the decorated handler wrapped by ``guard``, its ``later`` running on
    ``later``."""

    def __init__(self, app: App, later: Later = run_inline) -> None:
        self._app = app
        self._later = later

    def __getattr__(self, name: str) -> Callable[..., Callable[[Callable[..., None]], Any]]:
        register = getattr(self._app, name)

        def listener(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Any]:
            decorate = register(*args, **kwargs)
            return lambda handler: decorate(guard(handler, self._later))

        return listener


def register_all(
    app: App, lifecycle: AccessLifecycle, publish_home: Callable[[str], None], later: Later
) -> None:
    guarded = cast(App, _Guarded(app, later))
    commands.register(guarded, lifecycle)
    actions.register(guarded, lifecycle)
    views.register(guarded, lifecycle, publish_home)
    home.register(guarded, publish_home)
