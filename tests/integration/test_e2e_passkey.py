"""Passkey step-up end to end, in a real browser: headless Chromium with WebAuthn virtual
authenticators (CDP), the real bot process, real OpenBao and PostgreSQL, Slack emulated.

One bot, one browser and one tab per person for the whole module (a virtual authenticator
belongs to its tab): Alice's and Bob's tabs hold their passkeys once enrolled, the stranger's
tab an authenticator with none. The tests run in file order and share that state. Links live
``LINK_TTL`` seconds here, so the expiry test waits seconds, not minutes.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.browser import Browser, Tab, require_chromium
from tests.integration.flows import (
    ALICE,
    BOB,
    REQUESTER,
    approval_message,
    audit_actions,
    blocks_text,
    bot_rows,
    click,
    credentials_message,
    pg_login_and_select,
    policy_for,
    reply_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
    bot_environment,
    free_port,
    write_policy,
)

pytestmark = pytest.mark.integration

LINK_TTL = 6
LINK = re.compile(r"<(http://localhost:\d+/passkey#[A-Za-z0-9_-]+)\|")


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def bot(
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> Iterator[BotProcess]:
    require_chromium()  # before starting anything: fail (CI) or skip early
    name = f"bot_{secrets.token_hex(6)}"
    postgres.create_database(name)
    workdir = Path(tempfile.mkdtemp(prefix="passkey-bot-"))
    policy = policy_for(vault_db.path)
    policy["resources"]["payments-db"]["step_up"] = "passkey"
    policy["resources"]["payments-db"]["break_glass"] = {"max_duration": "1h", "step_up": "passkey"}
    port = free_port()
    policy_path = write_policy(policy, workdir)
    env = bot_environment(
        slack,
        openbao,
        postgres.sqlalchemy_url(name),
        policy_path,
        port,
        secrets.token_hex(16),
        # localhost is a secure context for WebAuthn; 127.0.0.1 would be another origin.
        {"PUBLIC_URL": f"http://localhost:{port}", "STEP_UP_LINK_TTL_SECONDS": str(LINK_TTL)},
    )
    process = BotProcess(env, port, policy_path, workdir, slack)
    try:
        yield process.start()
    finally:
        process.stop()
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def browser(bot: BotProcess) -> Iterator[Browser]:
    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def tabs(browser: Browser) -> dict[str, Tab]:
    people = {name: browser.tab() for name in ("alice", "bob", "stranger", "requester")}
    for tab in people.values():
        tab.add_authenticator()
    return people


def link_in(text: str) -> str:
    match = LINK.search(text)
    assert match, f"no passkey link in: {text}"
    return match.group(1)


def ask(bot: BotProcess, slack: SlackEmulator, reason: str = "INC-4211 checkout errors") -> int:
    return request_access(bot, slack, REQUESTER, f"payments-db 30m {reason}")


def approve_click(bot: BotProcess, slack: SlackEmulator, user: str, request_id: int) -> str:
    """Click Approve as ``user``; the ephemeral answer's text."""
    return str(
        click(bot, slack, user, approval_message(slack, request_id), ActionId.APPROVE)["text"]
    )


def confirm(tab: Tab, url: str) -> tuple[bool, str]:
    """Open the link, check the keyboard focus is on the button, press Enter: the outcome."""
    tab.open(url)
    assert tab.focused_id() == "confirm"
    tab.press_enter()
    return tab.outcome()


