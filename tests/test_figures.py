"""Figures: every one is a plain matplotlib Figure, drawn without pyplot or any global state."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import imread

from grokking import figures, sweep_figures
from grokking.config import Config

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- synthetic numbers for every figure -------------------------------------------------------------------
def metrics_records(n: int = 40) -> list[dict]:
    """A grokking-shaped metrics.jsonl: train fits by epoch 100, test by epoch 300."""
    records = []
    for i in range(n):
        epoch = 10 * i
        train_acc, test_acc = min(1.0, epoch / 100), 1 / (1 + np.exp(-(epoch - 250) / 20))
        records.append({"epoch": epoch, "step": epoch, "train_loss": 4.0 * np.exp(-epoch / 30) + 1e-6,
                        "test_loss": 4.0 + 3 * train_acc * (1 - test_acc), "train_acc": train_acc,
                        "test_acc": float(test_acc), "weight_norm": 40 - epoch / 20})
    return records


def sweep_rows() -> list[dict]:
    """results.csv rows of a frac x op x seed sweep; some runs never reach 99% test accuracy."""
    rows = []
    for op, steps in (("add", {0.3: None, 0.5: 400, 0.8: 200}), ("divide", {0.3: None, 0.5: None, 0.8: 300})):
        for frac, step in steps.items():
            for seed in (0, 1):
                rows.append({**Config(op=op, frac=frac, seed=seed).to_dict(), "name": f"{op}{frac}{seed}",
                             "status": "stopped_early" if step else "completed", "step_test_acc_99": step,
                             "epoch_test_acc_99": step, "steps": 1000, "epochs_run": 1000,
                             "final_test_acc": 1.0 if step else 0.1})
    return rows


def summary_groups(rows: list[dict], fields: list[str]) -> list[dict]:
    """What grokking.sweep.summarize_groups gives the figure: one dict per group of ``fields``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in fields), []).append(row)
    out = []
    for key, group in groups.items():
        hits = [r["epoch_test_acc_99"] for r in group if r["epoch_test_acc_99"] is not None]
        out.append({**dict(zip(fields, key)), "n_runs": len(group), "n_reached": len(hits),
                    "epochs_mean": sum(hits) / len(hits) if hits else None})
    return out


def every_figure() -> dict[str, Figure]:
    """Each figure function of grokking.figures, called on synthetic numbers."""
    rng = np.random.default_rng(0)
    p, K, d_mlp = 11, 5, 40
    norms = np.concatenate([[2.0], rng.uniform(0.01, 0.1, K)])
    norms[[2, 4]] = 3.0
    freq = rng.integers(0, K + 1, d_mlp)
    frac = rng.uniform(0, 1, d_mlp)
    clusters = {int(k): np.flatnonzero((freq == k) & (frac >= 0.85)) for k in np.unique(freq[frac >= 0.85]) if k}
    clusters["unclustered"] = np.flatnonzero(~((frac >= 0.85) & (freq > 0)))
    epoch = np.array([0, 100, 200, 300, 390])
    measures = {"epoch": epoch, "key_freqs": np.array([2, 4]),
                **{k: rng.uniform(0.01, 4, epoch.size) for k in ("train_loss", "test_loss", "restricted_loss")},
                "excluded_loss": np.full(epoch.size, np.nan),  # a non-additive op: no excluded loss to draw
                "gini_embedding": np.linspace(0.2, 0.8, epoch.size),
                "gini_neuron_logit": np.linspace(0.1, 0.9, epoch.size),
                "sum_sq_weights": np.linspace(900, 300, epoch.size)}
    phases = {"memorisation_end": 100, "circuit_formation_end": 300, "cleanup_end": None}
    rows = sweep_rows()
    return {
        "curves": figures.curves_figure(metrics_records(), "add mod 13"),
        "curves_label_noise": figures.curves_figure(noisy_records(), "add mod 13, 10% label noise"),
        "label_noise": figures.label_noise_figure({"weight decay 1": noisy_records(), "weight decay 3": noisy_records()}),
        "fourier_spectra": figures.plot_fourier_spectra(norms, norms[::-1].copy(), [2, 4]),
        "neuron_clusters": figures.plot_neuron_clusters(freq, frac, clusters, 0.85),
        "logits_fourier": figures.plot_logits_fourier(rng.uniform(0, 5, (p, p)), norms, [2, 4]),
        "attention": figures.plot_attention(rng.uniform(0, 1, (2, 2, p, p))),
        "progress": figures.plot_progress(measures, phases, metrics_records()),
        "fraction": sweep_figures.fraction_figure(rows),
        "fraction_epochs": sweep_figures.fraction_figure(rows, measure="epochs"),
        "heatmap": sweep_figures.heatmap_figure(rows, ("frac", "op")),
        "summary": sweep_figures.summary_figure(rows, ["op", "frac"], summary_groups(rows, ["op", "frac"])),
        "comparison": sweep_figures.comparison_figure(rows, ["op"], [{"frac": 0.5}, {"frac": 0.8}], [("add",), ("divide",)]),
    }


