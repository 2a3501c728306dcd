"""Sweeps: a grid of ordinary runs, idempotent and keyed by config, on one of five backends.

``grokking sweep --out DIR --grid frac=0.3,0.5 --grid seed=0,1,2 [train flags]`` trains
every point of the grid into its own run directory ``DIR/runs/<name>_<config.key()>``
(``name`` spells the point's swept values, e.g. ``frac=0.3_seed=1``) with
``grokking.train.Trainer``, then writes ``DIR/results.csv`` (one row per point), the
sweep figures and a grouped summary over seeds (``DIR/summary.csv``, ``summary.md``,
``summary.png``: per combination of the swept fields other than ``seed``, how many runs
reached 99% test accuracy and the mean, std, min and max of their epochs and seconds to
it; see :func:`write_summary`). Run it again (after a crash, a kill, or with more grid values) and it skips
every run whose ``summary.json`` says ``completed``, ``stopped_early`` or ``failed``,
continues interrupted runs from their ``checkpoints/last.safetensors`` and starts the rest.

Precedence of the fields of a point: Config defaults (with ``report = false``: no HTML page
per run unless asked) < ``--preset`` (or the sweep file's ``preset``) < ``--config FILE`` <
the sweep file's ``[fixed]`` < train flags < the point's own values (a grid axis, or a
``[[runs]]`` entry). A train flag that names a grid axis of the sweep file replaces that
axis; ``--grid FIELD=...`` replaces the file's axis of the same field.

Backends (``--backend``): ``sequential`` (this process), ``process`` (a spawn process pool,
one run per worker, ``--workers`` default ``os.cpu_count()``), ``batched``
(:func:`grokking.batched.train_batched`, one batch per model shape), ``ray`` (one
``ray.remote`` task per run; needs the ``ray`` extra) and ``slurm`` (one submitit job per
run, as a Slurm job array; needs the ``slurm`` extra). The sweep directory must be on a
file system every worker sees.

Every input is checked before anything is written: an unknown field or a bad value in any
point is one line naming the field, exit status 2 (:class:`~grokking.config.ConfigError`).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, atomic_write_bytes, atomic_write_json, atomic_write_text
from .config import FIELDS, PRESETS, ConfigError, field_type, from_dict, load_file, preset

BACKENDS = ("sequential", "process", "batched", "ray", "slurm")
# Statuses of summary.json that end a run for good: a restarted sweep skips these runs.
# ("failed" is a numerical fault, NaN/Inf: training it again gives the same fault.)
FINISHED_STATUSES = ("completed", "stopped_early", "failed")
# What a point's row says before its run has ended in this invocation.
PENDING = "pending"
# Another process holds the run's lock (a second sweep, or a job of an earlier one still running).
BUSY = "running"
SWEEP_FILE_KEYS = ("preset", "description", "fixed", "grid", "runs")

# results.csv: these columns, then every Config field.
SUMMARY_COLUMNS = (
    "name", "status", "epoch_train_acc_99", "epoch_test_acc_99", "step_train_acc_99", "step_test_acc_99",
    "final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc", "epochs_run", "steps",
    "seconds", "error", "run_dir", "config_key",
)
RESULT_COLUMNS = SUMMARY_COLUMNS + tuple(FIELDS)
_INT_COLUMNS = {"epoch_train_acc_99", "epoch_test_acc_99", "step_train_acc_99", "step_test_acc_99", "epochs_run",
                "steps"}
_FLOAT_COLUMNS = {"final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc", "seconds"}


# --- what a sweep is -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPoint:
    """One run of a sweep. Picklable: it travels to process, Ray and Slurm workers as is."""

    name: str                  # the point's own values, e.g. "op=add_frac=0.3"
    run_dir: str               # absolute path of its run directory, DIR/runs/<name>_<config_key>
    config: dict[str, Any]     # the full, validated Config as a dict
    overrides: dict[str, Any]  # the values this point sets on top of the fixed ones
    config_key: str            # Config.key()


@dataclass
class SweepPlan:
    """A validated sweep: where it goes, what is fixed, the axes, and every point in order."""

    out: Path
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    points: list[RunPoint]
    duplicates: int = 0  # points dropped because an earlier point has the same run directory


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 1
    local: bool = False  # submitit's LocalExecutor: the same code path without a cluster (tests)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_name(overrides: dict[str, Any]) -> str:
    """``{"op": "add", "frac": 0.3}`` -> ``op=add_frac=0.3`` (safe as a file name, bounded length)."""
    text = "_".join(f"{k}={_format_value(v)}" for k, v in overrides.items()) or "run"
    return re.sub(r"[^A-Za-z0-9._+=-]", "-", text)[:150]


def _check_axes(grid: dict[str, Any], where: str) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in FIELDS:
            raise ConfigError(f"{where} {key!r}", "is not a config field (see grokking train --help)")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where} {name}", f"must be a non-empty list of values; got {values!r}"[:200])
        axes[name] = list(values)
    return axes


def plan_sweep(out: str | Path, fixed: dict[str, Any] | None = None, grid: dict[str, Sequence[Any]] | None = None,
               runs: Sequence[dict[str, Any]] | None = None) -> SweepPlan:
    """Validate every point of ``grid`` (a cartesian product, first axis slowest) and of
    ``runs`` (explicit points), each on top of ``fixed``; raise ConfigError before anything
    is written. ``fixed`` holds raw field values (strings from the command line are fine).
    With neither a grid nor runs the sweep is the one run ``fixed``."""
    out = Path(out).absolute()
    fixed = dict(fixed or {})
    axes = _check_axes(dict(grid or {}), "grid")
    point_overrides: list[dict[str, Any]] = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if runs:
        for index, entry in enumerate(runs):
            if not isinstance(entry, dict):
                raise ConfigError(f"runs[{index}]", f"must be a table of config fields; got {entry!r}"[:200])
            point_overrides.append({k.replace("-", "_") if isinstance(k, str) else k: v for k, v in entry.items()})
        if not axes:
            point_overrides = point_overrides[1:]  # the product of no axes is one empty point: not wanted here
    points: list[RunPoint] = []
    seen: set[str] = set()
    duplicates = 0
    for overrides in point_overrides:
        cfg = from_dict({**fixed, **overrides})  # raises the one-line ConfigError naming the field
        shown = {k: getattr(cfg, k) for k in overrides}
        run_dir = out / "runs" / f"{point_name(shown)}_{cfg.key()}"
        if str(run_dir) in seen:
            duplicates += 1
            continue
        seen.add(str(run_dir))
        points.append(RunPoint(point_name(shown), str(run_dir), cfg.to_dict(), shown, cfg.key()))
    # The axes as the points hold them (coerced: "0.3" from the command line is 0.3 here).
    grid_values = {name: list(dict.fromkeys(p.overrides[name] for p in points if name in p.overrides))
                   for name in axes}
    return SweepPlan(out, fixed, grid_values, points, duplicates)


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """Read a sweep file (TOML, or JSON by suffix): optional ``preset`` and ``description``,
    ``[fixed]`` fields, ``[grid]`` lists and ``[[runs]]`` points. Only the shape is checked
    here; the values are checked with every point by :func:`plan_sweep`."""
    try:
        data = load_file(path)
    except ConfigError as err:
        raise ConfigError("sweep-file", str(err).removeprefix("config: ")) from None
    unknown = [k for k in data if k not in SWEEP_FILE_KEYS]
    if unknown:
        raise ConfigError("sweep-file", f"{path}: unknown key {unknown[0]!r} (known: {', '.join(SWEEP_FILE_KEYS)}; "
                          f"config fields go under [fixed])")
    for key, kind in (("fixed", dict), ("grid", dict), ("runs", list), ("preset", str), ("description", str)):
        if key in data and not isinstance(data[key], kind):
            raise ConfigError("sweep-file", f"{path}: {key} must be a {'table' if kind is dict else kind.__name__}")
    if "preset" in data and data["preset"] not in PRESETS:
        raise ConfigError("sweep-file", f"{path}: preset must be one of {', '.join(PRESETS)}; got {data['preset']!r}")
    return data


# --- one run (executed by every backend's workers) -----------------------------------------------------
def run_state(run_dir: str | Path) -> str:
    """``done`` (summary.json with a finished status), ``resumable`` (config.json and
    checkpoints/last.safetensors), ``partial`` (something, but nothing to continue) or ``new``."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    if summary is not None and summary.get("status") in FINISHED_STATUSES:
        return "done"
    if (run_dir / "config.json").exists() and (run_dir / "checkpoints" / "last.safetensors").exists():
        return "resumable"
    if run_dir.exists() and any(run_dir.iterdir()):
        return "partial"
    return "new"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or torn by a kill (summary.json is written atomically, though)
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """An advisory lock held while the block runs; yields False when another process holds it.
    The kernel drops it when the holder dies (even by SIGKILL), so no stale lock survives."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection against two concurrent sweeps
        yield True
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_lock(run_dir: Path) -> Path:
    # Beside the run directory, not in it: starting a run again removes the directory.
    return run_dir.parent / f".{run_dir.name}.lock"


def import_modules(modules: Iterable[str]) -> None:
    """Import the user's modules (their ``register_operation`` calls add tasks) in this process."""
    for module in modules:
        importlib.import_module(module)


