"""Vault faults seen from outside: the real bot talks to the real OpenBao through a TCP proxy
that the test cuts, hangs, makes forget idle connections (as a load balancer does), or makes
lose one answer. Each test measures what the people in Slack see, and what is live in Vault.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import hvac
import pytest

from bot.domain.grant_kinds import VaultTokenGrant
from bot.issuer import GrantSpec, IssuerError
from bot.slack.ids import ActionId
from bot.vault import ResourceGrantShape, VaultIssuer, bot_policy_hcl
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    AUDIT,
    REQUESTER,
    approval_message,
    audit_actions,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    pg_login_and_select,
    policy_for,
    posts_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.proxy import CuttableProxy
from tests.integration.services import (
    CREATION_STATEMENTS,
    REVOCATION_STATEMENTS,
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
)

pytestmark = pytest.mark.integration

#: The bot's Vault timeout in these tests (VAULT_TIMEOUT): a hang costs this, not a minute.
TIMEOUT = 3


@pytest.fixture
def proxy(openbao: OpenBaoServer) -> Any:
    host, port = openbao.addr.removeprefix("http://").rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    yield proxy
    proxy.close()


def bot_behind(run_bot: Any, proxy: CuttableProxy, policy: dict[str, Any]) -> BotProcess:
    return run_bot(
        policy,
        env={"VAULT_ADDR": f"http://127.0.0.1:{proxy.port}", "VAULT_TIMEOUT": str(TIMEOUT)},
    )


def dm_texts(slack: SlackEmulator, user: str) -> list[str]:
    return [str(m.get("text", "")) for m in slack.messages(slack.dm_channel(user))]


def dm_with(slack: SlackEmulator, user: str, marker: str, timeout: float = 20) -> str:
    return str(
        wait_until(
            lambda: next((t for t in dm_texts(slack, user) if marker in t), None),
            timeout=timeout,
            what=f"a DM to {user} with {marker!r}",
        )
    )


def live_grant_tokens(openbao: OpenBaoServer, request_id: int, since: float) -> list[dict]:
    """Grant tokens Vault holds for ``request_id`` created since ``since`` (unix time): the
    shared OpenBao also holds other tests' grants, whose request ids repeat."""
    root = openbao.client()
    try:
        accessors = root.list("auth/token/accessors")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []
    found = []
    for accessor in accessors:
        try:
            data = root.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.InvalidRequest:
            continue  # expired meanwhile
        meta = data.get("meta") or {}
        if meta.get("request_id") == str(request_id) and data["creation_time"] >= int(since):
            found.append(data)
    return found


# ------------------------------------------------------------------ the issuer alone


def issuer_behind(proxy: CuttableProxy, openbao: OpenBaoServer) -> VaultIssuer:
    return VaultIssuer.from_settings(
        f"http://127.0.0.1:{proxy.port}", openbao.root_token, timeout=TIMEOUT, retry_wait=0.01
    )


def test_a_hung_vault_costs_one_timeout_per_revocation(
    openbao: OpenBaoServer, proxy: CuttableProxy
) -> None:
    issuer = issuer_behind(proxy, openbao)
    proxy.hang()
    started = time.monotonic()
    with pytest.raises(IssuerError, match=f"did not answer within {TIMEOUT}s") as caught:
        issuer.revoke("some-accessor", "database/creds/x/some-lease")
    took = time.monotonic() - started
    assert took < TIMEOUT + 1.5, f"a hung Vault held the revocation {took:.1f}s"
    assert caught.value.unreachable


@pytest.mark.parametrize("silently", [True, False])
def test_writes_survive_connections_a_load_balancer_forgot(
    openbao: OpenBaoServer, proxy: CuttableProxy, silently: bool
) -> None:
    issuer = issuer_behind(proxy, openbao)
    assert issuer.confirm_revoked("no-such-accessor", None)  # a pooled keep-alive connection
    proxy.drop_idle(0.3, silently=silently)
    wait_until(lambda: proxy.events.get("dropped_idle"), timeout=5, what="an idle drop")
    wrapped = issuer.wrap({"k": "v"}, timedelta(minutes=1))  # a write: never on a stale one
    assert openbao.client(token=wrapped.reveal()).sys.unwrap()["data"] == {"k": "v"}
    assert proxy.events.get("reset_stale", 0) == 0


