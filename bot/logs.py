"""Logging that cannot print a secret.

Two defences. Third-party loggers that dump request bodies at DEBUG (slack_sdk logs every Web
API body, which for the credentials DM holds the wrapping token or the password) are held at
INFO whatever LOG_LEVEL says. And every secret value the bot reveals is remembered here (in a
bounded set) and masked in any log record that would contain it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict

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


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with secrets masked; keep body-dumping libraries at INFO or above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    # Alembic narrates every step at INFO; bot.store.schema says what happened in one line.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
