"""bot.vault.VaultIssuer against a real OpenBao dev server and a real PostgreSQL.

These tests prove the properties the whole bot rests on: a grant is an orphan token whose TTL
Vault enforces, the database user is a child lease of that token, revocation really drops the
PostgreSQL role, and nothing secret leaks through errors or reprs.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
import hvac.exceptions
import pytest

from bot.domain.grant_kinds import DynamicSecretGrant, GrantKind, VaultTokenGrant
from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue
from bot.vault import (
    BOT_POLICY_HCL,
    SELF_LOOKUP_POLICY,
    ResourceGrantShape,
    SetupReport,
    VaultIssuer,
    bot_policy_hcl,
    grant_policy_hcl,
    grant_policy_name,
)

pytestmark = pytest.mark.integration

SUFFIX = secrets.token_hex(3)
ROLE = f"vt-grant-{SUFFIX}"
KV_MOUNT = f"vt-kv-{SUFFIX}"
KV_POLICY = f"vt-kv-read-{SUFFIX}"
PAYMENTS = f"vt-payments-{SUFFIX}"
KV_RESOURCE = f"vt-kv-{SUFFIX}"
STATIC = f"vt-static-{SUFFIX}"
MISSING = f"vt-missing-{SUFFIX}"
BROKEN = f"vt-broken-{SUFFIX}"
KV_SECRET_VALUE = "kv-" + secrets.token_hex(8)
LOGIN_FAILED = r"password authentication failed|does not exist"


# ---------------------------------------------------------------------------- helpers


def wait_until(
    predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.25
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def lease_exists(root: hvac.Client, lease_id: str) -> bool:
    try:
        root.write_data("sys/leases/lookup", data={"lease_id": lease_id})
    except hvac.exceptions.InvalidRequest as exc:
        assert "invalid lease" in str(exc)
        return False
    return True


def token_exists(root: hvac.Client, accessor: str) -> bool:
    try:
        root.write_data("auth/token/lookup-accessor", data={"accessor": accessor})
    except hvac.exceptions.InvalidRequest as exc:
        assert "invalid accessor" in str(exc)
        return False
    return True


def lookup(root: hvac.Client, accessor: str) -> dict[str, Any]:
    data: dict[str, Any] = root.write_data(
        "auth/token/lookup-accessor", data={"accessor": accessor}
    )["data"]
    return data


def assert_no_secret(text: str, *secret_values: str) -> None:
    for value in secret_values:
        assert value not in text, "a secret leaked into a message or repr"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_request_ids = iter(range(1000, 100000))


def spec(
    resource: str,
    *,
    vault_path: str | None = None,
    vault_policies: tuple[str, ...] = (),
    ttl: timedelta = timedelta(minutes=5),
    max_ttl: timedelta = timedelta(minutes=10),
) -> GrantSpec:
    grant: GrantKind = (
        DynamicSecretGrant(vault_path) if vault_path else VaultTokenGrant(vault_policies)
    )
    return GrantSpec(
        request_id=next(_request_ids),
        requester="U0TESTER",
        resource=resource,
        ttl=ttl,
        max_ttl=max_ttl,
        grant=grant,
    )


def read(issuer: VaultIssuer, token: GrantToken, path: str, resource: str = "any") -> Obtained:
    """Obtain a dynamic secret at ``path`` with ``token`` (what a dynamic_secret grant does)."""
    return issuer.obtain(token, spec(resource, vault_path=path))


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def root(openbao: Any) -> hvac.Client:
    client: hvac.Client = openbao.client()
    return client


@pytest.fixture(scope="module")
def kv(root: hvac.Client) -> str:
    """A KV v1 mount with an allowed and a denied secret, and the operator's policy for it."""
    root.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "1"})
    root.write_data(f"{KV_MOUNT}/allowed/config", data={"api_key": KV_SECRET_VALUE})
    root.write_data(f"{KV_MOUNT}/denied/config", data={"api_key": "nope"})
    root.sys.create_or_update_policy(
        KV_POLICY, f'path "{KV_MOUNT}/allowed/*" {{ capabilities = ["read"] }}'
    )
    return KV_MOUNT


