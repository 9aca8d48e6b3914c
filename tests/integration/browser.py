"""Headless Chromium driven over the Chrome DevTools Protocol (raw CDP on one websocket), with
WebAuthn virtual authenticators: what an approver's browser and passkey do, for the passkey
step-up tests. One browser, one tab per person (a virtual authenticator belongs to its tab)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
VIRTUAL_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}
_DEVTOOLS = re.compile(r"DevTools listening on (ws://\S+)")


def require_chromium() -> str:
    """The Chromium binary; in CI a missing browser fails the tests instead of skipping them
    (scripts/test.sh installs it), elsewhere the tests are skipped with the reason."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class CdpError(Exception):
    pass


class Browser:
    def __init__(self) -> None:
        binary = require_chromium()
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            line = self.proc.stderr.readline()
            if not line and (self.proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            match = _DEVTOOLS.search(line)
            url = match.group(1) if match else None
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """One CDP command; events that arrive meanwhile are dropped (nothing here needs them)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv())
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise CdpError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def tab(self) -> Tab:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        return Tab(self, session)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            shutil.rmtree(self.profile, ignore_errors=True)


class Tab:
    """One person's browser tab, with (after ``add_authenticator``) their passkey device."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.authenticator: str | None = None
        self.send("Page.enable")
        self.send("WebAuthn.enable")
        # WebAuthn answers only a focused document; background tabs of one headless browser
        # are not focused unless told to behave as if they were.
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True})

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.send(method, params, self.session)

    def add_authenticator(self) -> str:
        self.authenticator = self.send(
            "WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_AUTHENTICATOR}
        )["authenticatorId"]
        return self.authenticator

    def credentials(self) -> list[dict[str, Any]]:
        assert self.authenticator is not None
        found = self.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return list(found["credentials"])

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise CdpError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait until the page has asked the bot what its link is for (the
        button is shown, or a problem is)."""
        self.send("Page.bringToFront")
        self.send("Page.navigate", {"url": "about:blank"})
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            "document.readyState === 'complete' && !!document.getElementById('confirm') && "
            "(!document.getElementById('confirm').hidden || "
            "!document.getElementById('problem').hidden)",
            timeout,
        )

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except CdpError:
                value = None  # mid-navigation
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def press_enter(self) -> None:
        """Enter on the focused element, as a keyboard user confirms (the page focuses its
        button once it knows what the link is for)."""
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "key": "Enter",
                    "code": "Enter",
                    "windowsVirtualKeyCode": 13,
                    **({"text": "\r"} if kind == "keyDown" else {}),
                },
            )

    def text(self, element_id: str) -> str:
        return str(self.evaluate(f"document.getElementById({element_id!r}).textContent"))

    def outcome(self, timeout: float = 20.0) -> tuple[bool, str]:
        """After confirming: (True, the success message) or (False, the problem shown)."""
        self.wait_for(
            "!document.getElementById('problem').hidden || "
            "document.getElementById('title').textContent === 'Done'",
            timeout,
        )
        if self.text("title") == "Done":
            return True, self.text("status")
        error = self.evaluate("document.getElementById('problem').dataset.error || ''")
        return False, self.text("problem") + (f" [{error}]" if error else "")

    def record_posts(self) -> None:
        """Keep a copy of every body the page posts (to replay one later)."""
        self.evaluate(
            "window.__posted = []; const __fetch = window.fetch; "
            "window.fetch = (url, init) => { window.__posted.push([url, init && init.body]); "
            "return __fetch(url, init); }; true"
        )

    def posted(self, path: str) -> list[dict[str, Any]]:
        posts = self.evaluate("window.__posted") or []
        return [json.loads(body) for url, body in posts if url == path]

    def focused_id(self) -> str:
        return str(self.evaluate("document.activeElement && document.activeElement.id"))
