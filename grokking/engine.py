"""The training engine: one epoch loop for one run or K runs trained together.

The pieces:

- :mod:`grokking.evaluation` (re-exported here): the runs' splits as ``[K, ...]`` tensors,
  per-run losses, and every run's figures from one pass over every pair.
- :class:`RunGroup`: runs that one program trains: one :class:`~grokking.model.Transformer`
  (K = 1) or one :class:`~grokking.model.StackedTransformer`. Every method of
  :mod:`grokking.methods` (gradient filter, orthogonalised gradient, clipping, optimiser) is
  written for one run's parameter list; a stacked group applies it to each run's parameters
  as views into the stacked weights, so a run steps the same way alone or in a batch.
- :class:`Run`: one run's identity and bookkeeping (its config, directory, records, status).
- :class:`Engine`: the loop. It owns the evaluation cadence, the metrics record, stop
  conditions, the non-finite check, snapshots, signals and the progress bar, and it is the
  one writer of a run directory's files.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import Config, ConfigError
from .data import Dataset
from .errors import GrokkingError
from .evaluation import (  # noqa: F401 - re-exported: the engine's evaluation names
    EVAL_CHUNK,
    FIGURE_KEYS,
    RunData,
    evaluate,
    evaluate_runs,
    per_run_train_loss,
    weight_norm,
    weight_norms,
)
from .fast import keep_freed_memory, select_logits_fn
from .figures import plot_run
from .methods import (
    GradFilter,
    build_optimizer,
    clip_gradients,
    loss_function,
    orthogonalize_gradients,
    set_learning_rate,
    warmup_factor,
)
from .model import StackedTransformer, Transformer
from .report import write_report
from .version import __version__
from .rundir import (
    CONFIG,
    METRICS,
    SUMMARY,
    atomic_write_json,
    first_at,
    last_path,
    prepare_run_dir,
    snapshot_epochs,
    snapshot_path,
)



class TrainingFailed(GrokkingError, RuntimeError):
    """A numerical fault (NaN/Inf) stopped the run; the last good checkpoint is kept."""


class TrainingInterrupted(GrokkingError, RuntimeError):
    """SIGINT/SIGTERM: the state was saved; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class Callback(Protocol):
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


