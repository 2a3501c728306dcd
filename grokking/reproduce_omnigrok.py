"""``grokking reproduce omnigrok2023``: Omnigrok's grokking on images (Liu, Michaud & Tegmark 2023),
on scikit-learn's bundled 8 x 8 digits instead of MNIST.

The paper's recipe for images (the authors' ``mnist/grokking`` notebook, which "reproduces results
akin to Figure 3(d)"): 1,000 training images, an MLP of 3 linear layers (2 hidden layers of 200 ReLU
units), every initial weight multiplied by alpha = 8, AdamW (lr 1e-3, weight decay 0.01), batches of
200, 1e5 steps, MSE on one-hot targets. The large initialisation puts the network at a large weight
norm where it fits the training set at once but generalises poorly; weight decay then brings the
norm down, and test accuracy rises as it approaches the norm w_c around which the generalising
solutions lie (their Fig. 1; the LU picture: training loss against the norm is an L, test loss a U).

Three runs here, all the paper's network, optimiser and batch size on 1,000 of the 1,797 digits
(the other 797 test):

- ``large_init``: ``init_scale`` 8 with weight decay: fits the training set within a few hundred
  steps at about 85% test accuracy, and generalises (95%+) only thousands of steps later, as the
  weight norm falls from 162 towards the standard initialisation's 20;
- ``standard_init``: ``init_scale`` 1, the same weight decay: train and test accuracy rise together;
- ``large_init_no_wd``: ``init_scale`` 8 without weight decay: the norm stays where it started and so
  does test accuracy (the paper's grokking time goes as 1 / weight decay).

Laptop scale uses weight decay 0.1 for 2e4 steps instead of 0.01 for 1e5: the paper's grokking time
scales as 1 / weight decay, and lr x wd x steps is 2 here against the paper's 1. Paper scale is the
paper's 0.01 and 1e5 steps. The loss is cross-entropy (the package has no MSE), which the table says.
What it measured, and how it compares with the paper's figure: docs/reproduce.md.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .config import Config
from .experiment import Context, Outcome, Row, epoch_text, run_dir_for, train_or_reuse
from .figures import COLORS, new_figure, style_axes
from .mlp import input_width
from .rundir import first_at, read_metrics

PAPER = ("Liu, Michaud, Tegmark 2023, Omnigrok: grokking beyond algorithmic data (ICLR 2023, "
         "arXiv:2210.01117)")
RUNS = ("an MLP (2 hidden layers of 200 ReLU, AdamW lr 1e-3, batches of 200) on 1,000 of sklearn's 8x8 digits: "
        "init scale 8 with weight decay 0.1, init scale 1, and init scale 8 without weight decay; 20k steps each "
        "(paper scale: weight decay 0.01, 100k steps)")
LAPTOP_TIME = "about 2.5-3.5 min (150 s and 214 s measured on 2 busy cores)"

N_DIGITS = 1797  # sklearn's bundled digits
N_TRAIN = 1000  # the paper's MNIST training set size
FRAC = (N_TRAIN + 0.5) / N_DIGITS  # int(FRAC * 1797) = 1000 exactly
ALPHA = 8.0  # the paper's initialisation scale (its notebook's initialization_scale)
TEST_PASS = 0.95  # "generalised": test accuracy at least this (the standard init's run ends near 98%)
TRAIN_PASS = 0.99  # "memorised": train accuracy at least this

PAPER_SETTING = {"n_train": 1000, "d_mlp": 200, "mlp_layers": 2, "batch_size": 200, "lr": 1e-3,
                 "weight_decay": 0.01, "init_scale": 8.0, "steps": 100_000}

# Per scale: the width, the learning rate, the weight decay of the two runs that have it, the budget in optimiser
# steps and the evaluation interval in epochs (5 steps each: 1,000 images in batches of 200).
SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"d_mlp": 32, "lr": 1e-2, "weight_decay": 1.0, "steps": 300, "eval_every": 2},
    "laptop": {"d_mlp": 200, "lr": 1e-3, "weight_decay": 0.1, "steps": 20_000, "eval_every": 5},
    "paper": {"d_mlp": 200, "lr": 1e-3, "weight_decay": 0.01, "steps": 100_000, "eval_every": 20},
}
# label -> (init_scale, whether weight decay is on)
RUN_SPECS: dict[str, tuple[float, bool]] = {
    "large_init": (ALPHA, True),
    "standard_init": (1.0, True),
    "large_init_no_wd": (ALPHA, False),
}
LABELS = {"large_init": f"init x{ALPHA:g}, weight decay", "standard_init": "init x1, weight decay",
          "large_init_no_wd": f"init x{ALPHA:g}, no weight decay"}
STYLES = {"large_init": "-", "standard_init": "--", "large_init_no_wd": ":"}


def omnigrok_config(scale: str, threads: int, init_scale: float, weight_decay: bool) -> Config:
    """One run's config: the paper's network and optimiser on 1,000 digits, at ``scale``'s budget.
    Adam's betas are torch's defaults (0.9, 0.999) and there is no warm-up, as in the paper's notebook."""
    s = SCALES[scale]
    batch = PAPER_SETTING["batch_size"]
    steps_per_epoch = math.ceil(N_TRAIN / batch)
    return Config().replace(
        op="digits", model="mlp", mlp_input="value", mlp_act="relu", mlp_layers=PAPER_SETTING["mlp_layers"],
        d_mlp=s["d_mlp"], frac=FRAC, split="random", init_scale=init_scale, optimizer="adamw",
        lr=s["lr"], beta2=0.999, warmup_steps=0, weight_decay=s["weight_decay"] if weight_decay else 0.0,
        batch_size=batch, epochs=s["steps"] // steps_per_epoch, eval_every=s["eval_every"],
        checkpoint_every=0, checkpoint_log=0, threads=threads, report=False)


