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
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
if [ $# -eq 0 ]; then set -- serve; fi
exec .venv/bin/debug-access "$@"