@pytest.fixture(scope="module")
def broken_db_role(root: hvac.Client, vault_db: Any) -> str:
    """A database role whose revocation statement fails (to see the error is not swallowed)."""
    root.secrets.database.create_role(
        name=BROKEN,
        db_name="payments",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            "VALID UNTIL '{{expiration}}';"
        ],
        revocation_statements=["SELECT no_such_function_debug_access();"],
        default_ttl="1h",
        max_ttl="24h",
        mount_point=vault_db.mount,
    )
    return f"{vault_db.mount}/creds/{BROKEN}"


@pytest.fixture(scope="module")
def resources(vault_db: Any, kv: str, broken_db_role: str) -> list[ResourceGrantShape]:
    return [
        ResourceGrantShape(PAYMENTS, DynamicSecretGrant(vault_db.path)),
        ResourceGrantShape(KV_RESOURCE, VaultTokenGrant((KV_POLICY,))),
        ResourceGrantShape(STATIC, DynamicSecretGrant(f"{kv}/allowed/config")),
        ResourceGrantShape(MISSING, DynamicSecretGrant(f"{vault_db.mount}/creds/no-such-role")),
        ResourceGrantShape(BROKEN, DynamicSecretGrant(broken_db_role)),
    ]


@pytest.fixture(scope="module")
def issuer(openbao: Any, resources: list[ResourceGrantShape]) -> VaultIssuer:
    """The issuer with the root token, after ensure_setup (the dev-server mode)."""
    iss = VaultIssuer(openbao.client(), token_role=ROLE, retry_wait=0.01)
    iss.ensure_setup(resources)
    return iss


@pytest.fixture
def payments_grant(
    issuer: VaultIssuer, vault_db: Any, root: hvac.Client
) -> Iterator[tuple[GrantToken, Obtained]]:
    """A live payments grant: the token plus its database credentials. Cleaned up after."""
    token = issuer.create_grant_token(spec(PAYMENTS, vault_path=vault_db.path))
    secret = read(issuer, token, vault_db.path)
    yield token, secret
    issuer.revoke(token.accessor, secret.lease_id)


# ---------------------------------------------------------------------------- setup / doctor


def test_ensure_setup_creates_policy_and_role_then_changes_nothing(
    openbao: Any, root: hvac.Client, vault_db: Any, kv: str
) -> None:
    role = f"vt-setup-{SUFFIX}"
    resource = f"vt-setup-res-{SUFFIX}"
    shapes = [
        ResourceGrantShape(resource, DynamicSecretGrant(vault_db.path)),
        ResourceGrantShape(f"vt-setup-kv-{SUFFIX}", VaultTokenGrant((KV_POLICY,))),
    ]
    iss = VaultIssuer(openbao.client(), token_role=role, retry_wait=0.01)
    policy = grant_policy_name(resource)
    assert root.read(f"sys/policy/{policy}") is None
    assert root.read(f"auth/token/roles/{role}") is None

    first = iss.ensure_setup(shapes)
    lookup_policy = f"policy {SELF_LOOKUP_POLICY}"  # shared: an earlier test may have made it
    assert [c for c in first.created if c != lookup_policy] == [
        f"policy {policy}",
        f"token role {role}",
    ]
    assert lookup_policy in first.created + first.present
    assert first.changed and not first.not_created

    rules = root.read(f"sys/policy/{policy}")["data"]["rules"]
    assert rules.strip() == grant_policy_hcl(vault_path=vault_db.path).strip()
    assert f'path "{vault_db.path}"' in rules and '["read"]' in rules
    data = root.read(f"auth/token/roles/{role}")["data"]
    assert data["orphan"] is True
    assert data["renewable"] is True
    assert data["token_type"] == "service"
    assert sorted(data["allowed_policies"]) == sorted([policy, KV_POLICY, SELF_LOOKUP_POLICY])
    assert data["disallowed_policies"] == ["root"]
    assert data["token_explicit_max_ttl"] == 24 * 3600

    second = iss.ensure_setup(shapes)
    assert second == SetupReport(present=(f"policy {policy}", lookup_policy, f"token role {role}"))
    assert not second.changed

    # Drift is repaired: someone made the role non-orphan.
    root.write_data(f"auth/token/roles/{role}", data={"orphan": False})
    third = iss.ensure_setup(shapes)
    assert third.updated == (f"token role {role}",)
    assert root.read(f"auth/token/roles/{role}")["data"]["orphan"] is True


