"""``grokking reproduce barak2022``: sparse parity (Barak, Edelman, Goel, Kakade, Malach, Zhang 2022).

The task (``op="parity"``): strings of n bits, the label the XOR of k of them (the first k,
:func:`grokking.data.parity_examples`). Barak et al. train on fresh batches (online SGD) and see
the loss sit at chance for a long stretch, then drop within a short one; a hidden progress
measure of the weights grows all along. Here two runs, each on a fixed set of distinct strings
large enough that train and test curves coincide (the near-online regime, not the paper's
finite-sample grokking of its Appendix C.5):

- ``mlp``: (50, 3)-parity, a width-100 ReLU MLP over the bits as -1/+1 (their configuration
  (ii)), plain SGD (no momentum) at lr 0.1 with batches of 32, as in the paper;
- ``transformer``: the seed's 1-layer transformer (d_model 64 at laptop scale) on (20, 3)-parity,
  reading the bits and ``=``, trained with Adam (the paper's transformer needed Adam too).

From the runs' weight snapshots (one per epoch) come the hidden progress measures, beside the
loss in the figure, each also for a random-label control of the run (:func:`control_config`: the
same init, split and order, half the training labels flipped at random; the paper's Fig. 3, right,
tells a measure of feature amplification from one of training on noise the same way):

- :func:`movement_inf` ``||W_t - W_0||_inf``, the paper's rho (Appendix C.3, Fig. 13): for the
  MLP over its first layer, for the transformer over every weight;
- :func:`lead_neuron_share` (MLP): the lead neuron's share of squared input weight on the k relevant
  bits (the largest over the hidden neurons);
- :func:`attention_share` (transformer): how much of the ``=`` position's attention goes to the k
  relevant bits, over the first :data:`ATTENTION_EXAMPLES` test strings and all heads (uniform
  attention: k/(n+1)).

The plateau is read from the test accuracy (:func:`plateau`): it ends at the last evaluation
below :data:`LEAVE_ACC` before the first at :data:`REACH_ACC`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .checkpoint import load_model, load_snapshot_state
from .config import Config
from .experiment import Context, Outcome, Row, epoch_text, run_dir_for, train_or_reuse
from .figures import COLORS, new_figure, style_axes
from .rundir import read_metrics, snapshots

PAPER = ("Barak, Edelman, Goel, Kakade, Malach, Zhang 2022, Hidden progress in deep learning: SGD learns "
         "parities near the computational limit (arXiv:2207.08799)")
RUNS = ("(50,3)-parity with a width-100 ReLU MLP (SGD lr 0.1, batch 32) and (20,3)-parity with the seed's "
        "1-layer transformer (d_model 64, Adam lr 1e-3, batch 32), each on a fixed set of distinct strings, "
        "and each again on random labels; then rho = ||W_t - W_0||_inf and the weight (MLP) or attention "
        "(transformer) on the relevant bits, from one snapshot per epoch")
LAPTOP_TIME = "about 2-3 min (2.1 measured on 2 busy cores)"

LN2 = math.log(2.0)  # the loss of a coin flip: the plateau's height
LEAVE_ACC = 0.55  # test accuracy below this is "at chance" (4.5 and 9 standard errors above 50% at 2,048, 8,192)
REACH_ACC = 0.99  # ... and at this, "solved"
PLATEAU_BAND = 0.05  # nats: the plateau starts at the first evaluation within this of ln 2
ATTENTION_EXAMPLES = 512
MODELS = ("mlp", "transformer")
LABELS = {"mlp": "MLP", "transformer": "transformer"}

# Measured here (AMD EPYC, 2 shared cores, one thread): the MLP at (50, 3) left chance after 5-6k
# steps and reached 99% test accuracy at step 6,144-7,168 (seeds 0-2), 45 s for 20k steps; the
# transformer at (20, 3) sat at ln 2 until step 3,328 and was at 100% at 3,584 (Adam lr 1e-3,
# beta2 0.999), 13-30 ms a step. Its seed's size (d_model 128) at n = 30 took 45 ms a step: too slow.
_COMMON: dict[str, Any] = {"op": "parity", "parity_k": 3, "batch_size": 32, "eval_every": 1, "checkpoint_every": 1,
                           "checkpoint_log": 0, "warmup_steps": 0, "report": False}
_MLP: dict[str, Any] = {"parity_bits": 50, "model": "mlp", "mlp_input": "value", "mlp_act": "relu", "d_mlp": 100,
                        "optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "weight_decay": 0.0,
                        "n_examples": 40_960, "frac": 0.8}  # 32,768 train, 8,192 = 2^13 test strings
_TRANSFORMER: dict[str, Any] = {"parity_bits": 20, "model": "transformer", "d_model": 64, "n_heads": 4,
                                "d_mlp": 256, "optimizer": "adam", "lr": 1e-3, "beta2": 0.999,
                                "weight_decay": 0.0, "n_examples": 10_240, "frac": 0.8}  # 8,192 train
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {"mlp": {**_MLP, "parity_bits": 8, "parity_k": 2, "d_mlp": 32, "n_examples": 256, "frac": 0.5,
                      "epochs": 30},
              "transformer": {**_TRANSFORMER, "parity_bits": 6, "parity_k": 2, "d_model": 16, "n_heads": 2,
                              "d_mlp": 32, "n_examples": 64, "frac": 0.5, "epochs": 4}},
    "laptop": {"mlp": {**_MLP, "epochs": 12}, "transformer": {**_TRANSFORMER, "epochs": 28}},
    # The paper's Figure 1 problem, (50, 3), for both, and its transformer (D.1.7: d_emb 1024, 128 heads of
    # width 8, Adam lr 3e-4, B = 32; its d_mlp is not confirmed: 4 d_model here). Not run on this machine:
    # at d_model 1024 a step takes seconds on a CPU.
    "paper": {"mlp": {**_MLP, "epochs": 100},
              "transformer": {**_TRANSFORMER, "parity_bits": 50, "d_model": 1024, "n_heads": 128, "d_head": 8,
                              "d_mlp": 4096, "lr": 3e-4, "n_examples": 40_960, "epochs": 100}},
}


# The random-label controls (the paper's Fig. 3, right: a measure must tell feature amplification from
# training on noise): the same init, split and order, half the training labels flipped at random, so that
# they are independent of the bits. Their budgets cover the plateaus measured above.
CONTROL_EPOCHS = {"smoke": {"mlp": 30, "transformer": 4}, "laptop": {"mlp": 12, "transformer": 16},
                  "paper": {"mlp": 100, "transformer": 100}}
CONTROL_NOISE = 0.5


def parity_configs(scale: str, threads: int) -> dict[str, Config]:
    """The two runs' configs at ``scale``: ``{"mlp": ..., "transformer": ...}``."""
    return {name: Config().replace(**{**_COMMON, **SETTINGS[scale][name], "threads": threads}) for name in MODELS}


