"""Every figure of the package, drawn with matplotlib's object-oriented API.

Each ``*_figure`` / ``plot_*`` function takes numbers (records, numpy arrays, results rows)
and returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes one as a PNG,
atomically. Nothing here imports ``matplotlib.pyplot``, selects a backend or touches
``rcParams``: a figure is a plain ``Figure`` with its own Agg canvas, so importing or
drawing leaves a notebook's or an application's matplotlib set-up exactly as it was.

In Jupyter. IPython's display formatter shows a bare ``Figure`` as an image only once
matplotlib's inline support is on: after ``%matplotlib inline``, or after pyplot has drawn
once in a kernel whose backend is the inline one (ipykernel's default). Before that,
``display(fig)`` or a cell ending in ``fig`` shows only the text ``<Figure size ... with N
Axes>`` (checked with IPython 9 and matplotlib-inline 0.2: ``text/plain`` alone, then
``image/png`` after inline support). This module does not switch it on, since that imports
pyplot; ``IPython.display.Image(png_bytes(fig))`` shows a figure in any case.

This module sits just above :mod:`grokking.rundir`: it knows file names and config fields
and nothing of models or training, so the numbers it draws are computed by its callers.
"""
from __future__ import annotations

import io
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

from . import rundir
from .config import FIELDS, ConfigError

DPI = 120
TITLE_SIZE = 9
LEGEND_SIZE = 8

# The one colour table. Numbered series (seeds, lines of a sweep) use the default cycle, C0..C9.
COLORS: dict[str, Any] = {
    "train": "tab:blue",
    "test": "tab:orange",
    "restricted": "tab:green",
    "excluded": "tab:red",
    "weights": "tab:purple",
    "key": "tab:red",  # a key frequency
    "other": "tab:gray",  # any other frequency
    "unclustered": (0.6, 0.6, 0.6, 1),
    "memorisation": "tab:blue",
    "circuit formation": "tab:green",
    "clean-up": "tab:red",
    "guide": "grey",  # budget lines and their labels
    "mean": "black",
    "band": "0.93",  # the ">budget" band
    "no_value": "#dddddd",  # a heatmap cell where no run reached 99%
}
PHASES = ("memorisation", "circuit formation", "clean-up")
USABLE_STATUSES = ("completed", "stopped_early")


def _cycle(index: int) -> str:
    return f"C{index % 10}"


# --- creating, styling and saving -------------------------------------------------------------------
def new_figure(figsize: tuple[float, float], layout: str | None = None, **kwargs: Any) -> Figure:
    """A ``Figure`` with its own Agg canvas (so layout and saving never consult pyplot)."""
    fig = Figure(figsize=figsize, layout=layout, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Axes, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
           grid: Mapping[str, Any] | None = None, legend: bool = False) -> None:
    """The house style: small titles, a faint grid, a small legend where it fits best."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=TITLE_SIZE)
    if grid is not None:
        ax.grid(alpha=0.3, **grid)
    if legend:
        ax.legend(fontsize=LEGEND_SIZE, loc="best")


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, cropped to what is drawn."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically: readers never see half a file)."""
    path = Path(path)
    rundir.atomic_write_bytes(path, png_bytes(fig))
    return path


