"""Many runs at once: K independent runs of the same architecture, trained by one engine call.

The K runs may differ in seed, learning rate, weight decay, Adam betas/eps, warm-up,
gradient clipping, training fraction, split, epochs and stopping rules; they must share the
shapes (``op, p, d_model, n_heads, d_head, d_mlp, n_layers=1, act, layernorm``) and the kind
of optimiser, loss and gradient filter (:func:`check_batch` says which field is wrong). MLP runs
(``model = mlp``) batch too, sharing their shape (:data:`~grokking.mlp.MLP_SHAPE_FIELDS`); they
are never stacked: ``auto`` trains them separately and ``stacked`` is refused.

Two strategies, both through :class:`grokking.engine.Engine`, both writing per-run run
directories with the same files as ``grokking train`` (any run can be continued alone with
``grokking train --resume RUN``):

- ``stacked``: the runs as one :class:`~grokking.model.StackedTransformer` (every weight with a
  leading run dimension), one forward and backward pass for all of them. The GPU choice.
- ``separate``: each run keeps its own model, and the runs are stepped in turn in one process.
  Nothing is batched; on CPU it is what ``auto`` picks, because a single CPU run takes the
  token-table product (:mod:`grokking.fast`), which the stacked model does not, and measured
  faster (:data:`CPU_STRATEGY`). ``loop`` is accepted as its former name.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .config import Config, ConfigError, build_dataset
from .data import task_kind
from .engine import (  # noqa: F401 - re-exported: the batched API's names
    FIGURE_KEYS,
    Engine,
    Run,
    RunData,
    evaluate_runs,
    per_run_train_loss,
)
from .fast import hooked_last_position_logits, last_position_logits
from .memory import check_memory, estimate_memory, resolve_device
from .mlp import MLP_SHAPE_FIELDS
from .model import SHAPE_FIELDS, StackedTransformer, check_shapes, stack_state_dicts  # noqa: F401
from .rundir import atomic_write_json, check_out_dir
from .rungroup import RunGroup  # noqa: F401 - re-exported
from .train import train

STRATEGIES = ("auto", "stacked", "separate", "loop")
# What "auto" picks on CPU. benchmark_batched(k=8, epochs=20, repeats=3) on the canonical run
# (2 CPU cores, torch 2.13 CPU, median ms per run-epoch, evaluations included): sequential
# train() calls 31.5, stacked 38.4, separate 31.6. A single CPU run takes the token-table
# product, which the stacked model does not.
CPU_STRATEGY = "separate"

# Fields that choose the computation (one kind per batch; their values per run would need
# a different program per run).
SHARED_FIELDS = ("model", "optimizer", "loss", "grokfast", "device", "fast")
BATCHED_OPTIMIZERS = ("adamw", "adam", "orthoadamw", "muon")

# The stacked model and its data under the names they had when they lived here.
BatchedTransformer = StackedTransformer
StackedData = RunData
batched_last_position_logits = last_position_logits
batched_hooked_last_position_logits = hooked_last_position_logits


def evaluate_batched(model: StackedTransformer, data: RunData, cfg: Config,
                     logits_fn: Callable = last_position_logits) -> torch.Tensor:
    """``[K, 6]`` float64: each run's figures (:data:`FIGURE_KEYS`)."""
    return evaluate_runs(model, data, cfg, logits_fn)


