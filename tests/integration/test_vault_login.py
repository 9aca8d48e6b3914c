"""The bot's own Vault log-in against a real OpenBao: every method, renewal, log-in again on 403.

Short TTLs (seconds) and a fast heartbeat make a token's whole life fit in a few seconds; the
minutes-long runs with real TTLs live in ``test_e2e_vault_login.py``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.domain.grant_kinds import DynamicSecretGrant
from bot.issuer import GrantSpec, IssuerError
from bot.vault import ResourceGrantShape, VaultIssuer, bot_policy_hcl
from bot.vault_login import (
    AppRoleLogin,
    JwtLogin,
    KubernetesLogin,
    Login,
    TokenKeeper,
    TokenLogin,
    VaultLoginError,
)
from tests.emulators.kubernetes_api import TokenReviewAPI, self_signed_ca_pem
from tests.integration.services import admin_policy

pytestmark = pytest.mark.integration

SUFFIX = secrets.token_hex(3)
ROLE = f"vl-grant-{SUFFIX}"
ADMIN_POLICY = f"vl-admin-{SUFFIX}"
RESOURCE = f"vl-payments-{SUFFIX}"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def token_valid(openbao: Any, token: str) -> bool:
    try:
        openbao.client().auth.token.lookup(token)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return False
    return True


class CountingLogin(Login):
    """Wraps a Login and counts the log-ins (to see "once per dead token")."""

    def __init__(self, inner: Login) -> None:
        self.inner = inner
        self.method = inner.method  # type: ignore[misc]
        self.count = 0
        self._lock = threading.Lock()

    def login(self, client: hvac.Client) -> None:
        with self._lock:
            self.count += 1
        self.inner.login(client)

    @property
    def can_log_in_again(self) -> bool:
        return self.inner.can_log_in_again

    def changed(self) -> bool:
        return self.inner.changed()


@pytest.fixture(scope="module")
def root(openbao: Any) -> hvac.Client:
    client: hvac.Client = openbao.client()
    # The bot's tokens in these tests may set itself up (create role and grant policies).
    admin_policy(client, ADMIN_POLICY)
    return client


@pytest.fixture(scope="module")
def approle(root: hvac.Client) -> Callable[..., AppRoleLogin]:
    """Factory: an AppRole (own mount per module) whose tokens live ``ttl`` (max ``max_ttl``)."""
    mount = f"approle-{SUFFIX}"
    root.sys.enable_auth_method("approle", path=mount)

    def make(ttl: str = "1h", max_ttl: str = "2h", name: str | None = None) -> AppRoleLogin:
        role = name or f"bot-{secrets.token_hex(3)}"
        root.auth.approle.create_or_update_approle(
            role,
            token_policies=[ADMIN_POLICY],
            token_ttl=ttl,
            token_max_ttl=max_ttl,
            mount_point=mount,
        )
        role_id = root.auth.approle.read_role_id(role, mount_point=mount)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(role, mount_point=mount)["data"][
            "secret_id"
        ]
        return AppRoleLogin(role_id, secret_id, mount=mount)

    return make


def grant_issuer(openbao: Any, keeper: TokenKeeper, vault_db: Any) -> VaultIssuer:
    issuer = VaultIssuer(keeper.client, token_role=ROLE, retry_wait=0.01, keeper=keeper)
    issuer.ensure_setup([ResourceGrantShape(RESOURCE, DynamicSecretGrant(vault_db.path))])
    return issuer


def new_client(openbao: Any) -> hvac.Client:
    return hvac.Client(url=openbao.addr, session=openbao.client().session)


def spec(vault_db: Any, minutes: int = 5) -> GrantSpec:
    return GrantSpec(
        request_id=1,
        resource=RESOURCE,
        requester="U0REQ",
        ttl=timedelta(minutes=minutes),
        max_ttl=timedelta(minutes=minutes * 2),
        grant=DynamicSecretGrant(vault_db.path),
    )


# ---------------------------------------------------------------------------- renewal


def test_periodic_token_is_renewed_and_stays_the_same(openbao: Any, root: hvac.Client) -> None:
    token = root.auth.token.create(policies=[ADMIN_POLICY], period="4s", no_parent=True)["auth"][
        "client_token"
    ]
    keeper = TokenKeeper(new_client(openbao), TokenLogin(token), heartbeat=0.5)
    keeper.log_in()
    keeper.start()
    try:
        time.sleep(9)  # more than two periods: without renewal the token is gone
        status = keeper.status()
        assert token_valid(openbao, token), "the periodic token died: it was not renewed"
        assert keeper.client.token == token
        assert status.valid and status.renewable and not status.dies_unrenewed
    finally:
        keeper.stop()


def test_approle_token_is_renewed_then_replaced_before_its_max_ttl(
    openbao: Any, approle: Callable[..., AppRoleLogin]
) -> None:
    login = CountingLogin(approle(ttl="3s", max_ttl="6s"))
    keeper = TokenKeeper(new_client(openbao), login, heartbeat=0.3)
    keeper.log_in()
    seen: set[str] = {keeper.client.token}
    keeper.start()
    try:
        deadline = time.monotonic() + 14
        while time.monotonic() < deadline:
            token = keeper.client.token
            seen.add(token)
            # At every moment the client's token works (renewed or replaced in time).
            assert keeper.client.auth.token.lookup_self()["data"]["ttl"] > 0
            time.sleep(0.25)
        assert len(seen) >= 2, "never logged in again although the max TTL is 6 s"
        assert login.count >= 2
        assert keeper.status().valid and not keeper.status().dies_unrenewed
    finally:
        keeper.stop()


def test_a_fixed_token_that_cannot_be_renewed_is_reported_as_dying(
    openbao: Any, root: hvac.Client
) -> None:
    token = root.auth.token.create(policies=[ADMIN_POLICY], ttl="1h", renewable=False)["auth"][
        "client_token"
    ]
    keeper = TokenKeeper(new_client(openbao), TokenLogin(token))
    keeper.log_in()
    status = keeper.status()
    assert status.valid and not status.renewable and status.dies_unrenewed
    assert 3500 < (status.ttl or 0) <= 3600
    assert "will expire unrenewed" in status.summary()
    assert status.ready  # an hour is not "about to expire"


def test_token_file_is_read_again_when_it_changes(
    openbao: Any, root: hvac.Client, tmp_path: Path
) -> None:
    first = root.auth.token.create(policies=[ADMIN_POLICY], ttl="1h")["auth"]["client_token"]
    second = root.auth.token.create(policies=[ADMIN_POLICY], ttl="1h")["auth"]["client_token"]
    path = tmp_path / "vault-token"
    path.write_text(first + "\n")
    keeper = TokenKeeper(new_client(openbao), TokenLogin(token_file=path), heartbeat=0.2)
    keeper.log_in()
    assert keeper.client.token == first
    keeper.start()
    try:
        path.write_text(second + "\n")  # what Vault Agent does when it renews its sink
        assert wait_until(lambda: keeper.client.token == second, timeout=5)
        root.auth.token.revoke(first)
        assert keeper.client.auth.token.lookup_self()["data"]["id"] == second
    finally:
        keeper.stop()


def test_heartbeat_notices_a_revoked_token_and_logs_in_again(
    openbao: Any, root: hvac.Client, approle: Callable[..., AppRoleLogin]
) -> None:
    keeper = TokenKeeper(new_client(openbao), approle(), heartbeat=0.2)
    keeper.log_in()
    old = keeper.client.token
    keeper.start()
    try:
        root.auth.token.revoke(old)
        assert wait_until(lambda: keeper.client.token != old and keeper.status().valid, 5)
        assert token_valid(openbao, keeper.client.token)
    finally:
        keeper.stop()


def test_fixed_token_revoked_makes_status_not_ready(openbao: Any, root: hvac.Client) -> None:
    token = root.auth.token.create(policies=[ADMIN_POLICY], ttl="1h")["auth"]["client_token"]
    keeper = TokenKeeper(new_client(openbao), TokenLogin(token), heartbeat=0.2)
    keeper.log_in()
    keeper.start()
    try:
        assert keeper.status().ready
        root.auth.token.revoke(token)
        assert wait_until(lambda: not keeper.status().ready, 5)
        assert "403" in (keeper.status().problem or "")
    finally:
        keeper.stop()


# ---------------------------------------------------------------------------- 403: log in again


def test_revocation_survives_a_dead_bot_token(
    openbao: Any,
    root: hvac.Client,
    approle: Callable[..., AppRoleLogin],
    vault_db: Any,
    postgres: Any,
) -> None:
    """The bot's token dies between issuing and revoking: the revocation still happens, after
    one new log-in; and the grant, an orphan, outlived the bot token that created it."""
    login = CountingLogin(approle())
    keeper = TokenKeeper(new_client(openbao), login)  # no thread: only the 403 path acts
    keeper.log_in()
    issuer = grant_issuer(openbao, keeper, vault_db)
    grant = issuer.create_grant_token(spec(vault_db))
    secret = issuer.obtain(grant, spec(vault_db))
    username = secret.values["username"].reveal()

    root.auth.token.revoke(keeper.client.token)  # not orphan-revoke: children would die too
    assert postgres.role_exists(username), "the grant died with the bot's token: not an orphan"
    assert not issuer.confirm_revoked(grant.accessor, secret.lease_id)
    assert login.count == 2  # the lookup above logged in again, once

    issuer.revoke(grant.accessor, secret.lease_id)
    assert issuer.confirm_revoked(grant.accessor, secret.lease_id)
    assert not postgres.role_exists(username)
    assert login.count == 2


def test_token_creation_is_not_retried_after_a_403(
    openbao: Any, root: hvac.Client, approle: Callable[..., AppRoleLogin], vault_db: Any
) -> None:
    login = CountingLogin(approle())
    keeper = TokenKeeper(new_client(openbao), login)
    keeper.log_in()
    issuer = grant_issuer(openbao, keeper, vault_db)
    root.auth.token.revoke(keeper.client.token)
    created_before = len(root.list("auth/token/accessors")["data"]["keys"])
    with pytest.raises(IssuerError, match="403"):
        issuer.create_grant_token(spec(vault_db))
    assert login.count == 2, "the 403 should have logged in again for the next call"
    # One new token: the bot's own new log-in; no grant token was created by a retry.
    assert len(root.list("auth/token/accessors")["data"]["keys"]) == created_before + 1
    grant = issuer.create_grant_token(spec(vault_db))  # the next approval works
    issuer.revoke(grant.accessor, None)


def test_concurrent_403s_log_in_again_once(
    openbao: Any, root: hvac.Client, approle: Callable[..., AppRoleLogin], vault_db: Any
) -> None:
    login = CountingLogin(approle())
    keeper = TokenKeeper(new_client(openbao), login)
    keeper.log_in()
    issuer = grant_issuer(openbao, keeper, vault_db)
    grants = [issuer.create_grant_token(spec(vault_db)) for _ in range(6)]
    root.auth.token.revoke(keeper.client.token)
    errors: list[BaseException] = []

    def revoke(accessor: str) -> None:
        try:
            issuer.revoke(accessor, None)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=revoke, args=(g.accessor,)) for g in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert login.count == 2
    assert all(issuer.confirm_revoked(g.accessor, None) for g in grants)


def test_plain_token_403_is_not_retried_with_the_same_token(
    openbao: Any, root: hvac.Client
) -> None:
    token = root.auth.token.create(policies=[ADMIN_POLICY], ttl="1h")["auth"]["client_token"]
    login = CountingLogin(TokenLogin(token))
    keeper = TokenKeeper(new_client(openbao), login)
    keeper.log_in()
    issuer = VaultIssuer(keeper.client, token_role=ROLE, retry_wait=0.01, keeper=keeper)
    root.auth.token.revoke(token)
    with pytest.raises(IssuerError, match="403"):
        issuer.revoke("no-such-accessor", None)
    assert login.count == 1
    assert not keeper.status().ready


# ---------------------------------------------------------------------------- workload identity


@pytest.fixture(scope="module")
def jwt_auth(root: hvac.Client) -> tuple[Any, str]:
    """A ``jwt`` auth mount that trusts one RSA key (offline: jwt_validation_pubkeys)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    mount = f"jwt-{SUFFIX}"
    root.sys.enable_auth_method("jwt", path=mount)
    root.write_data(f"auth/{mount}/config", data={"jwt_validation_pubkeys": [public]})
    root.write_data(
        f"auth/{mount}/role/debug-access",
        data={
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "bound_subject": "system:serviceaccount:ops:debug-access",
            "token_policies": [ADMIN_POLICY],
            "token_ttl": "1h",
        },
    )
    return key, mount


