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

Backends (``--backend``, the table :data:`BACKENDS`): ``sequential`` (this process),
``process`` (a spawn process pool, one run per worker, ``--workers`` default
``os.cpu_count()``), ``batched`` (:func:`grokking.batched.train_batched`, one batch per model
shape), ``ray`` (one ``ray.remote`` task per run; needs the ``ray`` extra) and ``slurm`` (one
submitit job per run, as a Slurm job array; needs the ``slurm`` extra). The sweep directory
must be on a file system every worker sees.

Every input is checked before anything is written: an unknown field or a bad value in any
point is one line naming the field, exit status 2 (:class:`~grokking.config.ConfigError`).

The pieces: :mod:`grokking.sweep_plan` (points, grids, sweep files), :mod:`grokking.sweep_backends`
(one run, locks, the backends) and :mod:`grokking.sweep_results` (results.csv, the summaries and
figures). This module runs a plan (:func:`run_sweep`) and holds every public name of the three.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError
from .sweep_figures import format_value, swept_fields
from .rundir import RESULTS, RunDirError, StorageError, atomic_write_json, lock_note, os_error_text
from .sweep_backends import (
    BACKENDS,
    Backend,
    BackendOptions,
    OnDone,
    SlurmOptions,
    check_backend,
    exclusive,
    lock_holder,
    run_lock,
    run_point,
)
from .sweep_plan import (
    BUSY,
    FINISHED_STATUSES,
    PENDING,
    SWEEP_FILE_KEYS,
    RunPoint,
    SweepPlan,
    check_axes,
    import_modules,
    load_sweep_file,
    parse_grid_flags,
    plan_sweep,
    point_name,
    run_state,
)
from .sweep_results import (
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    SUMMARY_COUNT_COLUMNS,
    SUMMARY_STATS,
    TASK_FIELDS,
    compare_across_tasks,
    comparison_markdown,
    default_heatmap_fields,
    plot_comparison,
    plot_fraction,
    plot_heatmap,
    plot_summary,
    plot_sweep,
    progress_line,
    read_results,
    results_row,
    seconds_to_test_acc,
    summarize_groups,
    summary_markdown,
    write_results,
    write_summary,
)
from .version import __version__

__all__ = [
    # sweep_plan
    "BUSY", "FINISHED_STATUSES", "PENDING", "SWEEP_FILE_KEYS", "RunPoint", "SweepPlan", "check_axes",
    "import_modules", "load_sweep_file", "parse_grid_flags", "plan_sweep", "point_name", "run_state",
    # figures: how the sweeps spell and compare config values
    "format_value", "swept_fields",
    # sweep_backends
    "BACKENDS", "Backend", "BackendOptions", "OnDone", "SlurmOptions", "check_backend", "exclusive",
    "lock_holder", "run_lock", "run_point",
    # sweep_results
    "RESULT_COLUMNS", "SUMMARY_COLUMNS", "SUMMARY_COUNT_COLUMNS", "SUMMARY_STATS", "TASK_FIELDS",
    "compare_across_tasks", "comparison_markdown", "default_heatmap_fields", "plot_comparison", "plot_fraction",
    "plot_heatmap", "plot_summary", "plot_sweep", "progress_line", "read_results", "results_row",
    "seconds_to_test_acc", "summarize_groups", "summary_markdown", "write_results", "write_summary",
    # here
    "run_sweep",
]


