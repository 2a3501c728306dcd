#!/usr/bin/env bash
# Install grokking with its test dependencies (pytest, nbclient and ipykernel for the notebooks, build)
# and every optional extra (TensorBoard and W&B, TransformerLens 4.x, Ray, submitit) into .venv,
# install Debian's Chromium for the HTML report test where we are root with apt-get, then run the
# test suite (pytest's addopts: not the slow tests, and a line for every skipped test saying why).
# Extra arguments go to pytest (e.g. -m slow: TransformerLens 3.x in a venv of its own, the wheel).
# Exits with pytest's status: 0 all passed, 1 a test failed, 5 no test was collected.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test,monitor,interop,ray,slurm,llc,digits"
./scripts/setup.sh ".[$EXTRAS]"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: chromium could not be installed; the browser tests of the HTML report will be skipped" >&2
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# Every extra that pyproject.toml declares must be in EXTRAS, or its tests would skip unseen.
EXTRAS="$EXTRAS" python - <<'PY'
import os, sys, tomllib
with open("pyproject.toml", "rb") as f:
    declared = set(tomllib.load(f)["project"].get("optional-dependencies", {}))
missing = sorted(declared - set(os.environ["EXTRAS"].split(",")))
if missing:
    sys.exit(f"scripts/test.sh: add the extras {', '.join(missing)} to EXTRAS, so that their tests run")
PY
python -m pytest -q "$@"
