"""Training: the seed's recipe by default, one run directory per run.

A run directory holds::

    config.json       the full resolved config, plus versions, device and training path
    metrics.jsonl     one JSON object per evaluation (appended and flushed each time)
    checkpoints/      epoch_XXXXXXX.safetensors weight snapshots; last.safetensors: full state
    curves.png        log-scale loss and accuracy, the 99% epochs marked
    summary.json      epochs to 99% train/test accuracy, final figures, timing, status

The loop keeps tensors on the device: nothing crosses to Python except on evaluation
epochs. A run can be resumed from ``last.safetensors`` with metrics that continue bit for
bit (CPU); SIGINT/SIGTERM save that file first and exit cleanly.
"""
from __future__ import annotations

import json
import math
import os
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
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    snapshot_path,
)
from .config import Config, ConfigError, from_dict
from .data import Dataset, make_dataset
from .fast import hooked_last_position_logits, last_position_logits, unsupported_reason
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
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
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


def snapshot_epochs(cfg: Config) -> set[int]:
    """Epochs at which weight snapshots are saved: every ``checkpoint_every`` and log-spaced."""
    epochs = set(range(0, cfg.epochs + 1, cfg.checkpoint_every)) if cfg.checkpoint_every else {0}
    if cfg.checkpoint_log and cfg.epochs > 1:
        epochs |= {int(round(e)) for e in np.logspace(0, math.log10(cfg.epochs), cfg.checkpoint_log)}
    return epochs


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
        self.dataset = make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, cfg.split).to(self.device)
        self.model = Transformer(cfg).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.fast_reason = unsupported_reason(cfg) if cfg.fast else "disabled by fast=false"
        self.logits_fn: LogitsFn = last_position_logits if self.fast_reason is None else hooked_last_position_logits
        self.loss_fn = loss_function(cfg)
        fused = self.device.type == "cuda" or None
        self.optimizer = build_optimizer(cfg, self.model, fused=fused)
        self.grad_filter = GradFilter(cfg, self.params)
        self.batch_generator = torch.Generator().manual_seed(cfg.seed + 1)
        train_tokens, self.train_labels = self.dataset.split("train")
        self.train_a, self.train_b = train_tokens[:, 0].contiguous(), train_tokens[:, 1].contiguous()
        self.epoch, self.step_count, self.seconds_before = 0, 0, 0.0
        self.records: list[dict[str, Any]] = []
        self.resumed = False
        self._train_step = self._make_train_step()
        self.snapshot_at = snapshot_epochs(cfg)
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
                compiled(self.train_a[:2], self.train_b[:2], self.train_labels[:2]).backward()
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
        order = torch.randperm(n, generator=self.batch_generator).to(self.device, non_blocking=True)
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

    def save_snapshot(self) -> None:
        weights = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        save_checkpoint(snapshot_path(self.out, self.epoch), weights, self._meta())

    def save_last(self) -> None:
        tensors, meta = self.state_tensors()
        save_checkpoint(self.out / "checkpoints" / "last.safetensors", tensors, {**self._meta(), **meta})

    # --- resume --------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, out: str | Path, **kwargs: Any) -> "Trainer":
        out = Path(out)
        config_file, last = out / "config.json", out / "checkpoints" / "last.safetensors"
        if not config_file.exists() or not last.exists():
            raise RunDirError(f"resume: {out} has no config.json and checkpoints/last.safetensors to resume from")
        try:
            cfg = from_dict(json.loads(config_file.read_text())["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise RunDirError(f"resume: {config_file} is unreadable ({type(err).__name__})") from None
        tensors, meta = load_checkpoint(last)
        trainer = cls(cfg, out, **kwargs)
        trainer.load_state_tensors(tensors, meta)
        trainer.epoch = int(meta["epoch"])
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
                                 f"at epoch {self.epoch} (step {self.step_count}); the last good checkpoint is kept")
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
                prepare_run_dir(self.out, overwrite)
            atomic_write_json(self.out / "config.json", {
                "config": cfg.to_dict(), "config_key": cfg.key(), "grokking_version": __version__,
                "torch": torch.__version__, "device": str(self.device),
                "training_path": "fast" if self.fast_reason is None else "hooked",
                "fast_path_fallback_reason": self.fast_reason, "argv": sys.argv,
            })
        metrics_file = open(self.out / "metrics.jsonl", "a") if self.out else None
        bar = self._progress_bar()
        status, stop_reason = "completed", None
        self._t0 = time.perf_counter()
        skip_first = self.resumed  # the checkpoint's epoch was evaluated and saved before
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
                            self.save_snapshot()
                            self.save_last()
                    skip_first = False
                    if done or stop_reason:
                        status = "stopped_early" if stop_reason and not done else "completed"
                        break
                    if flag["signum"]:
                        if self.out:
                            self.save_last()
                        status = "interrupted"
                        raise TrainingInterrupted(
                            f"interrupted at epoch {self.epoch}; resume with: grokking train --resume {self.out}",
                            flag["signum"])
                    self._train_epoch()
                    self.epoch += 1
        except TrainingFailed:
            status = "failed"
            raise
        finally:
            if metrics_file:
                metrics_file.close()
            if bar is not None:
                bar.close()
            for cb in self.callbacks:
                cb.close()
            self.summary = summarize(self.records, cfg, status, self.seconds_before + self._elapsed(), self.epoch,
                                     self.step_count, {"stop_reason": stop_reason, "device": str(self.device),
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
        try:
            from .report import write_report
        except ModuleNotFoundError:  # TODO(integration): report.py lands with the reports issue
            return
        write_report(self.out)

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


def resume(out: str | Path, *, progress: bool = True, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    return Trainer.resume(out, progress=progress, callbacks=callbacks or []).run()
