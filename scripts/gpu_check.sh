#!/usr/bin/env bash
# The GPU checks of the speed work, in one command: `grokking bench --device cuda --grok`, and
# N_RUNS seeds of the canonical run as one stacked batch, with its run-epochs per second.
# Runs from a checkout without installing it (PYTHONPATH), under the python3 that holds a CUDA
# torch:  OUT=gpu_out bash scripts/gpu_check.sh
# SKIP_BENCH=1 leaves the bench out. A dry run on a CPU machine:  DEVICE=cpu N_RUNS=2 EXTRA="--p 23 --epochs 200" bash scripts/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
N_RUNS=${N_RUNS:-64}
EXTRA=${EXTRA:-}
PY=${PYTHON:-python3}
BATCH_TIMEOUT=${BATCH_TIMEOUT:-330}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
grokking=("$PY" -c 'import sys; from grokking.cli import main; sys.exit(main())')  # the CLI, uninstalled

{ nvidia-smi -L 2>/dev/null; "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"; } | tee "$OUT/machine.txt"

echo "== the stacked runs' shared optimiser against each run's own, bit for bit, on $DEVICE"
GROKKING_TEST_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider tests/test_batched.py -k shared_recipe 2>&1 \
    | tail -5 | tee "$OUT/shared_optimizer_test.txt"

if [ -z "${SKIP_BENCH:-}" ]; then
  tl=()
  "$PY" -c "import transformer_lens" 2>"$OUT/transformer_lens_import.txt" || tl=(--no-transformer-lens)
  echo "== bench ${tl[*]}"
  "${grokking[@]}" bench --device "$DEVICE" --grok --reps 3 --json "${tl[@]}" $EXTRA >"$OUT/bench.json"
  echo "bench exit $?"
  "$PY" -c "import json, sys; from grokking.bench import format_result; print(format_result(json.load(open(sys.argv[1]))))" \
      "$OUT/bench.json" | tee "$OUT/bench.txt"
fi

echo "== stacked batch of $N_RUNS runs"
seeds=$(seq -s, 0 $((N_RUNS - 1)))
start=$(date +%s.%N)
timeout "$BATCH_TIMEOUT" "${grokking[@]}" batch \
    --out "$OUT/batch" --grid "seed=$seeds" --strategy stacked --device "$DEVICE" --quiet \
    --stop-at-test-acc 0.99 $EXTRA >"$OUT/batch_log.txt" 2>&1
status=$?
end=$(date +%s.%N)
"$PY" - "$OUT" "$start" "$end" "$status" <<'EOF' | tee "$OUT/batch.txt"
import json, statistics, sys
from pathlib import Path
from grokking.rundir import read_metrics
out, start, end, status = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
wall = end - start
manifest = out / "batch" / "batch.json"
if manifest.exists():  # finished: the summaries
    runs = json.loads(manifest.read_text())["runs"]
    epochs = [r["epochs_run"] for r in runs]
    grokked = [r["epoch_test_acc_99"] for r in runs if r["epoch_test_acc_99"] is not None]
else:  # stopped by the timeout: what the metrics had reached
    epochs, grokked = [], []
    for run in sorted((out / "batch" / "runs").iterdir()):
        records = read_metrics(run)
        epochs.append(max((r.get("epoch", 0) for r in records), default=0))
        at = next((r["epoch"] for r in records if r.get("test_acc", 0) >= 0.99), None)
        if at is not None:
            grokked.append(at)
print(f"exit status {status} (124: stopped by the timeout), wall {wall:.1f} s (process start and the data included)")
print(f"runs {len(epochs)}, run-epochs {sum(epochs)}, run-epochs per second {sum(epochs) / wall:.0f}")
if grokked:
    print(f"reached 99% test: {len(grokked)} of {len(epochs)}; epoch: median {statistics.median(grokked):.0f}, "
          f"min {min(grokked)}, max {max(grokked)}")
EOF
tail -3 "$OUT/batch_log.txt"
cp "$OUT/batch/batch.json" "$OUT/batch.json" 2>/dev/null
rm -rf "$OUT/batch"   # thousands of checkpoints: only the numbers come back