def test_check_reports_nothing_when_fine_and_names_problems(
    openbao: Any, issuer: VaultIssuer
) -> None:
    assert issuer.check() == []

    missing_role = VaultIssuer(openbao.client(), token_role=f"vt-nope-{SUFFIX}", retry_wait=0.01)
    problems = missing_role.check()
    assert any("does not exist" in p and f"vt-nope-{SUFFIX}" in p for p in problems)

    bad_token = "bad-" + secrets.token_hex(8)
    bad = VaultIssuer(openbao.client(token=bad_token), token_role=ROLE, retry_wait=0.01)
    problems = bad.check()
    assert len(problems) == 1
    assert problems[0].startswith("the bot's Vault token is invalid or expired")
    assert_no_secret(repr(problems), bad_token)

    down = VaultIssuer.from_settings(
        f"http://127.0.0.1:{unused_port()}", "tok-" + secrets.token_hex(8), retry_wait=0.01
    )
    problems = down.check()
    assert len(problems) == 1 and "unreachable" in problems[0]


def test_least_privilege_bot_policy_is_enough(
    openbao: Any,
    root: hvac.Client,
    issuer: VaultIssuer,
    resources: list[ResourceGrantShape],
    vault_db: Any,
    postgres: Any,
) -> None:
    """In production the bot runs with BOT_POLICY_HCL only; the operator made role + policies."""
    assert bot_policy_hcl() == BOT_POLICY_HCL
    assert 'path "auth/token/create/debug-access-grant"' in BOT_POLICY_HCL
    policy_name = f"vt-bot-{SUFFIX}"
    root.sys.create_or_update_policy(policy_name, bot_policy_hcl(ROLE))
    bot_token = root.auth.token.create(policies=[policy_name], ttl="1h")["auth"]["client_token"]
    bot = VaultIssuer(openbao.client(token=bot_token), token_role=ROLE, retry_wait=0.01)

    report = bot.ensure_setup(resources)  # does not raise without sys/policy access
    assert report.present == (f"token role {ROLE}",)
    assert report.not_created and all("assuming the operator did" in x for x in report.not_created)
    assert not report.changed
    assert bot.check() == []

    grant = bot.create_grant_token(spec(PAYMENTS, vault_path=vault_db.path))
    secret = read(bot, grant, vault_db.path)
    bot.wrap({"password": secret.values["password"].reveal()}, timedelta(minutes=1))
    assert not bot.confirm_revoked(grant.accessor, secret.lease_id)
    bot.revoke(grant.accessor, secret.lease_id)
    assert bot.confirm_revoked(grant.accessor, secret.lease_id)
    assert not postgres.role_exists(secret.values["username"].reveal())

    # ...and nothing beyond: it cannot mint tokens outside the role nor read the creds itself.
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(token=bot_token).auth.token.create(policies=[KV_POLICY], ttl="1m")
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(token=bot_token).read(vault_db.path)


# ---------------------------------------------------------------------------- vault_path grants


