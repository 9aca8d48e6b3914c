"""Bolt listeners, one module per Slack surface. Each is thin: ack, parse, call the lifecycle,
render. Rules live in ``bot.domain``; effects in ``bot.lifecycle``. Every listener is
registered through ``_Guarded``, so a database outage gets one answer everywhere
(``bot.slack.unavailable``)."""

from collections.abc import Callable
from typing import Any, cast

from slack_bolt import App

from bot.lifecycle import AccessLifecycle
from bot.slack.home import HomePublisher
from bot.slack.listeners import actions, commands, home, views
from bot.slack.unavailable import guard


class _Guarded:
    """The app as the listener modules see it: ``app.command(...)``, ``app.action(...)`` and
    the like register the decorated handler wrapped by ``guard``."""

    def __init__(self, app: App) -> None:
        self._app = app

    def __getattr__(self, name: str) -> Callable[..., Callable[[Callable[..., None]], Any]]:
        register = getattr(self._app, name)

        def listener(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Any]:
            decorate = register(*args, **kwargs)
            return lambda handler: decorate(guard(handler))

        return listener


def register_all(app: App, lifecycle: AccessLifecycle, publish_home: HomePublisher) -> None:
    guarded = cast(App, _Guarded(app))
    commands.register(guarded, lifecycle)
    actions.register(guarded, lifecycle)
    views.register(guarded, lifecycle, publish_home)
    home.register(guarded, publish_home)
