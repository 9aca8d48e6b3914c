"""The App Home tab: published when a user opens it (and by the lifecycle on every change)."""

from __future__ import annotations

from typing import Any

from slack_bolt import App

from bot.slack.home import HomePublisher


def register(app: App, publish: HomePublisher) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            publish(event["user"])