def check_batch(cfgs: Sequence[Config]) -> None:
    """Raise ConfigError (one line, naming the field) for anything batched training does not do."""
    if cfgs and cfgs[0].model == "mlp":
        _check_mlp_shapes(cfgs)
    else:
        check_shapes(cfgs)
    if cfgs[0].n_layers != 1:
        raise ConfigError("n_layers", f"batched training covers 1-layer models only; got {cfgs[0].n_layers}")
    for name in SHARED_FIELDS:
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            shown = ", ".join(str(v) for v in dict.fromkeys(values))
            raise ConfigError(name, f"all runs of a batch must share it; got {shown}")
    cfg = cfgs[0]
    if cfg.grokfast == "ma" and len({c.grokfast_window for c in cfgs}) > 1:
        shown = ", ".join(str(w) for w in dict.fromkeys(c.grokfast_window for c in cfgs))
        raise ConfigError("grokfast_window", f"all runs of a batch must share it; got {shown}")
    if cfg.optimizer not in BATCHED_OPTIMIZERS:
        raise ConfigError("optimizer", f"batched training supports {', '.join(BATCHED_OPTIMIZERS)}; "
                                       f"got {cfg.optimizer!r}")
    for c in cfgs:
        if c.batch_size != 0:
            raise ConfigError("batch_size", f"batched training is full-batch only (0); got {c.batch_size}")
        for name in ("compile", "tensorboard", "wandb"):
            if getattr(c, name):
                raise ConfigError(name, "not supported by batched training; train this run alone")


def _check_mlp_shapes(cfgs: Sequence[Config]) -> None:
    for name in ("model", *MLP_SHAPE_FIELDS):
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            shown = ", ".join(str(v) for v in dict.fromkeys(values))
            raise ConfigError(name, f"all runs of a batch must share the model shape; got {shown}")


def choose_strategy(strategy: str, device: torch.device, model: str = "transformer", op: str = "add") -> str:
    """The strategy that will run: ``auto`` is stacked on CUDA and :data:`CPU_STRATEGY` on CPU,
    and always separate for MLP runs (stacking is the transformer's) and for parity (each seed
    draws its own bit strings, and a stacked model evaluates every run on the same examples)."""
    if strategy not in STRATEGIES:
        raise ConfigError("strategy", f"must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy == "loop":
        return "separate"
    if model == "mlp" or task_kind(op) == "parity":
        if strategy == "stacked":
            why = ("model = transformer (MLP runs train separately: use separate or auto); got model = mlp"
                   if model == "mlp" else "the same examples for every run; parity draws them from each run's "
                   "seed (use separate or auto); got op = parity")
            raise ConfigError("strategy", f"stacked needs {why}")
        return "separate"
    if strategy != "auto":
        return strategy
    return "stacked" if device.type == "cuda" else CPU_STRATEGY


class BatchedTrainer:
    """Train K runs in one engine call, writing one ordinary run directory per run."""

    def __init__(self, cfgs: Sequence[Config], outs: Sequence[str | Path] | None = None, *,
                 strategy: str = "auto", progress: bool = True,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)):
        cfgs = list(cfgs)
        check_batch(cfgs)
        paths: list[Path | None] = [None] * len(cfgs)
        if outs is not None:
            paths = [Path(o) for o in outs]
            if len(paths) != len(cfgs):
                raise ConfigError("outs", f"one run directory per config: {len(paths)} for {len(cfgs)} configs")
            if len({o.resolve() for o in paths}) != len(paths):
                raise ConfigError("outs", "two runs of the batch share a run directory")
        self.device = resolve_device(cfgs[0].device)
        self.strategy = choose_strategy(strategy, self.device, cfgs[0].model, cfgs[0].op)
        self.progress, self.log = progress, log
        check_memory(estimate_memory(cfgs, self.device, stacked=self.strategy == "stacked"),
                     min((c.max_memory for c in cfgs if c.max_memory), default=0.0), f"this batch of {len(cfgs)} runs")
        datasets = [build_dataset(c).to(self.device) for c in cfgs]
        if self.strategy == "stacked":
            group = RunGroup(cfgs, datasets, self.device, stacked=True, log=log)
            placed = [(group, k) for k in range(len(cfgs))]
        else:
            placed = [(RunGroup([c], [d], self.device, log=log), 0) for c, d in zip(cfgs, datasets)]
        self.runs = [Run(cfg, out, group, slot, batch={"strategy": self.strategy, "n_runs": len(cfgs), "index": k})
                     for k, (cfg, out, (group, slot)) in enumerate(zip(cfgs, paths, placed))]

    def run(self, overwrite: bool = False, stop: Callable[[], int] | None = None) -> list[dict[str, Any]]:
        """Train every run to its budget or stop condition; return the summaries, in input order.
        Every run directory's lock is held while they train (a second writer is refused)."""
        engine = Engine(self.runs, progress=self.progress, raise_failures=False, log=self.log, stop=stop)
        return engine.run(overwrite=overwrite)