def hollow_markers(ax) -> list[tuple[float, float]]:
    return [tuple(xy) for c in ax.collections if isinstance(c, PathCollection) and c.get_facecolors().size == 0
            for xy in c.get_offsets()]


def noisy_records() -> list[dict]:
    """Records of a run with label noise: the three accuracies of the training pairs as well."""
    return [{**r, "train_acc_clean": r["train_acc"], "train_acc_corrupted": 1 - r["test_acc"],
             "train_acc_corrupted_true": r["test_acc"]} for r in metrics_records()]


# --- every figure is a Figure -------------------------------------------------------------------------------
def test_every_figure_function_returns_a_figure():
    drawn = every_figure()
    for name, fig in drawn.items():
        assert type(fig) is Figure, name
        assert fig.axes, name
        assert figures.png_bytes(fig).startswith(PNG_SIGNATURE), name
    public = {name for name in figures.__all__ if name.endswith("_figure") or name.startswith("plot_")}
    assert public - {"plot_run", "save_figure", "new_figure"} <= {
        "curves_figure", "plot_fourier_spectra", "plot_neuron_clusters", "plot_logits_fourier", "plot_attention",
        "plot_progress", "fraction_figure", "heatmap_figure", "summary_figure", "comparison_figure",
        "label_noise_figure"}


def test_save_figure_writes_a_png_that_decodes(tmp_path):
    fig = figures.curves_figure(metrics_records())
    path = figures.save_figure(fig, tmp_path / "deeper" / "curves.png")
    assert path == tmp_path / "deeper" / "curves.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    pixels = imread(path)
    width, height = fig.get_size_inches() * figures.DPI
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert 0.7 * height < pixels.shape[0] < 1.3 * height and 0.7 * width < pixels.shape[1] < 1.3 * width
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 50  # curves and text, not a blank canvas
    assert not list(tmp_path.rglob(".*.tmp"))


def test_plot_run_writes_curves_png(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": Config().replace(p=13).to_dict()}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_records())
                                            + '{"epoch": 400, "tra')  # a torn last line, as a killed run leaves
    path = figures.plot_run(tmp_path)
    assert path == tmp_path / "curves.png" and imread(path).shape[0] > 100


def test_plot_run_refuses_a_run_without_config(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(metrics_records()[0]) + "\n")
    with pytest.raises(ValueError, match="config.json"):
        figures.plot_run(tmp_path)
    assert not (tmp_path / "curves.png").exists()


def test_curves_mark_the_99_percent_epochs():
    fig = figures.curves_figure(metrics_records())
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_yscale() == "log"
    labels = [t.get_text() for t in ax_acc.texts]
    assert labels == ["train 99% @ 100", "test 99% @ 350"]


# --- sweep figures keep their markers ------------------------------------------------------------------------
def test_fraction_figure_marks_runs_that_never_got_there():
    ax = sweep_figures.fraction_figure(sweep_rows()).axes[0]
    hollow = hollow_markers(ax)
    assert len(hollow) == 3  # add@0.3, divide@0.3, divide@0.5
    tops = {round(float(y)) for _, y in hollow}
    assert len(tops) == 1 and tops.pop() > 1000  # above the budget, at the top edge
    assert any(">budget" in t.get_text() for t in ax.texts)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["add", "divide", "never reached 99% (>budget)"]


def test_heatmap_figure_says_budget_where_no_run_got_there():
    fig = sweep_figures.heatmap_figure(sweep_rows(), ("frac", "op"))
    ax_acc, ax_grok = fig.axes[:2]
    texts = [t.get_text() for t in ax_grok.texts]
    assert texts.count(">budget") == 3 and "400" in texts and "200" in texts
    assert len(ax_acc.texts) == 6  # every cell has a final accuracy
    with pytest.raises(ValueError, match="not a config field"):
        sweep_figures.heatmap_figure(sweep_rows(), ("frac", "nonsense"))