def run_sweep(plan: SweepPlan, backend: str = "sequential", *, workers: int | None = None,
              imports: Sequence[str] = (), address: str | None = None, slurm: SlurmOptions | None = None,
              threads: int | None = None, strategy: str = "auto", plot: bool = True,
              heatmap_fields: Sequence[str] | None = None,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train every point of ``plan`` that is not finished, on ``backend``; write
    ``results.csv`` (after every run, and at the end) and the figures; return the rows.

    ``workers``: process pool size (default ``os.cpu_count()``), local Ray instance CPUs, or
    Slurm array parallelism. ``imports``: modules to import in every worker first (for
    user-registered operations). ``threads``: CPUs (torch threads) per run (default: 1 per
    pool worker, Ray task and Slurm job; torch's own choice in this process). ``strategy``:
    the batched backend's (see :func:`grokking.batched.train_batched`). Raises ConfigError
    before writing anything if the backend cannot run the plan; Ctrl-C writes the table
    (unfinished runs as ``interrupted``) and re-raises.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = plan.out
    options = BackendOptions(out=out, workers=workers, imports=tuple(imports), threads=threads, address=address,
                             slurm=slurm or SlurmOptions(), strategy=strategy, log=log)
    import_modules(options.imports)
    pending = [p for p in plan.points if run_state(p.run_dir) != "done"]
    check_backend(plan, backend, options, pending)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a directory")
    for point in plan.points:
        if Path(point.run_dir).exists() and not Path(point.run_dir).is_dir():
            raise ConfigError("out", f"{point.run_dir} exists and is not a directory")

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"out: cannot create the sweep directory: {os_error_text(err)}") from None
    lock = out / ".sweep.lock"
    with contextlib.ExitStack() as stack:
        try:
            mine = stack.enter_context(exclusive(lock, "sweep"))
        except OSError as err:
            raise RunDirError(f"out: cannot lock {out}: {os_error_text(err)}") from None
        if not mine:
            holder = lock_note(lock)
            raise ConfigError("out", f"{out} is in use by another grokking sweep"
                                     + (f" ({holder}, holding {lock})" if holder and holder.pid else f" (it holds {lock})"))
        return _run_locked(plan, backend, pending, options, plot, heatmap_fields, log)


def _run_locked(plan: SweepPlan, backend: str, pending: list[RunPoint], options: BackendOptions, plot: bool,
                heatmap_fields: Sequence[str] | None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    out = plan.out
    try:
        _write_manifest(plan, backend)
        rows = {p.run_dir: results_row(p, out) for p in plan.points}  # keyed by run directory: unique
        write_results(out, list(rows.values()))
    except OSError as err:  # nothing has trained: the sweep directory cannot be used
        raise RunDirError(f"out: cannot write the sweep directory: {os_error_text(err)}") from None
    done_before = len(plan.points) - len(pending)
    log(f"sweep {out}: {len(plan.points)} runs, {done_before} finished before, {len(pending)} to train "
        f"({backend})" + (f"; {plan.duplicates} duplicate points dropped" if plan.duplicates else ""))
    counter = itertools.count(1)

    def on_done(point: RunPoint, outcome: dict[str, Any]) -> None:
        rows[point.run_dir] = results_row(point, out, outcome)
        log(progress_line(next(counter), len(pending), rows[point.run_dir], outcome))
        if outcome.get("storage"):  # a full disk fails every run after it: stop here
            raise StorageError(f"{point.name}: {outcome['error']}; the sweep stopped (run it again to continue)")
        try:
            write_results(out, list(rows.values()))
        except OSError as err:
            raise StorageError(f"{os_error_text(err)}; the sweep stopped (run it again to continue)") from None

    try:
        if pending:
            BACKENDS[backend].run(pending, on_done, options)
    finally:  # also on Ctrl-C: the table says where every run stands
        rows = {p.run_dir: results_row(p, out, _known_outcome(rows[p.run_dir])) for p in plan.points}
        try:
            write_results(out, list(rows.values()))
        except OSError as err:  # reported, without hiding why the sweep ended
            log(f"{out / RESULTS} not written ({os_error_text(err)})")
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
    """Keep what only this invocation knows (a crash) when the table is rebuilt; whether a run is
    held by another process is asked of its lock again."""
    return {"status": row["status"], "error": row["error"]} if row["status"] in ("failed", "crashed") else None


def _write_manifest(plan: SweepPlan, backend: str) -> None:
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
