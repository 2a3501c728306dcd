"""The figures of a sweep: the fraction curve (Power et al.), heatmaps over two swept fields,
the per-group summary and the recipes-by-tasks comparison, each returning a
:class:`matplotlib.figure.Figure` drawn with :mod:`grokking.figures`' conventions (its colour
table, axes style and Agg canvas; nothing touches pyplot or ``rcParams``).

They take result rows (one dict per run, as :mod:`grokking.sweep_results` reads them from
``results.csv``), never models.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

from .config import FIELDS, ConfigError
from .figures import COLORS, TITLE_SIZE, cycle_color, is_number, new_figure, style_axes

USABLE_STATUSES = ("completed", "stopped_early")


def format_value(value: Any) -> str:
    """A field value as names, labels and tables spell it: ``none``, ``true``, ``0.3``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def hashable(value: Any) -> Any:
    """Lists (a config field may hold one) as tuples, so rows can be grouped by their values."""
    return value if not isinstance(value, list) else tuple(value)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if is_number(value) else (1, 0, str(value))


def _distinct(values: Iterable[Any]) -> list[Any]:
    return sorted(set(values), key=_sort_key)


def swept_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Config fields that take more than one value across the rows (in Config order)."""
    return [name for name in FIELDS if len({hashable(r.get(name)) for r in rows}) > 1]


def _label(values: dict[str, Any]) -> str:
    if list(values) == ["op"]:
        return str(values["op"])
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def _differs_from_default(name: str, value: Any) -> bool:
    return hashable(value) != hashable(FIELDS[name].default)


def _short_label(fields: Sequence[str], group: dict[str, Any]) -> str:
    """The group's fields that differ from the Config defaults (all of them when none does)."""
    differing = [f for f in fields if _differs_from_default(f, group[f])]
    return ", ".join(f"{f}={format_value(group[f])}" for f in differing or fields) or "all runs"


def task_label(task: dict[str, Any]) -> str:
    """``add``, ``add p=97``: the task's operation by name, its other fields as ``field=value``."""
    return " ".join(f"{k}={format_value(v)}" if k != "op" else str(v) for k, v in task.items())


def recipe_label(recipe_fields: Sequence[str], recipe: tuple) -> str:
    """The recipe's values that differ from the Config defaults (``defaults`` when none does)."""
    differing = [(f, v) for f, v in zip(recipe_fields, recipe) if _differs_from_default(f, v)]
    return ", ".join(f"{f}={format_value(v)}" for f, v in differing) or "defaults"