def test_an_approver_without_a_passkey_is_sent_to_enrol_and_enrols(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    request_id = ask(bot, slack)
    answer = approve_click(bot, slack, ALICE, request_id)
    assert "not registered" in answer and "Approve* again" in answer
    assert request_status(postgres, bot, request_id) == "pending"

    ok, message = confirm(tabs["alice"], link_in(answer))
    assert ok and "registered" in message, message
    (credential,) = tabs["alice"].credentials()
    assert credential["rpId"] == "localhost" and credential["isResidentCredential"]
    rows = bot_rows(postgres, bot, 'SELECT "user", sign_count FROM passkey_credential')
    assert [row[0] for row in rows] == [ALICE]
    assert request_status(postgres, bot, request_id) == "pending"  # enrolling approves nothing


def test_approve_with_the_passkey_and_the_credentials_arrive(
    bot: BotProcess,
    slack: SlackEmulator,
    postgres: PostgresServer,
    openbao: OpenBaoServer,
    tabs: dict[str, Tab],
) -> None:
    # A tag with no closing ">": the slash command keeps it (a whole "<...>" is read as a Slack
    # link since the lock's reasons), and unescaped it would open an <img> with an onerror.
    hostile = 'INC-77 & "checkout" <img src=x onerror=alert(1) '
    request_id = ask(bot, slack, hostile)
    answer = approve_click(bot, slack, ALICE, request_id)
    assert f"request #{request_id}" in answer and "confirm with your passkey" in answer
    tab = tabs["alice"]
    tab.open(link_in(answer))
    assert tab.text("title") == "Confirm your approval"
    summary = tab.text("summary")
    for shown in (REQUESTER, "payments-db", "30m", ALICE, hostile.strip()):
        assert shown in summary, summary  # as text: the reason's markup is not markup
    assert tab.evaluate("document.querySelectorAll('#summary img').length") == 0
    assert request_status(postgres, bot, request_id) == "pending"

    tab.press_enter()
    ok, message = tab.outcome()
    assert ok and f"Approved request #{request_id}" in message, message
    values = unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)
    assert pg_login_and_select(postgres, values["username"], values["password"]) == 3
    actions = audit_actions(postgres, bot, request_id)
    assert actions[:3] == ["requested", "step_up_requested", "approved"]
    (details,) = bot_rows(
        postgres,
        bot,
        f"SELECT details FROM audit_event WHERE request_id = {request_id} AND action = 'approved'",
    )
    assert json.loads(details[0])["step_up"] == "passkey"
    assert bot_rows(postgres, bot, "SELECT sign_count FROM passkey_credential")[0][0] >= 1


