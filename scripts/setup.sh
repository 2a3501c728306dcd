#!/usr/bin/env bash
# Create .venv and install grokking (the distribution grokking-lab) into it. Installs the CPU build
# of torch 2.13.0 first where the environment has no torch, so that the package's torch range never
# pulls a CUDA build of several GB; later installs are constrained to the torch already present
# (the notebooks' install cell does the same on Colab).
# The argument names what to install (default "."; e.g. ".[test]").
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
# This checkout was installed as "grokking" before the distribution took the name grokking-lab
# (PyPI's "grokking" is another project). Remove that editable install first: uninstalling it after
# would take the new install's `grokking` command with it.
if python -m pip show grokking 2>/dev/null | grep -qxF "Editable project location: $(pwd)"; then
  python -m pip uninstall --quiet -y grokking
fi
python -m pip install --quiet \
  -c <(python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])') -e "${1:-.}"