def _text_color(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def _budget_ticks(low: float, budget: float) -> list[float]:
    """1, 2, 5 x 10^e between half the fastest run and twice the budget: readable log ticks."""
    return [m * 10**e for e in range(0, 10) for m in (1, 2, 5) if low / 2 <= m * 10**e <= budget * 2]


def _log_epoch_axis(ax: Axes, ticks: Sequence[float]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


# --- sweeps: figures ---------------------------------------------------------------------------------------
def fraction_figure(rows: Sequence[dict[str, Any]], measure: str = "steps") -> Figure:
    """Steps (or epochs) to 99% test accuracy against training fraction, one line per
    combination of the other swept fields (typically one per operation): the mean over
    seeds, bars from the fastest to the slowest seed. A point where some seeds never got
    there has a hollow marker at the top edge (``>budget``) with the count that did not.
    ``rows``: the rows of results.csv, as ``grokking.sweep.read_results`` returns them."""
    column = {"steps": "step_test_acc_99", "epochs": "epoch_test_acc_99"}[measure]
    budget_column = "steps" if measure == "steps" else "epochs_run"
    usable = [r for r in rows if r["status"] in USABLE_STATUSES]
    line_fields = [f for f in swept_fields(rows) if f not in ("frac", "seed")]
    lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in usable:
        lines[tuple(row[f] for f in line_fields)].append(row)
    reached = [r[column] for r in usable if r[column] is not None]
    never = [r for r in usable if r[column] is None]
    budget = max([r[budget_column] or 0 for r in never] + [max(reached, default=1)])
    top = budget * 1.25  # the ">budget" row, above every measured point
    fig = new_figure((7, 4.5))
    ax = fig.subplots()
    keys = sorted(lines, key=lambda key: tuple(_sort_key(v) for v in key))
    fracs_all = _distinct(r["frac"] for r in usable)
    spacing = min((b - a for a, b in itertools.pairwise(fracs_all)), default=0.1)
    for index, key in enumerate(keys):
        group = lines[key]
        label = _label(dict(zip(line_fields, key))) if line_fields else str(group[0]["op"])
        offset = (index - (len(keys) - 1) / 2) * spacing * 0.04  # keep coincident markers apart
        color = cycle_color(index)
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
        ax.axhspan(budget, top * 1.6, color=COLORS["band"], zorder=0)
        ax.axhline(budget, color=COLORS["guide"], linestyle=":", linewidth=1)
        ax.annotate(f">budget ({budget:,} {measure})", (0.99, budget), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8,
                    color=COLORS["guide"])
        ax.scatter([], [], s=50, facecolors="none", edgecolors=COLORS["guide"], label="never reached 99% (>budget)")
    seeds = _distinct(r["seed"] for r in usable)
    failed = len(rows) - len(usable)
    note = f"mean over {len(seeds)} seeds, bars: min to max" if len(seeds) > 1 else "one seed"
    if failed:
        note += f"; {failed} run{'s' if failed != 1 else ''} failed or unfinished, not shown"
    style_axes(ax, "training fraction", f"{'optimisation steps' if measure == 'steps' else 'epochs'} to 99% test accuracy",
           note, grid={"which": "both"}, legend=True)
    return fig


def heatmap_figure(rows: Sequence[dict[str, Any]], fields: tuple[str, str], measure: str = "steps") -> Figure:
    """Two panels over two swept fields (x, y): final test accuracy and steps (or epochs) to
    99% test accuracy, each cell the mean over the runs it holds; a cell where no run got to
    99% says ``>budget`` (``k/n`` when only some did). Raises ConfigError for a field that is
    not a config field."""
    x_field, y_field = fields
    for name in fields:
        if name not in FIELDS:
            raise ConfigError("heatmap", f"{name!r} is not a config field")
    column = {"steps": "step_test_acc_99", "epochs": "epoch_test_acc_99"}[measure]
    usable = [r for r in rows if r["status"] in USABLE_STATUSES]
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
    fig = new_figure((max(9.0, 3 + 1.4 * len(xs)), max(3.0, 1.5 + 0.45 * len(ys))), layout="constrained")
    ax_acc, ax_grok = fig.subplots(1, 2)
    acc_image = ax_acc.imshow(accuracy, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(acc_image, ax=ax_acc, label="final test accuracy")
    finite = grok[np.isfinite(grok)]
    norm = None
    if finite.size:
        low = max(float(finite.min()), 1.0)
        norm = LogNorm(vmin=low, vmax=max(float(finite.max()), low * 1.01))
    cmap = colormaps["magma_r"].with_extremes(bad=COLORS["no_value"])  # grey: no run of the cell reached 99%
    image = ax_grok.imshow(np.ma.masked_invalid(grok), origin="lower", aspect="auto", cmap=cmap, norm=norm)
    if norm is not None:  # no colour scale when no cell reached 99%
        fig.colorbar(image, ax=ax_grok, label=f"{measure} to 99% test accuracy")
    no_value_rgba = (0.87, 0.87, 0.87, 1)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(accuracy[i, j]):
                ax_acc.text(j, i, f"{accuracy[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color=_text_color(acc_image.cmap(acc_image.norm(accuracy[i, j]))))
            text = f"{grok[i, j]:.0f}" if np.isfinite(grok[i, j]) else ""
            if (i, j) in notes:
                text = f"{text}\n{notes[i, j]}" if text else notes[i, j]
            if text:
                background = image.cmap(image.norm(grok[i, j])) if np.isfinite(grok[i, j]) else no_value_rgba
                ax_grok.text(j, i, text, ha="center", va="center", fontsize=7, color=_text_color(background))
    for ax, title in ((ax_acc, "final test accuracy"), (ax_grok, f"{measure} to 99% test accuracy")):
        ax.set_xticks(range(len(xs)), [format_value(x) for x in xs], rotation=45 if len(xs) > 6 else 0)
        ax.set_yticks(range(len(ys)), [format_value(y) for y in ys])
        style_axes(ax, x_field, y_field, title)
    others = [f for f in swept_fields(rows) if f not in fields]
    if others:
        fig.suptitle(f"mean over {', '.join(others)}", fontsize=TITLE_SIZE)
    return fig


def _epoch_budget(rows: Sequence[dict[str, Any]]) -> tuple[list[int], int]:
    """The epochs to 99% of the runs that got there, and the largest budget (dotted line)."""
    reached = [r["epoch_test_acc_99"] for r in rows if r["epoch_test_acc_99"] is not None]
    budget = max([r["epochs_run"] or 0 for r in rows if r["epoch_test_acc_99"] is None] + reached + [1])
    return reached, budget


def _runs_dots(ax: Axes, runs: Iterable[dict[str, Any]], y: float, seeds: list[Any], budget: int,
               sizes: tuple[float, float], hollow_width: float) -> None:
    """One dot per run, coloured and jittered by seed; a hollow marker at its budget for a
    finished run that never reached 99%."""
    for row in runs:
        k = seeds.index(row.get("seed"))
        jitter = (k - (len(seeds) - 1) / 2) * min(0.12, 0.6 / len(seeds))
        if row["epoch_test_acc_99"] is not None:
            ax.scatter(row["epoch_test_acc_99"], y + jitter, s=sizes[0], color=cycle_color(k), zorder=3)
        elif row["status"] in USABLE_STATUSES:
            ax.scatter(row["epochs_run"] or budget, y + jitter, s=sizes[1], facecolors="none", edgecolors=cycle_color(k),
                       linewidths=hollow_width, zorder=3)


def summary_figure(rows: Sequence[dict[str, Any]], fields: Sequence[str], groups: Sequence[dict[str, Any]]) -> Figure:
    """Epochs to 99% test accuracy per group (labelled by its fields that differ from the
    Config defaults): one dot per run, coloured by seed, a bar at the mean; runs that never
    got there are hollow markers at their budget (the dotted line). ``fields`` and
    ``groups`` as ``grokking.sweep.summarize_groups`` returns them."""
    keyed: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        keyed[tuple(hashable(row.get(f)) for f in fields)].append(row)
    seeds = _distinct(r.get("seed") for r in rows)
    reached, budget = _epoch_budget(rows)
    fig = new_figure((9, max(2.5, 1.2 + 0.3 * len(groups))))
    ax = fig.subplots()
    for index, group in enumerate(groups):
        y = len(groups) - 1 - index  # first group on top
        _runs_dots(ax, keyed[tuple(hashable(group[f]) for f in fields)], y, seeds, budget, (22, 36), 1.3)
        if group["epochs_mean"] is not None:
            ax.plot([group["epochs_mean"]] * 2, [y - 0.38, y + 0.38], color=COLORS["mean"], linewidth=1.5, zorder=4)
    ax.axvline(budget, color=COLORS["guide"], linestyle=":", linewidth=1)
    ax.set_yticks(range(len(groups)), [f"{_short_label(fields, g)}  ({g['n_reached']}/{g['n_runs']})"
                                       for g in reversed(groups)], fontsize=7)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    _log_epoch_axis(ax, _budget_ticks(min(reached + [budget]), budget))
    ax.set_xlabel("epochs to 99% test accuracy (log scale). Labels: the fields that differ from the defaults, "
                  "(runs that reached 99% / runs)", fontsize=8)
    ax.grid(alpha=0.3, which="major", axis="x")
    for seed in seeds:
        ax.scatter([], [], s=22, color=cycle_color(seeds.index(seed)), label=f"seed {format_value(seed)}")
    ax.scatter([], [], s=36, facecolors="none", edgecolors=COLORS["guide"],
               label=f"not reached within {budget:,} epochs")
    ax.plot([], [], color=COLORS["mean"], label="mean of the runs that reached 99%")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3 + len(seeds), 6), frameon=False)
    return fig


def comparison_figure(rows: Sequence[dict[str, Any]], recipe_fields: Sequence[str], tasks: Sequence[dict[str, Any]],
                      recipes: Sequence[tuple]) -> Figure:
    """One panel per task: epochs to 99% test accuracy for each recipe, one dot per run
    (coloured by seed), a bar at the mean; hollow markers at the budget for runs that never
    got there. ``recipe_fields``, ``tasks`` and ``recipes`` as the first three values of
    ``grokking.sweep.compare_across_tasks``."""
    seeds = _distinct(r.get("seed") for r in rows)
    reached, budget = _epoch_budget(rows)
    ticks = _budget_ticks(min(reached + [budget]), budget)
    fig = new_figure((2.2 + 2.6 * len(tasks), max(2.5, 1.0 + 0.32 * len(recipes))))
    axes = fig.subplots(1, len(tasks), sharex=True, sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for index, recipe in enumerate(recipes):
            y = len(recipes) - 1 - index
            mine = [r for r in rows if all(hashable(r.get(f)) == hashable(v) for f, v in task.items())
                    and all(hashable(r.get(f)) == hashable(v) for f, v in zip(recipe_fields, recipe))]
            hits = [r["epoch_test_acc_99"] for r in mine if r["epoch_test_acc_99"] is not None]
            _runs_dots(ax, mine, y, seeds, budget, (20, 32), 1.2)
            if hits:
                ax.plot([sum(hits) / len(hits)] * 2, [y - 0.38, y + 0.38], color=COLORS["mean"], linewidth=1.4,
                        zorder=4)
        ax.axvline(budget, color=COLORS["guide"], linestyle=":", linewidth=1)
        _log_epoch_axis(ax, ticks)
        ax.tick_params(axis="x", labelsize=7, labelrotation=45)
        ax.grid(alpha=0.3, which="major", axis="x")
        ax.set_title(task_label(task), fontsize=TITLE_SIZE)
    first = axes[0][0]
    first.set_yticks(range(len(recipes)), [recipe_label(recipe_fields, r) for r in reversed(recipes)], fontsize=7)
    first.set_ylim(-0.7, len(recipes) - 0.3)
    fig.supxlabel("epochs to 99% test accuracy (log scale)", fontsize=8)
    for seed in seeds:
        first.scatter([], [], s=20, color=cycle_color(seeds.index(seed)), label=f"seed {format_value(seed)}")
    first.scatter([], [], s=32, facecolors="none", edgecolors=COLORS["guide"],
                  label=f"not reached in {budget:,} epochs")
    first.plot([], [], color=COLORS["mean"], label="mean of the runs that reached 99%")
    fig.legend(*first.get_legend_handles_labels(), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(3 + len(seeds), 6), frameon=False)
    fig.tight_layout()
    return fig


__all__ = [
    "USABLE_STATUSES", "fraction_figure", "heatmap_figure", "summary_figure", "comparison_figure",
    "format_value", "hashable", "swept_fields", "task_label", "recipe_label",
]
