"""grokking reproduce barak2022 (sparse parity): the smoke scale end to end, its table read back against
the run directories, the hidden progress measures recomputed from the snapshot files with numpy alone,
the plateau rule on hand-made curves, and a rerun that trains nothing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from safetensors.numpy import load_file

from grokking.config import Config
from grokking.data import parity_examples
from grokking.reproduce import EXPERIMENTS, reproduce
from grokking.reproduce_parity import (
    ATTENTION_EXAMPLES,
    CONTROL_EPOCHS,
    CONTROL_NOISE,
    LEAVE_ACC,
    LN2,
    MODELS,
    REACH_ACC,
    SETTINGS,
    movement_inf,
    parity_configs,
    plateau,
    lead_neuron_share,
    share_chance,
)
from grokking.rundir import read_metrics

NAME = "barak2022"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("barak")
    return out, reproduce(NAME, out, scale="smoke", threads=1, quiet=True)


def run_dir_of(result: dict, model: str, control: bool = False) -> Path:
    (found,) = [Path(r) for r in result["runs"]
                if Path(r).name.startswith(model + "_") and ("_random_labels_" in Path(r).name) == control]
    return found


def config_of(run_dir: Path) -> Config:
    return Config(**json.loads((run_dir / "config.json").read_text())["config"])


def snapshot_files(run_dir: Path) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Every epoch_*.safetensors of the run, read with safetensors' numpy loader (not the package's)."""
    files = sorted((run_dir / "checkpoints").glob("epoch_*.safetensors"))
    return [(int(f.stem.split("_")[1]), load_file(str(f))) for f in files]