def test_path_grant_token_is_an_orphan_with_only_the_grant_policy(
    issuer: VaultIssuer, root: hvac.Client, vault_db: Any
) -> None:
    before = datetime.now(UTC)
    grant_spec = spec(
        PAYMENTS, vault_path=vault_db.path, ttl=timedelta(minutes=5), max_ttl=timedelta(minutes=9)
    )
    token = issuer.create_grant_token(grant_spec)
    try:
        assert token.policies == (grant_policy_name(PAYMENTS),)
        assert before + timedelta(seconds=295) <= token.expires_at
        assert token.expires_at <= datetime.now(UTC) + timedelta(seconds=301)

        info = lookup(root, token.accessor)
        assert info["policies"] == [grant_policy_name(PAYMENTS)]  # no "default"
        assert info["orphan"] is True
        assert info["renewable"] is True
        assert info["type"] == "service"
        assert info["role"] == ROLE
        assert info["creation_ttl"] == 300
        assert 290 <= info["ttl"] <= 300
        assert info["explicit_max_ttl"] == 9 * 60
        assert info["meta"] == {
            "request_id": str(grant_spec.request_id),
            "requester": "U0TESTER",
            "resource": PAYMENTS,
        }
        assert f"debug-access-{PAYMENTS}-{grant_spec.request_id}" in info["display_name"]
    finally:
        issuer.revoke(token.accessor, None)


def test_path_grant_creds_log_in_and_select(
    payments_grant: tuple[GrantToken, Obtained],
    postgres: Any,
    vault_db: Any,
    root: hvac.Client,
) -> None:
    _token, secret = payments_grant
    assert set(secret.values) == {"username", "password"}
    assert all(isinstance(v, SecretValue) for v in secret.values.values())
    assert secret.lease_id.startswith(f"{vault_db.path}/")
    assert lease_exists(root, secret.lease_id)
    remaining = secret.lease_expires_at - datetime.now(UTC)
    assert timedelta(minutes=59) < remaining <= timedelta(hours=1)

    user = secret.values["username"].reveal()
    assert postgres.role_exists(user)
    with postgres.connect_as(user, secret.values["password"].reveal(), vault_db.dbname) as conn:
        rows = conn.execute("SELECT id, amount FROM payments ORDER BY id").fetchall()
    assert len(rows) >= 1


def test_grant_token_can_read_nothing_but_its_path(
    payments_grant: tuple[GrantToken, Obtained], openbao: Any, kv: str
) -> None:
    token, _ = payments_grant
    as_grant = openbao.client(token=token.token.reveal())
    with pytest.raises(hvac.exceptions.Forbidden):
        as_grant.read(f"{kv}/allowed/config")
    with pytest.raises(hvac.exceptions.Forbidden):
        as_grant.auth.token.lookup_self()  # no default policy either


def test_lease_is_a_child_of_the_grant_token(
    payments_grant: tuple[GrantToken, Obtained],
    issuer: VaultIssuer,
    root: hvac.Client,
    postgres: Any,
    vault_db: Any,
) -> None:
    token, secret = payments_grant
    user, password = secret.values["username"].reveal(), secret.values["password"].reveal()
    assert lease_exists(root, secret.lease_id)

    issuer.revoke(token.accessor, None)  # only the token; Vault must take the lease with it

    assert not token_exists(root, token.accessor)
    assert wait_until(lambda: not lease_exists(root, secret.lease_id))
    assert wait_until(lambda: not postgres.role_exists(user))
    with pytest.raises(Exception, match=LOGIN_FAILED):
        postgres.connect_as(user, password, vault_db.dbname)


def test_revoke_then_confirm_revoked(
    payments_grant: tuple[GrantToken, Obtained],
    issuer: VaultIssuer,
    root: hvac.Client,
    postgres: Any,
    vault_db: Any,
) -> None:
    token, secret = payments_grant
    user, password = secret.values["username"].reveal(), secret.values["password"].reveal()
    with postgres.connect_as(user, password, vault_db.dbname) as conn:
        conn.execute("SELECT 1")
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is False

    issuer.revoke(token.accessor, secret.lease_id)

    # The lease is revoked synchronously: the role is gone by the time revoke() returns.
    assert not postgres.role_exists(user)
    assert not lease_exists(root, secret.lease_id)
    assert not token_exists(root, token.accessor)
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is True
    with pytest.raises(Exception, match=LOGIN_FAILED):
        postgres.connect_as(user, password, vault_db.dbname)

    issuer.revoke(token.accessor, secret.lease_id)  # twice is fine
    issuer.revoke(None, None)
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is True
    assert issuer.confirm_revoked(None, None) is True