# --- a run's curves -----------------------------------------------------------------------------------
def curves_figure(records: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Two panels: train/test loss (log y) and train/test accuracy, 99% epochs as vertical lines."""
    epochs = [r["epoch"] for r in records]
    fig = new_figure((11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "test"):
        color = COLORS[split]
        ax_loss.plot(epochs, [max(r[f"{split}_loss"], 1e-300) for r in records], color=color, label=f"{split} loss")
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in records], color=color, label=f"{split} accuracy")
        when = rundir.first_at(records, f"{split}_acc")
        if when is not None:
            for ax in (ax_loss, ax_acc):
                ax.axvline(when, color=color, linestyle="--", linewidth=1)
            ax_acc.annotate(f"{split} 99% @ {when}", (when, 0.5 if split == "train" else 0.4), color=color,
                            xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax_loss.set_yscale("log")
    ax_acc.set_ylim(-0.02, 1.02)
    _style(ax_loss, "epoch", "cross-entropy", grid={}, legend=True)
    _style(ax_acc, "epoch", "accuracy", grid={}, legend=True)
    if title:
        fig.suptitle(title)
    return fig


def run_title(config: Mapping[str, Any]) -> str:
    """``add mod 113, 30% train, seed 0, lr 0.001, wd 1``: the task and recipe of a run."""
    return (f"{config['op']} mod {config['p']}, {config['frac']:.0%} train, seed {config['seed']}, "
            f"lr {config['lr']:g}, wd {config['weight_decay']:g}")


def plot_run(run_dir: str | Path) -> Path:
    """Write ``RUN/curves.png`` from ``metrics.jsonl``; return its path.

    Raises ValueError when config.json is missing or unreadable, KeyError when it or a
    metrics record lacks a field the figure needs."""
    run_dir = Path(run_dir)
    records = rundir.read_metrics(run_dir)
    config_file = rundir.read_json(run_dir / rundir.CONFIG)
    if config_file is None:
        raise ValueError(f"{run_dir / rundir.CONFIG}: missing, unreadable or not a JSON object")
    fig = curves_figure(records, run_title(config_file["config"]))
    return save_figure(fig, run_dir / rundir.CURVES)


# --- the Fourier analysis of one model (in its task's basis: frequencies or irreps) ------------------
def _freq_ticks(ax: Axes, K: int, labels: Sequence[str] | None = None) -> None:
    if labels is not None and K <= 12:  # irreps: their names
        ax.set_xticks(range(1, K + 1), [str(x) for x in labels[1:K + 1]], rotation=30, fontsize=7, ha="right")
        return
    step = max(1, math.ceil(K / 12))
    ax.set_xticks([1] + list(range(step, K + 1, step)) if step > 1 else list(range(1, K + 1)))


def _short(label: Any) -> str:
    """An axis label for a component: an irrep's partition (``[4,1]``), else the name's first word."""
    text = str(label)
    return "[" + text.split("[", 1)[1] if "[" in text else text.split(" ")[0]


def _plural(unit: str) -> str:
    return {"frequency": "frequencies", "irrep": "irreps"}.get(unit, unit + "s")


def _key_colors(K: int, key_freqs: Iterable[int]) -> list[Any]:
    keys = set(int(k) for k in key_freqs)
    return [COLORS["key"] if k in keys else COLORS["other"] for k in range(1, K + 1)]


def plot_fourier_spectra(embed_norms: np.ndarray, logit_norms: np.ndarray, key_freqs: Sequence[int],
                         title: str = "", labels: Sequence[str] | None = None, unit: str = "frequency",
                         basis: str = "", note: str = "") -> Figure:
    """Bars: norm per component (index 0, the constant / trivial irrep, is only named) of the
    embedding and of the neuron-logit map, the key ones in red. ``labels``: component names
    (irreps); ``basis``: the basis, for the axis; ``note``: e.g. why there is no circuit."""
    fig = new_figure((11, 3.8), layout="constrained")
    K = len(embed_norms) - 1
    for i, (norms, name) in enumerate(((embed_norms, "embedding W_E"), (logit_norms, "neuron-logit map W_L"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.bar(np.arange(1, K + 1), np.asarray(norms)[1:], color=_key_colors(K, key_freqs))
        _style(ax, f"{unit} k" if labels is None or K > 12 else unit, "norm",
               f"{name} (trivial component {norms[0]:.2g})")
        _freq_ticks(ax, K, labels)
    keys = ", ".join(str(labels[k]) if labels is not None and K <= 12 else str(k) for k in key_freqs)
    head = title or f"{basis or 'Fourier basis'}: key {_plural(unit)} {keys or 'none (no circuit)'}"
    fig.suptitle(head + (f"\n{note}" if note else ""), fontsize=9)
    return fig


def plot_neuron_clusters(freq: np.ndarray, frac_explained: np.ndarray,
                         clusters: Mapping[int | str, Sequence[int]], threshold: float,
                         labels: Sequence[str] | None = None, unit: str = "frequency") -> Figure:
    """Left: each neuron's fraction of variance explained by its dominant component ``freq``
    (0: dead), neurons grouped by it. Right: neurons per cluster, as ``clusters``
    (``{component: neuron indices, ..., 'unclustered': rest}``) holds them for ``threshold``."""
    freq, frac_explained = np.asarray(freq), np.asarray(frac_explained)
    name = (lambda k: _short(labels[int(k)])) if labels is not None and len(labels) <= 13 else str
    fig = new_figure((12, 3.8), layout="constrained")
    ax, ax_count = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    order = np.lexsort((-frac_explained, freq))
    freq_sorted = freq[order]
    cmap = colormaps["tab20"]
    ax.scatter(np.arange(len(order)), frac_explained[order], c=[cmap(int(k) % 20) for k in freq_sorted], s=4)
    ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8)
    for k in np.unique(freq_sorted):
        where = np.flatnonzero(freq_sorted == k)
        if len(where) >= max(3, len(order) // 50):
            ax.annotate(name(k) if k else "dead", (where.mean(), 1.02), ha="center", fontsize=7)
    ax.set_ylim(0, 1.08)
    _style(ax, f"neuron (grouped by dominant {unit})", "fraction of variance explained")
    names = [name(k) if k != "unclustered" else str(k) for k in clusters]
    ax_count.bar(range(len(names)), [len(v) for v in clusters.values()],
                 color=[cmap(int(k) % 20) if k != "unclustered" else COLORS["unclustered"] for k in clusters])
    ax_count.set_xticks(range(len(names)))
    ax_count.set_xticklabels(names, rotation=90 if len(names) > 12 else 0, fontsize=7)
    _style(ax_count, f"{unit} cluster", "neurons")
    fig.suptitle(f"MLP neurons by {unit} (clusters: fraction explained >= {threshold:g})", fontsize=10)
    return fig


def plot_logits_fourier(ab_norms: np.ndarray, c_norms: np.ndarray, key_freqs: Sequence[int] = (),
                        labels: Sequence[str] | None = None, unit: str = "frequency", basis: str = "",
                        group_rows: Sequence[int] | None = None) -> Figure:
    """Left: ``ab_norms [m, m]``, the norm over the answer c of the logits' 2D components over
    the group's pairs (a, b), rows and columns in the basis order (additive: const, cos 1,
    sin 1, ...; ``group_rows``: the component of each row, to label blocks), log colour scale.
    Right: ``c_norms``, the norm per component along c (index 0: trivial)."""
    ab_norms = np.asarray(ab_norms, dtype=np.float64)
    m = ab_norms.shape[0]
    fig = new_figure((12, 5), layout="constrained")
    ax, ax_c = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    floor = max(float(ab_norms.max()) * 1e-6, 1e-12)
    norm = LogNorm(vmin=floor, vmax=max(float(ab_norms.max()), floor * 10))
    image = ax.imshow(np.maximum(ab_norms, floor), norm=norm, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046)
    rows = np.asarray(group_rows) if group_rows is not None else np.array([0] + [(i + 1) // 2 for i in range(1, m)])
    comps = list(dict.fromkeys(rows.tolist()))
    if len(comps) <= 12:  # irreps: one tick at the middle of each block of rows wide enough to label
        shown = [k for k in comps if k == 0 or (rows == k).sum() >= 3]
        ticks = [float(np.flatnonzero(rows == k).mean()) for k in shown]
        names = [_short(labels[k]) if labels is not None else str(k) for k in shown]
    else:
        step = max(1, math.ceil((len(comps) - 1) / 10))
        shown = [0] + comps[1:][step - 1::step]
        ticks = [int(np.flatnonzero(rows == k)[0]) for k in shown]
        names = ["const" if k == 0 else f"cos {k}" for k in shown]
    ax.set_xticks(ticks, names, fontsize=7, rotation=90)
    ax.set_yticks(ticks, names, fontsize=7)
    _style(ax, "b component", "a component", f"logits over (a, b), norm over c,\nin the {basis or 'Fourier basis'}")
    K_c = len(c_norms) - 1
    ax_c.bar(np.arange(1, K_c + 1), np.asarray(c_norms)[1:], color=_key_colors(K_c, key_freqs))
    _freq_ticks(ax_c, K_c, labels)
    _style(ax_c, f"{unit} along the answer c", "norm", "logits: norm along c")
    return fig


def plot_attention(attention: np.ndarray) -> Figure:
    """Heatmaps over (a, b) of each head's attention from '=' to a and to b
    (``attention [n_heads, 2, n, n]``)."""
    n_heads = attention.shape[0]
    fig = new_figure((5.6, 2.6 * n_heads), layout="constrained")
    for head in range(n_heads):
        for j, target in enumerate("ab"):
            ax = fig.add_subplot(n_heads, 2, 2 * head + j + 1)
            image = ax.imshow(attention[head, j], vmin=0, vmax=1, cmap="magma", interpolation="nearest")
            ax.set_title(f"head {head}: '=' -> {target}", fontsize=8)
            ax.set_xlabel("b", fontsize=7)
            ax.set_ylabel("a", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.colorbar(image, ax=fig.axes, fraction=0.03)
    fig.suptitle("attention from '=' to the inputs", fontsize=10)
    return fig


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_progress(measures: Mapping[str, np.ndarray], phases: Mapping[str, int | None] | None = None,
                  metrics: Sequence[dict[str, Any]] | None = None, title: str = "",
                  llc: Mapping[str, Any] | None = None) -> Figure:
    """Progress measures against epoch: losses (log y; the paper's restricted/excluded losses
    solid, ours dashed), Gini coefficients, sum of squared weights and, with ``llc``
    (``{"epoch", "llc", "llc_std"}``), the local learning coefficient; the phases shaded.
    ``metrics`` (records of metrics.jsonl) adds the dense loss curves."""
    epoch = measures["epoch"]
    fig = new_figure((20 if llc else 15, 4), layout="constrained")
    axes = [fig.add_subplot(1, 4 if llc else 3, i) for i in range(1, 5 if llc else 4)]
    ax_loss, ax_gini, ax_w = axes[:3]
    dense = [r for r in metrics or () if _is_number(r.get("train_loss")) and _is_number(r.get("test_loss"))]
    for split in ("train", "test") if dense else ():
        ax_loss.plot([r["epoch"] for r in dense], [max(r[f"{split}_loss"], 1e-30) for r in dense],
                     color=COLORS[split], alpha=0.25, linewidth=0.8)
    for key, color, style in (("train_loss", COLORS["train"], "-"), ("test_loss", COLORS["test"], "-"),
                              ("restricted_loss", COLORS["restricted"], "-"), ("excluded_loss", COLORS["excluded"], "-"),
                              ("restricted_loss_abc", COLORS["restricted"], ":"),
                              ("excluded_loss_abc", COLORS["excluded"], ":")):
        values = np.maximum(np.asarray(measures.get(key, np.full(len(epoch), np.nan)), dtype=float), 1e-30)
        if np.isfinite(values).any():
            label = key.replace("_abc", " (ours, a+b-c)").replace("_", " ")
            ax_loss.plot(epoch, values, style, marker="." if style == "-" else None, color=color, label=label,
                         linewidth=1.4 if style == "-" else 1.0)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("cross-entropy")
    ax_gini.plot(epoch, measures["gini_embedding"], marker=".", label="Gini, embedding (task basis)")
    ax_gini.plot(epoch, measures["gini_neuron_logit"], marker=".", label="Gini, neuron-logit map (task basis)")
    ax_gini.set_ylim(0, 1)
    ax_w.plot(epoch, measures["sum_sq_weights"], marker=".", color=COLORS["weights"], label="sum of squared weights")
    if llc:
        values, spread = np.asarray(llc["llc"], dtype=float), np.asarray(llc.get("llc_std", 0.0), dtype=float)
        axes[3].errorbar(llc["epoch"], values, yerr=spread, marker=".", color="black", capsize=2,
                         label="local learning coefficient (devinterp)")
    bounds = [int(epoch[0])]
    if phases:
        bounds += [phases.get(k) for k in ("memorisation_end", "circuit_formation_end", "cleanup_end")]
    for ax in axes:
        for name, start, end in zip(PHASES, bounds, bounds[1:]):
            if start is None:
                break
            ongoing = end is None  # the phase the run is still in: shade it to the last snapshot
            ax.axvspan(start, int(epoch[-1]) if ongoing else end, color=COLORS[name], alpha=0.08,
                       label=(f"{name} (ongoing)" if ongoing else name) if ax is ax_w else None)
            if ongoing:
                break
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"progress measures (key components {np.asarray(measures['key_freqs']).tolist()})",
                 fontsize=10)
    return fig


# --- config values as names, labels and tables spell them (also the sweep modules' one copy) ----------
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
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


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
        color = _cycle(index)
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
    _style(ax, "training fraction", f"{'optimisation steps' if measure == 'steps' else 'epochs'} to 99% test accuracy",
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
        _style(ax, x_field, y_field, title)
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
            ax.scatter(row["epoch_test_acc_99"], y + jitter, s=sizes[0], color=_cycle(k), zorder=3)
        elif row["status"] in USABLE_STATUSES:
            ax.scatter(row["epochs_run"] or budget, y + jitter, s=sizes[1], facecolors="none", edgecolors=_cycle(k),
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
        ax.scatter([], [], s=22, color=_cycle(seeds.index(seed)), label=f"seed {format_value(seed)}")
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
        first.scatter([], [], s=20, color=_cycle(seeds.index(seed)), label=f"seed {format_value(seed)}")
    first.scatter([], [], s=32, facecolors="none", edgecolors=COLORS["guide"],
                  label=f"not reached in {budget:,} epochs")
    first.plot([], [], color=COLORS["mean"], label="mean of the runs that reached 99%")
    fig.legend(*first.get_legend_handles_labels(), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(3 + len(seeds), 6), frameon=False)
    fig.tight_layout()
    return fig


__all__ = [
    "COLORS", "new_figure", "png_bytes", "save_figure", "curves_figure", "run_title", "plot_run",
    "plot_fourier_spectra", "plot_neuron_clusters", "plot_logits_fourier", "plot_attention", "plot_progress",
    "fraction_figure", "heatmap_figure", "summary_figure", "comparison_figure",
    "format_value", "hashable", "swept_fields", "task_label", "recipe_label",
]
