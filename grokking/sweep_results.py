"""What a sweep found: ``results.csv`` (one row per run), the grouped summary over seeds, the
recipes x tasks comparison, and the files drawn from them.

The figures themselves are drawn by :mod:`grokking.figures`; this module chooses what to draw
from a results table and where the files go.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import FIELDS, ConfigError, field_type
from .figures import save_figure
from .rundir import RESULTS, SUMMARY, atomic_write_text, first_at, read_json, read_metrics, run_holder
from .sweep_figures import (
    comparison_figure,
    format_value,
    fraction_figure,
    hashable,
    heatmap_figure,
    recipe_label,
    summary_figure,
    swept_fields,
    task_label,
)
from .sweep_plan import BUSY, FINISHED_STATUSES, PENDING, RunPoint, run_state

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


# --- the results table --------------------------------------------------------------------------------------
def results_row(point: RunPoint, out: Path, outcome: dict[str, Any] | None = None) -> dict[str, Any]:
    """The point's row of results.csv, read from its run directory (and the outcome of this
    invocation, which knows about crashes the directory cannot show)."""
    run_dir = Path(point.run_dir)
    summary = read_json(run_dir / SUMMARY) or {}
    records = read_metrics(run_dir, []) if summary else []
    final = summary.get("final") or {}
    status = summary.get("status", PENDING)
    error = summary.get("error")
    if status == PENDING and run_state(run_dir) == "resumable":  # killed before it wrote summary.json
        status = "interrupted"
    if outcome is not None and outcome.get("status") in ("failed", "crashed") and outcome.get("error"):
        status, error = outcome["status"], outcome["error"]
    if status not in FINISHED_STATUSES:  # whether someone trains it now, the lock tells (not an old row)
        holder = run_holder(run_dir)
        if holder is not None:
            status, error = BUSY, f"{holder} is training it"
    try:
        run_dir_shown = str(run_dir.relative_to(out))
    except ValueError:
        run_dir_shown = str(run_dir)
    row: dict[str, Any] = {
        "name": point.name, "status": status,
        "epoch_train_acc_99": summary.get("epoch_train_acc_99"), "epoch_test_acc_99": summary.get("epoch_test_acc_99"),
        "step_train_acc_99": first_at(records, "train_acc", field="step"),
        "step_test_acc_99": first_at(records, "test_acc", field="step"),
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
    # A float as its shortest round-trip text (the table holds the exact figures); the rest as labels spell it.
    return repr(value) if isinstance(value, float) else format_value(value)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def write_results(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``out/results.csv`` atomically (a reader never sees half a table)."""
    path = Path(out) / RESULTS
    atomic_write_text(path, _csv_text(RESULT_COLUMNS, rows))
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
    path = Path(sweep_dir) / RESULTS
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            return [{k: _parse_cell(k, v) for k, v in row.items() if k is not None} for row in reader]
    except OSError as err:
        raise ConfigError("results", f"cannot read {path}: {err.strerror}") from None
    except (ValueError, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError("results", f"{path} is damaged ({type(err).__name__}: {err})") from None


def _rows_of(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = read_results(sweep_dir)
    if not rows:
        raise ConfigError("results", f"{sweep_dir / RESULTS} has no runs")
    return rows


def progress_line(index: int, total: int, row: dict[str, Any], outcome: dict[str, Any]) -> str:
    """One line of the sweep's log: a run that ended, and how."""
    grokked = row["step_test_acc_99"]
    figures = (f"test acc {row['final_test_acc']:.3f}" if row["final_test_acc"] is not None else "no evaluation")
    when = f", 99% test at step {grokked}" if grokked is not None else ""
    seconds = f", {row['seconds']:.1f} s" if row["seconds"] is not None else ""
    error = f": {row['error']}" if row["status"] in ("failed", "crashed", BUSY) and row["error"] else ""
    action = outcome.get("action")
    return f"[{index}/{total}] {row['name']}: {row['status']} ({action}; {figures}{when}{seconds}){error}"


# --- figures of the table -------------------------------------------------------------------------------------
def default_heatmap_fields(rows: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """The two swept fields with the most values (seed only if nothing else is swept)."""
    swept = swept_fields(rows)
    ranked = sorted(swept, key=lambda name: (name == "seed", -len({r[name] for r in rows}), swept.index(name)))
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def plot_fraction(rows: Sequence[dict[str, Any]], path: str | Path, measure: str = "steps") -> Path:
    """Write :func:`grokking.sweep_figures.fraction_figure` to ``path``."""
    return save_figure(fraction_figure(rows, measure=measure), Path(path))


def plot_heatmap(rows: Sequence[dict[str, Any]], fields: tuple[str, str], path: str | Path,
                 measure: str = "steps") -> Path:
    """Write :func:`grokking.sweep_figures.heatmap_figure` to ``path``."""
    return save_figure(heatmap_figure(rows, fields, measure=measure), Path(path))


def plot_summary(rows: Sequence[dict[str, Any]], fields: Sequence[str], groups: Sequence[dict[str, Any]],
                 path: str | Path) -> Path:
    """Write :func:`grokking.sweep_figures.summary_figure` to ``path``."""
    return save_figure(summary_figure(rows, fields, groups), Path(path))


def plot_comparison(rows: Sequence[dict[str, Any]], recipe_fields: Sequence[str], tasks: Sequence[dict[str, Any]],
                    recipes: Sequence[tuple], path: str | Path) -> Path:
    """Write :func:`grokking.sweep_figures.comparison_figure` to ``path``."""
    return save_figure(comparison_figure(rows, recipe_fields, tasks, recipes), Path(path))


def plot_sweep(sweep_dir: str | Path, heatmap_fields: Sequence[str] | None = None,
               measure: str = "steps") -> list[Path]:
    """Draw the figures of a sweep directory from its results.csv: ``fraction.png`` (steps to
    99% test accuracy against training fraction) and ``heatmap_<x>_<y>.png`` (over the two
    swept fields with the most values, or ``heatmap_fields``). Returns the paths written."""
    sweep_dir = Path(sweep_dir)
    rows = _rows_of(sweep_dir)
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
TASK_FIELDS = ("op", "p", "frac")


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """mean, sample standard deviation (None below two values), min and max; all None when empty."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def seconds_to_test_acc(run_dir: Path, threshold: float = 0.99) -> float | None:
    """Training seconds at the first evaluation with test accuracy >= ``threshold``."""
    return first_at(read_metrics(run_dir), "test_acc", threshold, field="seconds")


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
        groups.setdefault(tuple(hashable(row.get(f)) for f in fields), []).append(row)
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
        cells = [*(format_value(g[f]) for f in fields), reached, _mean_std(g, "epochs", 0), epochs_range,
                 _mean_std(g, "seconds", 1), seconds_range]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- recipes x tasks ------------------------------------------------------------------------------------------
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
    recipes.sort(key=lambda r: recipe_label(recipe_fields, r) != "defaults")  # the baseline on top (stable sort)
    if not recipes or len(tasks) < 2:
        return None
    return recipe_fields, [dict(zip(task_fields, t)) for t in tasks], recipes, cells


def comparison_markdown(recipe_fields: Sequence[str], tasks: Sequence[dict[str, Any]], recipes: Sequence[tuple],
                        cells: dict[tuple, dict[tuple, dict[str, Any]]]) -> str:
    """Three recipes x tasks tables: epochs to 99% test accuracy (mean ± std over the runs that
    reached it, and how many did), epochs to 99% train accuracy of those runs, and training
    seconds to 99% test accuracy."""
    head = "| recipe | " + " | ".join(task_label(t) for t in tasks) + " |\n|" + "---|" * (len(tasks) + 1) + "\n"
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
            lines.append(f"| {recipe_label(recipe_fields, recipe)} | " + " | ".join(row) + " |\n")
        out.append("".join(lines))
    return "\n".join(out)


def write_summary(sweep_dir: str | Path, figure: bool = True) -> list[Path]:
    """Write ``summary.csv``, ``summary.md`` and (with ``figure``) ``summary.png`` into a sweep
    directory from its results.csv: the runs grouped by every swept field except the seed
    (see :func:`summarize_groups`). When tasks and recipes both vary, also ``comparison.md``
    and ``comparison.png``: recipes x tasks (see :func:`compare_across_tasks`). Returns the
    paths written."""
    sweep_dir = Path(sweep_dir)
    rows = _rows_of(sweep_dir)
    fields, groups = summarize_groups(rows, sweep_dir)
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    atomic_write_text(csv_path, _csv_text(_summary_columns(fields), groups))
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
