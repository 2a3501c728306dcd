"""Training one run: the seed's recipe by default, one run directory per run.

``train(cfg, out)`` and ``resume(out)`` are the API; :class:`Trainer` holds one run and hands
it to the engine (:mod:`grokking.engine`), which owns the loop and writes the run directory
(:mod:`grokking.rundir` lists its files). Tensors stay on the device: nothing crosses to
Python except on evaluation epochs.

A run can be resumed from ``last.safetensors`` with metrics that continue bit for bit (CPU,
same thread count); SIGINT/SIGTERM save that file first and exit cleanly. Resume drops
metrics records after the checkpoint's epoch: they are recomputed. A damaged line of
metrics.jsonl is moved to ``metrics.damaged.jsonl`` (and named), never dropped silently with
the records after it. A run killed before its first ``last.safetensors`` (epoch 0) starts
again on resume; one killed before its config.json is refused (start it again with --overwrite).

One writer per run directory: a run holds its lock (:class:`~grokking.rundir.RunLock`) from
``Trainer.resume`` (or the start of ``run``) to its end, and a checkpoint that another run
wrote is refused (:func:`~grokking.checkpoint.check_belongs`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import CheckpointError, check_belongs, checked_split, load_checkpoint_identity
from .config import Config, ConfigError, build_dataset, from_dict
from .data import Dataset
from .engine import (  # noqa: F401 - re-exported: the training API's names
    EVAL_CHUNK,
    Callback,
    Engine,
    Run,
    TrainingFailed,
    TrainingInterrupted,
    evaluate,
    summarize,
    weight_norm,
)
from .fast import LogitsFn
from .memory import check_memory, estimate_memory, resolve_device  # noqa: F401 - re-exported
from .methods import GradFilter, Optimizer
from .factory import Model
from .monitor import make_callbacks
from .rundir import (  # noqa: F401 - re-exported
    BUDGET_FIELDS,
    CONFIG,
    METRICS,
    DamagedLine,
    RunDirError,
    RunLock,
    SnapshotEpochs,
    StorageError,
    atomic_write_text,
    first_at,
    last_path,
    load_json,
    metrics_lines,
    move_damaged_lines,
    os_error_text,
    prepare_run_dir,
    read_metrics,
    remove_stale_temporaries,
    snapshot_epochs,
    snapshots,
)
from .rungroup import RunGroup  # noqa: F401 - re-exported

#: What ``--resume`` may change: the budget (:data:`BUDGET_FIELDS`), and runtime fields that change
#: no step (whether report.html is written, the memory allowed).
RESUME_FIELDS = (*BUDGET_FIELDS, "report", "threads", "max_memory")


def first_epoch_at(records: list[dict[str, Any]], key: str, threshold: float = 0.99) -> int | None:
    return first_at(records, key, threshold)


class Trainer:
    """One training run. ``Trainer(cfg, out).run()``; ``Trainer.resume(out).run()``."""

    def __init__(self, cfg: Config, out: str | Path | None = None, progress: bool = True,
                 callbacks: list[Callback] | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)):
        self.device = resolve_device(cfg.device)
        self.progress, self.log = progress, log
        # Before anything is built: a config that cannot fit is refused, not left to exhaust the machine.
        check_memory(estimate_memory([cfg], self.device), cfg.max_memory)
        dataset = build_dataset(cfg).to(self.device)
        self.group = RunGroup([cfg], [dataset], self.device, log=log)
        out = Path(out) if out is not None else None
        callbacks = list(callbacks or [])
        if out is not None and (cfg.tensorboard or cfg.wandb):
            callbacks += make_callbacks(cfg, out)
        self._run = Run(cfg, out, self.group, 0, callbacks)
        self._epoch = 0
        self._engine: Engine | None = None
        self.restart = False  # resume() of a run killed before its first checkpoint: start it again
        self.summary: dict[str, Any] | None = None
        self._lock: RunLock | None = None  # held from resume() to the end of run()

    # --- the run's pieces, for callers that inspect or instrument a run ---------------------------
    @property
    def cfg(self) -> Config:
        return self._run.cfg

    @cfg.setter
    def cfg(self, cfg: Config) -> None:
        self._run.cfg = cfg
        self.group.cfgs[0] = cfg

    @property
    def epoch(self) -> int:
        """The run's epoch: where it stands now, also while it trains."""
        return self._engine.epoch if self._engine is not None else self._epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def out(self) -> Path | None:
        return self._run.out

    @property
    def model(self) -> Model:
        return self.group.model

    @property
    def dataset(self) -> Dataset:
        return self.group.datasets[0]

    @property
    def params(self) -> list[torch.Tensor]:
        return self.group.params[0]

    @property
    def optimizer(self) -> Optimizer:
        return self.group.optimizers[0]

    @property
    def grad_filter(self) -> GradFilter:
        return self.group.filters[0]

    @property
    def logits_fn(self) -> LogitsFn:
        return self.group.logits_fn

    @property
    def fast_reason(self) -> str | None:
        return self.group.fast_reason

    @property
    def train_tokens(self) -> torch.Tensor:
        """``[N, T]``: the training examples' tokens, in split order."""
        return self.group.train_tokens

    @property
    def train_labels(self) -> torch.Tensor:
        return self.group.train_labels

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._run.records

    @property
    def step_count(self) -> int:
        return self.group.step_count

    @property
    def resumed(self) -> bool:
        return self._run.resumed

    # --- resume --------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, out: str | Path, budget: dict[str, Any] | None = None, **kwargs: Any) -> "Trainer":
        """Continue ``out`` from ``checkpoints/last.safetensors``. A run killed before that file
        first existed (its epoch-0 checkpoint) has nothing worth keeping: it starts again from
        epoch 0 with the config in its config.json, which gives the same run.

        ``budget`` changes :data:`RESUME_FIELDS` only (e.g. ``{"epochs": 40000}`` to extend a run
        that has not grokked yet); the run then continues exactly as if started with that budget.

        The run directory's lock is taken first and held until :meth:`run` ends (or
        :meth:`close`): a run that another process is training is refused, naming it."""
        out = Path(out)
        unknown = sorted(set(budget or {}) - set(RESUME_FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"cannot change on resume; only {', '.join(RESUME_FIELDS)} can")
        if not out.is_dir():
            raise RunDirError(f"resume: {out} is not a run directory")
        lock = RunLock(out, "resume").acquire()
        try:
            trainer = cls._resume_locked(out, budget or {}, kwargs)
        except BaseException:
            lock.release()
            raise
        trainer._lock = lock
        return trainer

    @classmethod
    def _resume_locked(cls, out: Path, budget: dict[str, Any], kwargs: dict[str, Any]) -> "Trainer":
        config_file, last = out / CONFIG, last_path(out)
        if not config_file.exists():
            raise RunDirError(f"resume: {out} has no config.json (it was stopped before it started); "
                              f"run the original command again with --overwrite")
        info = load_json(config_file)
        try:
            cfg = from_dict({**info["config"], **budget})
        except (KeyError, TypeError) as err:
            raise RunDirError(f"resume: {config_file} is unreadable ({type(err).__name__})") from None
        run_id = info.get("run_id") if isinstance(info.get("run_id"), str) and info.get("run_id") else None
        try:
            remove_stale_temporaries(out)
        except OSError as err:
            raise RunDirError(f"resume: {os_error_text(err)}") from None
        if not last.exists():
            if any(epoch > 0 for epoch, _ in snapshots(out)):
                raise RunDirError(f"resume: {out} has snapshots but no checkpoints/last.safetensors to resume from")
            trainer = cls(cfg, out, **kwargs)
            trainer.restart = True
            trainer._run.run_id = run_id
            trainer.log(f"{out} was stopped before its first checkpoint; starting it again from epoch 0")
            return trainer
        tensors, meta, identity = load_checkpoint_identity(last)
        try:
            check_belongs(out, meta, identity, last)
        except CheckpointError as err:
            raise CheckpointError(f"resume: {err}") from None
        trainer = cls(cfg, out, **kwargs)
        try:
            split = (checked_split(tensors, len(trainer.dataset.labels), Path("checkpoint"))
                     if "split.train_idx" in tensors else None)
            trainer.group.load_state_tensors(tensors, meta, split)
            trainer.epoch = int(meta["epoch"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"resume: {last} does not match {config_file} "
                                  f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})") from None
        limits = [("epochs", cfg.epochs, trainer.epoch)] + ([("max_steps", cfg.max_steps, trainer.step_count)]
                                                             if cfg.max_steps else [])  # max_steps 0: no limit
        for name, value, reached in limits:
            if reached > value:
                raise ConfigError(name, f"{value} is below the {reached} this run has already reached "
                                        f"(a resumed run cannot shrink)")
        run = trainer._run
        run.run_id = run_id
        run.seconds_before = float(meta.get("seconds", 0.0))
        run.last_saved_epoch = trainer.epoch
        damaged: list[DamagedLine] = []
        records = read_metrics(out, damaged)
        try:
            if damaged:  # aside first: metrics.jsonl is rewritten without them only once they are safe
                moved = move_damaged_lines(out, damaged)
                trainer.log(f"{out / METRICS}: damaged {', '.join(str(d) for d in damaged)} moved to {moved}; "
                            f"every valid record is kept")
            run.records[:] = [r for r in records if r["epoch"] <= trainer.epoch]
            atomic_write_text(out / METRICS, metrics_lines(run.records))
        except OSError as err:
            raise RunDirError(f"resume: cannot rewrite the metrics: {os_error_text(err)}") from None
        run.resumed = True
        return trainer

    def close(self) -> None:
        """Release the run directory's lock taken by :meth:`resume` (:meth:`run` does it at its end)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, overwrite: bool = False, stop: Callable[[], int] | None = None) -> dict[str, Any]:
        """Train to the end of the budget or a stop condition; return the summary. ``stop``: see
        :class:`~grokking.engine.Engine` (a sweep's way to stop a run it started)."""
        self._engine = Engine([self._run], epoch=self.epoch, progress=self.progress, log=self.log, stop=stop)
        try:
            self._engine.run(overwrite=overwrite or self.restart)
        finally:
            self._epoch, self._engine = self._engine.epoch, None
            self.summary = self._run.summary
            self.close()
        return self.summary


def train(cfg: Config, out: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
          callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train one run; write its run directory to ``out`` (nothing is written when None)."""
    return Trainer(cfg, out, progress=progress, callbacks=callbacks).run(overwrite=overwrite)


def resume(out: str | Path, *, progress: bool = True, callbacks: list[Callback] | None = None,
           **budget: Any) -> dict[str, Any]:
    """Continue a run; ``budget`` keywords (:data:`BUDGET_FIELDS`) extend it or change its stop target."""
    return Trainer.resume(out, budget, progress=progress, callbacks=callbacks).run()
