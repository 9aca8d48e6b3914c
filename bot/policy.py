"""The policy file: which resources exist, how long access may last, who approves, where to post.

Loaded and validated once at start. An invalid file stops the bot with a message that names the
file, the key and the problem (``policy.yml: resources.payments-db.max_duration: ...``), because
a half-understood access policy is worse than no bot at all.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
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
from bot.domain.grant_kinds import (
    GRANT_TYPES,
    LEGACY_KEYS,
    GrantKind,
    from_legacy_key,
    kind_of_type,
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
#: The grant kinds, told apart by ``type:`` (pydantic builds the domain dataclasses directly).
Grant = Annotated[GrantKind, Field(discriminator="type")]
_GRANT_EXAMPLES = " or ".join(f"{{type: {t}, ...}}" for t in GRANT_TYPES)


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


def _users_or_groups(value: tuple[str, ...]) -> tuple[str, ...]:
    for entry in value:
        if not (SLACK_USER_ID.fullmatch(entry) or SLACK_USERGROUP_ID.fullmatch(entry)):
            raise ValueError(
                f"{entry!r} is neither a Slack user id nor a user group id (like S0123ABCD)"
            )
    return value


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


#: ``step_up: passkey``: a Slack click is necessary but not enough; the person confirms with a
#: passkey (WebAuthn) on the bot's own page, so a stolen Slack session cannot decide alone.
StepUp = Literal["passkey"]


class BreakGlass(_Strict):
    """Emergency access without approval: announced loudly, reviewed afterwards."""

    max_duration: Duration
    #: The requester confirms a break-glass request with their passkey before it is issued.
    step_up: StepUp | None = None


class Resource(_Strict):
    """One thing people can ask access to, and what kind of grant it gives (``grant:``)."""

    description: str = ""
    grant: Grant
    default_duration: Duration | None = None
    max_duration: Duration
    approvers: tuple[str, ...] = Field(min_length=1)
    approvals_required: int = Field(default=1, ge=1, le=10)
    escalate_after: Duration | None = None
    pending_ttl: Duration = timedelta(hours=1)
    requesters: tuple[str, ...] = ()
    break_glass: BreakGlass | None = None
    #: Approvals of this resource count only once confirmed with a passkey (None: the
    #: policy-wide ``step_up`` applies).
    step_up: StepUp | None = None
    # The pre-`grant:` key this resource was written with (None: written with `grant:`), so
    # `debug-access check` can say how to write it today.
    _legacy_key: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _legacy_grant_keys(
        cls, data: Any, handler: ModelWrapValidatorHandler[Resource]
    ) -> Resource:
        """Read the legacy ``vault_path`` / ``vault_policies`` keys as the ``grant:`` they mean.

        Policy files written before ``grant:`` keep working; ``check`` says how to rewrite them.
        """
        legacy: str | None = None
        if isinstance(data, dict):
            used = [key for key in LEGACY_KEYS if key in data]
            if len(used) > 1:
                raise ValueError(f"set exactly one of {' or '.join(used)}")
            if used and "grant" in data:
                raise ValueError(f"set grant: or the legacy {used[0]}, not both")
            if not used and "grant" not in data:
                raise ValueError(f"set grant: {_GRANT_EXAMPLES}")
            if used:
                legacy = used[0]
                value = data[legacy]
                data = {k: v for k, v in data.items() if k != legacy}
                data["grant"] = from_legacy_key(legacy, value)
            data = _with_default_max_duration(data)
        resource = handler(data)
        resource._legacy_key = legacy
        return resource

    @property
    def deprecation(self) -> str | None:
        """How to write this resource's grant today, when it uses a legacy key."""
        if self._legacy_key is None:
            return None
        return f"{self._legacy_key} is deprecated; write grant: {self.grant.as_yaml()}"

    @field_validator("requesters")
    @classmethod
    def _requesters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _users_or_groups(value)

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


def _with_default_max_duration(data: dict[str, Any]) -> dict[str, Any]:
    """A kind may set ``max_duration`` for resources that do not (SSH certificates: short, since
    they cannot be recalled); every other kind requires the resource to say it."""
    grant = data.get("grant")
    kind = kind_of_type(grant.get("type")) if isinstance(grant, dict) else None
    if "max_duration" in data or kind is None or kind.default_max_duration is None:
        return data
    return {**data, "max_duration": kind.default_max_duration}


class Policy(_Strict):
    """The whole policy file."""

    channels: Channels = Channels()
    digest: DigestConfig | None = None
    delivery: Literal["wrapped", "dm"] = "wrapped"
    wrap_ttl: Duration = timedelta(minutes=10)
    rotations: dict[str, RotationConfig] = {}
    #: Who may lock and unlock a user (the kill switch) and act on the command line: Slack user
    #: ids or user group ids.
    admins: tuple[str, ...] = ()
    #: The step-up every resource asks of its approvers unless it says otherwise.
    step_up: StepUp | None = None
    resources: dict[str, Resource] = Field(min_length=1)

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _users_or_groups(value)

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

    def approval_step_up(self, name: str) -> StepUp | None:
        """The step-up an approval of resource ``name`` needs (its own, else the policy's)."""
        resource = self.resources.get(name)
        own = resource.step_up if resource is not None else None
        return own or self.step_up

    def break_glass_step_up(self, name: str) -> StepUp | None:
        """The step-up a break-glass request for ``name`` needs of its requester."""
        resource = self.resources.get(name)
        if resource is None or resource.break_glass is None:
            return None
        return resource.break_glass.step_up

    def uses_step_up(self) -> bool:
        """Whether anything in the policy asks for a passkey (then PUBLIC_URL is needed)."""
        return self.step_up is not None or any(
            r.step_up is not None or (r.break_glass is not None and r.break_glass.step_up)
            for r in self.resources.values()
        )

    def deprecations(self) -> list[str]:
        """What this file still writes the old way, and how to write it today."""
        return [
            f"resources.{name}: {resource.deprecation}"
            for name, resource in self.resources.items()
            if resource.deprecation
        ]


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
        # pydantic puts the union's tag in the location (grant.dynamic_secret.path): the file
        # has no such key, so name the one the operator wrote (grant.path).
        loc = [
            part
            for i, part in enumerate(item["loc"])
            if not (part in GRANT_TYPES and i > 0 and item["loc"][i - 1] == "grant")
        ]
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "unexpected_keyword_argument":  # a dataclass's word for it
            message = "Extra inputs are not permitted"
        at_grant = bool(loc) and loc[-1] == "grant"
        if at_grant and item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            message = f"unknown type {tag!r}; write one of: {', '.join(GRANT_TYPES)}"
        elif at_grant and item["type"] == "union_tag_not_found":
            message = f"needs a type, one of: {', '.join(GRANT_TYPES)}"
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