def test_confirm_revoked_needs_both_gone(
    payments_grant: tuple[GrantToken, Obtained], issuer: VaultIssuer, postgres: Any
) -> None:
    token, secret = payments_grant
    issuer.revoke(None, secret.lease_id)  # lease only: the token lives on
    assert not postgres.role_exists(secret.values["username"].reveal())
    assert issuer.confirm_revoked(None, secret.lease_id) is True
    assert issuer.confirm_revoked(token.accessor, None) is False
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is False


def test_failed_lease_revocation_is_not_swallowed(
    issuer: VaultIssuer, root: hvac.Client, postgres: Any, vault_db: Any, broken_db_role: str
) -> None:
    token = issuer.create_grant_token(spec(BROKEN, vault_path=broken_db_role))
    secret = read(issuer, token, broken_db_role)
    user, password = secret.values["username"].reveal(), secret.values["password"].reveal()

    with pytest.raises(IssuerError) as caught:
        issuer.revoke(token.accessor, secret.lease_id)
    message = str(caught.value)
    assert message.startswith(f"Vault revocation of sys/leases/revoke/{secret.lease_id} failed")
    assert "400" in message
    assert_no_secret(message + repr(caught.value), password, token.token.reveal())
    assert lease_exists(root, secret.lease_id)
    assert postgres.role_exists(user)
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is False
    # The token was still revoked (that is what ends the access in Vault).
    assert not token_exists(root, token.accessor)

    # Fix the role's revocation and retry: now it goes.
    root.secrets.database.create_role(
        name=BROKEN,
        db_name="payments",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            "VALID UNTIL '{{expiration}}';"
        ],
        revocation_statements=['DROP ROLE IF EXISTS "{{name}}";'],
        mount_point=vault_db.mount,
    )
    issuer.revoke(token.accessor, secret.lease_id)
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is True
    assert not postgres.role_exists(user)


def test_short_ttl_grant_expires_in_vault_and_takes_the_lease(
    issuer: VaultIssuer, root: hvac.Client, postgres: Any, vault_db: Any
) -> None:
    """Vault itself ends the grant: nothing calls revoke here (as if the bot had died)."""
    token = issuer.create_grant_token(
        spec(
            PAYMENTS,
            vault_path=vault_db.path,
            ttl=timedelta(seconds=5),
            max_ttl=timedelta(minutes=1),
        )
    )
    secret = read(issuer, token, vault_db.path)
    user, password = secret.values["username"].reveal(), secret.values["password"].reveal()
    assert token.expires_at <= datetime.now(UTC) + timedelta(seconds=5)
    with postgres.connect_as(user, password, vault_db.dbname) as conn:
        conn.execute("SELECT count(*) FROM payments")

    time.sleep(7)

    assert wait_until(lambda: not token_exists(root, token.accessor), timeout=10)
    assert wait_until(lambda: not lease_exists(root, secret.lease_id), timeout=20)
    assert wait_until(lambda: not postgres.role_exists(user), timeout=10)
    with pytest.raises(Exception, match=LOGIN_FAILED):
        postgres.connect_as(user, password, vault_db.dbname)
    assert issuer.confirm_revoked(token.accessor, secret.lease_id) is True


# ---------------------------------------------------------------------------- vault_policies


