"""The policy file: the issue's example parses; every invalid file is refused with a message that
names the file, the key and the problem."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.domain.grant_kinds import DynamicSecretGrant, VaultTokenGrant
from bot.policy import Policy, PolicyError, load_policy, parse_policy
from tests.unit.fakes import EXAMPLE_POLICY

SOURCE = "policy.yml"
Raw = dict[str, Any]


def test_the_example_policy_parses() -> None:
    policy = parse_policy(EXAMPLE_POLICY, SOURCE)
    assert policy.channels.approvals == "C0APPROVALS"
    assert policy.channels.audit == "C0AUDIT"
    assert policy.delivery == "wrapped"
    assert policy.wrap_ttl == timedelta(minutes=10)  # the default
    assert list(policy.resources) == ["payments-db", "orders-logs"]

    db = policy.resources["payments-db"]
    assert db.grant == DynamicSecretGrant("database/creds/payments-readonly")
    assert db.deprecation is None
    assert db.default_duration == timedelta(hours=1)
    assert db.max_duration == timedelta(hours=4)
    assert db.approvers == ("U0ALICE", "U0BOB")
    assert db.description == "Read-only SQL on the payments replica"

    logs = policy.resources["orders-logs"]
    assert logs.grant == VaultTokenGrant(("orders-logs-read",))
    assert logs.default_duration is None
    assert logs.max_duration == timedelta(hours=2)
    assert policy.resource("orders-logs") is logs
    assert policy.resource("nope") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("1m", timedelta(minutes=1)), ("1d", timedelta(days=1)), ("24h", timedelta(days=1))],
)
def test_max_duration_bounds_are_inclusive(text: str, value: timedelta) -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    del raw["resources"]["payments-db"]["default_duration"]
    raw["resources"]["payments-db"]["max_duration"] = text
    assert parse_policy(yaml.safe_dump(raw)).resources["payments-db"].max_duration == value


def test_a_minimal_policy_has_safe_defaults() -> None:
    policy = parse_policy(
        "resources:\n  x:\n    grant: {type: vault_token, policies: [p]}\n"
        "    max_duration: 1m\n    approvers: [W0AB]\n"
    )
    assert policy.channels.approvals is None and policy.channels.audit is None
    assert policy.delivery == "wrapped"
    assert policy.resources["x"].max_duration == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("database/creds/ro", "database/creds/ro"), ("/aws/creds/deploy/", "aws/creds/deploy")],
)
def test_vault_path_is_normalised(given: str, stored: str) -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["resources"]["payments-db"]["grant"]["path"] = given
    assert parse_policy(yaml.safe_dump(raw)).resources["payments-db"].grant == DynamicSecretGrant(
        stored
    )


def test_policy_is_immutable() -> None:
    policy = parse_policy(EXAMPLE_POLICY)
    with pytest.raises(ValueError, match="frozen"):
        policy.delivery = "dm"  # type: ignore[misc]


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    """A mutation of the example: set ``a.b.c`` to value (``...`` deletes the key)."""

    def apply(raw: Raw) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return apply


def _rename(name: str) -> Callable[[Raw], None]:
    def apply(raw: Raw) -> None:
        raw["resources"][name] = raw["resources"].pop("orders-logs")

    return apply


DB = "resources.payments-db"
LOGS = "resources.orders-logs"

INVALID: list[tuple[str, Callable[[Raw], None], str, str]] = [
    # (case id, mutation, key named in the message, problem named in the message)
    (
        "bad duration",
        _set(f"{DB}.max_duration", "4 hours"),
        f"{DB}.max_duration",
        "is not a duration",
    ),
    ("duration without unit", _set(f"{DB}.max_duration", 240), f"{DB}.max_duration", "with a unit"),
    (
        "fractional duration",
        _set(f"{DB}.default_duration", "1.5h"),
        f"{DB}.default_duration",
        "is not a duration",
    ),
    (
        "default over max",
        _set(f"{DB}.default_duration", "5h"),
        DB,
        "default_duration must be between 1m and max_duration",
    ),
    (
        "default under a minute",
        _set(f"{DB}.default_duration", "30s"),
        DB,
        "default_duration must be between",
    ),
    (
        "max under a minute",
        _set(f"{DB}.max_duration", "59s"),
        DB,
        "max_duration must be between 1m and 1d",
    ),
    (
        "max over a day",
        _set(f"{DB}.max_duration", "1d1s"),
        DB,
        "max_duration must be between 1m and 1d",
    ),
    ("missing max", _set(f"{DB}.max_duration", ...), f"{DB}.max_duration", "Field required"),
    (
        "both kinds",
        _set(f"{DB}.grant.policies", ["x"]),
        f"{DB}.grant.policies",
        "Extra inputs are not permitted",
    ),
    (
        "neither kind",
        _set(f"{LOGS}.grant", ...),
        LOGS,
        "set grant: {type: dynamic_secret, ...} or {type: vault_token, ...} "
        "or {type: ssh_certificate, ...}",
    ),
    (
        "grant and a legacy key",
        _set(f"{DB}.vault_path", "database/creds/other"),
        DB,
        "set grant: or the legacy vault_path, not both",
    ),
    (
        "unknown grant type",
        _set(f"{DB}.grant.type", "kerberos_ticket"),
        f"{DB}.grant",
        "unknown type 'kerberos_ticket'; write one of: "
        "dynamic_secret, vault_token, ssh_certificate",
    ),
    (
        "grant without a type",
        _set(f"{DB}.grant.type", ...),
        f"{DB}.grant",
        "needs a type, one of: dynamic_secret, vault_token, ssh_certificate",
    ),
    (
        "grant not a mapping",
        _set(f"{DB}.grant", "database/creds/x"),
        f"{DB}.grant",
        "valid dictionary",
    ),
    (
        "empty policy list",
        _set(f"{LOGS}.grant.policies", []),
        f"{LOGS}.grant",
        "needs at least one Vault policy name",
    ),
    (
        "root policy",
        _set(f"{LOGS}.grant.policies", ["root"]),
        f"{LOGS}.grant",
        "'root' is not an allowed Vault policy name",
    ),
    (
        "default policy",
        _set(f"{LOGS}.grant.policies", ["default"]),
        f"{LOGS}.grant",
        "'default' is not an allowed Vault policy name",
    ),
    (
        "odd policy name",
        _set(f"{LOGS}.grant.policies", ["a b"]),
        f"{LOGS}.grant",
        "is not an allowed Vault policy name",
    ),
    (
        "path traversal",
        _set(f"{DB}.grant.path", "database/../sys/raw"),
        f"{DB}.grant",
        "plain Vault path",
    ),
    (
        "glob path",
        _set(f"{DB}.grant.path", "database/creds/*"),
        f"{DB}.grant",
        "plain Vault path",
    ),
    ("blank path", _set(f"{DB}.grant.path", " / "), f"{DB}.grant", "plain Vault path"),
    (
        "misspelt grant key",
        _set(f"{DB}.grant.paht", "x"),
        f"{DB}.grant.paht",
        "Extra inputs are not permitted",
    ),
    (
        "email approver",
        _set(f"{DB}.approvers", ["alice@example.com"]),
        f"{DB}.approvers",
        "'alice@example.com' is not a Slack user id",
    ),
    (
        "lowercase approver",
        _set(f"{DB}.approvers", ["U0ALICE", "u0bob"]),
        f"{DB}.approvers",
        "'u0bob' is not a Slack user id",
    ),
    (
        "mention approver",
        _set(f"{DB}.approvers", ["<@U0ALICE>"]),
        f"{DB}.approvers",
        "is not a Slack user id",
    ),
    (
        "channel as approver",
        _set(f"{DB}.approvers", ["C0APPROVALS"]),
        f"{DB}.approvers",
        "is not a Slack user id",
    ),
    ("no approvers", _set(f"{DB}.approvers", []), f"{DB}.approvers", "at least 1 item"),
    ("approvers missing", _set(f"{DB}.approvers", ...), f"{DB}.approvers", "Field required"),
    ("reserved name help", _rename("help"), "resources", "'help' is reserved"),
    ("reserved name list", _rename("list"), "resources", "'list' is reserved"),
    ("reserved name revoke", _rename("revoke"), "resources", "'revoke' is reserved"),
    ("uppercase name", _rename("Orders"), "resources", "must be lowercase"),
    ("name with space", _rename("orders logs"), "resources", "must be lowercase"),
    (
        "channel name not id",
        _set("channels.approvals", "#approvals"),
        "channels.approvals",
        "is not a Slack channel id",
    ),
    (
        "user id as channel",
        _set("channels.audit", "U0ALICE"),
        "channels.audit",
        "is not a Slack channel id",
    ),
    (
        "unknown top-level key",
        _set("approval_channel", "C0X"),
        "approval_channel",
        "Extra inputs are not permitted",
    ),
    (
        "misspelt resource key",
        _set(f"{DB}.max_durration", "1h"),
        f"{DB}.max_durration",
        "Extra inputs are not permitted",
    ),
    (
        "unknown channels key",
        _set("channels.alerts", "C0X"),
        "channels.alerts",
        "Extra inputs are not permitted",
    ),
    ("empty resources", _set("resources", {}), "resources", "at least 1 item"),
    ("no resources", _set("resources", ...), "resources", "Field required"),
    ("resources as list", _set("resources", ["payments-db"]), "resources", "valid dictionary"),
    ("bad delivery", _set("delivery", "email"), "delivery", "'wrapped' or 'dm'"),
    ("bad wrap_ttl", _set("wrap_ttl", "ten minutes"), "wrap_ttl", "is not a duration"),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_policy_names_file_key_and_problem(
    mutate: Callable[[Raw], None], key: str, problem: str
) -> None:
    raw = copy.deepcopy(yaml.safe_load(EXAMPLE_POLICY))
    mutate(raw)
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(raw), SOURCE)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{SOURCE}: {key}: ") and problem in line for line in lines), lines
    assert all(line.startswith(f"{SOURCE}: ") for line in lines)


def test_every_problem_is_reported_not_just_the_first() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["channels"]["approvals"] = "approvals"
    raw["resources"]["payments-db"]["approvers"] = ["alice"]
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(raw), SOURCE)
    message = str(info.value)
    assert f"{SOURCE}: channels.approvals:" in message
    assert f"{SOURCE}: {DB}.approvers:" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("resources: [unclosed", "not valid YAML"),
        ("resources:\n  x: {a: 1\n", "not valid YAML"),
        ("\tresources: {}", "not valid YAML"),
        ("", "expected a mapping"),
        ("# only a comment\n", "expected a mapping"),
        ("- payments-db\n- orders-logs\n", "expected a mapping"),
        ("just a string", "expected a mapping"),
    ],
)
def test_not_a_policy_document(text: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SOURCE)
    assert str(info.value).startswith(f"{SOURCE}: ")
    assert problem in str(info.value)


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(EXAMPLE_POLICY, encoding="utf-8")
    assert load_policy(path) == parse_policy(EXAMPLE_POLICY)


def test_load_policy_names_the_file_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(
        EXAMPLE_POLICY.replace("max_duration: 4h", "max_duration: 4 h o u r s"), encoding="utf-8"
    )
    with pytest.raises(PolicyError, match=f"^{path}: {DB}.max_duration: "):
        load_policy(path)


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unreadable_policy_file(tmp_path: Path, make: str) -> None:
    path = tmp_path / "policy.yml"
    if make == "directory":
        path.mkdir()
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the policy file")
    assert ("No such file" if make == "missing" else "Is a directory") in message


def test_non_utf8_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_bytes(EXAMPLE_POLICY.replace("Read-only", "Caf\xe9").encode("latin-1"))
    with pytest.raises(PolicyError, match=f"^{path}: "):
        load_policy(path)


def test_duplicate_resource_is_refused() -> None:
    text = EXAMPLE_POLICY + (
        "  payments-db:\n"
        "    grant: {type: dynamic_secret, path: database/creds/payments-admin}\n"
        "    max_duration: 4h\n"
        "    approvers: [U0MALLORY]\n"
    )
    with pytest.raises(PolicyError, match="payments-db"):
        parse_policy(text, SOURCE)


@pytest.mark.parametrize("value", ["7200.0", "true"])
def test_unitless_non_integer_durations_are_refused(value: str) -> None:
    with pytest.raises(PolicyError, match="with a unit"):
        parse_policy(EXAMPLE_POLICY.replace("max_duration: 4h", f"max_duration: {value}"), SOURCE)


def test_zero_wrap_ttl_is_refused() -> None:
    with pytest.raises(PolicyError, match=f"^{SOURCE}: wrap_ttl: "):
        parse_policy("wrap_ttl: 0m\n" + EXAMPLE_POLICY, SOURCE)


def test_policy_model_validates_python_values_too() -> None:
    # Code (and tests) may build a Policy directly; timedelta values are accepted as they are.
    policy = Policy.model_validate(
        {
            "resources": {
                "x": {
                    "grant": {"type": "vault_token", "policies": ["p"]},
                    "max_duration": timedelta(hours=1),
                    "approvers": ["U0A1"],
                }
            }
        }
    )
    assert policy.resources["x"].max_duration == timedelta(hours=1)


# ---------------------------------------------------------------------------- grant kinds

# Written before `grant:` existed: the old keys still load, as the grant they mean.
LEGACY_POLICY = """\
resources:
  payments-db:
    vault_path: /database/creds/payments-readonly
    max_duration: 4h
    approvers: [U0ALICE]
  orders-logs:
    vault_policies: [orders-logs-read, orders-metrics]
    max_duration: 2h
    approvers: [U0ALICE]
