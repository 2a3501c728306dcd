"""The pieces every ``grokking reproduce`` experiment is built from: the table's :class:`Row`, the
invocation's :class:`Context`, an experiment's :class:`Outcome` and registry entry
(:class:`Experiment`), and training a run or reusing it when it has finished.

The experiments themselves live in :mod:`grokking.reproduce` (modular arithmetic: nanda2023,
power2022, gromov2023), :mod:`grokking.reproduce_parity` (barak2022) and
:mod:`grokking.reproduce_omnigrok` (omnigrok2023).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .config import Config
from .rundir import SUMMARY, read_json
from .sweep import run_state
from .train import Trainer, train

LOSS_FELL = 1.0  # nats: a loss "has fallen" once below this (chance is ln p, 4.7 at p = 113)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Row:
    quantity: str
    paper: str
    ours: str
    conditions: str = ""


@dataclass
class Context:
    """One invocation: where it writes, at what scale, and what it trained or reused."""
    name: str
    out: Path
    scale: str
    threads: int
    quiet: bool
    workers: int
    log: Log
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    values: dict[str, Any]  # the table's numbers, machine-readable
    figure: Figure
    runs: list[str]


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str
    runs: str
    laptop_time: str
    run: Callable[[Context], Outcome]


def train_or_reuse(cfg: Config, run_dir: Path, ctx: Context) -> dict[str, Any]:
    """The run's summary: reused when finished, continued when interrupted, else trained."""
    state = run_state(run_dir)
    if state == "done":
        ctx.reused.append(str(run_dir))
        return read_json(run_dir / SUMMARY) or {}
    ctx.log(f"reproduce {ctx.name}: training {run_dir} ({cfg.epochs:,} epochs at most)")
    ctx.trained.append(str(run_dir))
    if state == "resumable":
        return Trainer.resume(run_dir, progress=not ctx.quiet).run()
    # A partial directory is ours (named by the config key) and holds nothing to continue.
    return train(cfg, run_dir, overwrite=state == "partial", progress=not ctx.quiet)


def run_dir_for(ctx: Context, label: str, cfg: Config) -> Path:
    return ctx.out / "runs" / f"{label}_{cfg.key()}"


def epoch_text(value: int | None, never: str = "never") -> str:
    return f"{value:,}" if value is not None else never


def paper_epoch_text(value: int) -> str:
    return f"{value / 1000:g}k"


def first_epoch_below(epochs: list[int], values: list[float | None], threshold: float = LOSS_FELL) -> int | None:
    """The first epoch whose value is below ``threshold`` (None: never)."""
    for epoch, value in zip(epochs, values):
        if value is not None and value < threshold:
            return int(epoch)
    return None


__all__ = ["LOSS_FELL", "Context", "Experiment", "Log", "Outcome", "Row", "epoch_text",
           "first_epoch_below", "paper_epoch_text", "run_dir_for", "train_or_reuse"]
