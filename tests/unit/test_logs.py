"""Secrets never reach a log line: SecretValue hides itself, RedactingFilter masks the rest."""

from __future__ import annotations

import io
import json
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from slack_bolt import App, BoltRequest
from slack_bolt.authorization import AuthorizeResult

from bot.issuer import GrantToken, Obtained, SecretValue
from bot.logs import (
    MASK,
    RedactingFilter,
    configure_logging,
    log_context,
    log_handler,
    redact,
    remember_secret,
)
from bot.ports import CredentialDelivery
from tests.unit.fakes import START


@dataclass
class Captured:
    logger: logging.Logger
    stream: io.StringIO

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A logger whose handler formats through RedactingFilter, as configure_logging sets up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.redaction.{secrets.token_hex(4)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield Captured(logger, stream)
    logger.removeHandler(handler)


def fresh_secret() -> str:
    return f"s3cr3t-{secrets.token_hex(8)}"


@pytest.mark.parametrize(
    "log",
    [
        lambda lg, s: lg.info("password is %s", s),
        lambda lg, s: lg.info("password is " + s),
        lambda lg, s: lg.warning("%s and %s", s, s),
        lambda lg, s: lg.error("body: %r", {"password": s}),
        lambda lg, s: lg.info("prefix%ssuffix", s),
    ],
    ids=["arg", "message", "twice", "repr-arg", "embedded"],
)
def test_remembered_secret_is_masked_in_messages(captured: Captured, log: object) -> None:
    secret = fresh_secret()
    remember_secret(secret)
    log(captured.logger, secret)  # type: ignore[operator]
    assert secret not in captured.text
    assert MASK in captured.text


def test_unremembered_text_is_left_alone(captured: Captured) -> None:
    value = fresh_secret()
    captured.logger.info("ordinary %s", value)
    assert f"ordinary {value}" in captured.text


def test_secret_is_masked_in_exception_text(captured: Captured) -> None:
    secret = fresh_secret()
    remember_secret(secret)
    try:
        raise RuntimeError(f"vault said no to token {secret}")
    except RuntimeError:
        captured.logger.exception("call failed")
    assert "RuntimeError: vault said no to token " + MASK in captured.text
    assert secret not in captured.text


def test_secret_is_masked_in_a_chained_exception(captured: Captured) -> None:
    secret = fresh_secret()
    remember_secret(secret)
    try:
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise ValueError("wrapping failed") from inner
    except ValueError:
        captured.logger.error("delivery failed", exc_info=True)
    assert secret not in captured.text
    assert "KeyError" in captured.text and "wrapping failed" in captured.text


def test_short_values_are_not_remembered(captured: Captured) -> None:
    remember_secret("abc12")  # too short to mask without mangling ordinary words
    captured.logger.info("abc12 stays")
    assert "abc12 stays" in captured.text


def test_redact_masks_every_remembered_secret() -> None:
    first, second = fresh_secret(), fresh_secret()
    remember_secret(first)
    remember_secret(second)
    assert redact(f"{first}/{second}/{first}") == f"{MASK}/{MASK}/{MASK}"


def test_secret_value_remembers_itself(captured: Captured) -> None:
    raw = fresh_secret()
    value = SecretValue(raw)
    captured.logger.info("revealed by mistake: %s", value.reveal())
    assert raw not in captured.text and MASK in captured.text


def test_secret_value_never_shows_its_value() -> None:
    raw = fresh_secret()
    value = SecretValue(raw)
    renderings = [
        repr(value),
        str(value),
        f"{value}",
        f"{value!r}",
        f"{value!s}",
        format(value),
        repr([value]),
        repr({"k": value}),
        logging.LogRecord("n", logging.INFO, "p", 1, "%s %r", (value, value), None).getMessage(),
    ]
    for text in renderings:
        assert raw not in text
        assert "*" in text
    assert value.reveal() == raw


def test_containers_of_secret_values_do_not_leak() -> None:
    token, password, wrapping = fresh_secret(), fresh_secret(), fresh_secret()
    grant_token = GrantToken(
        accessor="acc-1", token=SecretValue(token), expires_at=START, policies=("p",)
    )
    secret = Obtained(
        lease_id="lease-1", lease_expires_at=START, values={"password": SecretValue(password)}
    )
    delivery = CredentialDelivery(
        expires_at=START,
        wrapping_token=SecretValue(wrapping),
        wrap_ttl=timedelta(minutes=10),
        values={"password": SecretValue(password)},
    )
    dumped = repr(grant_token) + str(secret) + repr(delivery)
    for raw in (token, password, wrapping):
        assert raw not in dumped
    assert "acc-1" in dumped and "lease-1" in dumped  # references are fine to log


def test_secret_values_compare_by_value() -> None:
    raw = fresh_secret()
    assert SecretValue(raw) == SecretValue(raw)
    assert SecretValue(raw) != SecretValue(raw + "x")
    assert SecretValue(raw) != raw
    assert len({SecretValue(raw), SecretValue(raw)}) == 1


def test_secret_value_has_no_instance_dict() -> None:
    value = SecretValue(fresh_secret())
    assert not hasattr(value, "__dict__")
    with pytest.raises(AttributeError):
        value.extra = 1  # type: ignore[attr-defined]


# -- one record, one line: nothing a user sends can forge a line ---------------------------------

FORGED = "2026-01-01 00:00:00,000 ERROR bot.audit: audit chain broken at row 1"


@pytest.fixture
def through_the_bot_handler() -> Iterator[io.StringIO]:
    """Every logger writes through the handler ``configure_logging`` installs, into a buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [log_handler(stream)]
    root.setLevel(logging.INFO)
    yield stream
    root.handlers[:], root.level = saved


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\u2028", "\x85", "\x0b"])
def test_line_breaks_in_a_message_and_its_args_are_escaped(
    through_the_bot_handler: io.StringIO, breaker: str
) -> None:
    log = logging.getLogger("bot.test")
    log.warning("unknown action %s", f"x{breaker}{FORGED}")
    log.warning(f"raw x{breaker}{FORGED}")
    log.warning("as repr %r and dict %s", f"y{breaker}", {"k": f"z{breaker}{FORGED}"})
    lines = lines_of(through_the_bot_handler)
    assert len(lines) == 3, lines
    assert not [line for line in lines if line.startswith(FORGED)]
    escaped = breaker.encode("unicode_escape").decode()
    assert f"unknown action x{escaped}{FORGED}" in lines[0]


def test_a_traceback_is_indented_so_no_line_of_it_passes_for_a_record(
    through_the_bot_handler: io.StringIO,
) -> None:
    try:
        raise ValueError(f"bad input\n{FORGED}")
    except ValueError:
        logging.getLogger("bot.test").exception("handling failed for %s", f"a\n{FORGED}")
    first, *rest = lines_of(through_the_bot_handler)
    assert "ERROR bot.test: handling failed for a\\n" + FORGED in first
    assert rest and all(line.startswith("  ") for line in rest), rest
    assert "  Traceback (most recent call last):" in rest
    assert f"  {FORGED}" in rest


def test_bolt_logs_a_forged_action_id_on_one_line(through_the_bot_handler: io.StringIO) -> None:
    """Bolt's own warning for an unknown action quotes the raw action id (and spreads a code
    suggestion over several lines): dispatched through a real App, it stays one record."""
    app = App(
        signing_secret="secret",
        request_verification_enabled=False,
        # Answers who we are locally: no Web API call (auth.test) is ever made.
        authorize=lambda **_: AuthorizeResult(
            enterprise_id=None, team_id="T0TEAM", bot_token="xoxb-test", bot_user_id="U0BOT"
        ),
    )
    payload = {
        "type": "block_actions",
        "user": {"id": "U0MALLORY"},
        "team": {"id": "T0TEAM"},
        "actions": [{"action_id": f"approve\n{FORGED}", "block_id": "b", "value": "1"}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    response = app.dispatch(
        BoltRequest(body=body, headers={"content-type": "application/x-www-form-urlencoded"})
    )
    assert response.status == 404
    lines = lines_of(through_the_bot_handler)
    unhandled = [line for line in lines if "Unhandled request" in line]
    assert len(unhandled) == 1 and f'@app.action("approve\\n{FORGED}")' in unhandled[0]
    assert not [line for line in lines if line.startswith(FORGED)]


def test_the_timer_tick_does_not_log_twice_a_second() -> None:
    """APScheduler logged "Running job" and "executed successfully" at INFO for every 1 s tick:
    two lines a second in every replica's log."""
    configure_logging("INFO")
    try:
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)
        assert logging.getLogger("bot.scheduler").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger().handlers.clear()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every logger writes through the handler ``LOG_FORMAT=json`` installs, into a buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [log_handler(stream, "json")]
    root.setLevel(logging.INFO)
    yield stream
    root.handlers[:], root.level = saved