@pytest.mark.parametrize("how", ["reset", "hang"])
def test_a_write_whose_answer_is_lost_is_not_sent_again(
    openbao: OpenBaoServer, proxy: CuttableProxy, how: str
) -> None:
    issuer = issuer_behind(proxy, openbao)
    proxy.lose_answer(b"/v1/sys/wrapping/wrap", how=how)
    with pytest.raises(IssuerError) as caught:
        issuer.wrap({"k": "v"}, timedelta(minutes=1))
    assert caught.value.maybe_done
    assert proxy.events.get("answer_lost") == 1
    assert proxy.events.get("accepted") == 1  # one connection, one request: no second try


@pytest.mark.parametrize("take_back", [True, False])
def test_a_lost_token_creation_is_taken_back_where_the_policy_allows(
    openbao: OpenBaoServer, proxy: CuttableProxy, take_back: bool
) -> None:
    """With the production policy's take-back lines the bot chose the token's id, so it revokes
    what Vault made and has it confirmed; without them it says the token may exist."""
    root = openbao.client()
    role = f"vf-grant-{'tb' if take_back else 'plain'}"
    VaultIssuer(root, token_role=role).ensure_setup(
        [ResourceGrantShape("vf-kv", VaultTokenGrant(("vf-kv-read",)))]
    )
    name = f"vf-bot-{role}"
    root.sys.create_or_update_policy(name, bot_policy_hcl(role, take_back=take_back))
    bot_token = root.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"]
    issuer = VaultIssuer.from_settings(
        f"http://127.0.0.1:{proxy.port}", bot_token, token_role=role, timeout=TIMEOUT
    )
    started = time.time() - 1
    request_id = 900_000 + int(take_back)
    proxy.lose_answer(f"/v1/auth/token/create/{role}".encode(), how="reset")
    with pytest.raises(IssuerError) as caught:
        issuer.create_grant_token(
            GrantSpec(
                request_id=request_id,
                requester="U0TESTER",
                resource="vf-kv",
                ttl=timedelta(minutes=5),
                max_ttl=timedelta(minutes=10),
                grant=VaultTokenGrant(("vf-kv-read",)),
            )
        )
    assert proxy.events.get("answer_lost") == 1
    live = live_grant_tokens(openbao, request_id, started)
    if take_back:
        assert "revoked (Vault confirmed)" in str(caught.value)
        assert not caught.value.maybe_done
        assert live == []
    else:
        assert caught.value.maybe_done
        assert len(live) == 1 and live[0]["ttl"] <= 5 * 60  # ends by itself
        root.auth.token.revoke_accessor(live[0]["accessor"])


# ------------------------------------------------------------------ the bot, end to end


def test_approval_after_a_load_balancer_forgot_the_idle_connection(
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    proxy: CuttableProxy,
) -> None:
    bot = bot_behind(run_bot, proxy, policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-90 idle pool")
    message = approval_message(slack, request_id)
    # The proxy forgets connections idle for a second, without telling the bot (no FIN): the
    # next request on one is answered by a reset and never reaches Vault.
    proxy.drop_idle(1.0, silently=True)
    dropped = proxy.events.get("dropped_idle", 0)
    wait_until(
        lambda: proxy.events.get("dropped_idle", 0) > dropped, timeout=15, what="an idle drop"
    )
    answer = click(bot, slack, ALICE, message, ActionId.APPROVE)
    assert "it is now active" in answer["text"], answer["text"]
    creds = unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)
    assert pg_login_and_select(postgres, creds["username"], creds["password"]) == 3
    assert request_status(postgres, bot, request_id) == "active"


