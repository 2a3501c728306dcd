"""The local learning coefficient (grokking.llc, through devinterp): seeded and reproducible,
equal to its definition on devinterp's own samples, and carried by analyze (or skipped with a
one-line note when devinterp is missing).

These tests need the optional extra ``llc`` (devinterp): without it they fail, never skip
(``.venv/bin/python -m pip install -c <(echo torch==2.13.0) 'devinterp>=2.0'``).
"""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from grokking import analysis, llc
from grokking.checkpoint import save_checkpoint
from grokking.data import make_dataset
from grokking.model import Transformer
from grokking.rundir import snapshot_path
from handbuilt import build_fourier_model

SMALL = llc.LLCSettings(lr=3e-5, localization=1000.0, num_chains=2, num_draws=20, num_burnin_steps=10, batch_size=64)


def require_devinterp() -> None:
    if importlib.util.find_spec("devinterp") is None:
        pytest.fail("devinterp is not installed: these tests need the 'llc' extra (pip install 'devinterp>=2.0')",
                    pytrace=False)


@pytest.fixture(scope="module")
def model_and_data():
    return build_fourier_model(), make_dataset("add", 23, 0.3, 0)


def test_same_seed_same_numbers(model_and_data):
    require_devinterp()
    model, dataset = model_and_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    first = llc.estimate_llc(model, dataset, SMALL)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's generator is left as it was
    second = llc.estimate_llc(model, dataset, SMALL)
    assert first == second  # every number, the traces included
    other = llc.estimate_llc(model, dataset, SMALL.with_changes(seed=1))
    assert other["loss_trace"] != first["loss_trace"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # sampling never touches the model


def test_llc_is_its_definition_on_the_samples(model_and_data):
    require_devinterp()
    model, dataset = model_and_data
    out = llc.estimate_llc(model, dataset, SMALL)
    n = len(dataset.train_idx)
    n_beta = n / math.log(n)
    assert out["settings"]["n_beta"] == pytest.approx(n_beta)
    trace = np.asarray(out["loss_trace"])
    assert trace.shape == (SMALL.num_chains, SMALL.num_burnin_steps + SMALL.num_draws)
    per_chain = n_beta * (trace[:, SMALL.num_burnin_steps:].mean(axis=1) - out["init_loss"])
    np.testing.assert_allclose(out["llc_per_chain"], per_chain, rtol=1e-12)
    assert out["llc"] == pytest.approx(per_chain.mean()) and out["llc_std"] == pytest.approx(per_chain.std())
    # devinterp's own estimator averages every step, the burn-in included
    assert out["llc_devinterp"] == pytest.approx(n_beta * (trace.mean() - out["init_loss"]), rel=1e-5)
    # the initial loss is the model's loss on the training pairs
    tokens, labels = dataset.split("train")
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(model(tokens)[:, -1].double(), labels)
    assert out["init_loss"] == pytest.approx(float(full), rel=0.05, abs=1e-6)


def test_mala_acceptance_is_a_probability(model_and_data):
    model, dataset = model_and_data
    tiny = llc.mala_acceptance(model, dataset, SMALL.with_changes(lr=1e-9), steps=5, burn_in=5)
    assert tiny["mean"] > 0.99  # a vanishing step is always accepted
    big = llc.mala_acceptance(model, dataset, SMALL.with_changes(lr=1e-2), steps=5, burn_in=5)
    assert 0.0 <= big["min"] <= big["mean"] <= big["max"] <= 1.0 and big["mean"] < 0.5


def test_llc_snapshot_epochs():
    epochs = list(range(0, 1000, 10)) + [1, 2, 3, 5, 8]
    chosen = analysis.llc_snapshot_epochs(epochs, 10)
    assert chosen[0] == 0 and chosen[-1] == 990 and len(chosen) <= 10
    assert any(e < 10 for e in chosen[1:]) and any(400 < e < 600 for e in chosen)  # both scales get points
    assert analysis.llc_snapshot_epochs([0, 5, 10], 10) == [0, 5, 10]
    assert analysis.llc_snapshot_epochs(epochs, None) == sorted(set(epochs))


def _run_dir(tmp_path, model):
    cfg = model.cfg
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    for epoch, m in ((0, Transformer(cfg, seed=1)), (50, model)):
        weights = {f"model.{k}": v for k, v in m.state_dict().items()}
        save_checkpoint(snapshot_path(run, epoch), weights, {"config": cfg.to_dict(), "epoch": epoch, "step": epoch})
    return run


def test_analyze_records_the_llc(tmp_path, model_and_data):
    require_devinterp()
    run = _run_dir(tmp_path, model_and_data[0])
    notes: list[str] = []
    result = analysis.analyze(run, llc_settings=SMALL, log=notes.append)
    assert notes == [] and result["llc_note"] is None
    assert result["llc"]["epoch"] == [0, 50]
    assert all(math.isfinite(v) for v in result["llc"]["llc"])
    saved = json.loads((run / "analysis" / "analysis.json").read_text())
    assert saved["llc"]["llc"] == result["llc"]["llc"] and saved["llc"]["settings"]["lr"] == SMALL.lr
    again = analysis.llc_series(run, settings=SMALL)
    assert again["llc"].tolist() == result["llc"]["llc"]  # the same seed: the same curve


def test_analyze_without_devinterp_says_so_in_one_line(tmp_path, model_and_data, monkeypatch):
    run = _run_dir(tmp_path, model_and_data[0])
    note = "LLC skipped: devinterp is not installed (pip install 'devinterp>=2.0', the 'llc' extra)"
    monkeypatch.setattr(llc, "unavailable_reason", lambda: note)
    notes: list[str] = []
    result = analysis.analyze(run, log=notes.append)
    assert notes == [note] and result["llc"] is None and result["llc_note"] == note
    assert result["progress"] is not None and "progress.png" in result["figures"]
