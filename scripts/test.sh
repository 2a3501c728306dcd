#!/usr/bin/env bash
# Install grokking with its test dependencies and optional extras, then run the test suite.
# Headless Chromium (Debian's package) is installed for the HTML report test when apt-get is
# available and we are root. Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh ".[test]"
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest -q "$@"