"""


def test_the_grant_union_parses_both_kinds() -> None:
    policy = parse_policy(EXAMPLE_POLICY, SOURCE)
    db, logs = policy.resources["payments-db"].grant, policy.resources["orders-logs"].grant
    assert isinstance(db, DynamicSecretGrant) and db.path == "database/creds/payments-readonly"
    assert isinstance(logs, VaultTokenGrant) and logs.policies == ("orders-logs-read",)
    assert db.recallable and logs.recallable
    assert policy.deprecations() == []


def test_legacy_keys_load_as_the_grant_they_mean() -> None:
    policy = parse_policy(LEGACY_POLICY, SOURCE)
    assert policy.resources["payments-db"].grant == DynamicSecretGrant(
        "database/creds/payments-readonly"
    )
    assert policy.resources["orders-logs"].grant == VaultTokenGrant(
        ("orders-logs-read", "orders-metrics")
    )
    assert policy.deprecations() == [
        "resources.payments-db: vault_path is deprecated; write grant: "
        "{type: dynamic_secret, path: database/creds/payments-readonly}",
        "resources.orders-logs: vault_policies is deprecated; write grant: "
        "{type: vault_token, policies: [orders-logs-read, orders-metrics]}",
    ]


def test_legacy_keys_are_validated_like_grant() -> None:
    with pytest.raises(PolicyError, match=r"resources\.payments-db\.grant: must be a plain"):
        parse_policy(LEGACY_POLICY.replace("/database/creds", "database/../sys"), SOURCE)
    with pytest.raises(PolicyError, match="'root' is not an allowed Vault policy name"):
        parse_policy(LEGACY_POLICY.replace("orders-metrics", "root"), SOURCE)


def test_both_legacy_keys_at_once_are_refused() -> None:
    text = LEGACY_POLICY.replace(
        "    vault_path: /database", "    vault_policies: [x]\n    vault_path: /database"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SOURCE)
    assert str(info.value) == (f"{SOURCE}: {DB}: set exactly one of vault_path or vault_policies")


def test_grant_and_a_legacy_key_at_once_are_refused() -> None:
    text = LEGACY_POLICY.replace(
        "    vault_path:", "    grant: {type: dynamic_secret, path: a/b}\n    vault_path:"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SOURCE)
    assert str(info.value) == f"{SOURCE}: {DB}: set grant: or the legacy vault_path, not both"


def test_an_unknown_grant_type_names_the_allowed_ones() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["resources"]["payments-db"]["grant"] = {"type": "kerberos_ticket", "realm": "x"}
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(raw), SOURCE)
    assert str(info.value) == (
        f"{SOURCE}: {DB}.grant: unknown type 'kerberos_ticket'; "
        "write one of: dynamic_secret, vault_token, ssh_certificate"
    )


def test_a_rotation_with_an_unknown_type_keeps_its_own_message() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["rotations"] = {"dba": {"type": "no-such-source"}}
    with pytest.raises(PolicyError) as info:
        parse_policy(yaml.safe_dump(raw), SOURCE)
    assert "rotations.dba" in str(info.value)
    assert "dynamic_secret" not in str(info.value)


def test_admins_and_step_up_are_read_and_default_to_none() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    plain = parse_policy(yaml.safe_dump(raw))
    assert plain.admins == ()
    assert plain.approval_step_up("payments-db") is None

    raw["admins"] = ["U0SEC", "S0SECTEAM"]
    raw["step_up"] = "passkey"
    raw["resources"]["orders-logs"]["step_up"] = "passkey"
    raw["resources"]["payments-db"]["break_glass"] = {"max_duration": "30m", "step_up": "passkey"}
    policy = parse_policy(yaml.safe_dump(raw))
    assert policy.admins == ("U0SEC", "S0SECTEAM")
    assert policy.approval_step_up("payments-db") == "passkey"  # the policy-wide default
    assert policy.approval_step_up("orders-logs") == "passkey"
    assert policy.break_glass_step_up("payments-db") == "passkey"
    assert policy.break_glass_step_up("orders-logs") is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("admins", ["alice"], "admins: 'alice' is neither a Slack user id nor a user group id"),
        ("step_up", "totp", "step_up: Input should be 'passkey'"),
    ],
)
def test_bad_admins_or_step_up_are_refused_naming_the_key(
    key: str, value: object, message: str
) -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw[key] = value
    with pytest.raises(PolicyError, match=message):
        parse_policy(yaml.safe_dump(raw), SOURCE)
