"""Figures of a run: log-scale loss and accuracy against epoch, with the 99% epochs marked."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .checkpoint import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Two panels: train/test loss (log y) and train/test accuracy, 99% epochs as vertical lines."""
    from .train import first_epoch_at

    path = Path(path)
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        ax_loss.plot(epochs, [max(r[f"{split}_loss"], 1e-300) for r in records], color=color, label=f"{split} loss")
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in records], color=color, label=f"{split} accuracy")
        when = first_epoch_at(records, f"{split}_acc")
        if when is not None:
            for ax in (ax_loss, ax_acc):
                ax.axvline(when, color=color, linestyle="--", linewidth=1)
            ax_acc.annotate(f"{split} 99% @ {when}", (when, 0.5 if split == "train" else 0.4), color=color,
                            xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return path


def plot_run(run_dir: str | Path) -> Path:
    """Write ``RUN/curves.png`` from ``metrics.jsonl``."""
    from .train import read_metrics

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    title = (f"{cfg['op']} mod {cfg['p']}, {cfg['frac']:.0%} train, seed {cfg['seed']}, "
             f"lr {cfg['lr']:g}, wd {cfg['weight_decay']:g}")
    return plot_curves(records, run_dir / "curves.png", title)