def service_account_jwt(key: Any, subject: str = "system:serviceaccount:ops:debug-access") -> str:
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc",
        "sub": subject,
        "aud": ["vault"],
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    }
    return jwt.encode(claims, key, algorithm="RS256")


def test_jwt_login_reads_the_service_account_token_file(
    openbao: Any,
    jwt_auth: tuple[Any, str],
    tmp_path: Path,
    vault_db: Any,
    root: hvac.Client,
) -> None:
    key, mount = jwt_auth
    token_file = tmp_path / "token"
    token_file.write_text(service_account_jwt(key))
    keeper = TokenKeeper(new_client(openbao), JwtLogin("debug-access", token_file, mount))
    keeper.log_in()
    assert keeper.status().valid and keeper.status().method == "jwt"
    issuer = grant_issuer(openbao, keeper, vault_db)
    grant = issuer.create_grant_token(spec(vault_db))
    info = root.write_data("auth/token/lookup-accessor", data={"accessor": grant.accessor})
    assert info["data"]["orphan"] is True
    issuer.revoke(grant.accessor, None)

    # Kubernetes rotates the projected token: the next log-in reads the new one.
    token_file.write_text(service_account_jwt(key))
    old = keeper.client.token
    root.auth.token.revoke(old)
    assert keeper.login_again_after_denied(old)
    assert keeper.client.token != old


