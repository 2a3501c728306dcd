"""Training: the seed's recipe by default, one run directory per run.

A run directory holds::

    config.json       the full resolved config, plus versions, device and training path
    metrics.jsonl     one JSON object per evaluation (appended and flushed each time); its
                      'seconds' is wall-clock training time, carried across resumes (the time
                      a killed process spent after its last checkpoint is counted again), the
                      one field that differs between otherwise bit-identical runs
    checkpoints/      epoch_XXXXXXX.safetensors weight snapshots; last.safetensors: full state
    curves.png        log-scale loss and accuracy, the 99% epochs marked
    summary.json      epochs to 99% train/test accuracy, final figures, timing, status

The loop keeps tensors on the device: nothing crosses to Python except on evaluation
epochs. A run can be resumed from ``last.safetensors`` with metrics that continue bit for
bit (CPU, same thread count); SIGINT/SIGTERM save that file first and exit cleanly. Resume
drops metrics records after the checkpoint's epoch (and a torn last line): they are
recomputed. A run killed before its first ``last.safetensors`` (epoch 0) starts again on
resume; one killed before its config.json is refused (start it again with --overwrite).
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from . import __version__
from .checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    snapshot_path,
)
from .config import Config, ConfigError, from_dict
from .data import Dataset, make_dataset
from .fast import hooked_last_position_logits, keep_freed_memory, last_position_logits, unsupported_reason
from .methods import (
    GradFilter,
    build_optimizer,
    clip_gradients,
    loss_function,
    orthogonalize_gradients,
    per_example_loss,
    set_learning_rate,
    warmup_factor,
)
from .model import Transformer

EVAL_CHUNK = 65536  # examples per evaluation forward pass, bounds memory for large p


class RunDirError(ValueError):
    """The output directory cannot be used as asked (one-line message)."""


class TrainingFailed(RuntimeError):
    """A numerical fault (NaN/Inf) stopped the run; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the state was saved; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Callback(Protocol):
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