def control_config(cfg: Config, scale: str) -> Config:
    """``cfg``'s random-label control: :data:`CONTROL_NOISE` of the training labels flipped (the test
    labels keep theirs), for :data:`CONTROL_EPOCHS` epochs."""
    return cfg.replace(label_noise=CONTROL_NOISE, epochs=CONTROL_EPOCHS[scale][cfg.model])


# --- the hidden progress measures ---------------------------------------------------------------------
def movement_inf(weights: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]) -> float:
    """``||W_t - W_0||_inf`` over the given weights: the largest movement of any one entry."""
    return max((float((weights[k] - initial[k]).abs().max()) for k in weights if weights[k].numel()), default=0.0)


def lead_neuron_share(W_in: torch.Tensor, k: int) -> float:
    """The lead neuron's share: over the rows (neurons) of the first layer ``W_in [d_mlp, n]``, the
    largest share of a row's squared weight on the first ``k`` input columns, the relevant bits. A
    neuron that ignores which bits matter has ``k / n`` on average (the largest of many, more); one
    that reads only them, 1."""
    power = W_in.double().pow(2)
    total = power.sum(1)
    shares = power[:, :k].sum(1)[total > 0] / total[total > 0]
    return float(shares.max()) if shares.numel() else math.nan


def attention_share(model: torch.nn.Module, tokens: torch.Tensor, k: int) -> float:
    """The mean share of the last position's (``=``'s) attention on the first ``k`` positions, over the
    examples ``tokens [B, n + 1]``, every head and every block."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    shares = [pattern[:, :, -1, :k].sum(-1).mean() for pattern in cache.values()]  # [batch, head, query, key]
    return float(torch.stack(shares).mean())


def hidden_progress(run_dir: Path, cfg: Config) -> dict[str, list[float]]:
    """The measures at every snapshot of the run: ``{"epoch", "step", "rho", "share"}`` (lists, in
    snapshot order). ``share`` is :func:`lead_neuron_share` for the MLP, :func:`attention_share` for
    the transformer; ``rho`` is :func:`movement_inf` from the epoch-0 snapshot."""
    records = read_metrics(run_dir)
    step_of = {r["epoch"]: r["step"] for r in records}
    loaded = load_model(run_dir)
    model, dataset = loaded.model, loaded.dataset
    tokens = dataset.tokens[dataset.test_idx[:ATTENTION_EXAMPLES]]
    found = snapshots(run_dir)
    out: dict[str, list[float]] = {"epoch": [], "step": [], "rho": [], "share": []}
    if not found:
        return out
    initial, _ = load_snapshot_state(found[0][1])
    for epoch, path in found:
        state, _ = load_snapshot_state(path)
        if cfg.model == "mlp":
            moved = {"layers.0.W_in": state["layers.0.W_in"]}
            share = lead_neuron_share(state["layers.0.W_in"], cfg.parity_k)
        else:
            moved = state
            model.load_state_dict(state, strict=True)
            share = attention_share(model, tokens, cfg.parity_k)
        out["epoch"].append(epoch)
        out["step"].append(step_of.get(epoch, math.nan))
        out["rho"].append(movement_inf(moved, initial))
        out["share"].append(share)
    return out


def share_chance(cfg: Config) -> float:
    """What :func:`hidden_progress`'s ``share`` is for weights that ignore which bits matter: k/n for
    one neuron of the MLP (the largest of many is more: compare with the control), k/(n+1) for uniform
    attention."""
    return cfg.parity_k / cfg.parity_bits if cfg.model == "mlp" else cfg.parity_k / (cfg.parity_bits + 1)


# --- the plateau ------------------------------------------------------------------------------------------
def plateau(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The plateau and its end, from the test curves: ``step_99`` (first evaluation at :data:`REACH_ACC`
    test accuracy, None: never), ``end`` (the last evaluation before it still below :data:`LEAVE_ACC`;
    with no 99%, the last below it), ``start`` (the first evaluation whose test loss is within
    :data:`PLATEAU_BAND` of ln 2), ``jump`` (``step_99 - end``), ``fraction`` (``end / step_99``: the share
    of the time to 99% spent at chance) and ``loss`` (the mean test loss from ``start`` to ``end``)."""
    step_99 = next((r["step"] for r in records if r["test_acc"] >= REACH_ACC), None)
    before = [r for r in records if step_99 is None or r["step"] < step_99]
    at_chance = [r for r in before if r["test_acc"] < LEAVE_ACC]
    end = at_chance[-1]["step"] if at_chance else None
    start = next((r["step"] for r in records if abs(r["test_loss"] - LN2) < PLATEAU_BAND), None)
    on = [r["test_loss"] for r in records if start is not None and end is not None and start <= r["step"] <= end]
    return {"step_99": step_99, "end": end, "start": start,
            "jump": None if step_99 is None or end is None else step_99 - end,
            "fraction": None if not step_99 or end is None else end / step_99,
            "loss": float(np.mean(on)) if on else None}