def run_point(point: RunPoint, imports: Sequence[str] = (), threads: int | None = None) -> dict[str, Any]:
    """Bring one run to a finished state and say how: ``{"name", "status", "action", "error"}``.

    A finished run is skipped; an interrupted one continues from ``last.safetensors``
    (bit for bit the run it would have been); anything else starts from scratch. Errors are
    returned, not raised, so every backend reports them the same way.
    """
    import torch

    from .train import Trainer, TrainingFailed, TrainingInterrupted

    if threads:
        torch.set_num_threads(threads)
    import_modules(imports)
    run_dir = Path(point.run_dir)
    outcome: dict[str, Any] = {"name": point.name, "status": None, "action": None, "error": None}
    with _exclusive(_run_lock(run_dir)) as mine:
        if not mine:
            return {**outcome, "status": BUSY, "action": "busy",
                    "error": "another process is training this run (its lock is held)"}
        try:
            state = run_state(run_dir)
            if state == "done":
                return {**outcome, "status": _read_json(run_dir / "summary.json")["status"], "action": "skipped"}
            summary = None
            if state == "resumable":
                try:
                    trainer = Trainer.resume(run_dir, progress=False, log=lambda msg: None)
                except (CheckpointError, ValueError) as err:  # a damaged checkpoint: train it again
                    outcome["note"] = f"could not resume ({' '.join(str(err).splitlines())}); trained again"
                else:
                    outcome["action"] = "resumed"
                    summary = trainer.run()
            if summary is None:
                outcome["action"] = outcome["action"] or ("retrained" if state != "new" else "trained")
                summary = Trainer(from_dict(point.config), run_dir, progress=False).run(overwrite=True)
            return {**outcome, "status": summary["status"]}
        except TrainingInterrupted as err:  # SIGINT/SIGTERM (Ctrl-C, a Slurm time limit): last.safetensors is saved
            return {**outcome, "status": "interrupted", "signum": err.signum}
        except TrainingFailed as err:  # a non-finite loss: summary.json says "failed", which is final
            return {**outcome, "status": "failed", "action": outcome["action"] or "trained", "error": str(err)}
        except Exception as err:  # noqa: BLE001 - a crash; shown as failed, retried by the next invocation
            message = " ".join(f"{type(err).__name__}: {err}".splitlines())[:500]
            return {**outcome, "status": "failed", "action": outcome["action"] or "trained", "error": message}


def _crashed(point: RunPoint, err: BaseException) -> dict[str, Any]:
    """The outcome of a run whose worker died (a broken pool, a lost Ray worker, a cancelled job)."""
    message = " ".join(f"{type(err).__name__}: {err}".splitlines())[:500]
    return {"name": point.name, "status": "failed", "action": "lost", "error": f"worker failed: {message}"}


def _worker_init(imports: Sequence[str], threads: int | None) -> None:
    # Idle workers ignore Ctrl-C (the parent stops them); a worker in Trainer.run installs its
    # own handler, which saves last.safetensors and ends the run as "interrupted".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads:
        import torch

        torch.set_num_threads(threads)
    import_modules(imports)


# --- the results table ------------------------------------------------------------------------------------
def first_step_at(records: list[dict[str, Any]], key: str, threshold: float = 0.99) -> int | None:
    """The optimiser step of the first evaluation with ``key >= threshold``."""
    return next((r.get("step") for r in records if r.get(key) is not None and r[key] >= threshold), None)


def results_row(point: RunPoint, out: Path, outcome: dict[str, Any] | None = None) -> dict[str, Any]:
    """The point's row of results.csv, read from its run directory (and the outcome of this
    invocation, which knows about crashes the directory cannot show)."""
    from .train import read_metrics

    run_dir = Path(point.run_dir)
    summary = _read_json(run_dir / "summary.json") or {}
    records = read_metrics(run_dir) if summary else []
    final = summary.get("final") or {}
    status = summary.get("status", PENDING)
    error = summary.get("error")
    if outcome is not None and outcome.get("status") in ("failed", BUSY) and outcome.get("error"):
        status, error = outcome["status"], outcome["error"]
    try:
        run_dir_shown = str(run_dir.relative_to(out))
    except ValueError:
        run_dir_shown = str(run_dir)
    row: dict[str, Any] = {
        "name": point.name, "status": status,
        "epoch_train_acc_99": summary.get("epoch_train_acc_99"), "epoch_test_acc_99": summary.get("epoch_test_acc_99"),
        "step_train_acc_99": first_step_at(records, "train_acc"),
        "step_test_acc_99": first_step_at(records, "test_acc"),
        "final_train_loss": final.get("train_loss"), "final_test_loss": final.get("test_loss"),
        "final_train_acc": final.get("train_acc"), "final_test_acc": final.get("test_acc"),
        "epochs_run": summary.get("epochs_run"), "steps": summary.get("steps"), "seconds": summary.get("seconds"),
        "error": error, "run_dir": run_dir_shown, "config_key": point.config_key,
    }
    row.update(point.config)
    return row


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip text: the table holds the exact figures
    return str(value)


def write_results(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``out/results.csv`` atomically (a reader never sees half a table)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in RESULT_COLUMNS])
    path = out / "results.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