# --- evaluation ----------------------------------------------------------------------------------
LogitsFn = Callable[[Transformer, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate(model: Transformer, dataset: Dataset, logits_fn: LogitsFn = last_position_logits,
             cfg: Config | None = None) -> dict[str, float]:
    """Loss (float64) and accuracy on the train split, the test split and all pairs."""
    cfg = cfg or model.cfg
    losses, correct = [], []
    for start in range(0, len(dataset.labels), EVAL_CHUNK):
        tokens = dataset.tokens[start : start + EVAL_CHUNK]
        labels = dataset.labels[start : start + EVAL_CHUNK]
        logits = logits_fn(model, tokens[:, 0], tokens[:, 1])
        losses.append(per_example_loss(cfg, logits, labels))
        correct.append((logits.argmax(-1) == labels).to(torch.float64))
    loss, hit = torch.cat(losses), torch.cat(correct)
    figures = torch.stack([
        loss[dataset.train_idx].mean(), loss[dataset.test_idx].mean(), loss.mean(),
        hit[dataset.train_idx].mean(), hit[dataset.test_idx].mean(), hit.mean(),
    ]).tolist()  # the one host synchronisation of an evaluation
    keys = ("train_loss", "test_loss", "all_loss", "train_acc", "test_acc", "all_acc")
    return dict(zip(keys, figures))


def weight_norm(model: torch.nn.Module) -> torch.Tensor:
    return torch.sqrt(sum(p.detach().pow(2).sum() for p in model.parameters()))


# --- run directory helpers ---------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl``; a torn last line (a kill mid-write) is dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            break
        records.append(record)
    return records


def first_epoch_at(records: list[dict[str, Any]], key: str, threshold: float = 0.99) -> int | None:
    return next((r["epoch"] for r in records if r[key] >= threshold), None)


def summarize(records: list[dict[str, Any]], cfg: Config, status: str, seconds: float, epochs_run: int,
              steps: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    final = records[-1] if records else {}
    train99, test99 = first_epoch_at(records, "train_acc"), first_epoch_at(records, "test_acc")
    return {
        "status": status,
        "epoch_train_acc_99": train99,
        "epoch_test_acc_99": test99,
        "grokking_delay": None if train99 is None or test99 is None else test99 - train99,
        "final": {k: final.get(k) for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc",
                                            "all_loss", "all_acc", "weight_norm")},
        "epochs_run": epochs_run,
        "steps": steps,
        "seconds": round(seconds, 3),
        "seconds_per_epoch": seconds / epochs_run if epochs_run else None,
        "config_key": cfg.key(),
        **(extra or {}),
    }


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"out: {out} is not empty; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


#: Fields that only decide when a run stops. ``--resume`` may change them (to extend a run that has
#: not grokked yet, or give a stopped one a new target) without changing any step it takes.
BUDGET_FIELDS = ("epochs", "max_steps", "stop_at_test_acc", "stop_at_test_loss")


@dataclass(frozen=True)
class SnapshotEpochs:
    """``epoch in snapshot_epochs(cfg)``: every ``every`` epochs (0: epoch 0 only) up to ``last``, plus
    ``extra``. Not a set of every epoch: ``epochs=10**9, checkpoint_every=1`` must not allocate 10**9 ints."""

    every: int
    last: int
    extra: frozenset[int]

    def __contains__(self, epoch: object) -> bool:
        if not isinstance(epoch, int) or not 0 <= epoch <= self.last:
            return False
        return (epoch % self.every == 0 if self.every else epoch == 0) or epoch in self.extra


def snapshot_epochs(cfg: Config) -> SnapshotEpochs:
    """Epochs at which weight snapshots are saved: every ``checkpoint_every`` and log-spaced."""
    extra: set[int] = set()
    if cfg.checkpoint_log and cfg.epochs > 1:
        extra = {int(round(e)) for e in np.logspace(0, math.log10(cfg.epochs), cfg.checkpoint_log)}
    return SnapshotEpochs(cfg.checkpoint_every, cfg.epochs, frozenset(extra))


@contextmanager
def _signals_to_flag() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set a flag the loop checks between epochs (main thread only)."""
    flag = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --- the trainer ---------------------------------------------------------------------------------------
@dataclass
class Trainer:
    """One training run. ``Trainer(cfg, out).run()``; ``Trainer.resume(out).run()``."""

    cfg: Config
    out: Path | None = None
    progress: bool = True
    callbacks: list[Callback] = field(default_factory=list)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.dataset = make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, cfg.split).to(self.device)
        self.model = Transformer(cfg).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.fast_reason = unsupported_reason(cfg) if cfg.fast else "disabled by fast=false"
        self.logits_fn: LogitsFn = last_position_logits if self.fast_reason is None else hooked_last_position_logits
        self.loss_fn = loss_function(cfg)
        # Fused Adam(W): one kernel per step; on CPU 0.14 ms against 0.6 for the default (canonical model).
        self.optimizer = build_optimizer(cfg, self.model, fused=True)
        self.grad_filter = GradFilter(cfg, self.params)
        # On the device: a host-side permutation copied to a GPU each epoch would synchronise.
        self.batch_generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        train_tokens, self.train_labels = self.dataset.split("train")
        self.train_a, self.train_b = train_tokens[:, 0].contiguous(), train_tokens[:, 1].contiguous()
        self.epoch, self.step_count, self.seconds_before = 0, 0, 0.0
        self.records: list[dict[str, Any]] = []
        self.resumed = False
        self._train_step = self._make_train_step()
        self.snapshot_at = snapshot_epochs(cfg)
        self.restart = False  # resume() of a run killed before its first checkpoint: start it again
        self.last_saved_epoch: int | None = None
        if self.out is not None and (cfg.tensorboard or cfg.wandb):
            from .monitor import make_callbacks  # optional extras; a clear ImportError names them
            self.callbacks = [*self.callbacks, *make_callbacks(cfg, Path(self.out))]

    # ------------------------------------------------------------------------------------------
    def _loss(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.logits_fn(self.model, a, b), labels)

    def _make_train_step(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
        loss = self._loss
        if self.cfg.compile:
            try:
                compiled = torch.compile(self._loss, dynamic=False)
                # Compile now, at the training shape, so that a failure falls back before any step.
                compiled(self.train_a, self.train_b, self.train_labels).backward()
                self.optimizer.zero_grad(set_to_none=True)
                loss = compiled
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
                self.log(f"torch.compile unavailable here ({type(err).__name__}); training eagerly")
        cfg, optimizer, params = self.cfg, self.optimizer, self.params

        def train_step(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> None:
            set_learning_rate(optimizer, warmup_factor(cfg, self.step_count))
            optimizer.zero_grad(set_to_none=True)
            loss(a, b, labels).backward()
            if self.grad_filter.active:
                self.grad_filter.apply()
            if cfg.optimizer == "orthoadamw":
                orthogonalize_gradients(params)
            clip_gradients(params, cfg.grad_clip)
            optimizer.step()
            self.step_count += 1

        return train_step

    def _train_epoch(self) -> None:
        cfg = self.cfg
        n = len(self.train_labels)
        if cfg.batch_size == 0 or cfg.batch_size >= n:
            self._train_step(self.train_a, self.train_b, self.train_labels)
            return
        order = torch.randperm(n, generator=self.batch_generator, device=self.device)
        for start in range(0, n, cfg.batch_size):
            if cfg.max_steps and self.step_count >= cfg.max_steps:
                return
            idx = order[start : start + cfg.batch_size]
            self._train_step(self.train_a[idx], self.train_b[idx], self.train_labels[idx])

    def _done(self) -> bool:
        cfg = self.cfg
        return self.epoch >= cfg.epochs or bool(cfg.max_steps and self.step_count >= cfg.max_steps)

    # --- state ------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_state = self.optimizer.state_dict()
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(self.grad_filter.state_tensors())
        tensors["rng.batch"] = self.batch_generator.get_state()
        tensors["split.train_idx"] = self.dataset.train_idx
        tensors["split.test_idx"] = self.dataset.test_idx
        meta = {"optim_groups": opt_state["param_groups"], "step": self.step_count,
                "seconds": self.seconds_before + self._elapsed()}
        return tensors, meta

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if "split.train_idx" in tensors:  # the stored split, in its order (the minibatch order indexes it)
            from .checkpoint import checked_split

            train_idx, test_idx = checked_split(tensors, len(self.dataset.labels), Path("checkpoint"))
            self.dataset.train_idx, self.dataset.test_idx = train_idx.to(self.device), test_idx.to(self.device)
            train_tokens, self.train_labels = self.dataset.split("train")
            self.train_a, self.train_b = train_tokens[:, 0].contiguous(), train_tokens[:, 1].contiguous()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
        self.grad_filter.load_state_tensors(tensors, self.device)
        self.batch_generator.set_state(tensors["rng.batch"])
        self.step_count = int(meta["step"])
        self.seconds_before = float(meta.get("seconds", 0.0))

    def _meta(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "epoch": self.epoch, "step": self.step_count,
                "grokking_version": __version__}

    def _check_finite(self) -> None:
        """Never save non-finite weights: a fault between evaluations is caught here."""
        if not math.isfinite(weight_norm(self.model).item()):
            raise TrainingFailed(f"non-finite weights at epoch {self.epoch} (step {self.step_count}); "
                                 f"{self._kept()}")

    def _kept(self) -> str:
        if self.last_saved_epoch is None:
            return "no checkpoint was saved"
        return f"the last good checkpoint (epoch {self.last_saved_epoch}) is kept"

    def save_snapshot(self) -> None:
        weights = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        save_checkpoint(snapshot_path(self.out, self.epoch), weights, self._meta())

    def save_last(self) -> None:
        tensors, meta = self.state_tensors()
        save_checkpoint(self.out / "checkpoints" / "last.safetensors", tensors, {**self._meta(), **meta})
        self.last_saved_epoch = self.epoch

    # --- resume --------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, out: str | Path, budget: dict[str, Any] | None = None, **kwargs: Any) -> "Trainer":
        """Continue ``out`` from ``checkpoints/last.safetensors``. A run killed before that file
        first existed (its epoch-0 checkpoint) has nothing worth keeping: it starts again from
        epoch 0 with the config in its config.json, which gives the same run.

        ``budget`` changes :data:`BUDGET_FIELDS` only (e.g. ``{"epochs": 40000}`` to extend a run
        that has not grokked yet); the run then continues exactly as if started with that budget."""
        out = Path(out)
        unknown = sorted(set(budget or {}) - set(BUDGET_FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"cannot change on resume; only {', '.join(BUDGET_FIELDS)} can")
        config_file, last = out / "config.json", out / "checkpoints" / "last.safetensors"
        if not out.is_dir():
            raise RunDirError(f"resume: {out} is not a run directory")
        if not config_file.exists():
            raise RunDirError(f"resume: {out} has no config.json (it was stopped before it started); "
                              f"run the original command again with --overwrite")
        try:
            cfg = from_dict({**json.loads(config_file.read_text())["config"], **(budget or {})})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise RunDirError(f"resume: {config_file} is unreadable ({type(err).__name__})") from None
        for stale in [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]:  # writes cut short by a kill
            stale.unlink(missing_ok=True)
        if not last.exists():
            from .checkpoint import snapshots

            if any(epoch > 0 for epoch, _ in snapshots(out)):
                raise RunDirError(f"resume: {out} has snapshots but no checkpoints/last.safetensors to resume from")
            trainer = cls(cfg, out, **kwargs)
            trainer.restart = True
            trainer.log(f"{out} was stopped before its first checkpoint; starting it again from epoch 0")
            return trainer
        tensors, meta = load_checkpoint(last)
        trainer = cls(cfg, out, **kwargs)
        try:
            trainer.load_state_tensors(tensors, meta)
            trainer.epoch = int(meta["epoch"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"resume: {last} does not match {config_file} "
                                  f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})") from None
        limits = [("epochs", cfg.epochs, trainer.epoch)] + ([("max_steps", cfg.max_steps, trainer.step_count)]
                                                             if cfg.max_steps else [])  # max_steps 0: no limit
        for field, value, reached in limits:
            if reached > value:
                raise ConfigError(field, f"{value} is below the {reached} this run has already reached (a resumed run cannot shrink)")
        trainer.last_saved_epoch = trainer.epoch
        trainer.records = [r for r in read_metrics(out) if r["epoch"] <= trainer.epoch]
        lines = "".join(json.dumps(r) + "\n" for r in trainer.records)
        from .checkpoint import atomic_write_text
        atomic_write_text(out / "metrics.jsonl", lines)
        trainer.resumed = True
        return trainer

    # --- the loop ------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0

    def _evaluate(self) -> dict[str, Any]:
        self.model.eval()
        figures = evaluate(self.model, self.dataset, self.logits_fn, self.cfg)
        self.model.train()
        norm = weight_norm(self.model).item()
        record = {"epoch": self.epoch, "step": self.step_count, **figures, "weight_norm": norm,
                  "lr": self.cfg.lr * warmup_factor(self.cfg, self.step_count), "seconds": round(self.seconds_before + self._elapsed(), 3)}
        if not (math.isfinite(figures["train_loss"]) and math.isfinite(norm)):
            raise TrainingFailed(f"non-finite {'loss' if not math.isfinite(figures['train_loss']) else 'weights'} "
                                 f"at epoch {self.epoch} (step {self.step_count}); {self._kept()}")
        return record

    def _stop_reason(self, record: dict[str, Any]) -> str | None:
        cfg = self.cfg
        if cfg.stop_at_test_acc is not None and record["test_acc"] >= cfg.stop_at_test_acc:
            return f"test_acc >= {cfg.stop_at_test_acc}"
        if cfg.stop_at_test_loss is not None and record["test_loss"] <= cfg.stop_at_test_loss:
            return f"test_loss <= {cfg.stop_at_test_loss}"
        return None

    def run(self, overwrite: bool = False) -> dict[str, Any]:
        """Train to the end of the budget or a stop condition; return the summary."""
        cfg = self.cfg
        if self.out is not None:
            self.out = Path(self.out)
            if not self.resumed:
                prepare_run_dir(self.out, overwrite or self.restart)
            atomic_write_json(self.out / "config.json", {
                "config": cfg.to_dict(), "config_key": cfg.key(), "grokking_version": __version__,
                "torch": torch.__version__, "device": str(self.device),
                "training_path": "fast" if self.fast_reason is None else "hooked",
                "fast_path_fallback_reason": self.fast_reason, "argv": sys.argv,
            })
        metrics_file = open(self.out / "metrics.jsonl", "a") if self.out else None
        bar = self._progress_bar()
        status, stop_reason, error = "crashed", None, None  # set on every way out of the loop
        self._t0 = time.perf_counter()
        # On resume the checkpoint's epoch was evaluated (if due) and saved before: do not log it
        # twice, but do re-apply its stop condition. Without its record (it was lost) redo it.
        last_record = self.records[-1] if self.records else None
        skip_first = self.resumed and (last_record is not None and last_record["epoch"] == self.epoch
                                       or self.epoch % cfg.eval_every != 0 and not self._done())
        if skip_first and last_record is not None and last_record["epoch"] == self.epoch:
            stop_reason = self._stop_reason(last_record)
        try:
            with _signals_to_flag() as flag:
                while True:
                    done = self._done()
                    if not skip_first:
                        if self.epoch % cfg.eval_every == 0 or done:
                            record = self._evaluate()
                            self.records.append(record)
                            if metrics_file:
                                metrics_file.write(json.dumps(record) + "\n")
                                metrics_file.flush()
                            for cb in self.callbacks:
                                cb.on_eval(record)
                            self._update_bar(bar, record)
                            stop_reason = self._stop_reason(record)
                        if self.out and (self.epoch in self.snapshot_at or done or stop_reason):
                            self._check_finite()  # this epoch may not have been evaluated
                            self.save_snapshot()
                            self.save_last()
                    skip_first = False
                    if done or stop_reason:
                        status = "stopped_early" if stop_reason and not done else "completed"
                        break
                    if flag["signum"]:
                        if self.out:
                            self._check_finite()
                            self.save_last()
                        status = "interrupted"
                        raise TrainingInterrupted(
                            f"interrupted at epoch {self.epoch}; resume with: grokking train --resume {self.out}",
                            flag["signum"])
                    self._train_epoch()
                    self.epoch += 1
        except TrainingFailed as err:
            status, error = "failed", str(err)
            raise
        except KeyboardInterrupt:  # no handler installed (not the main thread), or before it was
            status = "interrupted"
            raise
        finally:
            if metrics_file:
                metrics_file.close()
            if bar is not None:
                bar.close()
            for cb in self.callbacks:
                cb.close()
            self.summary = summarize(self.records, cfg, status, self.seconds_before + self._elapsed(), self.epoch,
                                     self.step_count, {"stop_reason": stop_reason, "error": error, "device": str(self.device),
                                                       "training_path": "fast" if self.fast_reason is None else "hooked"})
            if self.out:
                atomic_write_json(self.out / "summary.json", self.summary)
        if self.out:
            from .plots import plot_run
            plot_run(self.out)
            if cfg.report:
                self._write_report()
        return self.summary

    def _write_report(self) -> None:
        from .report import write_report

        try:
            write_report(self.out)
        except Exception as err:  # noqa: BLE001 - the run is saved; the page is a convenience
            self.log(f"report.html not written ({type(err).__name__}: {err}); retry: grokking report {self.out}")

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm
        total = self.cfg.max_steps if self.cfg.max_steps else self.cfg.epochs
        unit = "step" if self.cfg.max_steps else "epoch"
        done = self.step_count if self.cfg.max_steps else self.epoch
        return tqdm(total=total, initial=done, unit=unit, dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

    def _update_bar(self, bar, record: dict[str, Any]) -> None:
        if bar is None:
            return
        bar.update((self.step_count if self.cfg.max_steps else self.epoch) - bar.n)
        bar.set_postfix_str(f"train {record['train_loss']:.2e}/{record['train_acc']:.3f} "
                            f"test {record['test_loss']:.2e}/{record['test_acc']:.3f}", refresh=False)


def train(cfg: Config, out: str | Path | None = None, *, overwrite: bool = False, progress: bool = True,
          callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train one run; write its run directory to ``out`` (nothing is written when None)."""
    trainer = Trainer(cfg, Path(out) if out is not None else None, progress=progress, callbacks=callbacks or [])
    return trainer.run(overwrite=overwrite)


def resume(out: str | Path, *, progress: bool = True, callbacks: list[Callback] | None = None,
           **budget: Any) -> dict[str, Any]:
    """Continue a run; ``budget`` keywords (:data:`BUDGET_FIELDS`) extend it or change its stop target."""
    return Trainer.resume(out, budget, progress=progress, callbacks=callbacks or []).run()
