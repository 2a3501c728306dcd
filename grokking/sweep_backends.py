"""Where the runs of a sweep train: one run (:func:`run_point`), the per-run locks, and the
backends, one table of functions with one signature (:data:`BACKENDS`).

A backend is called as ``backend.run(points, on_done, options)``: it trains every point (each
through :func:`run_point`, or in batches for ``batched``) and calls ``on_done(point, outcome)``
in the driver as each one ends, whatever the order. Before any of them runs, ``backend.check``
refuses (one line) what it cannot do: a missing extra, points it cannot batch.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import torch

from . import batched
from .checkpoint import CheckpointError
from .config import ConfigError, from_dict
from .figures import hashable
from .rundir import SUMMARY, read_json
from .sweep_plan import BUSY, RunPoint, SweepPlan, import_modules, run_state
from .train import Trainer, TrainingFailed, TrainingInterrupted, resolve_device

OnDone = Callable[[RunPoint, dict[str, Any]], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    local: bool = False  # submitit's LocalExecutor: the same code path without a cluster (tests)


@dataclass(frozen=True)
class BackendOptions:
    """What every backend may need; each reads the fields that concern it."""

    out: Path                                 # the sweep directory (Slurm logs go under it)
    workers: int | None = None                # process pool size, local Ray CPUs, Slurm array parallelism
    imports: tuple[str, ...] = ()             # modules every worker imports first (user operations)
    threads: int | None = None                # CPUs (torch threads) per run; None: the backend's default
    address: str | None = None                # Ray cluster to join; None starts a local instance
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    strategy: str = "auto"                    # batched: grokking.batched.train_batched's strategy
    log: Callable[[str], None] = _stderr


# --- locks ------------------------------------------------------------------------------------------------
def _pid_file(lock_path: Path) -> Path:
    # Beside the lock, not in it: a contender opening the lock file must not touch what it says.
    return lock_path.with_name(lock_path.name + ".pid")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[bool]:
    """A lock held while the block runs; yields False when another process holds it.

    flock underneath: the kernel drops it when the holder dies (even by SIGKILL), so no stale
    lock survives. The holder's PID is in ``<lock>.pid`` while it holds the lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        yield False
        return
    pid_file = _pid_file(lock_path)
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        yield True
    finally:
        # Removed before the release, so it never deletes the file of the next holder.
        pid_file.unlink(missing_ok=True)
        lock.release()


def lock_holder(lock_path: Path) -> int | None:
    """The PID of the process holding ``lock_path`` (None when unknown)."""
    try:
        return int(_pid_file(lock_path).read_text().strip())
    except (OSError, ValueError):
        return None


def run_lock(run_dir: Path) -> Path:
    # Beside the run directory, not in it: starting a run again removes the directory.
    return run_dir.parent / f".{run_dir.name}.lock"


def _busy(point: RunPoint) -> dict[str, Any]:
    return {"name": point.name, "status": BUSY, "action": "busy",
            "error": "another process is training this run (its lock is held)"}


