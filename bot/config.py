"""Process configuration from the environment (and ``.env`` when present).

Secrets are ``SecretStr`` so that printing the settings, or an exception that holds them, shows
``**********``. The names mirror ``.env.example``; that file is the operator's reference.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SLACK_DEFAULT_API_URL = "https://slack.com/api/"


class DatabaseSettings(BaseSettings):
    """What the audit commands need: only the database (no Slack or Vault secrets)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///debug-access.db"


class Settings(DatabaseSettings):
    """Everything the bot reads from its environment."""

    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr
    slack_app_token: SecretStr | None = None
    slack_api_url: str = SLACK_DEFAULT_API_URL
    port: int = Field(default=3000, ge=1, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on all interfaces

    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr
    vault_namespace: str | None = None

    pagerduty_token: SecretStr | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"

    debug_access_policy: Path = Path("policy.yml")
    log_level: str = "INFO"

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # WebClient joins method names with urljoin: without the slash the last segment is lost.
        return value if value.endswith("/") else value + "/"

    @field_validator("slack_bot_token", "slack_signing_secret", "vault_token")
    @classmethod
    def _not_placeholder(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if not raw or raw.startswith("changeme") or raw in {"xoxb-...", "..."}:
            raise ValueError("is empty or still the placeholder from .env.example")
        return value

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())