def test_a_replayed_assertion_is_refused(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    request_id = ask(bot, slack)
    tab = tabs["alice"]
    tab.open(link_in(approve_click(bot, slack, ALICE, request_id)))
    tab.record_posts()
    tab.press_enter()
    assert tab.outcome()[0]
    (posted,) = tab.posted("/passkey/finish")
    assert posted["credential"]["response"]["signature"]

    replay = requests.post(f"{bot.base_url}/passkey/finish", json=posted, timeout=10)
    assert replay.status_code == 403 and "already used" in replay.json()["message"]
    # The same answer against a fresh link (another request) signs the wrong challenge.
    second = ask(bot, slack)
    posted["token"] = link_in(approve_click(bot, slack, ALICE, second)).split("#", 1)[1]
    replay = requests.post(f"{bot.base_url}/passkey/finish", json=posted, timeout=10)
    assert replay.status_code == 403 and "could not be verified" in replay.json()["message"]
    assert request_status(postgres, bot, second) == "pending"


def test_a_wrong_authenticator_does_not_count(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    request_id = ask(bot, slack)
    ok, message = confirm(tabs["stranger"], link_in(approve_click(bot, slack, ALICE, request_id)))
    assert not ok and "No passkey was used" in message, message
    assert request_status(postgres, bot, request_id) == "pending"


def test_another_users_passkey_is_refused(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    # Bob enrols from the App Home: the button sends him a link by DM.
    bot.sender.event({"type": "app_home_opened", "user": BOB, "tab": "home"})
    home = slack.wait_for("views.publish", lambda c: c.params["user_id"] == BOB).params["view"]
    assert "Register passkey" in blocks_text(home)
    bot.sender.click_in_view(BOB, home, ActionId.ENROL_PASSKEY)
    dm = wait_until(
        lambda: next(
            (m for m in slack.messages(slack.dm_channel(BOB)) if "/passkey#" in m.get("text", "")),
            None,
        ),
        what="Bob's enrolment link by DM",
    )
    ok, message = confirm(tabs["bob"], link_in(dm["text"]))
    assert ok, message

    # Alice's link, opened by Bob with his own (registered) passkey.
    request_id = ask(bot, slack)
    ok, message = confirm(tabs["bob"], link_in(approve_click(bot, slack, ALICE, request_id)))
    assert not ok and "belongs to someone else" in message, message
    assert request_status(postgres, bot, request_id) == "pending"
    assert "step_up_refused" in audit_actions(postgres, bot, request_id)


def test_a_link_for_a_decided_request_shows_so_and_deny_needs_no_passkey(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    request_id = ask(bot, slack)
    url = link_in(approve_click(bot, slack, ALICE, request_id))
    answer = click(bot, slack, BOB, approval_message(slack, request_id), ActionId.DENY)
    assert "denied" in answer["text"]
    assert request_status(postgres, bot, request_id) == "denied"
    tab = tabs["alice"]
    tab.open(url)
    assert "already been decided" in tab.text("problem")
    assert tab.evaluate("document.getElementById('confirm').hidden") is True


def test_an_expired_link_shows_so(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer, tabs: dict[str, Tab]
) -> None:
    request_id = ask(bot, slack)
    url = link_in(approve_click(bot, slack, ALICE, request_id))
    token = url.split("#", 1)[1]

    def expired() -> bool:
        answer = requests.post(f"{bot.base_url}/passkey/begin", json={"token": token}, timeout=5)
        return answer.status_code == 403 and "expired" in answer.json()["message"]

    wait_until(expired, timeout=LINK_TTL + 5, what="the link to expire")
    tab = tabs["alice"]
    tab.open(url)
    assert "expired" in tab.text("problem")
    assert request_status(postgres, bot, request_id) == "pending"


def test_no_link_token_reaches_the_database_or_the_log(
    bot: BotProcess, slack: SlackEmulator, postgres: PostgresServer
) -> None:
    request_id = ask(bot, slack)
    token = link_in(approve_click(bot, slack, ALICE, request_id)).split("#", 1)[1]
    rows = bot_rows(postgres, bot, "SELECT * FROM step_up_link")
    assert rows and token not in repr(rows)
    assert token not in bot.log_text()


def test_break_glass_is_issued_only_after_the_requesters_passkey(
    bot: BotProcess,
    slack: SlackEmulator,
    postgres: PostgresServer,
    openbao: OpenBaoServer,
    tabs: dict[str, Tab],
) -> None:
    def break_glass() -> str:
        sent = bot.sender.slash(REQUESTER, "payments-db 15m --break-glass INC-5 site down")
        assert sent.status_code == 200
        return str(reply_to(slack, str(sent.response_key))["text"])

    def break_glass_rows() -> int:
        query = "SELECT count(*) FROM access_request WHERE break_glass"
        return int(bot_rows(postgres, bot, query)[0][0])

    answer = break_glass()
    assert "not registered" in answer
    tab = tabs["requester"]
    assert confirm(tab, link_in(answer))[0]

    answer = break_glass()
    assert "needs your passkey" in answer and break_glass_rows() == 0
    tab.open(link_in(answer))
    assert tab.text("title") == "Confirm break-glass access"
    assert "INC-5 site down" in tab.text("summary")
    tab.press_enter()
    ok, message = tab.outcome()
    assert ok, message
    request_id = int(re.search(r"Break-glass access #(\d+)", message).group(1))
    values = unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)
    assert pg_login_and_select(postgres, values["username"], values["password"]) == 3
    assert audit_actions(postgres, bot, request_id)[0] == "break_glass"


def test_socket_mode_serves_the_page_on_the_probes_port(
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """In Socket Mode Slack's traffic comes over the socket; the page is on the probes port
    (PORT), and a whole approval goes through it."""
    from tests.emulators.socket_mode import SocketModeEmulator
    from tests.integration.test_e2e_socket_mode import SocketModeBot

    name = f"bot_{secrets.token_hex(6)}"
    postgres.create_database(name)
    with SlackEmulator() as own_slack, SocketModeEmulator() as socket_mode:
        socket_mode.attach(own_slack)
        policy = policy_for(vault_db.path)
        policy["resources"]["payments-db"]["step_up"] = "passkey"
        port = free_port()
        env = bot_environment(
            own_slack,
            openbao,
            postgres.sqlalchemy_url(name),
            write_policy(policy, tmp_path),
            port,
            "unused-in-socket-mode",
            {"SLACK_APP_TOKEN": own_slack.app_token, "PUBLIC_URL": f"http://localhost:{port}"},
        )
        socket_bot = SocketModeBot(
            env,
            port,
            Path(env["DEBUG_ACCESS_POLICY"]),
            tmp_path,
            own_slack,
            socket_mode=socket_mode,
        )
        try:
            socket_bot.start()
            tab = browser.tab()
            tab.add_authenticator()
            request_id = ask(socket_bot, own_slack)
            assert confirm(tab, link_in(approve_click(socket_bot, own_slack, ALICE, request_id)))[0]
            ok, message = confirm(
                tab, link_in(approve_click(socket_bot, own_slack, ALICE, request_id))
            )
            assert ok and f"Approved request #{request_id}" in message, message
            values = unwrap_from(credentials_message(own_slack, REQUESTER, request_id), openbao)
            assert pg_login_and_select(postgres, values["username"], values["password"]) == 3
        finally:
            socket_bot.stop()
            postgres.drop_database(name)
