"""A real sshd that trusts OpenBao's SSH CA, and the ssh client to try logging in to it.

Why real processes: an SSH certificate grant is only worth something if OpenSSH itself accepts
the certificate for the right user, refuses it for any other user, and refuses it once it has
expired. Only a real sshd checking a certificate that a real OpenBao signed can show that.
Everything here is throwaway: a temp dir with its own host key and config, a random loopback
port, torn down at the end. The system's own sshd (if any) is never touched.

sshd needs root (it switches to the logged-in user), so these helpers expect the tests to run
as root, as scripts/test.sh and CI do; `require_root()` skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.integration.services import LOOPBACK, free_port, tail

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
# Local OS users the test sshd lets in: one per principal the tests sign for.
PRINCIPAL = "dbgaccess-ops"
OTHER_PRINCIPAL = "dbgaccess-dev"
_OUR_USER_PREFIX = "dbgaccess-"


def require_root() -> None:
    """Skip (with the reason) when sshd cannot work: it must run as root to switch users."""
    if os.geteuid() != 0:
        pytest.skip("a real sshd needs root (run the tests as root, e.g. via scripts/test.sh)")
    if not SSHD.exists():
        raise RuntimeError(
            f"{SSHD} not found. Install it: apt-get install -y openssh-server "
            "(scripts/test.sh does so when run as root)."
        )
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found. Install it: apt-get install -y openssh-client")


def openssh_version() -> tuple[int, int]:
    """(major, minor) of the installed sshd, from `sshd -V` (e.g. OpenSSH_9.2p1 -> (9, 2))."""
    result = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    if not match:
        raise RuntimeError(f"cannot tell the OpenSSH version from: {result.stderr!r}")
    return int(match.group(1)), int(match.group(2))


def ensure_local_user(name: str) -> None:
    """Create the OS user a principal logs in as, if missing: a shell, no password, no home.

    With `UsePAM no` sshd refuses accounts whose password field is locked (`!`, useradd's
    default), even for certificate logins; `*` means "no password" without locking.
    """
    if not name.startswith(_OUR_USER_PREFIX):
        raise ValueError(f"refusing to manage OS user {name!r}: not one of the test users")
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir",
                "/",
                "--shell",
                "/bin/sh",
                "--user-group",
                "--password",
                "*",
                name,
            ],
            check=True,
            capture_output=True,
        )
    if _shadow_password(name).startswith("!"):
        subprocess.run(["usermod", "--password", "*", name], check=True, capture_output=True)


def _shadow_password(name: str) -> str:
    """The password field of /etc/shadow for ``name`` ('' if unreadable or absent)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    return ""


