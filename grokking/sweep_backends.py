"""Where the runs of a sweep train: one run (:func:`run_point`), stopping, and the backends,
one table of functions with one signature (:data:`BACKENDS`).

A backend is called as ``backend.run(points, on_done, options)``: it trains every point (each
through :func:`run_point`, or in batches for ``batched``) and calls ``on_done(point, outcome)``
in the driver as each one ends, whatever the order. Before any of them runs, ``backend.check``
refuses (one line) what it cannot do: a missing extra, points it cannot batch, points that do
not fit in memory together.

Every point holds its run directory's lock (:class:`grokking.rundir.RunLock`, the one lock of the
package) while it trains. SIGINT/SIGTERM to the driver stop the sweep: no new run starts, the
runs in flight save ``last.safetensors`` at their next epoch and end as ``interrupted``, and the
sweep raises :class:`~grokking.train.TrainingInterrupted` (exit status 130/143). Process-pool
workers die with the driver (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread elsewhere), saving
their runs first, so a killed sweep leaves no process behind and every run resumable.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import batched
from .checkpoint import CheckpointError
from .config import ConfigError, from_dict
from .memory import MemoryEstimate, check_memory, estimate_memory
from .sweep_figures import hashable
from .rundir import (  # noqa: F401 - exclusive and lock_holder: re-exported for grokking.sweep
    SUMMARY,
    StorageError,
    exclusive,
    lock_holder,
    lock_path,
    os_error_text,
    read_json,
    run_holder,
)
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


# --- locks and stopping ------------------------------------------------------------------------------------
def run_lock(run_dir: Path) -> Path:
    """The lock file of a run directory (beside it: starting a run again removes the directory)."""
    return lock_path(run_dir)


def _busy(point: RunPoint) -> dict[str, Any]:
    holder = run_holder(point.run_dir)
    return {"name": point.name, "status": BUSY, "action": "busy",
            "error": f"{holder or 'another process'} is training this run (it holds {run_lock(Path(point.run_dir))})"}


class StopRequest:
    """The first SIGINT/SIGTERM a sweep got, as its number (0: none); call it to ask.

    ``shared`` (a process-shared int) carries the driver's request to pool workers: a worker
    stops when it or the driver was told to."""

    def __init__(self, shared: Any = None):
        self.signum, self.shared = 0, shared

    def request(self, signum: int) -> None:
        self.signum = self.signum or signum

    def __call__(self) -> int:
        return self.signum or (int(self.shared.value) if self.shared is not None else 0)


@contextlib.contextmanager
def _stop_on_signals(stop: StopRequest, interrupt: bool) -> Iterator[None]:
    """While a backend runs: SIGINT/SIGTERM record a stop (the loop then starts no new run and
    the runs in flight save and end). With ``interrupt`` the handler also raises, to wake a
    driver that waits for workers. The engine of a run trained in this process installs its own
    handlers while its loop runs (and these again after it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        first = not stop.signum
        stop.request(signum)
        if interrupt and first:
            raise TrainingInterrupted(f"sweep stopped by signal {signum}; run the same command again to continue",
                                      signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _not_started(point: RunPoint, signum: int) -> dict[str, Any]:
    return {"name": point.name, "status": None, "action": "not started", "error": None, "signum": signum}


# --- one run (executed by every backend's workers) -----------------------------------------------------
def run_point(point: RunPoint, imports: Sequence[str] = (), threads: int | None = None,
              stop: Callable[[], int] | None = None) -> dict[str, Any]:
    """Bring one run to a finished state and say how: ``{"name", "status", "action", "error"}``.

    A finished run is skipped; an interrupted one continues from ``last.safetensors``
    (bit for bit the run it would have been); anything else starts from scratch. Errors are
    returned, not raised, so every backend reports them the same way. ``stop`` (a
    :class:`StopRequest`): when it says so before the run starts, the run is not started
    (``action`` ``"not started"``); while it trains, the run saves and ends as interrupted.
    A file-system error is returned with ``"storage": True``: the sweep stops on it.
    """
    if stop is not None and stop():
        return _not_started(point, stop())
    if threads:
        torch.set_num_threads(threads)
    import_modules(imports)
    run_dir = Path(point.run_dir)
    outcome: dict[str, Any] = {"name": point.name, "status": None, "action": None, "error": None}
    try:
        with exclusive(run_lock(run_dir), "sweep") as mine:
            if not mine:
                return _busy(point)
            return _train_point(point, run_dir, outcome, stop)
    except OSError as err:  # the lock itself (a read-only or vanished sweep directory)
        return {**outcome, "status": "crashed", "action": "lock", "error": os_error_text(err), "storage": True}


def _train_point(point: RunPoint, run_dir: Path, outcome: dict[str, Any],
                 stop: Callable[[], int] | None) -> dict[str, Any]:
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
                summary = trainer.run(stop=stop)
        if summary is None:
            outcome["action"] = outcome["action"] or ("retrained" if state != "new" else "trained")
            summary = Trainer(from_dict(point.config), run_dir, progress=False).run(overwrite=True, stop=stop)
        return {**outcome, "status": summary["status"]}
    except TrainingInterrupted as err:  # SIGINT/SIGTERM (Ctrl-C, a Slurm time limit): last.safetensors is saved
        return {**outcome, "status": "interrupted", "signum": err.signum}
    except TrainingFailed as err:  # a non-finite loss: summary.json says "failed", which is final
        return {**outcome, "status": "failed", "action": outcome["action"] or "trained", "error": str(err)}
    except StorageError as err:  # disk full, a lost permission: summary.json says "crashed"; resumable
        return {**outcome, "status": "crashed", "action": outcome["action"] or "trained", "error": str(err),
                "storage": True}
    except Exception as err:  # noqa: BLE001 - a crash; shown as failed, retried by the next invocation
        message = " ".join(f"{type(err).__name__}: {err}".splitlines())[:500]
        return {**outcome, "status": "failed", "action": outcome["action"] or "trained", "error": message}


def _crashed(point: RunPoint, err: BaseException) -> dict[str, Any]:
    """The outcome of a run whose worker died (a broken pool, a lost Ray worker, a cancelled job)."""
    message = " ".join(f"{type(err).__name__}: {err}".splitlines())[:500]
    return {"name": point.name, "status": "failed", "action": "lost", "error": f"worker failed: {message}"}


# --- process-pool workers: they stop when told and die with the driver --------------------------------------
PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL = 0.5  # seconds between a watchdog's looks at its parent


@dataclass
class _Worker:
    stop: StopRequest
    parent: int
    busy: bool = False


_worker: _Worker | None = None


def _worker_init(imports: Sequence[str], threads: int | None, shared_stop: Any = None,
                 parent: int | None = None, watchdog: bool = False) -> None:
    """Set up a pool worker. SIGINT/SIGTERM record a stop (queued runs then do not start; the
    engine of a run in flight has its own handler and saves); a worker whose driver is gone exits.
    It learns of the driver's death from the kernel (``PR_SET_PDEATHSIG``: SIGTERM) on Linux
    (not with ``watchdog``), and from a thread that watches the parent's PID everywhere."""
    global _worker
    _worker = _Worker(StopRequest(shared_stop), parent if parent is not None else os.getppid())
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _worker_signal)
    if not watchdog:
        _parent_death_signal(signal.SIGTERM)
    # Also with the kernel's signal: it comes when the driver's *thread* ends, while the dying driver's
    # other threads may still be our parent for a moment; the watchdog sees the real orphaning.
    threading.Thread(target=_watch_parent, name="grokking-watchdog", daemon=True).start()
    if _orphaned():  # the driver died before the kernel was asked to tell us
        os._exit(128 + signal.SIGTERM)
    if threads:
        torch.set_num_threads(threads)
    import_modules(imports)


def _parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` when the parent dies (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent() -> None:
    while not _orphaned():
        time.sleep(WATCHDOG_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)  # as PR_SET_PDEATHSIG would: a run in flight saves and ends
    while True:  # ... and once no run is in flight, the worker goes
        if _worker is not None and not _worker.busy:
            os._exit(128 + signal.SIGTERM)
        time.sleep(WATCHDOG_INTERVAL)


def _orphaned() -> bool:
    return _worker is not None and os.getppid() != _worker.parent


def _worker_signal(signum: int, frame: Any) -> None:
    assert _worker is not None
    _worker.stop.request(signum)
    if not _worker.busy and _orphaned():
        os._exit(128 + signum)


def _pool_run_point(point: RunPoint, imports: Sequence[str], threads: int | None) -> dict[str, Any]:
    """:func:`run_point` in a pool worker, stopped by the worker's and the driver's requests."""
    assert _worker is not None, "_pool_run_point runs in a pool worker (see _worker_init)"
    _worker.busy = True
    try:
        outcome = run_point(point, imports, threads, stop=_worker.stop)
        if outcome["status"] == "interrupted":  # a signal reached the run: this worker starts no other
            _worker.stop.request(outcome.get("signum") or signal.SIGTERM)
        return outcome
    finally:
        _worker.busy = False
        if _orphaned():  # its run is saved; nobody is left to take the result
            os._exit(128 + (_worker.stop() or signal.SIGTERM))


# --- the backends ---------------------------------------------------------------------------------------
def _run_sequential(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    stop = StopRequest()
    with _stop_on_signals(stop, interrupt=False):
        _sequential(points, on_done, options, stop)


def _sequential(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions, stop: StopRequest) -> None:
    for point in points:
        if stop():
            break
        outcome = run_point(point, options.imports, options.threads, stop=stop)
        on_done(point, outcome)
        if outcome["status"] == "interrupted":  # Ctrl-C reached the run in this process: stop the sweep
            stop.request(outcome["signum"])
    if stop():
        raise TrainingInterrupted("sweep interrupted; run the same command again to continue", stop())


def _run_process_pool(points: Sequence[RunPoint], on_done: OnDone, options: BackendOptions) -> None:
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(points)))
    # One thread per worker unless asked otherwise: the workers are the parallelism.
    threads = options.threads or (1 if workers > 1 else None)
    context = multiprocessing.get_context("spawn")
    shared = context.RawValue("i", 0)  # the driver's stop, read by every worker between epochs
    stop = StopRequest(shared)
    # Test hook: GROKKING_TEST_WATCHDOG=1 makes the workers watch their parent as they do where
    # the kernel cannot tell them (no PR_SET_PDEATHSIG), so that path is tested on Linux too.
    watchdog = bool(os.environ.get("GROKKING_TEST_WATCHDOG"))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                               initargs=(options.imports, threads, shared, os.getpid(), watchdog))
    try:
        with _stop_on_signals(stop, interrupt=True):
            futures = {pool.submit(_pool_run_point, point, options.imports, threads): point for point in points}
            for future in as_completed(futures):
                point = futures[future]
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - a worker died (BrokenProcessPool, pickling ...)
                    outcome = _crashed(point, err)
                on_done(point, outcome)
                stopped = outcome["status"] == "interrupted" or outcome["action"] == "not started"
                if stopped and not stop():  # a worker alone was told to stop
                    stop.request(outcome.get("signum") or signal.SIGINT)
                    raise TrainingInterrupted("sweep interrupted; run the same command again to continue", stop())
    except BaseException as err:
        # No new run starts (queued ones return at once) and the runs in flight save and end at
        # their next epoch; then the pool is gone.
        shared.value = stop() or (err.signum if isinstance(err, TrainingInterrupted) else signal.SIGINT)
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
    stop = StopRequest()
    with _stop_on_signals(stop, interrupt=False):
        # Runs with a checkpoint continue alone (a batch starts its runs at epoch 0); the rest train in batches.
        resumable = [p for p in points if run_state(p.run_dir) == "resumable"]
        _sequential(resumable, on_done, options, stop)
        fresh = [p for p in points if p not in resumable]
        for group in _batch_groups(fresh):
            if stop():
                break
            _run_batch(group, on_done, options, stop)
    if stop():
        raise TrainingInterrupted("sweep interrupted; run the same command again to continue", stop())


def _run_batch(group: Sequence[RunPoint], on_done: OnDone, options: BackendOptions, stop: StopRequest) -> None:
    with contextlib.ExitStack() as locks:
        free = []
        for point in group:
            if locks.enter_context(exclusive(run_lock(Path(point.run_dir)), "sweep")):
                free.append(point)
            else:
                on_done(point, _busy(point))
        if not free:
            return
        options.log(f"batch of {len(free)} runs: {', '.join(p.name for p in free)}")
        if options.threads:
            torch.set_num_threads(options.threads)
        try:
            summaries = batched.train_batched([from_dict(p.config) for p in free], [p.run_dir for p in free],
                                              progress=False, strategy=options.strategy, overwrite=True, stop=stop)
            outcomes = [{"name": p.name, "status": s["status"], "action": "trained (batched)",
                         "error": s.get("error")} for p, s in zip(free, summaries)]
        except TrainingInterrupted:  # Ctrl-C: the batch saved every run's last.safetensors
            raise
        except StorageError as err:
            outcomes = [{"name": p.name, "status": "crashed", "action": "trained (batched)", "error": str(err),
                         "storage": True} for p in free]
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
            with _stop_on_signals(StopRequest(), interrupt=True):
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
        with _stop_on_signals(StopRequest(), interrupt=True):
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
    (``pending``, default every point of the plan), before anything is written: also points
    whose estimated memory, together as the backend runs them, exceeds what is available."""
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}; got {backend!r}")
    for device in {p.config["device"] for p in plan.points}:
        resolve_device(device)
    points = plan.points if pending is None else pending
    options = options or BackendOptions(plan.out)
    BACKENDS[backend].check(points, options)
    check_sweep_memory(points, backend, options)


# A spawned pool worker's own interpreter, torch and the package, before it trains (measured: 0.25 GB).
WORKER_BASELINE = 300 * 1024**2


def check_sweep_memory(points: Sequence[RunPoint], backend: str, options: BackendOptions) -> None:
    """Refuse (ConfigError, one line) points that cannot fit in memory as ``backend`` trains them:
    the largest one alone (sequential), the ``--workers`` largest at once (process), each batch
    (batched). Ray and Slurm runs train on other machines: each run checks itself there."""
    if not points or backend in ("ray", "slurm"):
        return
    cfgs = [from_dict(p.config) for p in points]
    max_memory = min((c.max_memory for c in cfgs if c.max_memory), default=0.0)
    if backend == "batched":
        for group in _batch_groups(points):
            group_cfgs = [from_dict(p.config) for p in group]
            device = resolve_device(group_cfgs[0].device)
            first = group_cfgs[0]
            stacked = batched.choose_strategy(options.strategy, device, first.model, first.op) == "stacked"
            check_memory(estimate_memory(group_cfgs, device, stacked=stacked), max_memory,
                         f"the batch of {len(group)} runs starting with {group[0].name}")
        return
    estimates = sorted(((estimate_memory([c], resolve_device(c.device)), p) for c, p in zip(cfgs, points)),
                       key=lambda item: -item[0].total)
    if backend == "process":
        workers = max(1, min(options.workers or os.cpu_count() or 1, len(points)))
        together = estimates[:workers]
        total = sum(e.total for e, _ in together) + (workers - 1) * WORKER_BASELINE
        largest, point = together[0]
        combined = MemoryEstimate(total, {f"{workers} runs at once (the largest, {point.name}, "
                                          f"{largest.total / 1024**3:.2f} GB)": total}, largest.path, largest.device)
        check_memory(combined, max_memory, f"--workers {workers}",
                     advice="Use fewer --workers, or make the largest runs smaller")
        return
    largest, point = estimates[0]
    check_memory(largest, max_memory, f"run {point.name}")