@pytest.mark.parametrize("fault", ["hang", "cut"])
def test_vault_failing_at_expiry_alerts_within_seconds_and_revokes_on_its_return(
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    proxy: CuttableProxy,
    fault: str,
) -> None:
    """Vault hangs (accepts connections, never answers) or is cut (refuses them) across a
    grant's expiry: the audit channel hears of it within seconds, the grant stays being revoked,
    and it is revoked within seconds of Vault's return."""
    # A database role whose leases last 12 s: Vault caps the grant there, so it expires soon.
    brief = "payments-brief"
    openbao.client().secrets.database.create_role(
        name=brief,
        db_name=vault_db.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl="12s",
        max_ttl="12s",
        mount_point=vault_db.mount,
    )
    policy = policy_for(vault_db.path)
    policy["resources"]["payments-db"]["grant"]["path"] = f"{vault_db.mount}/creds/{brief}"
    bot = bot_behind(run_bot, proxy, policy)
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-91 hang")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, request_id)
    expires_at = bot_rows(
        postgres,
        bot,
        f'SELECT expires_at, token_accessor FROM "grant" WHERE request_id = {request_id}',
    )[0]
    accessor = str(expires_at[1])
    if fault == "hang":
        proxy.hang()  # Vault accepts connections and never answers
    else:
        proxy.cut()  # connections refused
    seconds_left = expires_at[0].timestamp() - time.time()
    assert 0 < seconds_left < 15, seconds_left

    alert = slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == AUDIT and "failing to revoke" in str(c.params.get("text"))
        ),
        timeout=seconds_left + 20,
    )
    alerted_after = time.time() - expires_at[0].timestamp()
    print(f"{fault}: first alert {alerted_after:.1f}s after expiry")
    assert alerted_after < 2 * TIMEOUT + 3, f"first alert {alerted_after:.1f}s after expiry"
    assert ":rotating_light:" in alert.params["text"]
    expected = "did not answer" if fault == "hang" else "could not reach Vault"
    assert expected in alert.params["text"]
    assert request_status(postgres, bot, request_id) == "revoking"
    time.sleep(2 * TIMEOUT)  # fail-closed while Vault hangs: never marked ended
    assert request_status(postgres, bot, request_id) == "revoking"
    assert bot_rows(postgres, bot, 'SELECT status FROM "grant"')[0][0] == "revoking"
    alerts = [c for c in posts_to(slack, AUDIT) if "failing to revoke" in str(c.params["text"])]
    assert len(alerts) <= 2, "retries every few seconds must not flood the audit channel"

    proxy.restore()
    returned = time.monotonic()
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "ended",
        timeout=20,
        what="the revocation after Vault's return",
    )
    revoked_after = time.monotonic() - returned
    print(f"{fault}: revoked {revoked_after:.1f}s after Vault's return")
    assert revoked_after < 10, f"revoked {revoked_after:.1f}s after Vault returned"
    root = openbao.client()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.token.lookup_accessor(accessor)
    lease = str(bot_rows(postgres, bot, 'SELECT lease_id FROM "grant"')[0][0])
    assert lease_gone(openbao, lease)
    actions = audit_actions(postgres, bot, request_id)
    assert "revoke_failed" in actions and actions[-1] == "expired"


def test_vault_cut_at_approval_fails_clearly_and_issues_nothing(
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    proxy: CuttableProxy,
) -> None:
    started = time.time() - 1
    bot = bot_behind(run_bot, proxy, policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-92 cut")
    message = approval_message(slack, request_id)
    proxy.cut()
    clicked = time.monotonic()
    answer = click(bot, slack, ALICE, message, ActionId.APPROVE)
    took = time.monotonic() - clicked
    print(f"approver answered after {took:.1f}s")
    assert "it is now failed" in answer["text"], answer["text"]
    assert took < TIMEOUT + 5
    told = dm_with(slack, REQUESTER, f"Request #{request_id}")
    assert "could not reach Vault" in told and "Nothing was issued" in told, told
    assert "ask again" in told
    approver = dm_with(slack, ALICE, f"You approved request #{request_id}")
    assert "could not reach Vault" in approver
    assert request_status(postgres, bot, request_id) == "failed"
    failure = bot_rows(postgres, bot, f"SELECT failure FROM access_request WHERE id = {request_id}")
    assert "could not reach Vault" in str(failure[0][0])
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 0
    assert audit_actions(postgres, bot, request_id)[-1] == "failed"
    proxy.restore()
    assert live_grant_tokens(openbao, request_id, started) == []


@pytest.mark.parametrize("how", ["reset", "hang"])
def test_lost_answer_to_the_token_creation_is_told_honestly(
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    proxy: CuttableProxy,
    how: str,
) -> None:
    started = time.time() - 1
    bot = bot_behind(run_bot, proxy, policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-93 lost answer")
    message = approval_message(slack, request_id)
    proxy.lose_answer(b"/v1/auth/token/create/", how=how)
    answer = click(bot, slack, ALICE, message, ActionId.APPROVE)
    assert proxy.events.get("answer_lost") == 1
    assert "it is now failed" in answer["text"], answer["text"]
    told = dm_with(slack, REQUESTER, f"Request #{request_id}")
    # The bot's token (root here) may choose token ids: what Vault made was revoked by its id,
    # and Vault confirmed it gone. (Without that capability the requester hears that a token may
    # exist and when it ends: test_a_lost_token_creation_is_taken_back_where_the_policy_allows.)
    assert "revoked (Vault confirmed)" in told and "Nothing was issued" in told, told
    assert live_grant_tokens(openbao, request_id, started) == []
    assert request_status(postgres, bot, request_id) == "failed"
    assert "issuing failed" in dm_with(slack, ALICE, f"You approved request #{request_id}")