def test_json_logs_are_one_object_a_line_with_the_request_and_grant_they_are_about(
    json_logs: io.StringIO,
) -> None:
    log = logging.getLogger("bot.test")
    log.info("outside any use case")
    with log_context(request_id=12):
        log.warning("issuing %s", f"line one\n{FORGED}")
        with log_context(grant_id=7):
            log.info("revoked")
    lines = lines_of(json_logs)
    assert len(lines) == 3, lines
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert "request_id" not in records[0]
    assert records[1]["request_id"] == 12 and records[1]["level"] == "WARNING"
    assert records[1]["message"] == f"issuing line one\n{FORGED}"  # escaped by JSON itself
    assert (records[2]["request_id"], records[2]["grant_id"]) == (12, 7)


def test_json_logs_mask_secrets_in_messages_and_tracebacks(json_logs: io.StringIO) -> None:
    secret = "hvs.JSON-secret-value-123"
    remember_secret(secret)
    log = logging.getLogger("bot.test")
    log.error("leaked %s", secret)
    try:
        raise RuntimeError(f"carrying {secret}")
    except RuntimeError:
        log.exception("failed")
    text = json_logs.getvalue()
    assert secret not in text
    records = [json.loads(line) for line in lines_of(json_logs)]
    assert records[0]["message"] == f"leaked {MASK}"
    assert MASK in records[1]["traceback"] and "RuntimeError" in records[1]["traceback"]
