"""The policy file: which resources exist, how long access may last, who approves, where to post.

Loaded and validated once at start. An invalid file stops the bot with a message that names the
file, the key and the problem (``policy.yml: resources.payments-db.max_duration: ...``), because
a half-understood access policy is worse than no bot at all.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.digest_schedule import DigestConfig
from bot.domain.commands import SUBCOMMANDS
from bot.domain.durations import (
    MAXIMUM_GRANT,
    MINIMUM_GRANT,
    DurationError,
    format_duration,
    parse_duration,
)
from bot.domain.identifiers import (
    POLICY_NAME,
    SLACK_CHANNEL_ID,
    SLACK_USER_ID,
    SLACK_USERGROUP_ID,
)
from bot.oncall.config import (
    RotationConfig,
    check_approver_entry,
    check_rotation_names,
    undefined_rotations,
)

RESOURCE_NAME = POLICY_NAME
VAULT_POLICY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class PolicyError(Exception):
    """The policy file cannot be used. The message names the file, the key and the problem."""


def _to_timedelta(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    if isinstance(value, timedelta):
        return value
    # Numbers (7200, 7200.0) and booleans would be read as seconds: refuse rather than guess.
    raise ValueError("write durations with a unit, like 30m or 2h")


Duration = Annotated[timedelta, BeforeValidator(_to_timedelta)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channels(_Strict):
    """Where the bot posts. Both are optional: without them, approvals go by DM only and the
    audit trail is kept in the database only."""

    approvals: str | None = None
    audit: str | None = None

    @field_validator("approvals", "audit")
    @classmethod
    def _channel_id(cls, value: str | None) -> str | None:
        if value is not None and not SLACK_CHANNEL_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slack channel id (like C0123ABCD)")
        return value


class BreakGlass(_Strict):
    """Emergency access without approval: announced loudly, reviewed afterwards."""

    max_duration: Duration


class Resource(_Strict):
    """One thing people can ask access to: a leased Vault path, or a token with Vault policies."""

    description: str = ""
    vault_path: str | None = None
    vault_policies: tuple[str, ...] = ()
    default_duration: Duration | None = None
    max_duration: Duration
    approvers: tuple[str, ...] = Field(min_length=1)
    approvals_required: int = Field(default=1, ge=1, le=10)
    escalate_after: Duration | None = None
    pending_ttl: Duration = timedelta(hours=1)
    requesters: tuple[str, ...] = ()
    break_glass: BreakGlass | None = None

    @field_validator("requesters")
    @classmethod
    def _requesters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not (SLACK_USER_ID.fullmatch(entry) or SLACK_USERGROUP_ID.fullmatch(entry)):
                raise ValueError(
                    f"{entry!r} is neither a Slack user id nor a user group id (like S0123ABCD)"
                )
        return value

    @field_validator("vault_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        cleaned = value.strip().strip("/")
        if not cleaned or any(c in cleaned for c in "*+ \"'\n") or ".." in cleaned:
            raise ValueError("must be a plain Vault path such as database/creds/payments-readonly")
        return cleaned

    @field_validator("vault_policies")
    @classmethod
    def _policies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            # `default` carries renew-self: a holder could extend their own access.
            if not VAULT_POLICY_NAME.fullmatch(name) or name in {"root", "default"}:
                raise ValueError(f"{name!r} is not an allowed Vault policy name")
        return value

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # Slack user ids or rotation names. parse_policy passes the names defined under
        # `rotations:` as context, so an undefined one is reported at this key.
        rotations = (info.context or {}).get("rotations")
        for entry in value:
            check_approver_entry(entry, rotations)
        return value

    @model_validator(mode="after")
    def _shape(self) -> Resource:
        if bool(self.vault_path) == bool(self.vault_policies):
            raise ValueError("set exactly one of vault_path or vault_policies")
        if not MINIMUM_GRANT <= self.max_duration <= MAXIMUM_GRANT:
            raise ValueError(
                f"max_duration must be between {format_duration(MINIMUM_GRANT)} "
                f"and {format_duration(MAXIMUM_GRANT)}"
            )
        if self.break_glass is not None and not (
            MINIMUM_GRANT <= self.break_glass.max_duration <= self.max_duration
        ):
            raise ValueError("break_glass.max_duration must be between 1m and max_duration")
        if self.escalate_after is not None and self.escalate_after >= self.pending_ttl:
            raise ValueError("escalate_after must be shorter than pending_ttl")
        if self.default_duration is not None and not (
            MINIMUM_GRANT <= self.default_duration <= self.max_duration
        ):
            raise ValueError("default_duration must be between 1m and max_duration")
        return self

    @property
    def kind(self) -> Literal["vault_path", "vault_policies"]:
        return "vault_path" if self.vault_path else "vault_policies"


class Policy(_Strict):
    """The whole policy file."""

    channels: Channels = Channels()
    digest: DigestConfig | None = None
    delivery: Literal["wrapped", "dm"] = "wrapped"
    wrap_ttl: Duration = timedelta(minutes=10)
    rotations: dict[str, RotationConfig] = {}
    resources: dict[str, Resource] = Field(min_length=1)

    @field_validator("rotations")
    @classmethod
    def _rotation_names(cls, value: dict[str, RotationConfig]) -> dict[str, RotationConfig]:
        check_rotation_names(value)
        return value

    @model_validator(mode="after")
    def _approver_rotations_exist(self) -> Policy:
        # The safety net for a Policy validated without parse_policy's context.
        for name, resource in self.resources.items():
            missing = undefined_rotations(resource.approvers, self.rotations)
            if missing:
                raise ValueError(
                    f"resources.{name}.approvers: {missing[0]!r} is not a Slack "
                    "user id or a rotation defined under `rotations:`"
                )
        return self

    @field_validator("resources")
    @classmethod
    def _names(cls, value: dict[str, Resource]) -> dict[str, Resource]:
        for name in value:
            if not RESOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"resource name {name!r} must be lowercase letters, digits, - or _"
                )
            if name in SUBCOMMANDS:
                raise ValueError(f"resource name {name!r} is reserved for a subcommand")
        return value

    @field_validator("wrap_ttl")
    @classmethod
    def _wrap_ttl(cls, value: timedelta) -> timedelta:
        if value < MINIMUM_GRANT:
            raise ValueError(f"must be at least {format_duration(MINIMUM_GRANT)}")
        return value

    def resource(self, name: str) -> Resource | None:
        return self.resources.get(name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys: a second `payments-db:` must not silently
    replace the first, approvers included."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Validate policy YAML text; raise PolicyError naming source, key and problem."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: expected a mapping with at least `resources:`")
    try:
        rotations = raw.get("rotations")
        names = set(rotations) if isinstance(rotations, dict) else set()
        return Policy.model_validate(raw, context={"rotations": names})
    except ValidationError as exc:
        raise PolicyError(_format_errors(source, exc)) from None


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_policy(text, source=str(path))
