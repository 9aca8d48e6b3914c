"""The App Home tab: published when a user opens it (and by the lifecycle on every change)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import App


def register(app: App, publish: Callable[[str], None]) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            publish(event["user"])
