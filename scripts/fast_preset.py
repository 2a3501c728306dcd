"""Check that ``--preset fast`` keeps its promise: it groks, stays grokked, and is fast.

For every seed (default 0-4) and thread count (default 1 and 2) this runs the real CLI as a
subprocess, ``grokking train --preset fast --seed S --threads T --out DIR --quiet`` plus one flag
per ``--set FIELD=VALUE`` (none by default, so it checks whatever ``PRESETS["fast"]`` in
``grokking.config`` is today), reads the run's ``metrics.jsonl`` and ``summary.json``, and prints
a markdown table. A run passes when

* **groks**: test accuracy reaches 99% at an evaluation no later than epoch 300;
* **stays**: train accuracy is >= 0.9 at every evaluation after (and at) the first one with
  train accuracy >= 0.99, up to the run's end, and the run either lasts to epoch 300 or ended by
  its own hold rule (``stop_at_test_acc`` held at every evaluation for ``stop_hold`` epochs, as
  the preset asks): a run stopped any other way could hide a later collapse (``--min-end``
  changes that epoch). How long the recipe stays grokked beyond the hold is a separate check:
  ``--set stop_hold=0 --set stop_at_test_acc=none --set epochs=400``;
* **fast**: the whole command, start-up, evaluations, checkpoints, plots and report included,
  takes under 15 s of wall time.

The exit status is 1 when any run fails any criterion (or does not complete), else 0. Epochs and
accuracies are deterministic for a given thread count; wall time is not: it means something only
with ``--jobs 1`` on a quiet machine. The ``cpu s`` column (the command's user + system CPU
seconds) is not judged; on a busy machine it hints what the wall time would be on a quiet one
(at one thread). Run by hand, not in CI::

    .venv/bin/python scripts/fast_preset.py
    .venv/bin/python scripts/fast_preset.py --threads 1 --jobs 2 --set grad_clip=1.0 --set lr=1e-2
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grokking.config import FIELDS, PRESETS, field_type
from grokking.rundir import CONFIG, SUMMARY, read_json, read_metrics

PRESET = "fast"
TEST_BY = 300  # the epoch by which test accuracy must reach 99%
FIT = 0.99  # train accuracy that counts as "fitted"
TRAIN_FLOOR = 0.9  # the train accuracy it must not fall below after first fitting
WALL_LIMIT = 15.0  # seconds, the whole command


def grokking_command() -> list[str]:
    """The ``grokking`` entry point of this interpreter's environment (else the CLI's main)."""
    exe = Path(sys.executable).with_name("grokking")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from grokking.cli import main; sys.exit(main())"]


def parse_set(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in FIELDS:
            raise SystemExit(f"--set {item!r}: want FIELD=VALUE with FIELD a config field")
        if name in ("seed", "threads", "out"):
            raise SystemExit(f"--set {item!r}: {name} is set by the script (--seeds / --threads)")
        out[name] = value.strip()
    return out


def flags(overrides: dict[str, str]) -> list[str]:
    argv: list[str] = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if field_type(name) is bool:
            on = value.lower() in ("true", "1", "yes", "on")
            argv.append(flag if on else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, value]
    return argv


def first_epoch(records: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((r["epoch"] for r in records if r.get(key) is not None and r[key] >= threshold), None)


def run_one(seed: int, threads: int, overrides: dict[str, str], root: Path, min_end: int = TEST_BY) -> dict[str, Any]:
    out = root / f"seed{seed}_t{threads}"
    argv = [*grokking_command(), "train", "--preset", PRESET, "--seed", str(seed), "--threads", str(threads),
            "--out", str(out), "--quiet", *flags(overrides)]
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, not its neighbours'
        wall = time.perf_counter() - started
        returncode = os.waitstatus_to_exitcode(status)
        proc.returncode = returncode
        err.seek(0)
        stderr = err.read()
    row: dict[str, Any] = {"seed": seed, "threads": threads, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                           "rc": returncode}
    records = read_metrics(out) if out.exists() else []
    summary = read_json(out / SUMMARY) or {}
    row["status"] = summary.get("status", "missing")
    if returncode != 0:
        row["error"] = (stderr.strip().splitlines() or ["(no stderr)"])[-1]
    train99 = first_epoch(records, "train_acc", FIT)
    test99 = first_epoch(records, "test_acc", FIT)
    after_fit = [r for r in records if train99 is not None and r["epoch"] >= train99]
    after_grok = [r for r in records if test99 is not None and r["epoch"] >= test99]
    row["train99"], row["test99"] = train99, test99
    row["min_train"] = min((r["train_acc"] for r in after_fit), default=None)
    row["min_test"] = min((r["test_acc"] for r in after_grok), default=None)
    row["end"] = records[-1]["epoch"] if records else None
    row["final_test"] = (summary.get("final") or {}).get("test_acc")
    ok = returncode == 0 and row["status"] in ("completed", "stopped_early")
    # stopped_early always carries a stop_reason; with stop_hold set, that reason is the hold
    held = row["status"] == "stopped_early" and bool((read_json(out / CONFIG) or {}).get("config", {}).get("stop_hold"))
    row["groks"] = ok and test99 is not None and test99 <= TEST_BY
    row["stays"] = (ok and row["min_train"] is not None and row["min_train"] >= TRAIN_FLOOR
                    and row["end"] is not None and (row["end"] >= min_end or held))
    row["fast"] = ok and wall < WALL_LIMIT
    row["pass"] = row["groks"] and row["stays"] and row["fast"]
    return row


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = ["seed", "threads", "train 99%", "test 99%", "min train after fit", "min test after grok",
            "final test", "end", "wall s", "cpu s", f"groks (test 99% by {TEST_BY})",
            f"stays (train >= {TRAIN_FLOOR})", f"fast (< {WALL_LIMIT:g} s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["seed"], r["threads"], r["train99"], r["test99"], fmt(r["min_train"]), fmt(r["min_test"]),
                 fmt(r["final_test"]), r["end"], fmt(r["wall"], 1), fmt(r["cpu"], 1), r["groks"], r["stays"], r["fast"]]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field on top of the preset (repeatable)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default: 0,1,2,3,4)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at once (default 1; wall times are only meaningful with 1)")
    ap.add_argument("--keep", metavar="DIR", help="write the run directories here and keep them "
                    "(default: a temporary directory, removed at the end)")
    ap.add_argument("--min-end", type=int, default=TEST_BY, metavar="EPOCH",
                    help=f"the epoch a run must last to for 'stays' (default {TEST_BY}); lower it only to "
                         "judge a shorter recipe whose stability was shown by longer runs")
    args = ap.parse_args(argv)
    overrides = parse_set(args.set)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    counts = [int(t) for t in args.threads.split(",") if t.strip()]
    recipe = {**PRESETS[PRESET], **overrides}
    print(f"recipe: --preset {PRESET} " + " ".join(flags(overrides)))
    print("fields over the canonical config: " + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    print()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fast_preset_"))
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(s, t) for t in counts for s in seeds]
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(lambda job: run_one(*job, overrides, root, args.min_end), jobs))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(table(rows))
    for r in rows:
        if r.get("error") or r["status"] not in ("completed", "stopped_early"):
            print(f"seed {r['seed']} threads {r['threads']}: exit {r['rc']}, status {r['status']}: "
                  f"{r.get('error', '')}")
    failed = [r for r in rows if not r["pass"]]
    print()
    print(f"{len(rows) - len(failed)}/{len(rows)} runs pass" + ("" if failed else " every criterion"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