def test_jwt_login_with_a_wrong_subject_fails_cleanly(
    openbao: Any, jwt_auth: tuple[Any, str], tmp_path: Path
) -> None:
    key, mount = jwt_auth
    token_file = tmp_path / "token"
    forged = service_account_jwt(key, subject="system:serviceaccount:ops:someone-else")
    token_file.write_text(forged)
    keeper = TokenKeeper(new_client(openbao), JwtLogin("debug-access", token_file, mount))
    with pytest.raises(VaultLoginError) as caught:
        keeper.log_in()
    assert "log-in failed" in str(caught.value)
    assert forged not in str(caught.value)
    assert not keeper.status().valid


def test_missing_secret_id_file_is_a_one_line_error(openbao: Any, tmp_path: Path) -> None:
    login = AppRoleLogin("some-role-id", secret_id_file=tmp_path / "nope")
    keeper = TokenKeeper(new_client(openbao), login)
    with pytest.raises(VaultLoginError, match="cannot read the AppRole secret id"):
        keeper.log_in()


def kubernetes_jwt(key: Any, namespace: str = "ops", name: str = "debug-access") -> str:
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc",
        "aud": ["vault"],
        "iat": now,
        "exp": now + 600,
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": "uid-1"}},
    }
    return jwt.encode(claims, key, algorithm="RS256")


