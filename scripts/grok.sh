#!/usr/bin/env bash
# The main job: install, train the canonical run (add, p=113, 30% training data, seed 0,
# the seed's recipe) until it groks, then draw its curves and its Fourier analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh .
# shellcheck disable=SC1091
. .venv/bin/activate
OUT=${OUT:-runs/canonical}
grokking train --out "$OUT" --overwrite "$@"
grokking analyze "$OUT"
grokking report "$OUT"   # again, now with the analysis figures
echo "curves: $OUT/curves.png  analysis: $OUT/analysis/  report: $OUT/report.html"
