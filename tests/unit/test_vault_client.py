"""Which failures prove Vault never received a request (so a creation may be sent again), and
which ones a retry of an idempotent call is worth."""

from __future__ import annotations

import pytest
import requests
import urllib3.exceptions

from bot.vault.client import _is_transient, _never_sent


def _refused() -> requests.exceptions.ConnectionError:
    cause = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/v1/x", cause)  # type: ignore[arg-type]
    )


def _reset() -> requests.exceptions.ConnectionError:
    cause = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    return requests.exceptions.ConnectionError(cause)


@pytest.mark.parametrize(
    ("exc", "never_sent", "transient"),
    [
        (_refused(), True, True),
        (requests.exceptions.ConnectTimeout(), True, True),
        (_reset(), False, True),  # on a reused or fresh connection: may have been received
        (requests.exceptions.ReadTimeout(), False, False),  # a hung Vault: not again
        (requests.exceptions.SSLError(), False, True),
    ],
)
def test_failure_classes(exc: Exception, never_sent: bool, transient: bool) -> None:
    assert _never_sent(exc) is never_sent
    assert _is_transient(exc) is transient