@pytest.fixture(scope="module")
def kubernetes_auth(root: hvac.Client) -> Iterator[tuple[TokenReviewAPI, str]]:
    """A ``kubernetes`` auth mount whose TokenReview calls go to the stand-in."""
    api = TokenReviewAPI()
    mount = f"kubernetes-{SUFFIX}"
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.write_data(
        f"auth/{mount}/config",
        data={
            "kubernetes_host": api.url,
            "kubernetes_ca_cert": self_signed_ca_pem(),
            "disable_local_ca_jwt": True,
            "token_reviewer_jwt": "reviewer-jwt",
        },
    )
    root.write_data(
        f"auth/{mount}/role/debug-access",
        data={
            "bound_service_account_names": ["debug-access"],
            "bound_service_account_namespaces": ["ops"],
            "token_policies": [ADMIN_POLICY],
            "token_ttl": "1h",
        },
    )
    yield api, mount
    api.stop()


def test_kubernetes_login_is_reviewed_by_the_cluster(
    openbao: Any,
    kubernetes_auth: tuple[TokenReviewAPI, str],
    tmp_path: Path,
    vault_db: Any,
    root: hvac.Client,
) -> None:
    api, mount = kubernetes_auth
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = kubernetes_jwt(key)
    api.allow(token, "ops", "debug-access", "uid-1")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    keeper = TokenKeeper(new_client(openbao), KubernetesLogin("debug-access", token_file, mount))
    keeper.log_in()
    assert keeper.status().valid and keeper.status().method == "kubernetes"
    assert api.reviews[-1]["body"]["spec"]["token"] == token
    issuer = grant_issuer(openbao, keeper, vault_db)
    grant = issuer.create_grant_token(spec(vault_db))
    info = root.write_data("auth/token/lookup-accessor", data={"accessor": grant.accessor})
    assert info["data"]["orphan"] is True
    issuer.revoke(grant.accessor, None)