def ssh_keygen(*args: str) -> str:
    """Run ssh-keygen non-interactively; return stdout, raise with stderr on failure."""
    result = subprocess.run(
        ["ssh-keygen", *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ssh-keygen {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def generate_key(directory: Path, name: str, key_type: str = "ed25519") -> Path:
    """A new key pair without passphrase; returns the private key path (`.pub` beside it)."""
    path = directory / name
    ssh_keygen("-q", "-t", key_type, "-N", "", "-C", f"{name}@debug-access-tests", "-f", str(path))
    return path


def certificate_details(cert: Path) -> str:
    """`ssh-keygen -L -f cert`: the human-readable certificate (key id, principals, validity)."""
    return ssh_keygen("-L", "-f", str(cert))


def certificate_principals(cert: Path) -> list[str]:
    """The Principals section of `ssh-keygen -L`."""
    principals: list[str] = []
    in_section = False
    for line in certificate_details(cert).splitlines():
        stripped = line.strip()
        if stripped.startswith("Principals:"):
            in_section = True
            continue
        if in_section:
            if line.startswith(" " * 16) and stripped:
                principals.append(stripped)
            else:
                break
    return principals


def certificate_key_id(cert: Path) -> str:
    """The `Key ID` of the certificate (without its quotes)."""
    match = re.search(r'Key ID: "([^"]*)"', certificate_details(cert))
    if not match:
        raise AssertionError(f"no Key ID in ssh-keygen -L output for {cert}")
    return match.group(1)


# ---------------------------------------------------------------------------- sshd


class SshdServer:
    """`sshd -D -e` on 127.0.0.1 that accepts only certificates signed by one CA key."""

    def __init__(self, ca_public_key: str, allowed_users: Iterable[str]) -> None:
        """Remember the CA and the users; nothing runs until `start()`."""
        self.ca_public_key = ca_public_key.strip()
        self.allowed_users = tuple(allowed_users)
        self.host = LOOPBACK
        self.port = 0
        self.base_dir: Path | None = None
        self.log_path = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    def config_text(self, base_dir: Path) -> str:
        """The whole sshd_config: certificates from our CA, nothing else, loopback only."""
        lines = [
            f"ListenAddress {LOOPBACK}",
            f"HostKey {base_dir / 'ssh_host_ed25519_key'}",
            f"PidFile {base_dir / 'sshd.pid'}",
            f"TrustedUserCAKeys {base_dir / 'trusted_user_ca_keys.pub'}",
            "AuthorizedKeysFile none",
            "AuthorizedPrincipalsFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {' '.join(self.allowed_users)}",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            "MaxAuthTries 3",
        ]
        if openssh_version() >= (9, 8):
            # Newer sshd penalises a source address after failed logins; the expiry test fails
            # logins from 127.0.0.1 on purpose and must not be locked out by it.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> SshdServer:
        """Write host key + config, launch, and wait until it answers with an SSH banner."""
        require_root()
        for user in self.allowed_users:
            ensure_local_user(user)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.base_dir = Path(tempfile.mkdtemp(prefix="debug-access-sshd-"))
        ssh_keygen(
            "-q", "-t", "ed25519", "-N", "", "-f", str(self.base_dir / "ssh_host_ed25519_key")
        )
        (self.base_dir / "trusted_user_ca_keys.pub").write_text(self.ca_public_key + "\n")
        config = self.base_dir / "sshd_config"
        config.write_text(self.config_text(self.base_dir))
        check = subprocess.run(
            [str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected the test config: {check.stderr.strip()}")
        self.log_path = self.base_dir / "sshd.log"
        self.port = free_port()
        with self.log_path.open("wb") as log:
            # Absolute path: sshd re-executes itself for every connection and insists on it.
            self._proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self._proc.returncode}:\n{tail(self.log_path)}"
                )
            if self._answers_with_banner():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd not answering after {timeout}s:\n{tail(self.log_path)}")

    def _answers_with_banner(self) -> bool:
        """Ready means: the port accepts and the server speaks first with `SSH-2.0-`."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def log_text(self) -> str:
        """Everything sshd logged (with LogLevel VERBOSE: each accepted or refused cert)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (sshd exits and leaves sessions alone), SIGKILL if needed; delete temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


@contextlib.contextmanager
def running_sshd(ca_public_key: str, allowed_users: Iterable[str]) -> Iterator[SshdServer]:
    """An SshdServer started for the duration of the ``with`` block (for fixtures)."""
    server = SshdServer(ca_public_key, allowed_users)
    try:
        yield server.start()
    finally:
        server.stop()


@dataclass(frozen=True)
class LoginResult:
    """What one `ssh user@127.0.0.1 true` attempt did; stderr explains a refusal."""

    ok: bool
    returncode: int
    stderr: str


def try_login(
    sshd: SshdServer, user: str, key: Path, cert: Path, timeout: float = 15.0
) -> LoginResult:
    """Run the system ssh client non-interactively with exactly this key and certificate.

    Everything that could make the result depend on the machine is switched off: no user or
    system config (-F /dev/null), no agent, no known_hosts, no password prompts.
    """
    command = [
        "ssh",
        "-F",
        "/dev/null",
        "-n",
        "-i",
        str(key),
        "-o",
        f"CertificateFile={cert}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "PreferredAuthentications=publickey",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(sshd.port),
        f"{user}@{sshd.host}",
        "true",
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return LoginResult(ok=False, returncode=-1, stderr=f"ssh timed out after {exc.timeout}s")
    return LoginResult(
        ok=result.returncode == 0, returncode=result.returncode, stderr=result.stderr.strip()
    )


# ---------------------------------------------------------------------------- OpenBao SSH CA


@dataclass(frozen=True)
class SshCa:
    """Where OpenBao's SSH engine is mounted, its signing role and the CA public key."""

    mount: str
    role: str
    public_key: str
    allowed_users: tuple[str, ...]

    @property
    def sign_path(self) -> str:
        """ssh/sign/<role>: where a public key is turned into a certificate."""
        return f"{self.mount}/sign/{self.role}"


def setup_ssh_ca(
    client: hvac.Client,
    mount: str = "ssh",
    role: str = "debug-access",
    allowed_users: Iterable[str] = (PRINCIPAL, OTHER_PRINCIPAL),
    ttl: str = "5m",
    max_ttl: str = "1h",
) -> SshCa:
    """Enable the SSH engine as an admin, let it generate a CA key, create a user-cert role."""
    users = tuple(allowed_users)
    client.sys.enable_secrets_engine("ssh", path=mount)
    client.write_data(f"{mount}/config/ca", data={"generate_signing_key": True})
    config = client.read(f"{mount}/config/ca")
    public_key = str(config["data"]["public_key"]).strip()
    client.write_data(
        f"{mount}/roles/{role}",
        data={
            "key_type": "ca",
            "allow_user_certificates": True,
            "allow_host_certificates": False,
            # Without this the sign call's key_id is refused ("setting key_id is not allowed").
            "allow_user_key_ids": True,
            "allowed_users": ",".join(users),
            "default_user": "",
            "default_extensions": {"permit-pty": ""},
            "allowed_extensions": "permit-pty",
            "ttl": ttl,
            "max_ttl": max_ttl,
        },
    )
    return SshCa(mount=mount, role=role, public_key=public_key, allowed_users=users)


def sign_public_key(
    client: hvac.Client,
    ca: SshCa,
    public_key: str,
    principals: Iterable[str],
    ttl: str,
    key_id: str,
) -> dict[str, Any]:
    """POST <mount>/sign/<role>; returns the whole response (``data.signed_key``, lease...)."""
    response = client.write_data(
        ca.sign_path,
        data={
            "public_key": public_key,
            "valid_principals": ",".join(principals),
            "ttl": ttl,
            "key_id": key_id,
            "cert_type": "user",
        },
    )
    return dict(response)