def _at(measures: dict[str, list[float]], key: str, step: int | None) -> float | None:
    """``measures[key]`` at the snapshot of ``step`` (None when the run has no snapshot there)."""
    if step is None:
        return None
    return next((v for s, v in zip(measures["step"], measures[key]) if s == step), None)


def _summary(cfg: Config, run_dir: Path, summary: dict[str, Any], control_dir: Path,
             control_cfg: Config) -> dict[str, Any]:
    """The table's numbers for one model: its plateau, its measures and its control's."""
    records = read_metrics(run_dir)
    plat = plateau(records)
    measures = hidden_progress(run_dir, cfg)
    control = hidden_progress(control_dir, control_cfg)
    final = summary.get("final") or (records[-1] if records else {})
    one_epoch = measures["step"][1] if len(measures["step"]) > 1 else None
    return {**{f"plateau_{k}": v for k, v in plat.items() if k != "step_99"},
            "step_test_acc_99": plat["step_99"],
            "epoch_test_acc_99": next((r["epoch"] for r in records if r["test_acc"] >= REACH_ACC), None),
            "steps_per_epoch": one_epoch, "steps_run": records[-1]["step"] if records else None,
            "final_test_acc": final.get("test_acc"),
            "rho_one_epoch": _at(measures, "rho", one_epoch), "rho_plateau_end": _at(measures, "rho", plat["end"]),
            "rho_at_99": _at(measures, "rho", plat["step_99"]),
            "control_rho_plateau_end": _at(control, "rho", plat["end"]),
            "share_chance": share_chance(cfg), "share_initial": measures["share"][0] if measures["share"] else None,
            "share_plateau_end": _at(measures, "share", plat["end"]),
            "share_at_99": _at(measures, "share", plat["step_99"]),
            "control_share_plateau_end": _at(control, "share", plat["end"]),
            "train_seconds": (summary.get("seconds") or 0.0), "measures": measures, "control_measures": control}


