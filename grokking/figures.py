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
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from . import rundir

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


def cycle_color(index: int) -> str:
    return f"C{index % 10}"


# --- creating, styling and saving -------------------------------------------------------------------
def new_figure(figsize: tuple[float, float], layout: str | None = None, **kwargs: Any) -> Figure:
    """A ``Figure`` with its own Agg canvas (so layout and saving never consult pyplot)."""
    fig = Figure(figsize=figsize, layout=layout, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def style_axes(ax: Axes, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
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
    if records and "train_acc_corrupted" in records[-1]:  # label noise: what is memorised, what generalises
        for key, label, style in (("train_acc_clean", "train, clean pairs", "-."),
                                  ("train_acc_corrupted", "train, corrupted pairs (their wrong labels)", ":"),
                                  ("train_acc_corrupted_true", "train, corrupted pairs (true labels)", "--")):
            ax_acc.plot(epochs, [r.get(key, math.nan) for r in records], color=COLORS["train"], linestyle=style,
                        linewidth=1, label=label)
    ax_loss.set_yscale("log")
    ax_acc.set_ylim(-0.02, 1.02)
    style_axes(ax_loss, "epoch", "cross-entropy", grid={}, legend=True)
    style_axes(ax_acc, "epoch", "accuracy", grid={}, legend=True)
    if title:
        fig.suptitle(title)
    return fig


def label_noise_figure(runs: Mapping[str, Sequence[dict[str, Any]]], title: str = "") -> Figure:
    """One panel per run (``label -> metrics records`` of runs with label noise): test accuracy,
    accuracy on the clean training pairs, and on the corrupted ones against the wrong labels they
    were trained on (memorised) and against their true answers (the rule overriding the noise)."""
    fig = new_figure((4.2 * max(len(runs), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(runs), 1), sharey=True))
    lines = (("test_acc", "test pairs", COLORS["test"], "-"),
             ("train_acc_clean", "clean training pairs", COLORS["train"], "-"),
             ("train_acc_corrupted", "corrupted pairs: their wrong labels", COLORS["excluded"], ":"),
             ("train_acc_corrupted_true", "corrupted pairs: true answers", COLORS["restricted"], "--"))
    for ax, (label, records) in zip(axes, runs.items()):
        epochs = [r["epoch"] for r in records]
        for key, name, color, style in lines:
            ax.plot(epochs, [r.get(key, math.nan) for r in records], color=color, linestyle=style, label=name)
        ax.set_ylim(-0.02, 1.02)
        style_axes(ax, "epoch", "accuracy" if ax is axes[0] else None, label, grid={})
    axes[0].legend(fontsize=LEGEND_SIZE, loc="center right")
    if title:
        fig.suptitle(title, fontsize=10)
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
        style_axes(ax, f"{unit} k" if labels is None or K > 12 else unit, "norm",
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
    style_axes(ax, f"neuron (grouped by dominant {unit})", "fraction of variance explained")
    names = [name(k) if k != "unclustered" else str(k) for k in clusters]
    ax_count.bar(range(len(names)), [len(v) for v in clusters.values()],
                 color=[cmap(int(k) % 20) if k != "unclustered" else COLORS["unclustered"] for k in clusters])
    ax_count.set_xticks(range(len(names)))
    ax_count.set_xticklabels(names, rotation=90 if len(names) > 12 else 0, fontsize=7)
    style_axes(ax_count, f"{unit} cluster", "neurons")
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
    style_axes(ax, "b component", "a component", f"logits over (a, b), norm over c,\nin the {basis or 'Fourier basis'}")
    K_c = len(c_norms) - 1
    ax_c.bar(np.arange(1, K_c + 1), np.asarray(c_norms)[1:], color=_key_colors(K_c, key_freqs))
    _freq_ticks(ax_c, K_c, labels)
    style_axes(ax_c, f"{unit} along the answer c", "norm", "logits: norm along c")
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


def is_number(value: Any) -> bool:
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
    dense = [r for r in metrics or () if is_number(r.get("train_loss")) and is_number(r.get("test_loss"))]
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


__all__ = [
    "COLORS", "new_figure", "style_axes", "cycle_color", "is_number", "png_bytes", "save_figure", "curves_figure",
    "label_noise_figure",
    "run_title", "plot_run", "plot_fourier_spectra", "plot_neuron_clusters", "plot_logits_fourier", "plot_attention",
    "plot_progress",
]