# --- a group of runs trained by one program --------------------------------------------------------
class RunGroup:
    """Runs that one program trains: ``len(cfgs) == 1`` and ``stacked=False`` is one ordinary
    model; ``stacked=True`` holds the runs as one :class:`StackedTransformer`. All runs of a
    group take their optimiser steps together, so one step counter serves them all."""

    def __init__(self, cfgs: Sequence[Config], datasets: Sequence[Dataset], device: torch.device, *,
                 stacked: bool = False, log: Callable[[str], None] = print):
        self.cfgs, self.device, self.stacked, self.log = list(cfgs), device, stacked, log
        if device.type == "cpu":
            keep_freed_memory()
        cfg = self.cfgs[0]
        models = [Transformer(c).to(device) for c in self.cfgs]
        self.model: Transformer = StackedTransformer.from_models(models) if stacked else models[0]
        self.model.train()
        self.logits_fn, self.fast_reason = select_logits_fn(cfg)
        self.loss_fn = loss_function(cfg)
        self.datasets = list(datasets)
        self.data = RunData.from_datasets(self.datasets)
        self.step_count = 0
        self.params = self._run_parameters()
        # Fused Adam(W): one kernel per step (on CPU 0.14 ms against 0.6 for the default, canonical model).
        self.optimizers = [build_optimizer(c, self._named(params), fused=True) for c, params in zip(self.cfgs, self.params)]
        self.filters = [GradFilter(c, params) for c, params in zip(self.cfgs, self.params)]
        # On the device: a host-side permutation copied to a GPU each epoch would synchronise.
        self.batch_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self._set_train_split()
        self._loss = self._compiled_loss() if cfg.compile and not stacked else self._eager_loss

    @property
    def fast(self) -> bool:
        return self.fast_reason is None

    def _run_parameters(self) -> list[list[torch.Tensor]]:
        if isinstance(self.model, StackedTransformer):
            return [self.model.run_parameters(k) for k in range(self.model.n_runs)]
        return [[p for p in self.model.parameters() if p.requires_grad]]

    def _named(self, params: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        return list(zip([n for n, _ in self.model.named_parameters()], params))

    def _set_train_split(self) -> None:
        train_tokens, self.train_labels = self.datasets[0].split("train")
        self.train_a, self.train_b = train_tokens[:, 0].contiguous(), train_tokens[:, 1].contiguous()

    # --- one step ------------------------------------------------------------------------------
    def _eager_loss(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            return per_run_train_loss(self.model, self.data, self.cfgs[0], self.logits_fn).sum()
        return self.loss_fn(self.logits_fn(self.model, a, b), labels)

    def _compiled_loss(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        try:
            compiled = torch.compile(self._eager_loss, dynamic=False)
            # Compile now, at the training shape, so that a failure falls back before any step.
            compiled(self.train_a, self.train_b, self.train_labels).backward()
            self.model.zero_grad(set_to_none=True)
            return compiled
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            self.log(f"torch.compile unavailable here ({type(err).__name__}); training eagerly")
            return self._eager_loss

    def step(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> None:
        """One optimiser step of every run of the group."""
        self.model.zero_grad(set_to_none=True)
        self._loss(a, b, labels).backward()
        self.update()

    def update(self) -> None:
        """Step every run from the gradients now in its parameters: its gradient filter, ⊥Grad,
        clipping and optimiser, at its warm-up's learning rate, each applied to that run alone."""
        if self.stacked:  # the stacked gradients are new tensors: point each run's views at them
            for k, params in enumerate(self.params):
                for p, stacked in zip(params, self.model.parameters()):
                    p.grad = stacked.grad[k]
        for cfg, params, grad_filter, optimizer in zip(self.cfgs, self.params, self.filters, self.optimizers):
            set_learning_rate(optimizer, warmup_factor(cfg, self.step_count))
            if grad_filter.active:
                grad_filter.apply()
            if cfg.optimizer == "orthoadamw":
                orthogonalize_gradients(params)
            clip_gradients(params, cfg.grad_clip)
            optimizer.step()
        self.step_count += 1

    def train_epoch(self) -> None:
        cfg = self.cfgs[0]
        n = len(self.train_labels)
        if self.stacked or cfg.batch_size == 0 or cfg.batch_size >= n:
            self.step(self.train_a, self.train_b, self.train_labels)
            return
        order = torch.randperm(n, generator=self.batch_generator, device=self.device)
        for start in range(0, n, cfg.batch_size):
            if cfg.max_steps and self.step_count >= cfg.max_steps:
                return
            idx = order[start : start + cfg.batch_size]
            self.step(self.train_a[idx], self.train_b[idx], self.train_labels[idx])

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> list[tuple[dict[str, float], float]]:
        """Per run of the group: its figures and its weight norm (one host synchronisation)."""
        self.model.eval()
        figures = evaluate_runs(self.model, self.data, self.cfgs[0], self.logits_fn)
        self.model.train()
        norms = weight_norms(self.params).to(torch.float64)
        rows = torch.cat([figures, norms.unsqueeze(1)], 1).tolist()
        return [(dict(zip(FIGURE_KEYS, row[:6])), row[6]) for row in rows]

    def finite(self, slot: int) -> bool:
        return math.isfinite(weight_norms([self.params[slot]])[0].item())

    # --- state -------------------------------------------------------------------------------------
    def state_tensors(self, slot: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Run ``slot``'s full state as a single-run checkpoint: any run resumes alone."""
        model_state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        opt_state = self.optimizers[slot].state_dict()
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(self.filters[slot].state_tensors())
        tensors["rng.batch"] = self.batch_generator.get_state()
        tensors["split.train_idx"] = self.datasets[slot].train_idx
        tensors["split.test_idx"] = self.datasets[slot].test_idx
        return tensors, {"optim_groups": opt_state["param_groups"], "step": self.step_count}

    def weights(self, slot: int) -> dict[str, torch.Tensor]:
        state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        return {f"model.{k}": v for k, v in state.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], split: tuple | None) -> None:
        """Continue a single-run group from a checkpoint's state."""
        if split is not None:  # the stored split, in its order (the minibatch order indexes it)
            dataset = self.datasets[0]
            dataset.train_idx, dataset.test_idx = split[0].to(self.device), split[1].to(self.device)
            self.data = RunData.from_datasets(self.datasets)
            self._set_train_split()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        self.optimizers[0].load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
        self.filters[0].load_state_tensors(tensors, self.device)
        self.batch_generator.set_state(tensors["rng.batch"])
        self.step_count = int(meta["step"])

    def drop(self, slots: Sequence[int]) -> None:
        """Remove finished runs from a stacked group; the others continue with their state."""
        keep = [k for k in range(len(self.cfgs)) if k not in set(slots)]
        if not keep or not self.stacked:
            return
        old_optimizers, old_filters = [self.optimizers[k] for k in keep], [self.filters[k] for k in keep]
        self.cfgs = [self.cfgs[k] for k in keep]
        self.datasets = [self.datasets[k] for k in keep]
        self.model = self.model.select(keep)
        self.model.train()
        self.data = RunData.from_datasets(self.datasets)
        self.params = self._run_parameters()
        self.optimizers = []
        for cfg, params, old in zip(self.cfgs, self.params, old_optimizers):
            optimizer = build_optimizer(cfg, self._named(params), fused=True)
            optimizer.load_state_dict(old.state_dict())
            self.optimizers.append(optimizer)
        for grad_filter, params in zip(old_filters, self.params):
            grad_filter.params = params
        self.filters = old_filters


# --- runs and the loop --------------------------------------------------------------------------------
@dataclass
class Run:
    """One run: its config and run directory (None: nothing is written), where its weights live
    (``group`` and ``slot``), and everything the loop records about it."""

    cfg: Config
    out: Path | None
    group: RunGroup
    slot: int
    callbacks: list[Callback] = field(default_factory=list)
    batch: dict[str, Any] | None = None  # config.json's "batched" entry for a run of a batch
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    seconds_before: float = 0.0
    last_saved_epoch: int | None = None
    stop_reason: str | None = None
    status: str | None = None  # set when the run has finished
    error: str | None = None
    summary: dict[str, Any] | None = None
    metrics_file: IO[str] | None = None

    @property
    def snapshot_at(self):
        return snapshot_epochs(self.cfg)

    @property
    def step_count(self) -> int:
        return self.group.step_count

    @property
    def training_path(self) -> str:
        return "fast" if self.group.fast else "hooked"

    def done(self, epoch: int) -> bool:
        cfg = self.cfg
        return epoch >= cfg.epochs or bool(cfg.max_steps and self.step_count >= cfg.max_steps)

    def stop_condition(self, record: dict[str, Any]) -> str | None:
        cfg = self.cfg
        if cfg.stop_at_test_acc is not None and record["test_acc"] >= cfg.stop_at_test_acc:
            return f"test_acc >= {cfg.stop_at_test_acc}"
        if cfg.stop_at_test_loss is not None and record["test_loss"] <= cfg.stop_at_test_loss:
            return f"test_loss <= {cfg.stop_at_test_loss}"
        return None

    def kept(self) -> str:
        if self.last_saved_epoch is None:
            return "no checkpoint was saved"
        return f"the last good checkpoint (epoch {self.last_saved_epoch}) is kept"


def summarize(records: list[dict[str, Any]], cfg: Config, status: str, seconds: float, epochs_run: int,
              steps: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    final = records[-1] if records else {}
    train99, test99 = first_at(records, "train_acc"), first_at(records, "test_acc")
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


@contextmanager
def signals_to_flag() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set a flag the loop checks between epochs (main thread only); the
    previous handlers are back when the loop ends."""
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


class Engine:
    """Train ``runs`` (held by ``groups``) from ``epoch`` to each run's budget or stop condition.

    Per epoch, for every run still training: evaluate every ``eval_every`` epochs and at the end,
    write the record, snapshot at ``snapshot_epochs``, stop at the budget or a stop condition.
    A run that finishes is finalised at that epoch and leaves its group; the others go on. A
    run whose loss or weights turn non-finite fails without overwriting its last good checkpoint;
    with ``raise_failures`` that ends the whole call with :class:`TrainingFailed`.
    """

    def __init__(self, runs: Sequence[Run], *, epoch: int = 0, progress: bool = True, raise_failures: bool = True,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)):
        self.runs, self.epoch, self.progress, self.raise_failures, self.log = list(runs), epoch, progress, raise_failures, log
        self.groups: list[RunGroup] = list(dict.fromkeys(r.group for r in self.runs))
        self._t0 = time.perf_counter()

    # --- the run directory: every file of it is written here -----------------------------------------
    def _start(self, run: Run, overwrite: bool) -> None:
        if run.out is None:
            return
        if not run.resumed:
            prepare_run_dir(run.out, overwrite)
        atomic_write_json(run.out / CONFIG, {
            "config": run.cfg.to_dict(), "config_key": run.cfg.key(), "grokking_version": __version__,
            "torch": torch.__version__, "device": str(run.group.device), "training_path": run.training_path,
            "fast_path_fallback_reason": run.group.fast_reason, "argv": sys.argv,
            **({"batched": run.batch} if run.batch is not None else {}),
        })
        run.metrics_file = open(run.out / METRICS, "a")

    def _meta(self, run: Run) -> dict[str, Any]:
        return {"config": run.cfg.to_dict(), "epoch": self.epoch, "step": run.step_count, "grokking_version": __version__}

    def _save(self, run: Run, snapshot: bool = True) -> None:
        """Snapshot and ``last.safetensors``; never non-finite weights: a fault between
        evaluations must not overwrite the last good checkpoint."""
        if not run.group.finite(run.slot):
            raise TrainingFailed(f"non-finite weights at epoch {self.epoch} (step {run.step_count}); {run.kept()}")
        if snapshot:
            save_checkpoint(snapshot_path(run.out, self.epoch), run.group.weights(run.slot), self._meta(run))
        tensors, meta = run.group.state_tensors(run.slot)
        save_checkpoint(last_path(run.out), tensors, {**self._meta(run), **meta, "seconds": self._seconds(run)})
        run.last_saved_epoch = self.epoch

    def _seconds(self, run: Run) -> float:
        return run.seconds_before + time.perf_counter() - self._t0

    def _record(self, run: Run, figures: dict[str, float], norm: float) -> dict[str, Any]:
        record = {"epoch": self.epoch, "step": run.step_count, **figures, "weight_norm": norm,
                  "lr": run.cfg.lr * warmup_factor(run.cfg, run.step_count), "seconds": round(self._seconds(run), 3)}
        if not (math.isfinite(figures["train_loss"]) and math.isfinite(norm)):
            raise TrainingFailed(f"non-finite {'loss' if not math.isfinite(figures['train_loss']) else 'weights'} "
                                 f"at epoch {self.epoch} (step {run.step_count}); {run.kept()}")
        run.records.append(record)
        if run.metrics_file is not None:
            run.metrics_file.write(json.dumps(record) + "\n")
            run.metrics_file.flush()
        for cb in run.callbacks:
            cb.on_eval(record)
        return record

    def _finish(self, run: Run, status: str) -> None:
        """Close the run: summary.json always; the curves and the report for a run that ended well."""
        run.status = status
        if run.metrics_file is not None:
            run.metrics_file.close()
            run.metrics_file = None
        for cb in run.callbacks:
            cb.close()
        extra = {"stop_reason": run.stop_reason, "error": run.error, "device": str(run.group.device),
                 "training_path": run.training_path, **({"batched": run.batch} if run.batch is not None else {})}
        run.summary = summarize(run.records, run.cfg, status, self._seconds(run), self.epoch, run.step_count, extra)
        if run.out is None:
            return
        atomic_write_json(run.out / SUMMARY, run.summary)
        if status in ("completed", "stopped_early"):
            plot_run(run.out)
            if run.cfg.report:
                try:
                    write_report(run.out)
                except Exception as err:  # noqa: BLE001 - the run is saved; the page is a convenience
                    self.log(f"report.html not written ({type(err).__name__}: {err}); retry: grokking report {run.out}")

    # --- the loop ------------------------------------------------------------------------------------
    def active(self) -> list[Run]:
        return [r for r in self.runs if r.status is None]

    def run(self, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train every run to its budget or stop condition; return the summaries, in order."""
        for run in self.runs:
            self._start(run, overwrite)
        bar = self._progress_bar()
        self._t0 = time.perf_counter()
        # A resumed run's checkpoint epoch was evaluated (if due) and saved before: do not log it
        # twice, but do re-apply its stop condition. Without its record (it was lost) redo it.
        skip = set()
        for run in self.runs:
            last = run.records[-1] if run.records else None
            if run.resumed and (last is not None and last["epoch"] == self.epoch
                                or self.epoch % run.cfg.eval_every != 0 and not run.done(self.epoch)):
                skip.add(id(run))
                if last is not None and last["epoch"] == self.epoch:
                    run.stop_reason = run.stop_condition(last)
        try:
            with signals_to_flag() as flag:
                while self.active():
                    self._epoch(skip, bar)
                    skip = set()
                    if not self.active():
                        break
                    if flag["signum"]:
                        self._interrupt(flag["signum"])
                    for group in self.groups:
                        group.train_epoch()
                    self.epoch += 1
        except KeyboardInterrupt:  # no signal handler here (not the main thread)
            for run in self.active():
                self._finish(run, "interrupted")
            raise
        finally:
            if bar is not None:
                bar.close()
            for run in self.active():  # an unexpected error: close what is open and say so
                self._finish(run, "crashed")
        return [run.summary for run in self.runs]

    def _epoch(self, skip: set[int], bar: Any) -> None:
        """The bookkeeping of one epoch, for every run still training."""
        due = [r for r in self.active() if id(r) not in skip and (self.epoch % r.cfg.eval_every == 0 or r.done(self.epoch))]
        finished: list[tuple[Run, str]] = []
        for group in {id(r.group): r.group for r in due}.values():
            results = group.evaluate()
            for run in (r for r in due if r.group is group):
                figures, norm = results[run.slot]
                try:
                    record = self._record(run, figures, norm)
                except TrainingFailed as err:
                    finished.append(self._failed(run, err))
                    continue
                run.stop_reason = run.stop_condition(record)
        if due:
            self._update_bar(bar)
        for run in self.active():
            if any(r is run for r, _ in finished):
                continue
            done = run.done(self.epoch)
            if id(run) not in skip and run.out is not None and (self.epoch in run.snapshot_at or done or run.stop_reason):
                try:
                    self._save(run)
                except TrainingFailed as err:
                    finished.append(self._failed(run, err))
                    continue
            if done or run.stop_reason:
                finished.append((run, "stopped_early" if run.stop_reason and not done else "completed"))
        self._close(finished)

    def _failed(self, run: Run, err: TrainingFailed) -> tuple[Run, str]:
        run.error = str(err)
        if not self.raise_failures:
            self.log(f"{run.out or 'run'}: {run.error}")
        return run, "failed"

    def _close(self, finished: list[tuple[Run, str]]) -> None:
        for run, status in finished:
            self._finish(run, status)
        for group in self.groups:
            gone = [r.slot for r, _ in finished if r.group is group]
            if gone:
                group.drop(gone)
                for slot, run in enumerate(r for r in self.runs if r.group is group and r.status is None):
                    run.slot = slot
        failures = [run for run, status in finished if status == "failed"]
        if failures and self.raise_failures:
            raise TrainingFailed(failures[0].error or "run failed")

    def _interrupt(self, signum: int) -> None:
        live = self.active()
        for run in live:
            status = "interrupted"
            if run.out is not None:
                try:
                    self._save(run, snapshot=False)
                except TrainingFailed as err:
                    run.error, status = str(err), "failed"
            self._finish(run, status)
        if len(self.runs) == 1:
            message = f"interrupted at epoch {self.epoch}; resume with: grokking train --resume {self.runs[0].out}"
        else:
            outs = " ".join(str(r.out) for r in live)
            message = (f"interrupted at epoch {self.epoch}; continue a run alone with: "
                       f"grokking train --resume RUN (one of: {outs})")
        raise TrainingInterrupted(message, signum)

    # --- progress ---------------------------------------------------------------------------------------
    def _progress_bar(self) -> Any:
        if not self.progress:
            return None
        if len(self.runs) == 1 and self.runs[0].cfg.max_steps:
            run = self.runs[0]
            return tqdm(total=run.cfg.max_steps, initial=run.step_count, unit="step", dynamic_ncols=True,
                        mininterval=0.5, file=sys.stderr)
        return tqdm(total=max(r.cfg.epochs for r in self.runs), initial=self.epoch, unit="epoch", dynamic_ncols=True,
                    mininterval=0.5, file=sys.stderr)

    def _update_bar(self, bar: Any) -> None:
        if bar is None:
            return
        if len(self.runs) == 1:
            run = self.runs[0]
            bar.update((run.step_count if run.cfg.max_steps else self.epoch) - bar.n)
            if run.records:
                r = run.records[-1]
                bar.set_postfix_str(f"train {r['train_loss']:.2e}/{r['train_acc']:.3f} "
                                    f"test {r['test_loss']:.2e}/{r['test_acc']:.3f}", refresh=False)
            return
        bar.update(self.epoch - bar.n)
        best = max((r.records[-1]["test_acc"] for r in self.runs if r.records), default=0.0)
        bar.set_postfix_str(f"{len(self.active())}/{len(self.runs)} runs training, best test acc {best:.3f}",
                            refresh=False)