def test_kubernetes_login_refused_by_the_cluster_fails_cleanly(
    openbao: Any,
    kubernetes_auth: tuple[TokenReviewAPI, str],
    tmp_path: Path,
) -> None:
    _api, mount = kubernetes_auth
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token_file = tmp_path / "token"
    token = kubernetes_jwt(key)  # never allowed: the review says "not authenticated"
    token_file.write_text(token)
    keeper = TokenKeeper(new_client(openbao), KubernetesLogin("debug-access", token_file, mount))
    with pytest.raises(VaultLoginError) as caught:
        keeper.log_in()
    assert "kubernetes" in str(caught.value) and token not in str(caught.value)


def test_least_privilege_403s_do_not_log_in_again(
    openbao: Any,
    root: hvac.Client,
    vault_db: Any,
    approle: Callable[..., AppRoleLogin],
) -> None:
    """With the production policy, set-up meets 403s by design (it may not write policies):
    the token is alive, so they must not cost a log-in (each would burn a secret-id use)."""
    grant_issuer(openbao, TokenKeeper(new_client(openbao), approle()), vault_db)  # role exists
    root.sys.create_or_update_policy(f"vl-bot-{SUFFIX}", bot_policy_hcl(ROLE))
    mount = f"approle-{SUFFIX}"
    root.auth.approle.create_or_update_approle(
        "least", token_policies=[f"vl-bot-{SUFFIX}"], token_ttl="1h", mount_point=mount
    )
    role_id = root.auth.approle.read_role_id("least", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("least", mount_point=mount)["data"][
        "secret_id"
    ]
    login = CountingLogin(AppRoleLogin(role_id, secret_id, mount=mount))
    keeper = TokenKeeper(new_client(openbao), login)
    keeper.log_in()
    issuer = VaultIssuer(keeper.client, token_role=ROLE, retry_wait=0.01, keeper=keeper)
    report = issuer.ensure_setup(
        [
            ResourceGrantShape(f"vl-other-{n}-{SUFFIX}", DynamicSecretGrant(vault_db.path))
            for n in range(3)
        ]
    )
    assert report.not_created  # the 403s happened
    assert login.count == 1
    assert keeper.status().ready