# --- the experiment -------------------------------------------------------------------------------------
def _task(cfg: Config) -> str:
    return f"({cfg.parity_bits},{cfg.parity_k})-parity"


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _conditions(cfg: Config) -> str:
    n_train = int(cfg.frac * cfg.n_examples)
    data = (f"a fixed set of {n_train:,} training strings ({cfg.n_examples - n_train:,} test), not fresh batches "
            f"(the paper: online, validated on 2^13 fresh strings)")
    if cfg.model == "mlp":
        return (f"{_task(cfg)}, width {cfg.d_mlp}, SGD lr {cfg.lr:g}, batch {cfg.batch_size}, as the paper's "
                f"(ii); {data}; cross-entropy over 2 logits (paper: hinge, square or cross-entropy on one output); "
                f"init randn/sqrt(fan_in), zero biases (paper: Xavier, Kaiming or sign; its biases not "
                f"confirmed); one seed (paper: 25 trials)")
    return (f"{_task(cfg)} (paper's figure: (50,3)); the seed's 1-layer transformer, d_model {cfg.d_model}, "
            f"{cfg.n_heads} heads, d_mlp {cfg.d_mlp} (paper: d_emb 1024, 128 heads of width 8); Adam lr {cfg.lr:g}, "
            f"batch {cfg.batch_size} (paper: Adam lr 3e-4, batch 32); {data}; cross-entropy; one seed")


def _measure_name(name: str) -> str:
    if name == "mlp":
        return "lead neuron's share of weight on the relevant bits"
    return "attention of = on the relevant bits"