# --- one run (executed by every backend's workers) -----------------------------------------------------
def run_point(point: RunPoint, imports: Sequence[str] = (), threads: int | None = None) -> dict[str, Any]:
    """Bring one run to a finished state and say how: ``{"name", "status", "action", "error"}``.

    A finished run is skipped; an interrupted one continues from ``last.safetensors``
    (bit for bit the run it would have been); anything else starts from scratch. Errors are
    returned, not raised, so every backend reports them the same way.
    """
    if threads:
        torch.set_num_threads(threads)
    import_modules(imports)
    run_dir = Path(point.run_dir)
    outcome: dict[str, Any] = {"name": point.name, "status": None, "action": None, "error": None}
    with exclusive(run_lock(run_dir)) as mine:
        if not mine:
            return _busy(point)
        try:
            state = run_state(run_dir)
            if state == "done":
                return {**outcome, "status": read_json(run_dir / SUMMARY)["status"], "action": "skipped"}
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
        torch.set_num_threads(threads)
    import_modules(imports)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a pool backend waits, SIGTERM to the driver acts as Ctrl-C: stop the workers
    (their runs save last.safetensors), write the table, exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TrainingInterrupted(f"sweep stopped by signal {signum}; run the same command again to continue", signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the backends ---------------------------------------------------------------------------------------
def _run_sequential(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    for point in points:
        outcome = run_point(point, options.imports, options.threads)
        on_done(point, outcome)
        if outcome["status"] == "interrupted":  # Ctrl-C reached the run in this process: stop the sweep
            raise TrainingInterrupted(f"sweep interrupted during {point.name}; run the same command again to "
                                      f"continue", outcome["signum"])


def _run_process_pool(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(points)))
    # One thread per worker unless asked otherwise: the workers are the parallelism.
    threads = options.threads or (1 if workers > 1 else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(options.imports, threads))
    try:
        with _terminate_as_interrupt():
            futures = {pool.submit(run_point, point, options.imports, threads): point for point in points}
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


# Points that can share one batched model must agree on these fields.
BATCH_FIELDS = (*batched.SHAPE_FIELDS, *batched.SHARED_FIELDS)


def _batch_groups(points: Sequence[RunPoint]) -> list[list[RunPoint]]:
    """Points that can share one batched model: the same shape and kind of computation."""
    groups: dict[tuple, list[RunPoint]] = defaultdict(list)
    for point in points:
        cfg = from_dict(point.config)  # some of the fields are derived (head_dim): not in the dict
        groups[tuple(hashable(getattr(cfg, name)) for name in BATCH_FIELDS)].append(point)
    return list(groups.values())


def _check_batched(points: Sequence[RunPoint], options: BackendOptions) -> None:
    for group in _batch_groups(points):
        batched.check_batch([from_dict(p.config) for p in group])


def _run_batched(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    # Runs with a checkpoint continue alone (a batch starts its runs at epoch 0); the rest train in batches.
    resumable = [p for p in points if run_state(p.run_dir) == "resumable"]
    _run_sequential(resumable, on_done, options)
    fresh = [p for p in points if p not in resumable]
    for group in _batch_groups(fresh):
        with contextlib.ExitStack() as locks:
            free = []
            for point in group:
                if locks.enter_context(exclusive(run_lock(Path(point.run_dir)))):
                    free.append(point)
                else:
                    on_done(point, _busy(point))
            if not free:
                continue
            options.log(f"batch of {len(free)} runs: {', '.join(p.name for p in free)}")
            if options.threads:
                torch.set_num_threads(options.threads)
            try:
                summaries = batched.train_batched([from_dict(p.config) for p in free], [p.run_dir for p in free],
                                                  progress=False, strategy=options.strategy, overwrite=True)
                outcomes = [{"name": p.name, "status": s["status"], "action": "trained (batched)",
                             "error": s.get("error")} for p, s in zip(free, summaries)]
            except TrainingInterrupted:  # Ctrl-C: the batch saved every run's last.safetensors
                raise
            except Exception as err:  # noqa: BLE001 - the batch as a whole failed: each of its runs says so
                outcomes = [_crashed(p, err) for p in free]
        for point, outcome in zip(free, outcomes):
            on_done(point, outcome)


def _check_ray(points: Sequence[RunPoint], options: BackendOptions) -> None:
    try:
        import ray  # noqa: F401 - an optional extra
    except ImportError:
        raise ConfigError("backend", "ray needs the 'ray' extra: pip install 'grokking-lab[ray]'") from None


def _run_ray(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    import ray

    threads = options.threads or 1
    started_here = not ray.is_initialized()
    if started_here:
        # address None starts a local instance (with --workers CPUs if given); "auto" or
        # "ray://host:10001" joins a running cluster.
        ray.init(address=options.address, num_cpus=options.workers if options.address is None else None,
                 include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        remote_run = ray.remote(num_cpus=threads, max_retries=0)(run_point)
        refs = {remote_run.remote(point, options.imports, threads): point for point in points}
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


def _check_slurm(points: Sequence[RunPoint], options: BackendOptions) -> None:
    try:
        import submitit  # noqa: F401 - an optional extra
    except ImportError:
        raise ConfigError("backend", "slurm needs the 'slurm' extra (submitit): "
                                     "pip install 'grokking-lab[slurm]'") from None
    if not options.slurm.local and shutil.which("sbatch") is None:
        raise ConfigError("backend", "slurm: sbatch not found here; run the sweep on a Slurm login node "
                                     "(or add --slurm-local to run the jobs on this machine)")


def _run_slurm(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    import submitit
    from submitit.helpers import as_completed as jobs_as_completed

    slurm, out, threads = options.slurm, options.out, options.threads or 1
    executor = submitit.AutoExecutor(folder=out / "slurm_logs", cluster="local" if slurm.local else "slurm")
    parameters: dict[str, Any] = {"timeout_min": slurm.time_min, "cpus_per_task": threads,
                                  "name": f"grokking-sweep-{out.name}"[:64]}
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if options.workers:
        parameters["slurm_array_parallelism"] = options.workers
    executor.update_parameters(**parameters)
    with executor.batch():  # one Slurm job array
        jobs = [executor.submit(run_point, point, options.imports, threads) for point in points]
    point_of = {id(job): point for job, point in zip(jobs, points)}
    finished: set[int] = set()
    try:
        with _terminate_as_interrupt():
            for job in jobs_as_completed(jobs, poll_frequency=0.5 if slurm.local else 15):
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


def _no_check(points: Sequence[RunPoint], options: BackendOptions) -> None:
    pass


@dataclass(frozen=True)
class Backend:
    """``run(points, on_done, options)`` trains the points; ``check(points, options)`` raises
    ConfigError, before anything is written, when it cannot."""

    run: Callable[[Sequence[RunPoint], OnDone, BackendOptions], None]
    check: Callable[[Sequence[RunPoint], BackendOptions], None] = _no_check


BACKENDS: dict[str, Backend] = {
    "sequential": Backend(_run_sequential),                  # this process
    "process": Backend(_run_process_pool),                   # a spawn process pool, one run per worker
    "batched": Backend(_run_batched, _check_batched),        # grokking.batched, one batch per model shape
    "ray": Backend(_run_ray, _check_ray),                    # one ray.remote task per run
    "slurm": Backend(_run_slurm, _check_slurm),              # one submitit job per run, as a job array
}


def check_backend(plan: SweepPlan, backend: str, options: BackendOptions | None = None,
                  pending: Sequence[RunPoint] | None = None) -> None:
    """Refuse (one line) a backend that is not installed or cannot train these points
    (``pending``, default every point of the plan), before anything is written."""
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}; got {backend!r}")
    for device in {p.config["device"] for p in plan.points}:
        resolve_device(device)
    BACKENDS[backend].check(plan.points if pending is None else pending, options or BackendOptions(plan.out))
