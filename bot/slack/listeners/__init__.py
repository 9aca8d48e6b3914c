"""Bolt listeners, one module per Slack surface. Each is thin: ack, parse, call the lifecycle,
render. Rules live in ``bot.domain``; effects in ``bot.lifecycle``."""

from slack_bolt import App

from bot.lifecycle import AccessLifecycle
from bot.slack.home import HomePublisher
from bot.slack.listeners import actions, commands, home, views


def register_all(app: App, lifecycle: AccessLifecycle, publish_home: HomePublisher) -> None:
    commands.register(app, lifecycle)
    actions.register(app, lifecycle)
    views.register(app, lifecycle, publish_home)
    home.register(app, publish_home)