def test_summary_and_comparison_draw_unreached_runs_hollow_at_the_budget():
    rows = sweep_rows()
    ax = sweep_figures.summary_figure(rows, ["op", "frac"], summary_groups(rows, ["op", "frac"])).axes[0]
    assert sorted(x for x, _ in hollow_markers(ax)) == [1000] * 6  # 2 seeds x add@0.3, divide@0.3, divide@0.5
    assert ax.get_xscale() == "log"
    fig = sweep_figures.comparison_figure(rows, ["op"], [{"frac": 0.5}, {"frac": 0.8}], [("add",), ("divide",)])
    assert [a.get_title() for a in fig.axes] == ["frac=0.5", "frac=0.8"]
    assert len(hollow_markers(fig.axes[0])) == 2 and len(hollow_markers(fig.axes[1])) == 0
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["op=divide", "defaults"]


# --- no global state ------------------------------------------------------------------------------------------
_NO_GLOBAL_STATE = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import matplotlib
    if sys.argv[1] == "use":
        matplotlib.use("svg")
    backend = matplotlib.rcParams["backend"]
    before = {key: repr(value) for key, value in matplotlib.rcParams.items()}
    import grokking
    import grokking.analysis, grokking.figures, grokking.progress, grokking.report
    for module in pkgutil.iter_modules(grokking.__path__):  # and every other module of the package
        importlib.import_module("grokking." + module.name)
    sys.path.insert(0, sys.argv[2])
    import test_figures
    drawn = test_figures.every_figure()
    for fig in drawn.values():
        grokking.figures.png_bytes(fig)
    after = {key: repr(value) for key, value in matplotlib.rcParams.items()}
    print(json.dumps({"pyplot": "matplotlib.pyplot" in sys.modules, "backend": [backend, matplotlib.get_backend()],
                      "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
                      "figures": sorted(drawn)}))
""")


@pytest.mark.parametrize("how", ["use", "env"])
def test_importing_and_drawing_leave_matplotlib_as_it_was(how):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if how == "env":
        env["MPLBACKEND"] = "svg"
    result = subprocess.run([sys.executable, "-c", _NO_GLOBAL_STATE, how, str(TESTS)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["figures"] == sorted(every_figure())  # it drew them all
    assert report["pyplot"] is False, "the package imported matplotlib.pyplot"
    assert report["backend"] == ["svg", "svg"]
    assert report["changed"] == [], f"rcParams changed: {report['changed']}"


def _global_state_uses(source: str) -> list[str]:
    """Imports of pyplot, calls of ``matplotlib.use`` and any use of ``rcParams`` in a module's code."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("matplotlib.pyplot")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matplotlib"):
            found += [f"{node.module}.{a.name}" for a in node.names
                      if "pyplot" in f"{node.module}.{a.name}" or a.name in ("rcParams", "use", "rc", "style")]
        elif isinstance(node, ast.Attribute) and node.attr in ("rcParams", "pyplot", "rc_context"):
            found.append(node.attr)
        elif isinstance(node, ast.Attribute) and node.attr == "use" and getattr(node.value, "id", "") == "matplotlib":
            found.append("matplotlib.use")
    return found


def test_figure_modules_never_reach_for_pyplot_or_global_state():
    for name in ("figures.py", "fourier.py", "progress.py", "analysis.py", "report.py"):
        assert _global_state_uses((REPO / "grokking" / name).read_text()) == [], name
    # the check itself can fail
    caught = _global_state_uses("import matplotlib.pyplot as plt\nimport matplotlib\nmatplotlib.use('Agg')\n"
                                "matplotlib.rcParams['x'] = 1\nfrom matplotlib import pyplot\n")
    assert sorted(set(caught)) == ["matplotlib.pyplot", "matplotlib.use", "rcParams"] and len(caught) == 4


def test_the_curves_of_a_run_with_label_noise_draw_the_three_training_accuracies():
    plain = figures.curves_figure(metrics_records()).axes[1]
    noisy = figures.curves_figure(noisy_records()).axes[1]
    labels = [line.get_label() for line in noisy.get_lines()]
    assert len(noisy.get_lines()) == len(plain.get_lines()) + 3
    assert {"train, clean pairs", "train, corrupted pairs (their wrong labels)",
            "train, corrupted pairs (true labels)"} <= set(labels)
    drawn = next(line for line in noisy.get_lines() if line.get_label() == "train, corrupted pairs (true labels)")
    assert list(drawn.get_ydata()) == [r["train_acc_corrupted_true"] for r in noisy_records()]