def _rows(name: str, cfg: Config, v: dict[str, Any]) -> list[Row]:
    label = f"{LABELS[name]}, {_task(cfg)}"
    step_99, end = v["step_test_acc_99"], v["plateau_end"]
    reached = (f"step {epoch_text(step_99)} (epoch {epoch_text(v['epoch_test_acc_99'])}; "
               f"{epoch_text(v['steps_per_epoch'])} steps an epoch)" if step_99 is not None
               else f"never within {epoch_text(v['steps_run'])} steps")
    if end is None:
        plateau_text = f"test accuracy never below {LEAVE_ACC:.0%}: no plateau"
    else:
        plateau_text = (f"test accuracy < {LEAVE_ACC:.0%} until step {end:,} (mean test loss "
                        f"{_num(v['plateau_loss'])}; ln 2 = {LN2:.3f}), then {LEAVE_ACC:.0%} to {REACH_ACC:.0%} "
                        f"in {epoch_text(v['plateau_jump'], 'n/a (never 99%)')} steps")
    fraction = "n/a" if v["plateau_fraction"] is None else f"{v['plateau_fraction']:.0%} (step {end:,} of {step_99:,})"
    control = (f"the same init, split and order with {CONTROL_NOISE:.0%} of the training labels flipped at random; "
               f"one snapshot an epoch ({epoch_text(v['steps_per_epoch'])} steps)")
    at_end = "at the plateau's end" + (f" (step {end:,})" if end is not None else " (no plateau)")
    rho = (f"{_num(v['rho_one_epoch'])} after one epoch, {_num(v['rho_plateau_end'])} {at_end} vs "
           f"{_num(v['control_rho_plateau_end'])} on random labels, {_num(v['rho_at_99'])} at 99%")
    chance = (f"a neuron ignoring the bits: {v['share_chance']:.3f} on average" if name == "mlp"
              else f"uniform attention: {v['share_chance']:.3f}")
    share = (f"{_num(v['share_initial'], '.3f')} at init ({chance}), "
             f"{_num(v['share_plateau_end'], '.3f')} {at_end} vs {_num(v['control_share_plateau_end'], '.3f')} on "
             f"random labels, {_num(v['share_at_99'], '.3f')} at 99%")
    return [
        Row(f"{label}: step test accuracy passes 99%",
            "not stated for one curve; all runs of (n,k) in {10,20,30} x {2,3,4} converged in t_c <= c n^(alpha k) "
            "<= 1e5 steps (Sec. 3, Fig. 1 right)", reached, _conditions(cfg)),
        Row(f"{label}: loss plateau, then a sudden drop",
            "long durations of seemingly no progress, then a rapid decrease of the validation error (Sec. 3, "
            "Fig. 1 left, (50,3))", plateau_text,
            f"'at chance': test accuracy < {LEAVE_ACC:.0%}; evaluated once an epoch"),
        Row(f"{label}: share of the time to 99% spent at chance",
            "T(0.49)/T(0) >= 1 - O(n'^(1-k/2)) (Theorem 6: disjoint-PolyNet, gradient flow)", fraction,
            f"another network and SGD/Adam; ours to {LEAVE_ACC:.0%} and {REACH_ACC:.0%} accuracy, not 51% and 100%"),
        Row(f"{label}: hidden progress, rho = inf-norm of W_t - W_0",
            "grows while loss and accuracy are flat, and tells feature amplification from training on noise "
            "(Fig. 3 right, Fig. 13; no number stated)", rho,
            control + ("; rho over the first layer, as the paper's MLP plots" if name == "mlp"
                       else "; rho over every weight, under Adam (the paper shows none for its transformer)")),
        Row(f"{label}: hidden progress, {_measure_name(name)}",
            "progress becomes visible in the loss only once the relevant weights exceed all irrelevant ones "
            "(App. C.3; no number stated)", share,
            control + ("" if name == "mlp" else f"; over {ATTENTION_EXAMPLES} test strings and every head; not "
                                                 f"a measure of the paper")),
    ]


def run(ctx: Context) -> Outcome:
    cfgs = parity_configs(ctx.scale, ctx.threads)
    values: dict[str, Any] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    run_dirs = []
    rows: list[Row] = []
    for name, cfg in cfgs.items():
        label = f"{name}_n{cfg.parity_bits}_k{cfg.parity_k}"
        run_dir = run_dir_for(ctx, label, cfg)
        summary = train_or_reuse(cfg, run_dir, ctx)
        control_cfg = control_config(cfg, ctx.scale)
        control_dir = run_dir_for(ctx, f"{label}_random_labels", control_cfg)
        control_summary = train_or_reuse(control_cfg, control_dir, ctx)
        ctx.log(f"reproduce {ctx.name}: hidden progress measures of {run_dir} and {control_dir}")
        values[name] = _summary(cfg, run_dir, summary, control_dir, control_cfg)
        values[name]["control_train_seconds"] = control_summary.get("seconds") or 0.0
        records[name] = read_metrics(run_dir)
        run_dirs += [str(run_dir), str(control_dir)]
        rows += _rows(name, cfg, values[name])
    values["train_seconds"] = round(sum(values[n]["train_seconds"] + values[n]["control_train_seconds"]
                                        for n in MODELS), 1)
    return Outcome(rows, values, parity_figure(records, values, cfgs), run_dirs)