def torch_default_norm(cfg: Config) -> float:
    """The expected weight norm of the same MLP under PyTorch's ``nn.Linear`` default initialisation
    (the paper's): weights and biases uniform in +-1/sqrt(fan_in), so each entry's mean square is
    1 / (3 fan_in). Ours draws weights from N(0, 1/fan_in) with zero biases (grokking.mlp)."""
    widths = [input_width(cfg)] + [cfg.d_mlp] * cfg.mlp_layers + [cfg.n_classes]
    total = sum((d_out * d_in + d_out) / (3 * d_in) for d_in, d_out in zip(widths[:-1], widths[1:]))
    return math.sqrt(total)


def run_values(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's numbers, from its metrics records: when train and test accuracy pass their
    thresholds (steps), the test accuracy and weight norm then, and at the start and the end."""
    train_step = first_at(records, "train_acc", TRAIN_PASS, field="step")
    test_index = first_at(records, "test_acc", TEST_PASS, field=None)
    train_index = first_at(records, "train_acc", TRAIN_PASS, field=None)
    best = max(range(len(records)), key=lambda i: records[i]["test_acc"]) if records else None
    first, last = (records[0], records[-1]) if records else ({}, {})
    return {
        "step_train_acc_99": train_step,
        "test_acc_at_train_99": None if train_index is None else records[train_index]["test_acc"],
        "step_test_acc_95": None if test_index is None else records[test_index]["step"],
        "weight_norm_at_test_95": None if test_index is None else records[test_index]["weight_norm"],
        "initial_weight_norm": first.get("weight_norm"),
        "final_weight_norm": last.get("weight_norm"),
        "final_test_acc": last.get("test_acc"),
        "final_train_acc": last.get("train_acc"),
        "best_test_acc": None if best is None else records[best]["test_acc"],
        "weight_norm_at_best_test": None if best is None else records[best]["weight_norm"],
        "steps_run": last.get("step"),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _norm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run(ctx: Context) -> Outcome:
    cfgs = {label: omnigrok_config(ctx.scale, ctx.threads, scale, wd) for label, (scale, wd) in RUN_SPECS.items()}
    records: dict[str, list[dict[str, Any]]] = {}
    dirs: dict[str, Path] = {}
    seconds = 0.0
    for label, cfg in cfgs.items():
        dirs[label] = run_dir_for(ctx, f"digits_{label}", cfg)
        summary = train_or_reuse(cfg, dirs[label], ctx)
        seconds += summary.get("seconds") or 0.0
        records[label] = read_metrics(dirs[label])
    per_run = {label: run_values(recs) for label, recs in records.items()}
    large, standard, no_wd = per_run["large_init"], per_run["standard_init"], per_run["large_init_no_wd"]
    cfg = cfgs["large_init"]
    steps = cfg.epochs * math.ceil(N_TRAIN / cfg.batch_size)
    w0 = standard["initial_weight_norm"]
    ratio = (large["initial_weight_norm"] / w0) if w0 else None
    delay = (large["step_test_acc_95"] / large["step_train_acc_99"]
             if large["step_test_acc_95"] and large["step_train_acc_99"] else None)
    values = {"runs": per_run, "initial_norm_ratio": ratio, "torch_default_norm": torch_default_norm(cfg),
              "delay_factor": delay, "steps": steps, "weight_decay": cfg.weight_decay, "d_mlp": cfg.d_mlp,
              "n_train": int(cfg.frac * N_DIGITS), "train_seconds": round(seconds, 1)}

    data = (f"sklearn 8x8 digits, {N_TRAIN:,} train / {N_DIGITS - N_TRAIN} test (paper: MNIST 28x28, 1,000 train / "
            f"10,000 test)")
    budget = "the paper's weight decay 0.01 and 1e5 steps"
    if (cfg.weight_decay, steps) != (PAPER_SETTING["weight_decay"], PAPER_SETTING["steps"]):
        budget = (f"weight decay {cfg.weight_decay:g}, {steps:,} steps (paper: 0.01, 1e5; lr x wd x steps "
                  f"{cfg.lr * cfg.weight_decay * steps:g}, paper 1)")
    loss = "cross-entropy, float32 (paper: MSE on one-hot targets, float64)"
    width = ("" if cfg.d_mlp == 200 else f"; width {cfg.d_mlp} (paper 200)") + (
        "" if cfg.lr == PAPER_SETTING["lr"] else f"; lr {cfg.lr:g} (paper 1e-3)")
    torch_norm = values["torch_default_norm"]
    times = (large["initial_weight_norm"] or 0.0) / torch_norm
    init = (f"our init: N(0, 1/fan_in) weights, zero biases; PyTorch's default (the paper's) would give norm "
            f"{torch_norm:.1f} here, so our x{ALPHA:g} is x{times:.1f} of it")
    rows = [
        Row("initial weight norm, init x8 over init x1", f"alpha = {ALPHA:g} (every initial weight times 8)",
            "-" if ratio is None else f"{ratio:.2f} ({_norm(large['initial_weight_norm'])} / {_norm(w0)})", init),
        Row(f"init x8: step train accuracy passes {TRAIN_PASS:.0%}",
            "early: fits the training set long before it generalises (not confirmed as a number)",
            f"{epoch_text(large['step_train_acc_99'])} (test accuracy then {_pct(large['test_acc_at_train_99'])})",
            f"{data}; {loss}{width}"),
        Row(f"init x8: step test accuracy passes {TEST_PASS:.0%}",
            "late: 'increasing initialization scale leads to grokking (delayed generalization)' (the authors' "
            "notebook for Fig. 3; no step confirmed)",
            f"{epoch_text(large['step_test_acc_95'], f'not within {steps:,}')}"
            + ("" if delay is None else f" ({delay:.0f}x the train step)"), budget),
        Row(f"init x8: weight norm when test accuracy passes {TEST_PASS:.0%}",
            "generalisation once weight decay brings the norm down towards w_c, where the generalising solutions lie "
            "(Fig. 1; no number confirmed)",
            f"{_norm(large['weight_norm_at_test_95'])} (from {_norm(large['initial_weight_norm'])}; init x1: "
            f"{_norm(w0)})", "weight norm: every weight and bias, as the paper's"),
        Row("init x8: final test accuracy", "not confirmed",
            f"{_pct(large['final_test_acc'])} after {epoch_text(large['steps_run'])} steps (norm "
            f"{_norm(large['final_weight_norm'])}; best {_pct(large['best_test_acc'])} at norm "
            f"{_norm(large['weight_norm_at_best_test'])})", ""),
        Row(f"init x1: step test accuracy passes {TEST_PASS:.0%}",
            "no delay expected at the standard init (not confirmed as a number)",
            f"{epoch_text(standard['step_test_acc_95'], f'not within {steps:,}')} (train {TRAIN_PASS:.0%}: "
            f"{epoch_text(standard['step_train_acc_99'])}; final test {_pct(standard['final_test_acc'])})", ""),
        Row("init x8, no weight decay: final test accuracy",
            "no generalisation: the grokking time goes as 1/weight decay (a summary's reading; not confirmed "
            "in the text)",
            f"{_pct(no_wd['final_test_acc'])} (norm {_norm(no_wd['initial_weight_norm'])} -> "
            f"{_norm(no_wd['final_weight_norm'])})", "a run the paper's figure does not show; ours"),
    ]
    figure = omnigrok_figure(records, values, cfg)
    return Outcome(rows, values, figure, [str(d) for d in dirs.values()])


def omnigrok_figure(records: dict[str, list[dict[str, Any]]], values: dict[str, Any], cfg: Config) -> Figure:
    """(a) the paper's Fig. 3 layout: train and test accuracy against the step (log x) with the weight
    norm on a second axis, for each run; (b) train and test accuracy against the weight norm along
    training (the LU picture read off the runs: the norm falls with time, right to left), with the
    large-init run's step marked along its test curve."""
    fig = new_figure((13, 5), layout="constrained")
    ax_t, ax_w = fig.subplots(1, 2)
    ax_norm = ax_t.twinx()
    for label, recs in records.items():
        shown = [r for r in recs if r["step"] > 0]  # log x: the initial evaluation is left out
        steps = [r["step"] for r in shown]
        style = STYLES[label]
        for split in ("train", "test"):
            ax_t.plot(steps, [r[f"{split}_acc"] for r in shown], color=COLORS[split], linestyle=style)
            ax_w.plot([r["weight_norm"] for r in recs], [r[f"{split}_acc"] for r in recs], color=COLORS[split],
                      linestyle=style, marker="." if label == "standard_init" else None, markersize=3)
        ax_norm.plot(steps, [r["weight_norm"] for r in shown], color=COLORS["weights"], linestyle=style, linewidth=1)
    large = values["runs"]["large_init"]
    passed = large["step_test_acc_95"]
    if passed is not None:
        ax_t.axvline(passed, color=COLORS["guide"], linestyle=":", linewidth=1)
        ax_t.annotate(f"init x{ALPHA:g}: test {TEST_PASS:.0%}\nat step {passed:,}", (passed, 0.55), xytext=(-4, 0),
                      textcoords="offset points", ha="right", fontsize=8, color=COLORS["guide"])
        ax_w.axvline(large["weight_norm_at_test_95"], color=COLORS["guide"], linestyle=":", linewidth=1)
        ax_w.annotate(f"test {TEST_PASS:.0%}\nat norm {large['weight_norm_at_test_95']:.0f}",
                      (large["weight_norm_at_test_95"], 0.55), xytext=(4, 0), textcoords="offset points", fontsize=8,
                      color=COLORS["guide"])
    # Where the large-init run is at a few steps, along its test curve: time runs right to left.
    recs = records["large_init"]
    last_step = recs[-1]["step"] if recs else 0
    marks = sorted({m for m in (100, 1000, 3000, 10_000, 30_000, last_step) if 0 < m <= last_step})
    for mark in marks:
        r = min(recs, key=lambda rec: abs(rec["step"] - mark))
        ax_w.plot([r["weight_norm"]], [r["test_acc"]], "o", color=COLORS["test"], markersize=4)
        ax_w.annotate(f"{r['step']:,}", (r["weight_norm"], r["test_acc"]), xytext=(0, -11), textcoords="offset points",
                      ha="center", fontsize=7, color=COLORS["test"])
    w0 = values["runs"]["standard_init"]["initial_weight_norm"]
    if w0:
        ax_w.axvline(w0, color=COLORS["mean"], linestyle="--", linewidth=1)
        ax_w.annotate(f"init x1:\nnorm {w0:.0f}", (w0, 0.3), xytext=(4, 0), textcoords="offset points", fontsize=8)
    start = large["initial_weight_norm"]
    if start:
        ax_w.annotate("", xy=(start * 0.45, 0.12), xytext=(start * 0.97, 0.12),
                      arrowprops={"arrowstyle": "->", "color": COLORS["weights"]})
        ax_w.annotate("training: weight decay shrinks the norm\n(test accuracy marked at steps)", (start * 0.97, 0.14),
                      ha="right", fontsize=8, color=COLORS["weights"])
        ax_w.set_xlim(0, start * 1.05)
    ax_t.set_xscale("log")
    for ax in (ax_t, ax_w):
        ax.set_ylim(-0.02, 1.03)
    ax_norm.set_ylabel("weight norm (purple)", color=COLORS["weights"])
    ax_norm.set_ylim(0, (start or 1) * 1.05)
    title = (f"digits, {N_TRAIN:,} train, {cfg.mlp_layers} x {cfg.d_mlp} ReLU MLP, AdamW wd {cfg.weight_decay:g}: "
             f"accuracy against step (Omnigrok Fig. 3 layout; MNIST there)")
    style_axes(ax_t, "optimisation step", "accuracy", title, grid={})
    style_axes(ax_w, "weight norm (every weight and bias)", "accuracy",
               "accuracy against the weight norm along training (the norm falls with time)", grid={})
    handles = [Line2D([], [], color=COLORS["train"], label="train accuracy"),
               Line2D([], [], color=COLORS["test"], label="test accuracy"),
               Line2D([], [], color=COLORS["weights"], label="weight norm (left panel)")]
    handles += [Line2D([], [], color="black", linestyle=STYLES[label], label=LABELS[label]) for label in RUN_SPECS]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    return fig


__all__ = ["LAPTOP_TIME", "PAPER", "RUNS", "RUN_SPECS", "SCALES", "omnigrok_config", "omnigrok_figure", "run",
           "run_values", "torch_default_norm"]
