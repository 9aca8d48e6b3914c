"""Process configuration from the environment (and ``.env`` when present).

Secrets are ``SecretStr`` so that printing the settings, or an exception that holds them, shows
``**********``. The names mirror ``.env.example``; that file is the operator's reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain.step_up import RelyingParty

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
#: Where Kubernetes mounts a pod's service-account token (projected volume).
KUBERNETES_SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

VaultAuthMethod = Literal["token", "approle", "kubernetes", "jwt"]


class DatabaseSettings(BaseSettings):
    """What the audit commands need: only the database (no Slack or Vault secrets)."""

    # An empty variable (``VAULT_TOKEN=`` as in .env.example) counts as unset.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    database_url: str = "sqlite:///debug-access.db"

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        """``postgres://`` and ``postgresql://`` (as Heroku, RDS and most tools write them)
        mean PostgreSQL through psycopg 3, the driver the bot ships with."""
        for scheme in ("postgres://", "postgresql://"):
            if value.startswith(scheme):
                return "postgresql+psycopg://" + value[len(scheme) :]
        return value


def _real_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value().strip()
    if not raw or raw.startswith("changeme") or raw in {"xoxb-...", "..."}:
        raise ValueError("is empty or still the placeholder from .env.example")
    return value


class VaultLoginSettings(BaseSettings):
    """Where Vault is and how the bot logs in (see ``bot.vault_login``)."""

    # An empty variable (``VAULT_TOKEN=`` as in .env.example) counts as unset.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    vault_addr: str = "http://127.0.0.1:8200"
    vault_namespace: str | None = None
    #: A CA bundle (PEM) to verify Vault's TLS certificate with; default: the system's.
    vault_cacert: Path | None = None
    #: How the bot logs in. Unset: ``approle`` when VAULT_ROLE_ID is set, else ``token``.
    vault_auth_method: VaultAuthMethod | None = None
    vault_token: SecretStr | None = None
    #: A token file (as Vault Agent writes it), re-read whenever it changes.
    vault_token_file: Path | None = None
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_secret_id_file: Path | None = None
    #: The role to log in as with ``kubernetes`` or ``jwt``.
    vault_auth_role: str | None = None
    #: Where the auth method is mounted; default: the method's name (``approle``, ``jwt``...).
    vault_auth_mount: str | None = None
    #: The service-account token presented by ``kubernetes`` and ``jwt``.
    vault_jwt_file: Path = KUBERNETES_SA_TOKEN
    #: Seconds each Vault call may take (to connect, and again to answer): a hung Vault costs
    #: this, then the call fails and the bot says so.
    vault_timeout: float = Field(default=5.0, gt=0, le=300)

    @field_validator("vault_token", "vault_secret_id")
    @classmethod
    def _vault_secret_not_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _real_secret(value)

    @model_validator(mode="after")
    def _one_complete_vault_login(self) -> VaultLoginSettings:
        method = self.vault_login_method
        if (
            self.vault_auth_method is None
            and self.vault_role_id
            and (self.vault_token is not None or self.vault_token_file is not None)
        ):
            raise ValueError(
                "both a Vault token and VAULT_ROLE_ID are set: choose the log-in "
                "with VAULT_AUTH_METHOD=token or VAULT_AUTH_METHOD=approle"
            )
        if method == "token" and (self.vault_token is None) == (self.vault_token_file is None):
            raise ValueError(
                "the token log-in needs exactly one of VAULT_TOKEN or VAULT_TOKEN_FILE"
            )
        if method == "approle" and (
            not self.vault_role_id
            or (self.vault_secret_id is None) == (self.vault_secret_id_file is None)
        ):
            raise ValueError(
                "the approle log-in needs VAULT_ROLE_ID and exactly one of "
                "VAULT_SECRET_ID or VAULT_SECRET_ID_FILE"
            )
        if method in ("kubernetes", "jwt") and not self.vault_auth_role:
            raise ValueError(f"the {method} log-in needs VAULT_AUTH_ROLE (the role to log in as)")
        return self

    @property
    def vault_login_method(self) -> VaultAuthMethod:
        """The method asked for, or the one that what is set implies."""
        if self.vault_auth_method is not None:
            return self.vault_auth_method
        return "approle" if self.vault_role_id else "token"


class Settings(DatabaseSettings, VaultLoginSettings):
    """Everything the bot reads from its environment."""

    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr
    slack_app_token: SecretStr | None = None
    slack_api_url: str = SLACK_DEFAULT_API_URL
    port: int = Field(default=3000, ge=1, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on all interfaces

    pagerduty_token: SecretStr | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"

    debug_access_policy: Path = Path("policy.yml")
    log_level: str = "INFO"
    #: ``text`` (one line a record) or ``json`` (one object a line, with ``request_id`` /
    #: ``grant_id`` where known), for log pipelines that parse fields.
    log_format: Literal["text", "json"] = "text"
    #: How often each replica looks for due work (expiries, retries, escalations): a grant
    #: ends at most this long after its expiry, plus the time its revocation takes.
    timer_tick_seconds: float = Field(default=1.0, ge=0.1, le=60)
    #: How many due rows (expiries, revocation retries...) each replica works on at once: also
    #: the most revocations it has in flight toward Vault. One on SQLite (a single writer).
    timer_workers: int = Field(default=8, ge=1, le=64)

    #: Where approvers' browsers reach the bot's passkey page (``https://host[:port]``, no
    #: path): its host is the WebAuthn RP id, so passkeys work on this origin only. Needed
    #: when the policy asks for ``step_up: passkey``.
    public_url: str | None = None
    #: How long a passkey link (enrolment or approval) works, in seconds.
    step_up_link_ttl_seconds: float = Field(default=900, ge=1, le=86400)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        RelyingParty.from_public_url(value)  # ValueError says what is wrong
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # WebClient joins method names with urljoin: without the slash the last segment is lost.
        return value if value.endswith("/") else value + "/"

    @field_validator("slack_bot_token", "slack_signing_secret")
    @classmethod
    def _slack_secret_not_placeholder(cls, value: SecretStr) -> SecretStr:
        return _real_secret(value)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())
