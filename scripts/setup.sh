#!/usr/bin/env bash
# Create .venv and install grokking into it. Installs the CPU build of torch 2.13.0 first
# where the environment has no torch, so that the package's torch range never pulls a CUDA
# build of several GB. Extra pip arguments (e.g. ".[test]") name what else to install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e "${1:-.}"
