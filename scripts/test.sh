#!/usr/bin/env bash
# Install grokking with its test dependencies and optional extras (TensorBoard, W&B offline,
# TransformerLens 3.x, Ray, submitit) into .venv, install Debian's Chromium for the HTML report
# test where we are root with apt-get, then run the test suite. Extra arguments go to pytest
# (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh ".[test,monitor,interop,ray,slurm]"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: chromium could not be installed; the browser tests of the HTML report will be skipped" >&2
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest -q "$@"
