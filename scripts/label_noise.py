"""Train sweeps/label_noise.toml (as one batched program) and draw docs/img/label_noise.png.

    python scripts/label_noise.py [--out runs/label_noise] [--figure docs/img/label_noise.png]

Rerunning skips the finished runs and redraws the figure.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from grokking.figures import label_noise_figure, save_figure
from grokking.rundir import read_metrics
from grokking.sweep import run_sweep
from grokking.sweep_plan import load_sweep_file, plan_sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/label_noise")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "img" / "label_noise.png"))
    args = parser.parse_args()
    spec = load_sweep_file(ROOT / "sweeps" / "label_noise.toml")
    plan = plan_sweep(args.out, fixed=spec["fixed"], grid=spec["grid"])
    rows = run_sweep(plan, backend="batched", plot=False)
    runs = {f"weight decay {row['weight_decay']:g}": read_metrics(Path(args.out) / row["run_dir"])
            for row in sorted(rows, key=lambda r: r["weight_decay"])}
    fig = label_noise_figure(runs, "add mod 97, 50% train, 10% of the training labels wrong (seed 0, AdamW lr 1e-2)")
    print(save_figure(fig, args.figure))
    for label, records in runs.items():
        last = records[-1]
        print(f"{label}: epoch {last['epoch']}, test {last['test_acc']:.3f}, clean train {last['train_acc_clean']:.3f}, "
              f"corrupted: memorised {last['train_acc_corrupted']:.3f}, true answer {last['train_acc_corrupted_true']:.3f}")


if __name__ == "__main__":
    main()