def test_registered_and_writes_figure_table_json(smoke):
    out, result = smoke
    assert EXPERIMENTS[NAME].run is not None
    assert EXPERIMENTS[NAME].laptop_time != "-" and "arXiv:2207.08799" in EXPERIMENTS[NAME].paper
    written = json.loads((out / "reproduce.json").read_text())
    assert written["name"] == NAME and written["scale"] == "smoke" 
    table = (out / "reproduce.md").read_text()
    assert table.startswith(f"## {NAME}:") and "| quantity | paper | ours | conditions that differ |" in table
    for row in written["rows"]:
        assert set(row) == {"quantity", "paper", "ours", "conditions"} and row["paper"] and row["ours"]
        assert f"| {row['quantity']} |" in table
    assert [r["quantity"].split(",")[0] for r in written["rows"]] == ["MLP"] * 5 + ["transformer"] * 5
    image = imread(out / f"{NAME}.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert len(written["runs"]) == 4 and sorted(written["trained"]) == sorted(written["runs"])
    assert len(written["rows"]) == 10


def test_the_runs_are_the_configured_ones(smoke):
    _, result = smoke
    for model in MODELS:
        cfg = config_of(run_dir_of(result, model))
        wanted = parity_configs("smoke", 1)[model]
        assert cfg.key() == wanted.key() and cfg.op == "parity" and cfg.model == model
        assert cfg.checkpoint_every == 1 and cfg.eval_every == 1  # a snapshot and an evaluation every epoch


def test_plateau_values_equal_the_metrics(smoke):
    _, result = smoke
    for model in MODELS:
        v = result["values"][model]
        records = read_metrics(run_dir_of(result, model))
        steps = [r["step"] for r in records]
        accs = [r["test_acc"] for r in records]
        step_99 = next((s for s, a in zip(steps, accs) if a >= REACH_ACC), None)
        assert v["step_test_acc_99"] == step_99
        below = [s for s, a in zip(steps, accs) if a < LEAVE_ACC and (step_99 is None or s < step_99)]
        assert v["plateau_end"] == (below[-1] if below else None)
        assert v["steps_run"] == steps[-1] and v["final_test_acc"] == pytest.approx(accs[-1])


def _lead(W: np.ndarray, k: int) -> float:
    """The largest row share of squared weight on the first k columns."""
    W = W.astype(np.float64) ** 2
    return float((W[:, :k].sum(1) / W.sum(1)).max())


def _measured(smoke, model: str, control: bool):
    """(the experiment's result, the run's directory, its config, its snapshots, its recorded measures)."""
    _, result = smoke
    run_dir = run_dir_of(result, model, control)
    return (result, run_dir, config_of(run_dir), snapshot_files(run_dir),
            result["values"][model]["control_measures" if control else "measures"])


@pytest.mark.parametrize("control", [False, True], ids=["run", "random_labels"])
def test_mlp_measures_equal_a_numpy_recomputation(smoke, control):
    result, run_dir, cfg, files, m = _measured(smoke, "mlp", control)
    W0 = files[0][1]["model.layers.0.W_in"].astype(np.float64)
    k, n = cfg.parity_k, cfg.parity_bits
    assert W0.shape == (cfg.d_mlp, n)
    rho = [float(np.abs(f["model.layers.0.W_in"] - W0).max()) for _, f in files]
    share = [_lead(f["model.layers.0.W_in"], k) for _, f in files]
    assert m["epoch"] == [e for e, _ in files]
    steps_per_epoch = result["values"]["mlp"]["steps_per_epoch"]
    assert m["step"] == [e * steps_per_epoch for e, _ in files]
    np.testing.assert_allclose(m["rho"], rho, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m["share"], share, rtol=1e-9)
    assert m["rho"][0] == 0.0 and m["rho"][-1] > 0  # training moved the first layer
    assert result["values"]["mlp"]["share_chance"] == pytest.approx(k / n)


def _attention_share_numpy(weights: dict[str, np.ndarray], tokens: np.ndarray, k: int, n_heads: int) -> float:
    """The seed transformer's first block, recomputed: x = W_E[:, t] + W_pos[p]; the last position's
    query against every key, softmax over all positions (the causal mask leaves the last row whole)."""
    W_E, W_pos = weights["model.embed.W_E"], weights["model.pos_embed.W_pos"]
    W_Q, W_K = weights["model.blocks.0.attn.W_Q"], weights["model.blocks.0.attn.W_K"]
    d_head = W_Q.shape[1]
    assert W_Q.shape[0] == n_heads
    x = W_E.T[tokens].astype(np.float64) + W_pos[: tokens.shape[1]]  # [B, T, d_model]
    q = np.einsum("bd,hed->bhe", x[:, -1], W_Q)  # [B, H, d_head]
    keys = np.einsum("btd,hed->bhte", x, W_K)  # [B, H, T, d_head]
    scores = np.einsum("bhe,bhte->bht", q, keys) / math.sqrt(d_head)
    scores -= scores.max(-1, keepdims=True)
    pattern = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    return float(pattern[:, :, :k].sum(-1).mean())


@pytest.mark.parametrize("control", [False, True], ids=["run", "random_labels"])
def test_transformer_measures_equal_a_numpy_recomputation(smoke, control):
    result, run_dir, cfg, files, m = _measured(smoke, "transformer", control)
    last = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    # The test strings, rebuilt from the task's definition: parity_examples' tokens, the stored split.
    tokens, labels = parity_examples(cfg.parity_bits, cfg.parity_k, cfg.n_examples, cfg.seed)
    assert np.array_equal(labels, tokens[:, : cfg.parity_k].sum(1) % 2)
    test = tokens[last["split.test_idx"][:ATTENTION_EXAMPLES]]
    shares = [_attention_share_numpy(f, test, cfg.parity_k, cfg.n_heads) for _, f in files]
    np.testing.assert_allclose(m["share"], shares, rtol=1e-5)
    first = files[0][1]
    rho = [max(float(np.abs(f[key] - first[key]).max()) for key in f if key.startswith("model.") and f[key].size)
           for _, f in files]
    np.testing.assert_allclose(m["rho"], rho, rtol=1e-6, atol=1e-7)
    assert result["values"]["transformer"]["share_chance"] == pytest.approx(cfg.parity_k / (cfg.parity_bits + 1))


def test_controls_differ_from_their_runs_only_in_the_labels(smoke):
    _, result = smoke
    for model in MODELS:
        run, control = config_of(run_dir_of(result, model)), config_of(run_dir_of(result, model, True))
        assert control.label_noise == CONTROL_NOISE == 0.5 and run.label_noise == 0.0
        assert control.epochs == CONTROL_EPOCHS["smoke"][model]
        assert control.replace(label_noise=0.0, epochs=run.epochs).key() == run.key()
        v = result["values"][model]
        m, c = v["measures"], v["control_measures"]
        assert c["rho"][0] == 0.0 and c["share"][0] == pytest.approx(m["share"][0])  # the same initial weights
        end = v["plateau_end"]
        expected = next((r for s, r in zip(c["step"], c["rho"]) if s == end), None)
        assert v["control_rho_plateau_end"] == expected
    # Flipping half the training labels at random leaves them independent of the parity (the test labels
    # keep theirs): the control's test accuracy stays near chance.
    records = read_metrics(run_dir_of(result, "mlp", True))
    assert all(r["test_acc"] < 0.8 for r in records)


def test_rerun_reuses_both_runs_and_gives_the_same_table(smoke):
    out, first = smoke
    again = reproduce(NAME, out, scale="smoke", threads=1, quiet=True)
    assert again["trained"] == [] and sorted(again["reused"]) == sorted(first["runs"]) and len(first["runs"]) == 4
    assert again["rows"] == first["rows"] and again["values"] == first["values"]


# --- the pieces, on hand-made inputs --------------------------------------------------------------------
def _records(test_acc: list[float], test_loss: list[float], every: int = 100) -> list[dict]:
    return [{"epoch": i, "step": i * every, "test_acc": a, "test_loss": lo} for i, (a, lo) in
            enumerate(zip(test_acc, test_loss))]


def test_plateau_rule():
    acc = [0.50, 0.49, 0.51, 0.50, 0.52, 0.70, 0.995, 1.0]
    loss = [0.90, 0.70, 0.69, 0.70, 0.69, 0.50, 0.02, 0.01]
    p = plateau(_records(acc, loss))
    assert p == {"step_99": 600, "end": 400, "start": 100, "jump": 200, "fraction": pytest.approx(400 / 600),
                 "loss": pytest.approx(np.mean([0.70, 0.69, 0.70, 0.69]))}
    # Never solved: the plateau runs to the last evaluation at chance; no jump, no fraction.
    never = plateau(_records([0.5, 0.5, 0.6, 0.5], [0.9, 0.7, 0.68, 0.7]))
    assert never["step_99"] is None and never["end"] == 300 and never["jump"] is None and never["fraction"] is None
    # A dip back to chance after 99% does not move the plateau's end.
    assert plateau(_records([0.5, 0.5, 1.0, 0.5], [0.7, 0.7, 0.0, 0.7]))["end"] == 100
    assert LN2 == pytest.approx(0.693147, abs=1e-6)


def test_lead_neuron_share_and_movement():
    W = torch.zeros(4, 10)
    W[:, :3] = 1.0
    assert lead_neuron_share(W, 3) == 1.0
    assert lead_neuron_share(torch.ones(4, 10), 3) == pytest.approx(0.3)
    assert math.isnan(lead_neuron_share(torch.zeros(4, 10), 3))
    a = {"x": torch.tensor([1.0, -2.0]), "y": torch.tensor([[0.5]])}
    b = {"x": torch.tensor([1.5, -5.0]), "y": torch.tensor([[0.0]])}
    assert movement_inf(b, a) == pytest.approx(3.0) and movement_inf(a, a) == 0.0
    cfg = parity_configs("laptop", 1)
    assert share_chance(cfg["mlp"]) == pytest.approx(3 / 50)
    assert share_chance(cfg["transformer"]) == pytest.approx(3 / 21)


def test_laptop_and_paper_settings_are_the_stated_ones():
    laptop = parity_configs("laptop", 1)
    mlp, tr = laptop["mlp"], laptop["transformer"]
    # The paper's configuration (ii): width-100 ReLU MLP, plain SGD lr 0.1, batches of 32, bits as -1/+1.
    assert (mlp.parity_bits, mlp.parity_k, mlp.d_mlp, mlp.mlp_act, mlp.mlp_input) == (50, 3, 100, "relu", "value")
    assert (mlp.optimizer, mlp.momentum, mlp.lr, mlp.batch_size, mlp.weight_decay) == ("sgd", 0.0, 0.1, 32, 0.0)
    assert mlp.n_all - int(mlp.frac * mlp.n_all) == 2**13  # test strings: the paper validates on 2^13
    assert (tr.optimizer, tr.batch_size, tr.beta2) == ("adam", 32, 0.999)
    paper = parity_configs("paper", 1)["transformer"]  # D.1.7: d_emb 1024, 128 heads of width 8, lr 3e-4
    assert (paper.parity_bits, paper.d_model, paper.n_heads, paper.head_dim, paper.lr) == (50, 1024, 128, 8, 3e-4)
    assert set(SETTINGS) == {"smoke", "laptop", "paper"}