def test_policies_grant_has_exactly_those_policies_and_only_the_bot_can_renew_it(
    issuer: VaultIssuer, root: hvac.Client, openbao: Any, kv: str, vault_db: Any
) -> None:
    token = issuer.create_grant_token(spec(KV_RESOURCE, vault_policies=(KV_POLICY,)))
    try:
        assert sorted(token.policies) == sorted([KV_POLICY, SELF_LOOKUP_POLICY])
        info = lookup(root, token.accessor)
        assert sorted(info["policies"]) == sorted([KV_POLICY, SELF_LOOKUP_POLICY])
        assert info["renewable"] is True  # by the bot, through renew-accessor
        assert info["orphan"] is True
        assert 290 <= info["ttl"] <= 300

        as_user = openbao.client(token=token.token.reveal())
        assert as_user.auth.token.lookup_self()["data"]["accessor"] == token.accessor
        assert as_user.read(f"{kv}/allowed/config")["data"]["api_key"] == KV_SECRET_VALUE
        with pytest.raises(hvac.exceptions.Forbidden):
            as_user.read(f"{kv}/denied/config")
        with pytest.raises(hvac.exceptions.Forbidden):
            as_user.read(vault_db.path)
        with pytest.raises(hvac.exceptions.Forbidden):
            as_user.auth.token.renew_self()  # no `default` policy: the holder cannot extend
        renewed = issuer.renew(token.accessor, None, datetime.now(UTC) + timedelta(minutes=9))
        assert 8 * 60 < (renewed - datetime.now(UTC)).total_seconds() <= 9 * 60
        assert 8 * 60 < lookup(root, token.accessor)["ttl"] <= 9 * 60
        with pytest.raises(hvac.exceptions.Forbidden):
            as_user.auth.token.create(ttl="1h")  # cannot mint a longer-lived child
    finally:
        issuer.revoke(token.accessor, None)
    assert issuer.confirm_revoked(token.accessor, None) is True


# ---------------------------------------------------------------------------- wrapping


def test_wrap_unwraps_once(issuer: VaultIssuer, openbao: Any) -> None:
    values = {"username": "v-user", "password": "pw-" + secrets.token_hex(8)}
    wrapped = issuer.wrap(values, timedelta(minutes=2))
    wrapping_token = wrapped.reveal()
    assert_no_secret(repr(wrapped) + str(wrapped), wrapping_token, values["password"])

    fresh = openbao.client(token=wrapping_token)  # what `bao unwrap <token>` does
    assert fresh.sys.unwrap()["data"] == values

    with pytest.raises(hvac.exceptions.InvalidRequest):
        openbao.client(token=wrapping_token).sys.unwrap()
    with pytest.raises(hvac.exceptions.VaultError):
        openbao.client(token="x").sys.unwrap(wrapping_token)


def test_wrap_ttl_is_the_given_one(issuer: VaultIssuer, root: hvac.Client) -> None:
    wrapped = issuer.wrap({"a": "b"}, timedelta(seconds=90))
    info = root.write_data("sys/wrapping/lookup", data={"token": wrapped.reveal()})["data"]
    assert info["creation_ttl"] == 90
    assert issuer.wrap_ttl == timedelta(minutes=10)


# ---------------------------------------------------------------------------- errors, no leaks


def test_unknown_path_is_an_issuer_error(issuer: VaultIssuer, vault_db: Any) -> None:
    path = f"{vault_db.mount}/creds/no-such-role"
    token = issuer.create_grant_token(spec(MISSING, vault_path=path))
    try:
        with pytest.raises(IssuerError) as caught:
            read(issuer, token, path)
        message = str(caught.value)
        assert message.startswith(f"Vault read of {path} failed: 400 ")
        assert "no-such-role" in message
        assert_no_secret(message, token.token.reveal())
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    finally:
        issuer.revoke(token.accessor, None)


def test_path_not_allowed_for_the_grant_is_a_403(
    issuer: VaultIssuer, vault_db: Any, kv: str
) -> None:
    token = issuer.create_grant_token(spec(PAYMENTS, vault_path=vault_db.path))
    try:
        with pytest.raises(IssuerError, match=r"failed: 403 permission denied") as caught:
            read(issuer, token, f"{kv}/denied/config")
        assert_no_secret(str(caught.value) + repr(caught.value), token.token.reveal())
    finally:
        issuer.revoke(token.accessor, None)


