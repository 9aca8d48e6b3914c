#!/usr/bin/env bash
# Install what `debug-access serve` needs into a new virtualenv at PREFIX:
# the pinned runtime set (requirements/runtime.lock, hashes checked) and the package itself,
# without dependencies, so nothing unpinned gets in. No OpenBao, no test tools.
#
#   bash scripts/image-install.sh /opt/debug-access
#
# The Dockerfile's build stage runs exactly this; scripts/test.sh runs it into a scratch
# directory and starts the installed command, so a broken image build fails CI without Docker.
set -euo pipefail
prefix=${1:?usage: scripts/image-install.sh PREFIX}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}  # its pip installs; the image's venv is made from this Python

# The target venv gets no pip of its own (smaller image, nothing to install with at run time):
# the caller's pip (22.3 or newer, for --python) installs into it.
"$python" -m venv --without-pip "$prefix"
pip=("$python" -m pip --python "$prefix/bin/python" --disable-pip-version-check)
"${pip[@]}" install -q --require-hashes --only-binary=:all: -r requirements/runtime.lock </dev/null
"${pip[@]}" install -q --no-deps . </dev/null
# Nothing outside the lock was needed: every installed distribution has its dependencies.
"${pip[@]}" check >/dev/null
