"""Logging that cannot print a secret, and whose lines cannot be forged.

Two defences against leaks. Third-party loggers that dump request bodies at DEBUG (slack_sdk
logs every Web API body, which for the credentials DM holds the wrapping token or the password)
are held at INFO whatever LOG_LEVEL says. And every secret value the bot reveals is remembered
here (in a bounded set) and masked in any log record that would contain it.

One against forgery: a record is one line (``LOG_FORMAT=json``: one JSON object a line, which
also carries ``request_id`` / ``grant_id`` where the use case at work set them with
``log_context``). Whatever a user controls can reach a message or its arguments (Bolt logs a
clicked action id as it came), so line breaks there are escaped (``\\n`` becomes the two
characters ``\\`` ``n``); a traceback, the one part that is several lines by nature, is
indented, so no line of it starts where a record starts.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

NOISY_LOGGERS = ("slack_sdk", "slack_bolt", "urllib3", "hvac", "apscheduler", "waitress")
MASK = "[REDACTED]"
_MAX_REMEMBERED = 4096
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: OrderedDict[str, None] = OrderedDict()


def remember_secret(value: str) -> None:
    """Mask ``value`` in every log line from now on."""
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets[value] = None
        _secrets.move_to_end(value)
        while len(_secrets) > _MAX_REMEMBERED:
            _secrets.popitem(last=False)


def redact(text: str) -> str:
    with _lock:
        known = list(_secrets)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# Everything str.splitlines() breaks a line at; log viewers differ in which they honour.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPED = str.maketrans({ch: ch.encode("unicode_escape").decode() for ch in _LINE_BREAKS})
CONTINUATION = "  "


def one_line(text: str) -> str:
    """``text`` with every line break escaped, as Python writes it in a string literal."""
    return text.translate(_ESCAPED)


class OneLineFormatter(logging.Formatter):
    """Each record starts a line of its own and only its traceback continues it, indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        first, _, rest = super().format(record).partition("\n")
        if not rest:
            return first
        return "\n".join([first, *(CONTINUATION + line for line in rest.splitlines())])


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "debug_access_log_context", default=None
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block (on this thread), every record carries ``fields`` (in JSON logs):
    ``with log_context(request_id=12): ...``. Nested blocks add to the outer one."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the fields of ``log_context`` on each record (a record's own win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class RedactedJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with secrets masked in the finished line: it formats
    the traceback itself, past ``RedactingFilter``, so the whole object is masked once more."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "traceback"}


def log_handler(stream: TextIO, fmt: str = "text") -> logging.Handler:
    """The handler every logger (ours, Bolt's, slack_sdk's...) writes through."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(RedactedJsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES))
    else:
        handler.setFormatter(OneLineFormatter(FORMAT))
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr, one line a record (``fmt`` ``text`` or ``json``), with secrets masked;
    keep body-dumping libraries at INFO or above."""
    handler = log_handler(sys.stderr, fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    # Alembic narrates every step at INFO; bot.store.schema says what happened in one line.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # APScheduler says "Running job" and "executed successfully" for every tick (each second);
    # the timers log what a tick did (``bot.scheduler``), and APScheduler's problems are WARNINGs.
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.WARNING))