def parity_figure(records: dict[str, list[dict[str, Any]]], values: dict[str, Any], cfgs: dict[str, Config]) -> Figure:
    """One row per model, the paper's Fig. 1 (left) and Fig. 3/13 in our data: loss and accuracy against
    step with the plateau shaded and the step of 99% test accuracy marked, and beside them the hidden
    progress measures of the run (solid) and of its random-label control (dashed). The paper states no
    numbers to mark: ln 2 and chance are drawn instead."""
    fig = new_figure((14, 8.4), layout="constrained")
    axes = fig.subplots(len(MODELS), 3)
    for row, name in zip(axes, MODELS):
        ax_loss, ax_acc, ax_hp = row
        recs, v, cfg = records[name], values[name], cfgs[name]
        steps = [r["step"] for r in recs]
        for split in ("train", "test"):
            ax_loss.plot(steps, [r[f"{split}_loss"] for r in recs], color=COLORS[split], marker=".",
                         label=f"{split} loss")
            ax_acc.plot(steps, [r[f"{split}_acc"] for r in recs], color=COLORS[split], marker=".",
                        label=f"{split} accuracy")
        ax_loss.axhline(LN2, color=COLORS["guide"], linestyle=":", linewidth=1, label="ln 2 (a coin flip)")
        ax_acc.axhline(0.5, color=COLORS["guide"], linestyle=":", linewidth=1, label="chance")
        for ax in (ax_loss, ax_acc, ax_hp):
            start, end = v["plateau_start"], v["plateau_end"]
            if start is not None and end is not None and end > start:
                ax.axvspan(start, end, color=COLORS["band"],
                           label=f"plateau (test acc. < {LEAVE_ACC:.0%})" if ax is ax_acc else None)
            if v["step_test_acc_99"] is not None:
                ax.axvline(v["step_test_acc_99"], color=COLORS["test"], linestyle="--", linewidth=1,
                           label=f"test 99% at step {v['step_test_acc_99']:,}" if ax is ax_acc else None)
        ax_loss.set_ylim(0, min(max([r["test_loss"] for r in recs] + [LN2]) * 1.05, 2.0))
        ax_acc.set_ylim(0.4, 1.02)
        title = f"{LABELS[name]}, {_task(cfg)}: " + (
            "no 99% within the budget" if v["step_test_acc_99"] is None else
            f"at chance to step {epoch_text(v['plateau_end'])}, 99% at {v['step_test_acc_99']:,}")
        style_axes(ax_loss, "step", "cross-entropy", title, grid={}, legend=True)
        style_axes(ax_acc, "step", "accuracy", "accuracy (the paper's Fig. 1 plots error and loss)", grid={},
                   legend=True)
        twin = ax_hp.twinx()
        short = "lead neuron's share on the k bits" if name == "mlp" else "attention of = on the k bits"
        for key, style, what in (("measures", "-", ""), ("control_measures", "--", ", random labels")):
            m = v[key]
            ax_hp.plot(m["step"], m["share"], color=COLORS["key"], linestyle=style, marker=".", label=short + what)
            twin.plot(m["step"], m["rho"], color=COLORS["weights"], linestyle=style, marker=".", label="rho" + what)
        if name == "transformer":
            ax_hp.axhline(v["share_chance"], color=COLORS["guide"], linestyle=":", linewidth=1,
                          label=f"uniform attention {v['share_chance']:.2f}")
        ax_hp.set_ylim(0, 1.02)
        twin.set_ylabel("rho = ||W_t - W_0||_inf" + (", first layer" if name == "mlp" else ", all weights"),
                        color=COLORS["weights"])
        style_axes(ax_hp, "step", "share", "hidden progress (the paper's Fig. 3, 13: rho)", grid={})
        handles, labels = ax_hp.get_legend_handles_labels()
        more, more_labels = twin.get_legend_handles_labels()
        ax_hp.legend(handles + more, labels + more_labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15),
                     ncol=2, handlelength=3)  # below the panel: clear of the curves
    fig.suptitle("Barak et al. 2022, sparse parity, our data: the loss sits at ln 2, then drops (paper: online SGD "
                 "on (50,3); here fixed sets of strings; dashed: the same runs on random labels)", fontsize=10)
    return fig


__all__ = ["ATTENTION_EXAMPLES", "CONTROL_EPOCHS", "CONTROL_NOISE", "LAPTOP_TIME", "LEAVE_ACC", "LN2", "MODELS",
           "PAPER", "REACH_ACC", "RUNS", "SETTINGS", "attention_share", "control_config", "hidden_progress",
           "movement_inf", "parity_configs", "parity_figure", "plateau", "lead_neuron_share", "run", "share_chance"]
