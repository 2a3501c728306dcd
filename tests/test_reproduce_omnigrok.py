"""grokking reproduce omnigrok2023 (Omnigrok on sklearn's digits): the smoke scale end to end, its
numbers against independent computations from the run directories and the initial weights, the
weight-decay effect the experiment rests on, the configs of every scale, and a rerun that reuses."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from grokking.config import build_dataset
from grokking.reproduce import reproduce
from grokking.reproduce_omnigrok import (
    ALPHA,
    RUN_SPECS,
    SCALES,
    TEST_PASS,
    TRAIN_PASS,
    omnigrok_config,
    omnigrok_figure,
    torch_default_norm,
)
from grokking.rundir import read_json, read_metrics


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("omnigrok")
    return out, reproduce("omnigrok2023", out, scale="smoke", threads=1, quiet=True)


def run_dirs(result: dict) -> dict[str, Path]:
    dirs = [Path(d) for d in result["runs"]]
    assert len(dirs) == len(RUN_SPECS)
    return dict(zip(RUN_SPECS, dirs))


def first_step(records: list[dict], key: str, threshold: float) -> int | None:
    for r in records:
        if r[key] >= threshold:
            return r["step"]
    return None


def test_writes_figure_table_and_json(smoke):
    out, result = smoke
    for name in ("omnigrok2023.png", "reproduce.json", "reproduce.md"):
        assert (out / name).is_file()
    image = imread(out / "omnigrok2023.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    table = (out / "reproduce.md").read_text()
    assert table.startswith("## omnigrok2023: Liu, Michaud, Tegmark 2023")
    written = read_json(out / "reproduce.json")
    assert written["scale"] == "smoke" and written["values"] == result["values"]
    for row in written["rows"]:
        assert row["paper"] and row["ours"] and f"| {row['quantity']} |" in table
    conditions = " ".join(r["conditions"] for r in written["rows"])
    assert "MSE" in conditions and "digits" in conditions  # the loss and data that differ are said
    assert len(written["trained"]) == 3 and written["reused"] == []


def test_run_configs_are_the_papers_network_on_1000_digits(smoke):
    _, result = smoke
    for label, run_dir in run_dirs(result).items():
        cfg = omnigrok_config("smoke", 1, *RUN_SPECS[label])
        stored = read_json(run_dir / "config.json")["config"]
        assert stored == {**cfg.to_dict(), "threads": 1}
        assert len(build_dataset(cfg).train_idx) == 1000 and len(build_dataset(cfg).test_idx) == 797
        assert (stored["init_scale"], stored["weight_decay"] > 0) == RUN_SPECS[label]
        assert stored["mlp_layers"] == 2 and stored["batch_size"] == 200 and stored["mlp_act"] == "relu"
        assert stored["beta2"] == 0.999 and stored["warmup_steps"] == 0  # torch's AdamW defaults, no warm-up


def test_values_equal_what_the_run_directories_say(smoke):
    _, result = smoke
    values = result["values"]
    for label, run_dir in run_dirs(result).items():
        records = read_metrics(run_dir)
        mine = values["runs"][label]
        assert mine["step_train_acc_99"] == first_step(records, "train_acc", TRAIN_PASS)
        assert mine["step_test_acc_95"] == first_step(records, "test_acc", TEST_PASS)
        at_train = next((r["test_acc"] for r in records if r["train_acc"] >= TRAIN_PASS), None)
        assert mine["test_acc_at_train_99"] == at_train
        at_test = next((r["weight_norm"] for r in records if r["test_acc"] >= TEST_PASS), None)
        assert mine["weight_norm_at_test_95"] == at_test
        summary = read_json(run_dir / "summary.json")
        assert mine["final_test_acc"] == summary["final"]["test_acc"] == records[-1]["test_acc"]
        assert mine["best_test_acc"] == max(r["test_acc"] for r in records)
        assert mine["steps_run"] == records[-1]["step"] == SCALES["smoke"]["steps"]


def test_initial_weight_norm_is_init_scale_times_the_default_draw(smoke):
    """The recorded norm at step 0, against the weights drawn afresh from the seed's generator in the
    MLP's order (W_in of each layer, then W_U; zero biases), times the init scale."""
    _, result = smoke
    d = SCALES["smoke"]["d_mlp"]
    g = torch.Generator().manual_seed(0)
    draws = [torch.randn(d, 64, generator=g) / 8.0, torch.randn(d, d, generator=g) / math.sqrt(d),
             torch.randn(d, 10, generator=g) / math.sqrt(d)]
    base = math.sqrt(sum(float(w.double().pow(2).sum()) for w in draws))
    for label, run_dir in run_dirs(result).items():
        first = read_metrics(run_dir)[0]
        assert first["step"] == 0
        assert first["weight_norm"] == pytest.approx(RUN_SPECS[label][0] * base, rel=1e-5)
    assert result["values"]["initial_norm_ratio"] == pytest.approx(ALPHA, rel=1e-6)


def test_torch_default_norm_matches_pytorchs_linear_layers():
    cfg = omnigrok_config("laptop", 1, 1.0, True)
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 200), torch.nn.Linear(200, 200), torch.nn.Linear(200, 10)]
    sampled = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for layer in layers for p in layer.parameters()))
    assert torch_default_norm(cfg) == pytest.approx(sampled, rel=0.02)


def test_weight_decay_is_what_shrinks_the_norm(smoke):
    """The experiment's premise, at the smoke budget: without weight decay the large init keeps its
    norm (and generalises worse than the standard init); with it, the norm falls."""
    _, result = smoke
    runs = result["values"]["runs"]
    no_wd, large, standard = runs["large_init_no_wd"], runs["large_init"], runs["standard_init"]
    assert no_wd["final_weight_norm"] == pytest.approx(no_wd["initial_weight_norm"], rel=0.02)
    assert large["final_weight_norm"] < 0.5 * large["initial_weight_norm"]
    assert no_wd["final_test_acc"] < standard["final_test_acc"]


def test_scales_budgets():
    for scale, steps, wd in (("laptop", 20_000, 0.1), ("paper", 100_000, 0.01)):
        cfg = omnigrok_config(scale, 1, ALPHA, True)
        assert cfg.epochs * 5 == steps and cfg.weight_decay == wd and cfg.d_mlp == 200 and cfg.lr == 1e-3
        assert omnigrok_config(scale, 1, ALPHA, False).weight_decay == 0.0


def test_figure_has_both_panels(smoke):
    _, result = smoke
    # reproduce() returns the rows and values; the figure is drawn again from the same records here.
    records = {label: read_metrics(d) for label, d in run_dirs(result).items()}
    fig = omnigrok_figure(records, result["values"], omnigrok_config("smoke", 1, ALPHA, True))
    ax_t, ax_w, ax_norm = fig.axes
    assert ax_t.get_xscale() == "log" and ax_w.get_xscale() == "linear"
    assert len(ax_t.get_lines()) >= 6 and len(ax_norm.get_lines()) == 3
    # panel (b) plots accuracy against the weight norm: its x data are the recorded norms
    xs = ax_w.get_lines()[0].get_xdata()
    assert list(xs) == [r["weight_norm"] for r in records["large_init"]]


def test_rerun_reuses_the_runs(smoke):
    out, result = smoke
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert len(before) >= 3
    again = reproduce("omnigrok2023", out, scale="smoke", threads=1, quiet=True)
    assert again["trained"] == [] and sorted(again["reused"]) == sorted(result["runs"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == before
    assert again["values"] == result["values"]