def test_non_leased_path_is_an_issuer_error(issuer: VaultIssuer, kv: str) -> None:
    path = f"{kv}/allowed/config"
    token = issuer.create_grant_token(spec(STATIC, vault_path=path))
    try:
        with pytest.raises(IssuerError) as caught:
            read(issuer, token, path)
        assert str(caught.value) == f"{path} did not return a leased dynamic secret"
        assert_no_secret(str(caught.value), KV_SECRET_VALUE, token.token.reveal())
    finally:
        issuer.revoke(token.accessor, None)


def test_grant_for_a_policy_outside_the_role_is_refused(issuer: VaultIssuer) -> None:
    with pytest.raises(IssuerError, match=rf"auth/token/create/{ROLE} failed: 400 .*subset"):
        issuer.create_grant_token(spec("other", vault_policies=("not-in-the-role",)))


def test_unreachable_vault_is_an_issuer_error_without_secrets() -> None:
    bot_token = "hvs." + secrets.token_hex(12)
    sleeps: list[float] = []
    down = VaultIssuer.from_settings(
        f"http://127.0.0.1:{unused_port()}",
        bot_token,
        timeout=2,
        retry_attempts=3,
        retry_wait=0.01,
        retry_sleep=sleeps.append,
    )
    grant = GrantToken(
        accessor="acc",
        token=SecretValue("grant-" + secrets.token_hex(8)),
        expires_at=datetime.now(UTC),
        policies=(),
    )
    password = "pw-" + secrets.token_hex(8)
    calls: list[Callable[[], object]] = [
        lambda: down.create_grant_token(spec(PAYMENTS, vault_path="database/creds/x")),
        lambda: read(down, grant, "database/creds/x"),
        lambda: down.wrap({"password": password}, timedelta(minutes=1)),
        lambda: down.revoke("acc", "database/creds/x/lease"),
        lambda: down.confirm_revoked("acc", "database/creds/x/lease"),
    ]
    for call in calls:
        with pytest.raises(IssuerError, match="could not reach Vault") as caught:
            call()
        text = str(caught.value) + repr(caught.value)
        assert_no_secret(text, bot_token, grant.token.reveal(), password)
        assert caught.value.__cause__ is None
        assert caught.value.unreachable and not caught.value.maybe_done
    # Nothing could connect, so Vault received nothing: every call was retried (3 attempts = 2
    # waits), creations too. revoke stopped after the lease: the token call would only wait too.
    assert len(sleeps) == 2 * 5


def test_returned_objects_and_errors_never_show_secrets(
    payments_grant: tuple[GrantToken, Obtained],
    issuer: VaultIssuer,
    resources: list[ResourceGrantShape],
    openbao: Any,
) -> None:
    token, secret = payments_grant
    wrapped = issuer.wrap({k: v.reveal() for k, v in secret.values.items()}, timedelta(minutes=1))
    hidden = [
        token.token.reveal(),
        secret.values["password"].reveal(),
        wrapped.reveal(),
        openbao.root_token,
    ]
    shown = [
        repr(token),
        str(token),
        repr(secret),
        str(secret),
        repr(dict(secret.values)),
        repr(wrapped),
        f"{wrapped}",
        repr(issuer),
        str(issuer),
        repr(issuer.ensure_setup(resources)),
        repr(issuer.check()),
    ]
    errors: list[IssuerError] = []
    for call in (
        lambda: read(issuer, token, "sys/policy/root"),
        lambda: read(issuer, token, "nothing/here"),
        lambda: issuer.create_grant_token(spec("other", vault_policies=("not-in-the-role",))),
    ):
        with pytest.raises(IssuerError) as caught:
            call()
        errors.append(caught.value)
    for error in errors:
        shown += [str(error), repr(error), repr(error.args)]
    for text in shown:
        assert_no_secret(text, *hidden)
    assert token.accessor in repr(token)  # accessors are fine to show: they cannot read