def _parse_cell(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in _INT_COLUMNS:
        return int(text)
    if column in _FLOAT_COLUMNS:
        return float(text)
    if column in FIELDS:
        kind = field_type(column)
        if kind is bool:
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    return text


def read_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``SWEEP_DIR/results.csv`` with typed values (None for empty cells)."""
    path = Path(sweep_dir) / "results.csv"
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            return [{k: _parse_cell(k, v) for k, v in row.items() if k is not None} for row in reader]
    except OSError as err:
        raise ConfigError("results", f"cannot read {path}: {err.strerror}") from None
    except (ValueError, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError("results", f"{path} is damaged ({type(err).__name__}: {err})") from None


# --- executing a plan -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a pool backend waits, SIGTERM to the driver acts as Ctrl-C: stop the workers
    (their runs save last.safetensors), write the table, exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        from .train import TrainingInterrupted

        raise TrainingInterrupted(f"sweep stopped by signal {signum}; run the same command again to continue", signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_backend(plan: SweepPlan, backend: str, slurm: SlurmOptions | None = None,
                  pending: Sequence[RunPoint] | None = None) -> None:
    """Refuse (one line) a backend that is not installed or cannot train these points,
    before anything is written."""
    from .train import resolve_device

    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}; got {backend!r}")
    for device in {p.config["device"] for p in plan.points}:
        resolve_device(device)
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("backend", "ray needs the 'ray' extra: pip install 'grokking[ray]'") from None
    elif backend == "slurm":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("backend", "slurm needs the 'slurm' extra (submitit): "
                                         "pip install 'grokking[slurm]'") from None
        if not (slurm and slurm.local) and shutil.which("sbatch") is None:
            raise ConfigError("backend", "slurm: sbatch not found here; run the sweep on a Slurm login node "
                                         "(or add --slurm-local to run the jobs on this machine)")
    elif backend == "batched":
        batched = _batched_module()
        for group in _batch_groups(pending if pending is not None else plan.points, batched).values():
            batched.check_batch([from_dict(p.config) for p in group])


def _batched_module():
    try:
        return importlib.import_module("grokking.batched")
    except ModuleNotFoundError as err:
        if err.name != "grokking.batched":
            raise
        raise ConfigError("backend", "batched needs grokking.batched (batched training), which this "
                                     "installation does not have") from None


def _batch_groups(points: Sequence[RunPoint], batched) -> dict[tuple, list[RunPoint]]:
    """Points that can share one batched model: the same shape and kind of computation."""
    groups: dict[tuple, list[RunPoint]] = defaultdict(list)
    for point in points:
        cfg = from_dict(point.config)
        key = tuple(getattr(cfg, name) for name in (*batched.SHAPE_FIELDS, *batched.SHARED_FIELDS))
        groups[key].append(point)
    return groups


OnDone = Callable[[RunPoint, dict[str, Any]], None]


def _run_sequential(points: Sequence[RunPoint], on_done: OnDone, imports: Sequence[str]) -> None:
    from .train import TrainingInterrupted

    for point in points:
        outcome = run_point(point, imports)
        on_done(point, outcome)
        if outcome["status"] == "interrupted":  # Ctrl-C reached the run in this process: stop the sweep
            raise TrainingInterrupted(f"sweep interrupted during {point.name}; run the same command again to "
                                      f"continue", outcome["signum"])


def _run_process_pool(points: Sequence[RunPoint], on_done: OnDone, imports: Sequence[str], workers: int) -> None:
    threads = 1 if workers > 1 else None  # one thread per worker: the workers are the parallelism
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(tuple(imports), threads))
    try:
        with _terminate_as_interrupt():
            futures = {pool.submit(run_point, point, imports, threads): point for point in points}
            for future in as_completed(futures):
                point = futures[future]
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - a worker died (BrokenProcessPool, pickling ...)
                    outcome = _crashed(point, err)
                on_done(point, outcome)
    except BaseException:
        # Stop the runs in flight the way Ctrl-C does (they save last.safetensors), drop the rest.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError, ValueError):
                os.kill(process.pid, signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_batched(points: Sequence[RunPoint], on_done: OnDone, imports: Sequence[str],
                 log: Callable[[str], None]) -> None:
    from .train import TrainingInterrupted

    batched = _batched_module()
    # Runs with a checkpoint continue alone (a batch starts its runs at epoch 0); the rest train in batches.
    resumable = [p for p in points if run_state(p.run_dir) == "resumable"]
    _run_sequential(resumable, on_done, imports)
    fresh = [p for p in points if p not in resumable]
    for group in _batch_groups(fresh, batched).values():
        with contextlib.ExitStack() as locks:
            free = []
            for point in group:
                if locks.enter_context(_exclusive(_run_lock(Path(point.run_dir)))):
                    free.append(point)
                else:
                    on_done(point, {"name": point.name, "status": BUSY, "action": "busy",
                                    "error": "another process is training this run (its lock is held)"})
            if not free:
                continue
            log(f"batch of {len(free)} runs: {', '.join(p.name for p in free)}")
            try:
                summaries = batched.train_batched([from_dict(p.config) for p in free], [p.run_dir for p in free],
                                                  progress=False, overwrite=True)
                outcomes = [{"name": p.name, "status": s["status"], "action": "trained (batched)",
                             "error": s.get("error")} for p, s in zip(free, summaries)]
            except TrainingInterrupted:  # Ctrl-C: the batch saved every run's last.safetensors
                raise
            except Exception as err:  # noqa: BLE001 - the batch as a whole failed: each of its runs says so
                outcomes = [_crashed(p, err) for p in free]
        for point, outcome in zip(free, outcomes):
            on_done(point, outcome)


def _run_ray(points: Sequence[RunPoint], on_done: OnDone, imports: Sequence[str], address: str | None,
             workers: int | None, cpus_per_task: int) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        # address None starts a local instance (with --workers CPUs if given); "auto" or
        # "ray://host:10001" joins a running cluster.
        ray.init(address=address, num_cpus=workers if address is None else None, include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False)
    try:
        remote_run = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_point)
        refs = {remote_run.remote(point, tuple(imports), cpus_per_task): point for point in points}
        pending = list(refs)
        try:
            with _terminate_as_interrupt():
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    point = refs[ready[0]]
                    try:
                        outcome = ray.get(ready[0])
                    except Exception as err:  # noqa: BLE001 - a lost worker, a cancelled task
                        outcome = _crashed(point, err)
                    on_done(point, outcome)
        except BaseException:
            for ref in pending:  # KeyboardInterrupt in the tasks: Trainer saves and ends as interrupted
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            with contextlib.suppress(Exception):
                ray.wait(pending, num_returns=len(pending), timeout=30)
            raise
    finally:
        if started_here:
            ray.shutdown()


def _run_slurm(points: Sequence[RunPoint], on_done: OnDone, imports: Sequence[str], out: Path,
               options: SlurmOptions, workers: int | None) -> None:
    import submitit
    from submitit.helpers import as_completed as jobs_as_completed

    executor = submitit.AutoExecutor(folder=out / "slurm_logs", cluster="local" if options.local else "slurm")
    parameters: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task,
                                  "name": f"grokking-sweep-{out.name}"[:64]}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if workers:
        parameters["slurm_array_parallelism"] = workers
    executor.update_parameters(**parameters)
    with executor.batch():  # one Slurm job array
        jobs = [executor.submit(run_point, point, tuple(imports), options.cpus_per_task) for point in points]
    point_of = {id(job): point for job, point in zip(jobs, points)}
    finished: set[int] = set()
    try:
        with _terminate_as_interrupt():
            for job in jobs_as_completed(jobs, poll_frequency=0.5 if options.local else 15):
                point = point_of[id(job)]
                finished.add(id(job))
                try:
                    outcome = job.result()
                except Exception as err:  # noqa: BLE001 - the job failed, timed out or was cancelled
                    outcome = _crashed(point, err)
                on_done(point, outcome)
    except BaseException:
        for job in jobs:  # scancel sends SIGTERM: Trainer saves last.safetensors first
            if id(job) not in finished:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
        raise


def run_sweep(plan: SweepPlan, backend: str = "sequential", *, workers: int | None = None,
              imports: Sequence[str] = (), address: str | None = None, slurm: SlurmOptions | None = None,
              plot: bool = True, heatmap_fields: Sequence[str] | None = None,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train every point of ``plan`` that is not finished, on ``backend``; write
    ``results.csv`` (after every run, and at the end) and the figures; return the rows.

    ``workers``: process pool size (default ``os.cpu_count()``), local Ray instance CPUs, or
    Slurm array parallelism. ``imports``: modules to import in every worker first (for
    user-registered operations). Raises ConfigError before writing anything if the backend
    cannot run the plan; Ctrl-C writes the table (unfinished runs as ``interrupted``) and
    re-raises.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = plan.out
    import_modules(imports)
    pending = [p for p in plan.points if run_state(p.run_dir) != "done"]
    check_backend(plan, backend, slurm, pending)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a directory")
    for point in plan.points:
        if Path(point.run_dir).exists() and not Path(point.run_dir).is_dir():
            raise ConfigError("out", f"{point.run_dir} exists and is not a directory")

    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / ".sweep.lock") as mine:
        if not mine:
            raise ConfigError("out", f"{out} is in use by another grokking sweep (see {out / '.sweep.lock'})")
        _write_manifest(plan, backend)
        rows = {p.run_dir: results_row(p, out) for p in plan.points}  # keyed by run directory: unique
        write_results(out, list(rows.values()))
        done_before = len(plan.points) - len(pending)
        log(f"sweep {out}: {len(plan.points)} runs, {done_before} finished before, {len(pending)} to train "
            f"({backend})" + (f"; {plan.duplicates} duplicate points dropped" if plan.duplicates else ""))
        counter = itertools.count(1)

        def on_done(point: RunPoint, outcome: dict[str, Any]) -> None:
            rows[point.run_dir] = results_row(point, out, outcome)
            write_results(out, list(rows.values()))
            log(_progress_line(next(counter), len(pending), rows[point.run_dir], outcome))

        try:
            if not pending:
                pass
            elif backend == "sequential":
                _run_sequential(pending, on_done, imports)
            elif backend == "process":
                _run_process_pool(pending, on_done, imports, max(1, min(workers or os.cpu_count() or 1, len(pending))))
            elif backend == "batched":
                _run_batched(pending, on_done, imports, log)
            elif backend == "ray":
                _run_ray(pending, on_done, imports, address, workers, slurm.cpus_per_task if slurm else 1)
            else:
                _run_slurm(pending, on_done, imports, out, slurm or SlurmOptions(), workers)
        finally:  # also on Ctrl-C: the table says where every run stands
            rows = {p.run_dir: results_row(p, out, _known_outcome(rows[p.run_dir])) for p in plan.points}
            write_results(out, list(rows.values()))
        if plot:
            try:
                figures = plot_sweep(out, heatmap_fields=heatmap_fields)
                log("figures: " + ", ".join(str(f) for f in figures))
            except Exception as err:  # noqa: BLE001 - the table is written; a figure bug must not lose it
                log(f"sweep figures not written ({type(err).__name__}: {err})")
        try:  # the grouped summary (over seeds) of every sweep: summary.csv, summary.md and summary.png
            written = write_summary(out, figure=plot)
            log("summary: " + ", ".join(str(f) for f in written))
        except Exception as err:  # noqa: BLE001 - as for the figures: the table is already written
            log(f"sweep summary not written ({type(err).__name__}: {err})")
    return list(rows.values())


def _known_outcome(row: dict[str, Any]) -> dict[str, Any] | None:
    """Keep what only this invocation knows (a crash, a busy run) when the table is rebuilt."""
    return {"status": row["status"], "error": row["error"]} if row["status"] in ("failed", BUSY) else None


def _progress_line(index: int, total: int, row: dict[str, Any], outcome: dict[str, Any]) -> str:
    grokked = row["step_test_acc_99"]
    figures = (f"test acc {row['final_test_acc']:.3f}" if row["final_test_acc"] is not None else "no evaluation")
    when = f", 99% test at step {grokked}" if grokked is not None else ""
    seconds = f", {row['seconds']:.1f} s" if row["seconds"] is not None else ""
    error = f": {row['error']}" if row["status"] in ("failed", BUSY) and row["error"] else ""
    action = outcome.get("action")
    return f"[{index}/{total}] {row['name']}: {row['status']} ({action}; {figures}{when}{seconds}){error}"


def _write_manifest(plan: SweepPlan, backend: str) -> None:
    from . import __version__

    atomic_write_json(plan.out / "sweep.json", {
        "grid": plan.grid, "fixed": _coerced_fixed(plan), "backend": backend,
        "runs": [{"name": p.name, "run_dir": str(Path(p.run_dir).relative_to(plan.out)),
                  "overrides": {k: _jsonable(v) for k, v in p.overrides.items()}} for p in plan.points],
        "grokking_version": __version__, "argv": sys.argv,
    })


def _coerced_fixed(plan: SweepPlan) -> dict[str, Any]:
    """The fixed fields as every point holds them (3 rather than the command line's "3")."""
    if not plan.points:
        return {k: _jsonable(v) for k, v in plan.fixed.items()}
    first = plan.points[0]
    return {k.replace("-", "_"): first.config[k.replace("-", "_")] for k in plan.fixed
            if k.replace("-", "_") not in plan.grid and k.replace("-", "_") not in first.overrides}


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


# --- figures ------------------------------------------------------------------------------------------------
def swept_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Config fields that take more than one value across the rows (in Config order)."""
    return [name for name in FIELDS if len({_hashable(r.get(name)) for r in rows}) > 1]


def _hashable(value: Any) -> Any:
    return value if not isinstance(value, list) else tuple(value)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _distinct(values: Iterable[Any]) -> list[Any]:
    return sorted(set(values), key=_sort_key)


def default_heatmap_fields(rows: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """The two swept fields with the most values (seed only if nothing else is swept)."""
    swept = swept_fields(rows)
    ranked = sorted(swept, key=lambda name: (name == "seed", -len({r[name] for r in rows}), swept.index(name)))
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _label(values: dict[str, Any]) -> str:
    if list(values) == ["op"]:
        return str(values["op"])
    return ", ".join(f"{k}={_format_value(v)}" for k, v in values.items())


def plot_fraction(rows: Sequence[dict[str, Any]], path: str | Path, measure: str = "steps") -> Path:
    """Steps (or epochs) to 99% test accuracy against training fraction, one line per
    combination of the other swept fields (typically one per operation): the mean over
    seeds, bars from the fastest to the slowest seed. A point where some seeds never got
    there has a hollow marker at the top edge (``>budget``) with the count that did not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = {"steps": "step_test_acc_99", "epochs": "epoch_test_acc_99"}[measure]
    budget_column = "steps" if measure == "steps" else "epochs_run"
    usable = [r for r in rows if r["status"] in ("completed", "stopped_early")]
    line_fields = [f for f in swept_fields(rows) if f not in ("frac", "seed")]
    lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in usable:
        lines[tuple(row[f] for f in line_fields)].append(row)
    reached = [r[column] for r in usable if r[column] is not None]
    never = [r for r in usable if r[column] is None]
    budget = max([r[budget_column] or 0 for r in never] + [max(reached, default=1)])
    top = budget * 1.25  # the ">budget" row, above every measured point
    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted(lines, key=lambda key: tuple(_sort_key(v) for v in key))
    fracs_all = _distinct(r["frac"] for r in usable)
    spacing = min((b - a for a, b in itertools.pairwise(fracs_all)), default=0.1)
    for index, key in enumerate(keys):
        group = lines[key]
        label = _label(dict(zip(line_fields, key))) if line_fields else str(group[0]["op"])
        offset = (index - (len(keys) - 1) / 2) * spacing * 0.04  # keep coincident markers apart
        color = f"C{index % 10}"
        xs, means, lows, highs, missed = [], [], [], [], []
        for frac in _distinct(r["frac"] for r in group):
            values = [r[column] for r in group if r["frac"] == frac and r[column] is not None]
            n_total = sum(1 for r in group if r["frac"] == frac)
            xs.append(frac + offset)
            if values:
                mean = sum(values) / len(values)
                means.append(mean)
                lows.append(mean - min(values))
                highs.append(max(values) - mean)
            else:
                means.append(math.nan)
                lows.append(0.0)
                highs.append(0.0)
            if len(values) < n_total:
                missed.append((frac + offset, n_total - len(values), n_total))
        ax.errorbar(xs, means, yerr=[lows, highs], color=color, marker="o", capsize=3, label=label)
        if missed:
            ax.scatter([m[0] for m in missed], [top] * len(missed), s=50, facecolors="none", edgecolors=color,
                       linewidths=1.5, zorder=3)
            for x, n_missed, n_total in missed:
                if n_total > 1:
                    ax.annotate(f"{n_missed}/{n_total}", (x, top), xytext=(0, 6), textcoords="offset points",
                                ha="center", fontsize=7, color=color)
    if reached or never:
        ax.set_yscale("log")
        ax.set_ylim(top=top * 1.6)
    if never:  # the band above the budget holds the runs that never got there
        ax.axhspan(budget, top * 1.6, color="0.93", zorder=0)
        ax.axhline(budget, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f">budget ({budget:,} {measure})", (0.99, budget), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="grey")
        ax.scatter([], [], s=50, facecolors="none", edgecolors="grey", label="never reached 99% (>budget)")
    ax.set_xlabel("training fraction")
    ax.set_ylabel(f"{'optimisation steps' if measure == 'steps' else 'epochs'} to 99% test accuracy")
    seeds = _distinct(r["seed"] for r in usable)
    failed = len(rows) - len(usable)
    note = f"mean over {len(seeds)} seeds, bars: min to max" if len(seeds) > 1 else "one seed"
    if failed:
        note += f"; {failed} run{'s' if failed != 1 else ''} failed or unfinished, not shown"
    ax.set_title(note, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save_figure(fig, Path(path))


def plot_heatmap(rows: Sequence[dict[str, Any]], fields: tuple[str, str], path: str | Path,
                 measure: str = "steps") -> Path:
    """Two panels over two swept fields (x, y): final test accuracy and steps (or epochs) to
    99% test accuracy, each cell the mean over the runs it holds; a cell where no run got to
    99% says ``>budget`` (``k/n`` when only some did)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    x_field, y_field = fields
    for name in fields:
        if name not in FIELDS:
            raise ConfigError("heatmap", f"{name!r} is not a config field")
    column = {"steps": "step_test_acc_99", "epochs": "epoch_test_acc_99"}[measure]
    usable = [r for r in rows if r["status"] in ("completed", "stopped_early")]
    xs, ys = _distinct(r[x_field] for r in rows), _distinct(r[y_field] for r in rows)
    accuracy = np.full((len(ys), len(xs)), np.nan)
    grok = np.full((len(ys), len(xs)), np.nan)
    notes: dict[tuple[int, int], str] = {}
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [r for r in usable if r[x_field] == x and r[y_field] == y]
            if not cell:
                continue
            accs = [r["final_test_acc"] for r in cell if r["final_test_acc"] is not None]
            if accs:
                accuracy[i, j] = sum(accs) / len(accs)
            values = [r[column] for r in cell if r[column] is not None]
            if values:
                grok[i, j] = sum(values) / len(values)
            if len(values) < len(cell):
                notes[i, j] = ">budget" if not values else f"{len(cell) - len(values)}/{len(cell)} >budget"
    fig, (ax_acc, ax_grok) = plt.subplots(1, 2, figsize=(max(9.0, 3 + 1.4 * len(xs)), max(3.0, 1.5 + 0.45 * len(ys))),
                                          layout="constrained")
    image = ax_acc.imshow(accuracy, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax_acc, label="final test accuracy")
    finite = grok[np.isfinite(grok)]
    norm = None
    if finite.size:
        low = max(float(finite.min()), 1.0)
        norm = LogNorm(vmin=low, vmax=max(float(finite.max()), low * 1.01))
    masked = np.ma.masked_invalid(grok)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#dddddd")  # grey: no run of the cell reached 99%
    image = ax_grok.imshow(masked, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    if norm is not None:  # no colour scale when no cell reached 99%
        fig.colorbar(image, ax=ax_grok, label=f"{measure} to 99% test accuracy")
    acc_image = ax_acc.images[0]
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(accuracy[i, j]):
                ax_acc.text(j, i, f"{accuracy[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color=_text_color(acc_image.cmap(acc_image.norm(accuracy[i, j]))))
            text = f"{grok[i, j]:.0f}" if np.isfinite(grok[i, j]) else ""
            if (i, j) in notes:
                text = f"{text}\n{notes[i, j]}" if text else notes[i, j]
            if text:
                background = image.cmap(image.norm(grok[i, j])) if np.isfinite(grok[i, j]) else (0.87, 0.87, 0.87, 1)
                ax_grok.text(j, i, text, ha="center", va="center", fontsize=7, color=_text_color(background))
    for ax, title in ((ax_acc, "final test accuracy"), (ax_grok, f"{measure} to 99% test accuracy")):
        ax.set_xticks(range(len(xs)), [_format_value(x) for x in xs], rotation=45 if len(xs) > 6 else 0)
        ax.set_yticks(range(len(ys)), [_format_value(y) for y in ys])
        ax.set_xlabel(x_field)
        ax.set_ylabel(y_field)
        ax.set_title(title, fontsize=9)
    others = [f for f in swept_fields(rows) if f not in fields]
    if others:
        fig.suptitle(f"mean over {', '.join(others)}", fontsize=9)
    return _save_figure(fig, Path(path))


def _text_color(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def plot_sweep(sweep_dir: str | Path, heatmap_fields: Sequence[str] | None = None,
               measure: str = "steps") -> list[Path]:
    """Draw the figures of a sweep directory from its results.csv: ``fraction.png`` (steps to
    99% test accuracy against training fraction) and ``heatmap_<x>_<y>.png`` (over the two
    swept fields with the most values, or ``heatmap_fields``). Returns the paths written."""
    sweep_dir = Path(sweep_dir)
    rows = read_results(sweep_dir)
    if not rows:
        raise ConfigError("results", f"{sweep_dir / 'results.csv'} has no runs")
    written = [plot_fraction(rows, sweep_dir / "fraction.png", measure)]
    fields = tuple(heatmap_fields) if heatmap_fields else default_heatmap_fields(rows)
    if fields:
        if len(fields) != 2:
            raise ConfigError("heatmap", f"takes two fields; got {', '.join(fields)}")
        written.append(plot_heatmap(rows, (fields[0], fields[1]), sweep_dir / f"heatmap_{fields[0]}_{fields[1]}.png",
                                    measure))
    return written


# --- grouped summary ----------------------------------------------------------------------------------------
SUMMARY_STATS = ("epochs", "seconds", "train_epochs")
SUMMARY_COUNT_COLUMNS = ("n_runs", "n_reached", "n_unfinished")


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """mean, sample standard deviation (None below two values), min and max; all None when empty."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def seconds_to_test_acc(run_dir: Path, threshold: float = 0.99) -> float | None:
    """Training seconds at the first evaluation with test accuracy >= ``threshold``."""
    from .train import read_metrics

    return next((r.get("seconds") for r in read_metrics(run_dir)
                 if r.get("test_acc") is not None and r["test_acc"] >= threshold), None)


def summarize_groups(rows: Sequence[dict[str, Any]], sweep_dir: str | Path | None = None,
                     exclude: Sequence[str] = ("seed",)) -> tuple[list[str], list[dict[str, Any]]]:
    """Group the rows of results.csv by every swept field except ``exclude`` (the seed) and
    describe each group: ``n_runs``, ``n_reached`` (runs that reached 99% test accuracy),
    ``n_unfinished`` (failed, pending or running), and mean/std/min/max of the epochs to 99%
    test accuracy, of the training seconds to it and of the epochs to 99% train accuracy
    (``train_epochs``, whose gap to ``epochs`` is the grokking delay), over the runs that
    reached it. The seconds are read from each run's metrics.jsonl (the evaluation that first
    reached 99%) when ``sweep_dir`` is given, else taken from the row (the whole run). Groups
    keep the order of their first row. Returns (group fields, one dict per group)."""
    fields = [f for f in swept_fields(rows) if f not in exclude]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(_hashable(row.get(f)) for f in fields), []).append(row)
    out = []
    for key, group in groups.items():
        reached = [r for r in group if r["epoch_test_acc_99"] is not None]
        seconds = []
        for r in reached:
            value = seconds_to_test_acc(Path(sweep_dir) / r["run_dir"]) if sweep_dir is not None else None
            value = value if value is not None else r.get("seconds")
            if value is not None:
                seconds.append(float(value))
        budgets = [r["epochs_run"] for r in group if r["epoch_test_acc_99"] is None and r.get("epochs_run")]
        entry: dict[str, Any] = dict(zip(fields, key))
        entry.update({
            "n_runs": len(group), "n_reached": len(reached),
            "n_unfinished": sum(1 for r in group if r["status"] not in ("completed", "stopped_early")),
        })
        train_epochs = [float(r["epoch_train_acc_99"]) for r in reached if r.get("epoch_train_acc_99") is not None]
        for name, values in (("epochs", [float(r["epoch_test_acc_99"]) for r in reached]), ("seconds", seconds),
                             ("train_epochs", train_epochs)):
            entry.update({f"{name}_{stat}": value for stat, value in _stats(values).items()})
        entry["budget_epochs"] = max(budgets) if budgets else None
        entry["seeds"] = " ".join(str(r.get("seed")) for r in group)
        entry["epochs_per_seed"] = " ".join("-" if r["epoch_test_acc_99"] is None else str(r["epoch_test_acc_99"])
                                            for r in group)
        out.append(entry)
    return fields, out


def _summary_columns(fields: Sequence[str]) -> list[str]:
    return [*fields, *SUMMARY_COUNT_COLUMNS, *(f"{name}_{stat}" for name in SUMMARY_STATS
                                               for stat in ("mean", "std", "min", "max")),
            "budget_epochs", "seeds", "epochs_per_seed"]


def _group_label(fields: Sequence[str], group: dict[str, Any]) -> str:
    return ", ".join(f"{f}={_format_value(group[f])}" for f in fields) or "all runs"


def _mean_std(group: dict[str, Any], name: str, digits: int) -> str:
    mean, std = group[f"{name}_mean"], group[f"{name}_std"]
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def summary_markdown(fields: Sequence[str], groups: Sequence[dict[str, Any]]) -> str:
    """The grouped summary as a markdown table (one row per group)."""
    head = [*fields, "reached 99% / runs", "epochs to 99% (mean ± std)", "min–max", "seconds to 99% (mean ± std)",
            "min–max s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        epochs_range = "–" if g["epochs_min"] is None else f"{g['epochs_min']:.0f}–{g['epochs_max']:.0f}"
        seconds_range = "–" if g["seconds_min"] is None else f"{g['seconds_min']:.1f}–{g['seconds_max']:.1f}"
        reached = f"{g['n_reached']}/{g['n_runs']}"
        if g["n_unfinished"]:
            reached += f" ({g['n_unfinished']} unfinished)"
        cells = [*(_format_value(g[f]) for f in fields), reached, _mean_std(g, "epochs", 0), epochs_range,
                 _mean_std(g, "seconds", 1), seconds_range]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short_label(fields: Sequence[str], group: dict[str, Any]) -> str:
    """The group's fields that differ from the Config defaults (all of them when none does)."""
    differing = [f for f in fields if _hashable(group[f]) != _hashable(FIELDS[f].default)]
    return _group_label(differing or fields, group)


def plot_summary(rows: Sequence[dict[str, Any]], fields: Sequence[str], groups: Sequence[dict[str, Any]],
                 path: str | Path) -> Path:
    """Epochs to 99% test accuracy per group (labelled by its fields that differ from the
    Config defaults): one dot per run, coloured by seed, a bar at the mean; runs that never
    got there are hollow markers at their budget (the dotted line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    keyed: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        keyed[tuple(_hashable(row.get(f)) for f in fields)].append(row)
    seeds = _distinct(r.get("seed") for r in rows)
    reached = [r["epoch_test_acc_99"] for r in rows if r["epoch_test_acc_99"] is not None]
    budget = max([r["epochs_run"] or 0 for r in rows if r["epoch_test_acc_99"] is None] + reached + [1])
    fig, ax = plt.subplots(figsize=(9, max(2.5, 1.2 + 0.3 * len(groups))))
    for index, group in enumerate(groups):
        y = len(groups) - 1 - index  # first group on top
        for row in keyed[tuple(_hashable(group[f]) for f in fields)]:
            color = f"C{seeds.index(row.get('seed')) % 10}"
            jitter = (seeds.index(row.get("seed")) - (len(seeds) - 1) / 2) * min(0.12, 0.6 / len(seeds))
            if row["epoch_test_acc_99"] is not None:
                ax.scatter(row["epoch_test_acc_99"], y + jitter, s=22, color=color, zorder=3)
            elif row["status"] in ("completed", "stopped_early"):
                ax.scatter(row["epochs_run"] or budget, y + jitter, s=36, facecolors="none", edgecolors=color,
                           linewidths=1.3, zorder=3)
        if group["epochs_mean"] is not None:
            ax.plot([group["epochs_mean"]] * 2, [y - 0.38, y + 0.38], color="black", linewidth=1.5, zorder=4)
    ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(groups)), [f"{_short_label(fields, g)}  ({g['n_reached']}/{g['n_runs']})"
                                       for g in reversed(groups)], fontsize=7)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_xscale("log")
    low = min(reached + [budget])
    ticks = [m * 10**e for e in range(0, 10) for m in (1, 2, 5) if low / 2 <= m * 10**e <= budget * 2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epochs to 99% test accuracy (log scale). Labels: the fields that differ from the defaults, "
                  "(runs that reached 99% / runs)", fontsize=8)
    ax.grid(alpha=0.3, which="major", axis="x")
    for seed in seeds:
        ax.scatter([], [], s=22, color=f"C{seeds.index(seed) % 10}", label=f"seed {_format_value(seed)}")
    ax.scatter([], [], s=36, facecolors="none", edgecolors="grey", label=f"not reached within {budget:,} epochs")
    ax.plot([], [], color="black", label="mean of the runs that reached 99%")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3 + len(seeds), 6), frameon=False)
    return _save_figure(fig, Path(path))


TASK_FIELDS = ("op", "p", "frac")


def compare_across_tasks(fields: Sequence[str], groups: Sequence[dict[str, Any]]
                         ) -> tuple[list[str], list[dict[str, Any]], list[tuple], dict[tuple, dict[tuple, Any]]] | None:
    """The summary's groups as recipes x tasks, when both vary: a task is a value of the
    swept fields among ``op``, ``p`` and ``frac``, a recipe a value of the other swept fields.
    Only recipes run on every task are kept (knob searches on one task stay in summary.md).
    Returns (recipe fields, tasks, recipes, cell[recipe][task] = group), or None."""
    task_fields = [f for f in fields if f in TASK_FIELDS]
    recipe_fields = [f for f in fields if f not in TASK_FIELDS]
    if not task_fields or not recipe_fields:
        return None
    cells: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    tasks: list[tuple] = []
    for group in groups:
        task = tuple(group[f] for f in task_fields)
        if task not in tasks:
            tasks.append(task)
        cells.setdefault(tuple(group[f] for f in recipe_fields), {})[task] = group
    recipes = [r for r, by_task in cells.items() if len(by_task) == len(tasks)]
    recipes.sort(key=lambda r: _recipe_label(recipe_fields, r) != "defaults")  # the baseline on top (stable sort)
    if not recipes or len(tasks) < 2:
        return None
    return recipe_fields, [dict(zip(task_fields, t)) for t in tasks], recipes, cells


def _task_label(task: dict[str, Any]) -> str:
    return " ".join(f"{k}={_format_value(v)}" if k != "op" else str(v) for k, v in task.items())


def _recipe_label(recipe_fields: Sequence[str], recipe: tuple) -> str:
    differing = [(f, v) for f, v in zip(recipe_fields, recipe) if _hashable(v) != _hashable(FIELDS[f].default)]
    return ", ".join(f"{f}={_format_value(v)}" for f, v in differing) or "defaults"


def comparison_markdown(recipe_fields: Sequence[str], tasks: Sequence[dict[str, Any]], recipes: Sequence[tuple],
                        cells: dict[tuple, dict[tuple, dict[str, Any]]]) -> str:
    """Three recipes x tasks tables: epochs to 99% test accuracy (mean ± std over the runs that
    reached it, and how many did), epochs to 99% train accuracy of those runs, and training
    seconds to 99% test accuracy."""
    head = "| recipe | " + " | ".join(_task_label(t) for t in tasks) + " |\n|" + "---|" * (len(tasks) + 1) + "\n"
    out = []
    for title, name, digits in (("Epochs to 99% test accuracy, mean ± std (runs that reached it / runs)", "epochs", 0),
                                ("Epochs to 99% train accuracy in those runs (the gap to the first table is the "
                                 "grokking delay)", "train_epochs", 0),
                                ("Training seconds to 99% test accuracy", "seconds", 1)):
        lines = [f"{title}:\n", head]
        for recipe in recipes:
            row = []
            for task in tasks:
                g = cells[recipe][tuple(task.values())]
                cell = _mean_std(g, name, digits)
                if name == "epochs":
                    cell += f" ({g['n_reached']}/{g['n_runs']})"
                row.append(cell)
            lines.append(f"| {_recipe_label(recipe_fields, recipe)} | " + " | ".join(row) + " |\n")
        out.append("".join(lines))
    return "\n".join(out)


def plot_comparison(rows: Sequence[dict[str, Any]], recipe_fields: Sequence[str], tasks: Sequence[dict[str, Any]],
                    recipes: Sequence[tuple], path: str | Path) -> Path:
    """One panel per task: epochs to 99% test accuracy for each recipe, one dot per run
    (coloured by seed), a bar at the mean; hollow markers at the budget for runs that never
    got there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    seeds = _distinct(r.get("seed") for r in rows)
    reached = [r["epoch_test_acc_99"] for r in rows if r["epoch_test_acc_99"] is not None]
    budget = max([r["epochs_run"] or 0 for r in rows if r["epoch_test_acc_99"] is None] + reached + [1])
    low = min(reached + [budget])
    ticks = [m * 10**e for e in range(0, 10) for m in (1, 2, 5) if low / 2 <= m * 10**e <= budget * 2]
    fig, axes = plt.subplots(1, len(tasks), sharex=True, sharey=True, squeeze=False,
                             figsize=(2.2 + 2.6 * len(tasks), max(2.5, 1.0 + 0.32 * len(recipes))))
    for ax, task in zip(axes[0], tasks):
        for index, recipe in enumerate(recipes):
            y = len(recipes) - 1 - index
            mine = [r for r in rows if all(_hashable(r.get(f)) == _hashable(v) for f, v in task.items())
                    and all(_hashable(r.get(f)) == _hashable(v) for f, v in zip(recipe_fields, recipe))]
            hits = [r["epoch_test_acc_99"] for r in mine if r["epoch_test_acc_99"] is not None]
            for r in mine:
                k = seeds.index(r.get("seed"))
                jitter = (k - (len(seeds) - 1) / 2) * min(0.12, 0.6 / len(seeds))
                if r["epoch_test_acc_99"] is not None:
                    ax.scatter(r["epoch_test_acc_99"], y + jitter, s=20, color=f"C{k % 10}", zorder=3)
                elif r["status"] in ("completed", "stopped_early"):
                    ax.scatter(r["epochs_run"] or budget, y + jitter, s=32, facecolors="none",
                               edgecolors=f"C{k % 10}", linewidths=1.2, zorder=3)
            if hits:
                ax.plot([sum(hits) / len(hits)] * 2, [y - 0.38, y + 0.38], color="black", linewidth=1.4, zorder=4)
        ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7, labelrotation=45)
        ax.grid(alpha=0.3, which="major", axis="x")
        ax.set_title(_task_label(task), fontsize=9)
    axes[0][0].set_yticks(range(len(recipes)), [_recipe_label(recipe_fields, r) for r in reversed(recipes)], fontsize=7)
    axes[0][0].set_ylim(-0.7, len(recipes) - 0.3)
    fig.supxlabel("epochs to 99% test accuracy (log scale)", fontsize=8)
    for seed in seeds:
        axes[0][0].scatter([], [], s=20, color=f"C{seeds.index(seed) % 10}", label=f"seed {_format_value(seed)}")
    axes[0][0].scatter([], [], s=32, facecolors="none", edgecolors="grey", label=f"not reached in {budget:,} epochs")
    axes[0][0].plot([], [], color="black", label="mean of the runs that reached 99%")
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(3 + len(seeds), 6), frameon=False)
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def write_summary(sweep_dir: str | Path, figure: bool = True) -> list[Path]:
    """Write ``summary.csv``, ``summary.md`` and (with ``figure``) ``summary.png`` into a sweep
    directory from its results.csv: the runs grouped by every swept field except the seed
    (see :func:`summarize_groups`). When tasks and recipes both vary, also ``comparison.md``
    and ``comparison.png``: recipes x tasks (see :func:`compare_across_tasks`). Returns the
    paths written."""
    sweep_dir = Path(sweep_dir)
    rows = read_results(sweep_dir)
    if not rows:
        raise ConfigError("results", f"{sweep_dir / 'results.csv'} has no runs")
    fields, groups = summarize_groups(rows, sweep_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _summary_columns(fields)
    writer.writerow(columns)
    for group in groups:
        writer.writerow([_csv_cell(group.get(c)) for c in columns])
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(md_path, summary_markdown(fields, groups))
    written = [csv_path, md_path]
    if figure:
        written.append(plot_summary(rows, fields, groups, sweep_dir / "summary.png"))
    comparison = compare_across_tasks(fields, groups)
    if comparison is not None:
        written.append(sweep_dir / "comparison.md")
        atomic_write_text(written[-1], comparison_markdown(*comparison))
        if figure:
            recipe_fields, tasks, recipes, _ = comparison
            written.append(plot_comparison(rows, recipe_fields, tasks, recipes, sweep_dir / "comparison.png"))
    return written


# --- command line -----------------------------------------------------------------------------------------
def parse_grid_flags(entries: Sequence[str]) -> dict[str, list[str]]:
    """``["frac=0.3,0.5", "seed=0,1"]`` -> ``{"frac": ["0.3", "0.5"], "seed": ["0", "1"]}``."""
    from .cli import UsageError

    axes: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UsageError(f"grokking sweep: --grid takes FIELD=V1,V2,...; got {entry!r}")
        if name not in FIELDS:
            raise UsageError(f"grokking sweep: --grid {name!r} is not a config field (see grokking train --help)")
        if name in axes:
            raise UsageError(f"grokking sweep: --grid {name} given twice")
        items = [v.strip() for v in values.split(",")]
        if any(not v for v in items):
            raise UsageError(f"grokking sweep: --grid {name} has an empty value in {values!r}")
        axes[name] = items
    return axes


def plan_from_args(args: argparse.Namespace) -> SweepPlan:
    """Merge defaults, preset, --config, the sweep file and the flags (see the module doc)."""
    from .cli import UsageError, flag

    file = load_sweep_file(args.sweep_file) if args.sweep_file else {}
    flags = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    cli_grid = parse_grid_flags(args.grid or [])
    both = [name for name in cli_grid if name in flags]
    if both:
        raise UsageError(f"grokking sweep: {both[0]} is both fixed ({flag(both[0])}) and swept (--grid)")
    fixed: dict[str, Any] = {"report": False}  # a sweep writes no report.html per run unless asked
    chosen_preset = args.preset or file.get("preset")
    if chosen_preset:
        fixed.update(preset(chosen_preset))
    if args.config:
        fixed.update(load_file(args.config))
    fixed.update(file.get("fixed", {}))
    fixed.update(flags)
    file_grid = _check_axes(file.get("grid", {}), "grid")
    grid = {name: values for name, values in file_grid.items() if name not in flags}  # a flag fixes the axis
    grid.update(cli_grid)
    runs = [{k: v for k, v in entry.items() if k.replace("-", "_") not in flags} if isinstance(entry, dict) else entry
            for entry in file.get("runs", [])]
    if not args.out or not str(args.out).strip():
        raise UsageError("grokking sweep: --out must be a directory path")
    return plan_sweep(args.out, fixed, grid, runs)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .cli import UsageError

    imports = tuple(args.imports or ())
    try:
        import_modules(imports)
    except ImportError as err:
        raise UsageError(f"grokking sweep: --import {err.name or ''}: {err}") from None
    plan = plan_from_args(args)
    for option, value in (("--workers", args.workers), ("--time", args.time), ("--cpus-per-task", args.cpus_per_task)):
        if value is not None and value <= 0:
            raise UsageError(f"grokking sweep: {option} must be positive; got {value}")
    slurm = SlurmOptions(partition=args.partition, time_min=args.time or 60, cpus_per_task=args.cpus_per_task,
                         local=args.slurm_local)
    if args.heatmap:
        fields = [f.strip().replace("-", "_") for f in args.heatmap.split(",")]
        if len(fields) != 2 or any(f not in FIELDS for f in fields):
            raise UsageError(f"grokking sweep: --heatmap takes two config fields X,Y; got {args.heatmap!r}")
    else:
        fields = None
    if args.dry_run:
        check_backend(plan, args.backend, slurm, [p for p in plan.points if run_state(p.run_dir) != "done"])
        for point in plan.points:
            print(f"{run_state(point.run_dir):9s} {point.run_dir}")
        return 0
    log = (lambda msg: None) if args.quiet else None
    rows = run_sweep(plan, args.backend, workers=args.workers, imports=imports, address=args.address, slurm=slurm,
                     heatmap_fields=fields, log=log)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    if not args.no_sweep_report:
        from .report import write_report

        write_report(plan.out)
    print(json.dumps({"out": str(plan.out), "results": str(plan.out / "results.csv"), "runs": len(rows),
                      "statuses": dict(counts)}, indent=2))
    return 1 if counts.get("failed") else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """``grokking sweep``: a grid of runs, one run directory each, a results table and figures."""
    from .cli import add_config_flags

    p = subparsers.add_parser(
        "sweep", help="train a grid of runs (idempotent; sequential, process pool, batched, Ray or Slurm)",
        description="Train every point of the grid into DIR/runs/<name>_<config key>, then write DIR/results.csv "
                    "and the sweep figures. Running it again skips finished runs and continues interrupted ones. "
                    "Train flags fix a field for every point. See docs/sweeps.md.")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep directory")
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a config field and its values; repeat for a cartesian product")
    p.add_argument("--sweep-file", metavar="FILE", help="TOML file with [fixed] fields, [grid] lists, [[runs]] points")
    p.add_argument("--config", help="TOML or JSON file of config fields (fixed for every point)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see docs/sweeps.md)")
    p.add_argument("--backend", choices=BACKENDS, default="sequential",
                   help="where the runs train (default: sequential)")
    p.add_argument("--workers", type=int, default=None,
                   help="process: pool size (default: CPU count); ray: CPUs of a local instance; "
                        "slurm: array parallelism")
    p.add_argument("--address", default=None,
                   help="ray: cluster address ('auto', 'ray://HOST:10001'); default: start a local instance")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--time", type=int, default=None, metavar="MIN",
                   help="slurm: time limit per run in minutes (default 60)")
    p.add_argument("--cpus-per-task", type=int, default=1, help="slurm and ray: CPUs per run (and torch threads)")
    p.add_argument("--slurm-local", action="store_true",
                   help="slurm: run the jobs on this machine (submitit's local executor)")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first, here and in every worker (its register_operation calls add tasks)")
    p.add_argument("--heatmap", metavar="X,Y", help="the two fields of the heat map (default: the two swept most)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything, list the runs and their state, train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--no-sweep-report", action="store_true", help="do not write DIR/report.html at the end")
    add_config_flags(p)
    p.set_defaults(func=cmd_sweep)
