#!/usr/bin/env bash
# Set up (once) and run the bot. Usage:
#   bash scripts/run.sh dev --approver U0123ABCD   # embedded OpenBao + SQLite; needs only Slack tokens
#   bash scripts/run.sh serve                      # production: VAULT_*, DATABASE_URL, policy.yml
#   bash scripts/run.sh check                      # validate configuration, reach every dependency
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "debug-access needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# The pinned set for running and `dev` (requirements/dev.lock: the runtime set + OpenBao's `bao`),
# the same versions CI tests; then the project itself without dependencies.
"$python" scripts/lockcheck.py || exit 1
stamp=.venv/.installed-dev-$(cat requirements/dev.lock pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "==> installing $(grep -c '^[A-Za-z0-9]' requirements/dev.lock) pinned packages from requirements/dev.lock (first run takes about a minute)" >&2
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  rm -f .venv/.installed-dev-*
  touch "$stamp"
fi
if [ $# -eq 0 ]; then set -- serve; fi
exec .venv/bin/debug-access "$@"