def train_batched(cfgs: Sequence[Config], outs: Sequence[str | Path] | None, progress: bool = True, *,
                  strategy: str = "auto", overwrite: bool = False,
                  stop: Callable[[], int] | None = None) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` as one batch; run k's directory is ``outs[k]`` (nothing is
    written when ``outs`` is None). Returns the runs' summaries (summary.json), in order."""
    return BatchedTrainer(cfgs, outs, strategy=strategy, progress=progress).run(overwrite=overwrite, stop=stop)


def benchmark_batched(k: int = 8, epochs: int = 20, repeats: int = 3, base: Config | None = None,
                      strategies: Sequence[str] = ("sequential", "stacked", "separate")) -> dict[str, float]:
    """Milliseconds per run-epoch (median over ``repeats``) to train ``k`` seeds of ``base``
    (default: the canonical run, on CPU) for ``epochs`` epochs, evaluations included, no files:
    ``sequential`` = k separate ``train()`` calls, ``stacked``/``separate`` = one batched call.
    The strategies alternate within each repetition (in a rotating order), so slow phases of
    a shared machine fall on all of them."""
    base = base or Config(device="cpu")
    cfgs = [base.replace(seed=s, epochs=epochs, checkpoint_log=0, report=False) for s in range(k)]

    def once(strategy: str) -> float:
        start = time.perf_counter()
        if strategy == "sequential":
            for cfg in cfgs:
                train(cfg, None, progress=False)
        else:
            train_batched(cfgs, None, progress=False, strategy=strategy)
        return (time.perf_counter() - start) * 1000 / (k * epochs)

    times: dict[str, list[float]] = {s: [] for s in strategies}
    for rep in range(repeats):
        order = list(strategies[rep % len(strategies):]) + list(strategies[: rep % len(strategies)])
        for strategy in order:
            times[strategy].append(once(strategy))
    return {s: statistics.median(t) for s, t in times.items()}


# --- a grid of runs into one batch directory ------------------------------------------------------------
def grid_run_name(overrides: dict[str, Any]) -> str:
    return "_".join(f"{k}={v}" for k, v in overrides.items()) or "run"


def train_grid(cfgs: Sequence[Config], grid: Sequence[dict[str, Any]], out: str | Path, *, strategy: str = "auto",
               overwrite: bool = False, progress: bool = True, grid_flags: Sequence[str] = ()) -> dict[str, Any]:
    """Train ``cfgs`` (one per ``grid`` entry) into ``out/runs/FIELD=VALUE_...`` and write the
    manifest ``out/batch.json``; everything is checked before anything is written."""
    out = Path(out)
    outs = [out / "runs" / grid_run_name(o) for o in grid]
    check_batch(cfgs)
    resolve_device(cfgs[0].device)  # refuse an unavailable device before touching the disk
    for run_dir in outs:
        check_out_dir(run_dir, overwrite)
    trainer = BatchedTrainer(cfgs, outs, strategy=strategy, progress=progress)
    summaries = trainer.run(overwrite=overwrite)
    manifest = {"strategy": trainer.strategy, "device": str(trainer.device), "grid": list(grid_flags),
                "runs": [{"out": str(o), "overrides": g, **s} for o, g, s in zip(outs, grid, summaries)]}
    atomic_write_json(out / "batch.json", manifest)
    return manifest
