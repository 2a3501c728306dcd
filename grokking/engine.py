"""The training engine: one epoch loop for one run or K runs trained together.

The pieces:

- :mod:`grokking.evaluation` (re-exported here): the runs' splits as ``[K, ...]`` tensors,
  per-run losses, and every run's figures from one pass over every pair.
- :class:`~grokking.rungroup.RunGroup` (re-exported here): runs that one program trains, one
  model or one stack, stepped by the methods of :mod:`grokking.methods`.
- :class:`Run`: one run's identity and bookkeeping (its config, directory, records, status).
- :class:`Engine`: the loop. It owns the evaluation cadence, the metrics record, stop
  conditions, the non-finite check, snapshots, signals and the progress bar, and it is the
  one writer of a run directory's files (holding each one's lock while it trains).
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
from .config import Config
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
from .figures import plot_run
from .methods import lr_factor
from .report import write_report
from .rundir import (
    CONFIG,
    METRICS,
    SUMMARY,
    RunDirError,
    RunLock,
    SnapshotEpochs,
    StorageError,
    atomic_write_json,
    first_at,
    last_path,
    new_run_id,
    os_error_text,
    prepare_run_dir,
    snapshot_epochs,
    snapshot_path,
)
from .rungroup import RunGroup  # noqa: F401 - re-exported
from .threads import ThreadPolicy, restored_threads
from .version import __version__


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
    run_id: str | None = None  # made when the run directory is created; kept by every resume
    _snapshots: tuple[tuple[int, int, int], SnapshotEpochs] | None = field(default=None, repr=False)

    @property
    def identity(self) -> dict[str, Any]:
        """What every checkpoint of the run carries to say whose it is."""
        return {"run_id": self.run_id, "config_key": self.cfg.key()}

    @property
    def snapshot_at(self) -> SnapshotEpochs:
        # Asked every epoch: the log-spaced epochs are computed once per schedule.
        cfg = self.cfg
        key = (cfg.checkpoint_every, cfg.epochs, cfg.checkpoint_log)
        if self._snapshots is None or self._snapshots[0] != key:
            self._snapshots = (key, snapshot_epochs(cfg))
        return self._snapshots[1]

    @property
    def step_count(self) -> int:
        return self.group.step_count

    @property
    def training_path(self) -> str:
        if self.cfg.model == "mlp":
            return "mlp"
        return "fast" if self.group.fast else "hooked"

    def done(self, epoch: int) -> bool:
        cfg = self.cfg
        return epoch >= cfg.epochs or bool(cfg.max_steps and self.step_count >= cfg.max_steps)

    def stop_condition(self, record: dict[str, Any]) -> str | None:
        """Why the run ends at ``record``'s evaluation, or None. With ``stop_hold``, a condition
        ends it only once it has held at every evaluation of the last ``stop_hold`` epochs; the
        streak is read from the run's records, so a resumed run counts it as an unbroken one would."""
        cfg = self.cfg
        acc, loss = cfg.stop_at_test_acc, cfg.stop_at_test_loss
        conditions: list[tuple[str, Callable[[dict[str, Any]], bool]]] = []
        if acc is not None:
            conditions.append((f"test_acc >= {acc}", lambda r: r["test_acc"] >= acc))
        if loss is not None:
            conditions.append((f"test_loss <= {loss}", lambda r: r["test_loss"] <= loss))
        for text, holds in conditions:
            if not holds(record):
                continue
            if not cfg.stop_hold:
                return text
            since = record["epoch"]
            for earlier in reversed(self.records):  # back to the streak's start only, not the whole run
                if earlier["epoch"] >= record["epoch"]:
                    continue  # ``record`` itself, once logged
                if not holds(earlier):
                    break
                since = earlier["epoch"]
            if record["epoch"] - since >= cfg.stop_hold:
                return f"{text} at every evaluation from epoch {since} to {record['epoch']}"
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
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                 stop: Callable[[], int] | None = None):
        self.runs, self.epoch, self.progress, self.raise_failures, self.log = list(runs), epoch, progress, raise_failures, log
        # A stop request from outside the loop (a sweep's signal, caught before the loop installed
        # its own handlers): the signal number, or 0. Checked where the loop checks its signals.
        self.stop = stop
        self.groups: list[RunGroup] = list(dict.fromkeys(r.group for r in self.runs))
        self._t0 = time.perf_counter()
        self._storage_error: str | None = None  # a file the runs could not write after they ended
        # One thread count for the process: the runs' training epochs share it (see grokking.threads).
        cpu = all(g.device.type == "cpu" for g in self.groups)
        self.threads = ThreadPolicy(self.runs[0].cfg.threads if self.runs else 0, automatic=cpu)

    # --- the run directory: every file of it is written here -----------------------------------------
    def _start(self, run: Run, overwrite: bool) -> None:
        """Create (or reopen) the run directory; nothing has trained yet, so a file-system error
        here refuses the run (RunDirError, exit status 2)."""
        if run.out is None:
            return
        if not run.resumed:
            prepare_run_dir(run.out, overwrite)
        if run.run_id is None:  # a new run, or one written before run ids
            run.run_id = new_run_id()
        try:
            atomic_write_json(run.out / CONFIG, {
                "config": run.cfg.to_dict(), "config_key": run.cfg.key(), "run_id": run.run_id,
                "grokking_version": __version__, "torch": torch.__version__, "device": str(run.group.device),
                "training_path": run.training_path, "fast_path_fallback_reason": run.group.fast_reason,
                "threads": {"requested": run.cfg.threads, "candidates": list(self.threads.candidates)},
                "argv": sys.argv, **({"batched": run.batch} if run.batch is not None else {}),
            })
            run.metrics_file = open(run.out / METRICS, "a")
        except OSError as err:
            raise RunDirError(f"out: cannot write the run directory: {os_error_text(err)}") from None

    def _meta(self, run: Run) -> dict[str, Any]:
        return {"config": run.cfg.to_dict(), "epoch": self.epoch, "step": run.step_count, "grokking_version": __version__}

    def _save(self, run: Run, snapshot: bool = True) -> None:
        """Snapshot and ``last.safetensors``; never non-finite weights: a fault between
        evaluations must not overwrite the last good checkpoint."""
        if not run.group.finite(run.slot):
            raise TrainingFailed(f"non-finite weights at epoch {self.epoch} (step {run.step_count}); {run.kept()}")
        if snapshot:
            save_checkpoint(snapshot_path(run.out, self.epoch), run.group.weights(run.slot), self._meta(run),
                            run.identity)
        tensors, meta = run.group.state_tensors(run.slot)
        save_checkpoint(last_path(run.out), tensors, {**self._meta(run), **meta, "seconds": self._seconds(run)},
                        run.identity)
        run.last_saved_epoch = self.epoch

    def _seconds(self, run: Run) -> float:
        return run.seconds_before + time.perf_counter() - self._t0

    def _record(self, run: Run, figures: dict[str, float], norm: float) -> dict[str, Any]:
        record = {"epoch": self.epoch, "step": run.step_count, **figures, "weight_norm": norm,
                  "lr": run.cfg.lr * lr_factor(run.cfg, run.step_count), "seconds": round(self._seconds(run), 3),
                  "threads": self.threads.current}
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
            try:
                run.metrics_file.close()
            except OSError:  # its last record did not reach the disk: the error that said so is being handled
                pass
            run.metrics_file = None
        for cb in run.callbacks:
            cb.close()
        extra = {"stop_reason": run.stop_reason, "error": run.error, "device": str(run.group.device),
                 "threads": self.threads.summary(),
                 "training_path": run.training_path, **({"batched": run.batch} if run.batch is not None else {})}
        run.summary = summarize(run.records, run.cfg, status, self._seconds(run), self.epoch, run.step_count, extra)
        if run.out is None:
            return
        try:
            atomic_write_json(run.out / SUMMARY, run.summary)
        except OSError as err:
            # The run's state is in last.safetensors; without its summary it stays resumable.
            self._storage_error = self._storage_error or (
                f"{os_error_text(err)}; {run.kept()}; resume with: grokking train --resume {run.out}")
            return
        if status in ("completed", "stopped_early"):
            try:
                plot_run(run.out)
            except OSError as err:  # the run is saved; the figure is redrawn by `grokking plot`
                self.log(f"{run.out}: curves.png not written ({os_error_text(err)}); retry: grokking plot {run.out}")
            if run.cfg.report:
                try:
                    write_report(run.out)
                except Exception as err:  # noqa: BLE001 - the run is saved; the page is a convenience
                    self.log(f"report.html not written ({type(err).__name__}: {err}); retry: grokking report {run.out}")

    # --- the loop ------------------------------------------------------------------------------------
    def active(self) -> list[Run]:
        return [r for r in self.runs if r.status is None]

    def run(self, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train every run to its budget or stop condition; return the summaries, in order.

        Each run directory's lock (:class:`~grokking.rundir.RunLock`) is held throughout: a second
        writer is refused. A file-system error while training (a full disk, a lost permission)
        ends every run still training as ``crashed``, with the error in its summary.json, and
        raises :class:`~grokking.rundir.StorageError` (one line, exit status 1); the last good
        checkpoints stay resumable."""
        locks: list[RunLock] = []
        try:
            for run in self.runs:
                if run.out is not None:
                    locks.append(RunLock(run.out, "train").acquire())
            with restored_threads():  # the caller's thread count, once the runs are over
                summaries = self._run(overwrite)
        finally:
            for lock in reversed(locks):
                lock.release()
        if self._storage_error is not None:
            raise StorageError(self._storage_error)
        return summaries

    def _run(self, overwrite: bool) -> list[dict[str, Any]]:
        self.threads.start()
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
                    signum = flag["signum"] or (self.stop() if self.stop is not None else 0)
                    if signum:
                        self._interrupt(signum)
                    self.threads.before_epoch(self.epoch)
                    started = time.perf_counter()
                    for group in self.groups:
                        group.train_epoch()
                    self.threads.after_epoch(time.perf_counter() - started)
                    self.epoch += 1
        except KeyboardInterrupt:  # no signal handler here (not the main thread)
            for run in self.active():
                self._finish(run, "interrupted")
            raise
        except OSError as err:
            text = os_error_text(err)
            live = self.active()
            for run in live:
                run.error = f"file-system error at epoch {self.epoch}: {text}"
                self._finish(run, "crashed")
            kept = "; ".join(f"{r.out}: {r.kept()}" for r in live if r.out is not None) or "nothing was saved"
            resume = " ".join(str(r.out) for r in live if r.out is not None)
            raise StorageError(f"{text} (at epoch {self.epoch}); {kept}; fix it, then resume with: "
                               f"grokking train --resume {resume if len(live) == 1 else 'RUN'}") from None
        finally:
            if bar is not None:
                bar.close()
            error = sys.exc_info()[1]
            for run in self.active():  # an unexpected error: close what is open and say so
                if error is not None and run.error is None:
                    run.error = " ".join(f"{type(error).__name__}: {error}".splitlines())[:500]
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
