"""Fourier analysis and progress measures (grokking.analysis), on models built by hand.

The centrepiece is a transformer whose weights implement the Fourier algorithm of Nanda et
al. exactly enough to be judged by the real forward pass (tests/handbuilt.py): it must add
mod p on every pair, and the analysis must find the frequencies it was built with. The
other tasks' bases and hand-built models: test_groups.py, test_restricted.py, test_circuits.py;
the LLC: test_llc.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grokking import analysis
from grokking.checkpoint import save_checkpoint
from grokking.config import Config
from grokking.data import make_dataset
from grokking.model import Transformer
from grokking.rundir import snapshot_path
from handbuilt import build_fourier_model

P = 23
FREQS = (3, 7, 11)


@pytest.fixture(scope="module")
def fourier_model() -> Transformer:
    return build_fourier_model()


@pytest.fixture(scope="module")
def dataset():
    return make_dataset("add", P, 0.3, 0)


# --- the basis -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [7, 11, 113, 8])
def test_fourier_basis_is_orthonormal(p):
    basis, names = analysis.fourier_basis(p)
    assert basis.shape == (p, p) and len(names) == p
    torch.testing.assert_close(basis @ basis.T, torch.eye(p), atol=1e-5, rtol=0)
    assert names[:3] == ["const", "cos 1", "sin 1"]
    assert analysis.basis_frequency(p).tolist()[:5] == [0, 1, 1, 2, 2][: min(5, p)]


def test_frequency_norms_of_a_pure_wave():
    p = 13
    wave = 3.0 * np.cos(2 * np.pi * 4 * np.arange(p) / p + 0.7)
    basis, _ = analysis.fourier_basis(p, torch.float64)
    norms = analysis.frequency_norms(basis.numpy() @ wave)
    assert norms.shape == (p // 2 + 1,)
    assert norms[4] == pytest.approx(np.linalg.norm(wave))
    assert np.delete(norms, 4).max() < 1e-9


# --- the hand-built Fourier model ---------------------------------------------------------------------
def test_hand_built_model_adds_mod_p_on_every_pair(fourier_model):
    tokens = analysis.grid_tokens(P)
    logits = fourier_model(tokens)[:, -1]  # the real forward pass is the judge
    labels = (tokens[:, 0] + tokens[:, 1]) % P
    assert torch.equal(logits.argmax(-1), labels)
    answers = logits[:, :P]
    correct = answers.gather(1, labels[:, None])[:, 0]
    runner_up = answers.scatter(1, labels[:, None], float("-inf")).max(-1).values
    assert (correct - runner_up).min() > 5.0  # a margin, not a tie broken by luck


def test_key_frequencies_of_the_hand_built_model(fourier_model):
    embedding = analysis.key_frequencies(fourier_model, "embedding")
    neuron_logit = analysis.key_frequencies(fourier_model, "neuron_logit")
    assert embedding.freqs == list(FREQS)
    assert neuron_logit.freqs == list(FREQS)
    assert embedding.explained == pytest.approx(1.0)
    assert neuron_logit.explained == pytest.approx(1.0)
    norms = analysis.embedding_fourier_norms(fourier_model)
    assert norms.shape == (P // 2 + 1,)
    assert np.allclose(norms[list(FREQS)], norms[FREQS[0]])  # cos^2 + sin^2: equal weight by construction


def test_neuron_frequencies_of_the_hand_built_model(fourier_model):
    neurons = analysis.neuron_frequencies(fourier_model)
    d_mlp = fourier_model.cfg.d_mlp
    assert neurons.freq.shape == (d_mlp,) and neurons.fractions.shape == (d_mlp, P // 2 + 1)
    assert set(neurons.freq.tolist()) == set(FREQS)  # every neuron is live and on a key frequency
    assert ((neurons.frac_explained > 0) & (neurons.frac_explained <= 1 + 1e-9)).all()
    np.testing.assert_allclose(neurons.fractions.sum(1) <= 1 + 1e-9, True)
    clusters = analysis.neuron_clusters(neurons, threshold=0.0)
    assert sorted(k for k in clusters if k != "unclustered") == list(FREQS)
    assert sum(len(v) for v in clusters.values()) == d_mlp
    assert len(clusters["unclustered"]) == 0
    strict = analysis.neuron_clusters(neurons, threshold=1.01)
    assert list(strict) == ["unclustered"] and len(strict["unclustered"]) == d_mlp


def test_neuron_frequency_of_a_known_activation():
    p, k = 17, 5
    a = np.arange(p)[:, None]
    b = np.arange(p)[None, :]
    w = 2 * np.pi * k / p
    acts = np.stack([np.cos(w * (a + b)), np.cos(w * a) + 0.0 * b, np.ones((p, p)),
                     np.cos(w * a) * np.cos(2 * w * b)], axis=-1)
    neurons = analysis.neuron_frequencies(acts)
    assert neurons.freq[:2].tolist() == [k, k]
    np.testing.assert_allclose(neurons.frac_explained[:2], 1.0)
    assert neurons.freq[2] == 0 and neurons.frac_explained[2] == 0  # constant: dead
    assert neurons.frac_explained[3] < 0.01  # cos(w a) cos(2 w b) mixes two frequencies: no group holds it


@pytest.mark.parametrize("p", [9, 10])
def test_neuron_fractions_match_the_definition(p):
    acts = torch.rand(p, p, 5, generator=torch.Generator().manual_seed(p), dtype=torch.float64)
    neurons = analysis.neuron_frequencies(acts)
    coeffs = analysis.fourier_2d(acts)
    names = analysis.fourier_basis(p)[1]
    for k in range(1, p // 2 + 1):
        rows = [0] + [i for i, name in enumerate(names) if name.split()[-1] == str(k)]
        power = coeffs[rows][:, rows] ** 2
        expected = (power.sum((0, 1)) - power[0, 0]) / ((coeffs**2).sum((0, 1)) - coeffs[0, 0] ** 2)
        np.testing.assert_allclose(neurons.fractions[:, k], expected, rtol=1e-10)


# --- restricted and excluded logits --------------------------------------------------------------------------
@pytest.mark.parametrize("subspace", ["a+b-c", "a+b"])
def test_restricted_plus_excluded_is_the_logits(subspace):
    p = 11
    logits = torch.randn(p, p, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, [2, 5], subspace)
    torch.testing.assert_close(restricted + excluded, logits, atol=1e-12, rtol=0)
    # an orthogonal split: the excluded part has no component left along the key directions
    again, _ = analysis.restricted_and_excluded_logits(excluded, [2, 5], subspace)
    torch.testing.assert_close(again, torch.zeros_like(again), atol=1e-12, rtol=0)
    # the restricted part is its own restriction
    twice, rest = analysis.restricted_and_excluded_logits(restricted, [2, 5], subspace)
    torch.testing.assert_close(twice, restricted, atol=1e-12, rtol=0)
    torch.testing.assert_close(rest, torch.zeros_like(rest), atol=1e-12, rtol=0)


def _brute_force_projection(logits: torch.Tensor, freqs, subspace: str) -> torch.Tensor:
    """Restricted logits by explicit least squares over the whole (a, b, c) grid."""
    p = logits.shape[-1]
    a, b, c = torch.meshgrid(*(torch.arange(p, dtype=torch.float64),) * 3, indexing="ij")
    directions = []
    for i in range(p):  # per-(a, b) constants: the pair means
        for j in range(p):
            d = torch.zeros(p, p, p, dtype=torch.float64)
            d[i, j, :] = 1
            directions.append(d)
    for k in freqs:
        w = 2 * math.pi * k / p
        if subspace == "a+b-c":
            directions += [torch.cos(w * (a + b - c)), torch.sin(w * (a + b - c))]
        else:
            for j in range(p):
                directions += [torch.cos(w * (a + b)) * (c == j), torch.sin(w * (a + b)) * (c == j)]
    A = torch.stack([d.reshape(-1) for d in directions], dim=1)
    solution = torch.linalg.lstsq(A, logits.reshape(-1, 1).double(), driver="gelsd").solution
    return (A @ solution).reshape(p, p, p)


@pytest.mark.parametrize("p, freqs", [(9, [2, 4]), (8, [1, 4])])  # 8: with the Nyquist frequency
@pytest.mark.parametrize("subspace", ["a+b-c", "a+b"])
def test_restricted_logits_match_brute_force_least_squares(p, freqs, subspace):
    logits = torch.randn(p, p, p, generator=torch.Generator().manual_seed(p), dtype=torch.float64)
    restricted, _ = analysis.restricted_and_excluded_logits(logits, freqs, subspace)
    torch.testing.assert_close(restricted, _brute_force_projection(logits, freqs, subspace), atol=1e-9, rtol=0)


def test_restricted_logits_of_an_ideal_wave_are_the_wave():
    p, k = 13, 4
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    wave = torch.as_tensor(5 * np.cos(2 * np.pi * k * (a + b - c) / p + 0.3))
    restricted, excluded = analysis.restricted_and_excluded_logits(wave, [k])
    torch.testing.assert_close(restricted, wave, atol=1e-10, rtol=0)
    restricted, excluded = analysis.restricted_and_excluded_logits(wave, [k + 1])
    torch.testing.assert_close(excluded, wave, atol=1e-10, rtol=0)
    difference = torch.as_tensor(np.cos(2 * np.pi * k * (a - b - c) / p))  # modular subtraction
    restricted, _ = analysis.restricted_and_excluded_logits(difference, [k], b_sign=-1)
    torch.testing.assert_close(restricted, difference, atol=1e-10, rtol=0)


def test_restricted_and_excluded_loss_of_the_hand_built_model(fourier_model, dataset):
    logits = analysis.grid_logits(fourier_model)
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, FREQS, "a+b-c")
    torch.testing.assert_close(restricted + excluded, logits.double(), atol=1e-9, rtol=0)
    # the paper's split: restricted keeps the per-answer means, which the excluded logits keep too
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, FREQS)
    means = logits.double().mean(dim=(0, 1), keepdim=True)
    torch.testing.assert_close(restricted + excluded, logits.double() + means, atol=1e-9, rtol=0)
    assert analysis.restricted_loss_abc(fourier_model, dataset, FREQS) < 1e-6
    full = analysis.grid_loss(logits.double(), dataset, "test")
    kept = analysis.restricted_loss(fourier_model, dataset, FREQS)
    removed = analysis.excluded_loss(fourier_model, dataset, FREQS)
    assert full < 1e-6 and kept < 1e-6  # the model *is* its key frequencies
    assert removed > 0.9 * math.log(P)  # without them it is at chance or worse
    # dropping one key frequency leaves the answer readable: the loss rises but stays below chance
    assert analysis.restricted_loss(fourier_model, dataset, FREQS[:2]) < math.log(P)


def test_measure_and_analyze_model(fourier_model, dataset):
    values = analysis.measure(fourier_model, dataset, FREQS)
    assert values["train_acc"] == 1.0 and values["test_acc"] == 1.0
    assert values["key_share_embedding"] == pytest.approx(1.0)
    # three equal frequencies out of 11: Gini of 3 equal values among 11 is 8/11
    assert values["gini_embedding"] == pytest.approx(8 / 11, abs=1e-6)
    expected = sum(float(p.detach().double().pow(2).sum()) for p in fourier_model.parameters())
    assert values["sum_sq_weights"] == pytest.approx(expected)
    summary = analysis.analyze_model(fourier_model, dataset)
    assert summary["key_frequencies"]["used"] == list(FREQS)
    assert summary["neurons"]["in_key_freqs"] == 1.0
    assert summary["logits_key_share"] > 0.99
    json.dumps(summary)  # JSON-ready


def test_attention_reads_a_and_b(fourier_model):
    attention = analysis.attention_to_inputs(fourier_model)
    assert attention.shape == (2, 2, P, P)
    np.testing.assert_allclose(attention[0, 0], 1.0, atol=1e-6)  # head 0 reads a
    np.testing.assert_allclose(attention[1, 1], 1.0, atol=1e-6)  # head 1 reads b


# --- key-frequency rule ---------------------------------------------------------------------------------------
def test_key_frequency_rule_finds_uneven_keys_above_noise():
    rng = np.random.default_rng(0)
    norms = np.concatenate([[5.0], rng.uniform(0.01, 0.03, 56)])
    for k, size in ((14, 3.0), (35, 2.0), (41, 1.5), (42, 1.0), (52, 0.6)):
        norms[k] = size
    assert analysis.select_key_frequencies(norms) == [14, 35, 41, 42, 52]
    assert analysis.select_key_frequencies(norms, threshold=0.1) == [14, 35, 41]
    assert analysis.select_key_frequencies(np.zeros(10)) == []
    found = analysis.key_frequencies(norms)
    assert found.freqs == [14, 35, 41, 42, 52] and 0.99 < found.explained < 1.0


# --- Gini -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 10, 56])
def test_gini_extremes(n):
    one_hot = np.zeros(n)
    one_hot[n // 2] = 3.0
    assert analysis.gini(one_hot) == pytest.approx((n - 1) / n)
    assert analysis.gini(np.full(n, 2.5)) == pytest.approx(0.0, abs=1e-12)
    assert analysis.gini(np.zeros(n)) == 0.0


def test_gini_orders_sparsity():
    assert analysis.gini([1, 1, 1, 10]) > analysis.gini([1, 2, 3, 4]) > analysis.gini([1, 1, 1, 1])


# --- progress measures and phases --------------------------------------------------------------------------------
def test_progress_measures_from_models(fourier_model, dataset):
    noisy = build_fourier_model()
    with torch.no_grad():
        for param in noisy.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    measures = analysis.progress_measures([(0, noisy), (100, fourier_model)], dataset=dataset)
    assert measures["key_freqs"].tolist() == list(FREQS)  # from the final model
    assert measures["epoch"].tolist() == [0, 100]
    for key in analysis.SERIES_KEYS:
        assert measures[key].shape == (2,), key
    assert measures["gini_embedding"][1] > measures["gini_embedding"][0]
    assert measures["restricted_loss"][1] < 1e-6


def test_phase_boundaries_of_a_synthetic_run():
    epoch = np.arange(0, 2000, 100)
    train_acc = np.clip(epoch / 300, 0, 1)  # fits the training set at 300
    test_acc = np.where(epoch < 900, 0.02, np.where(epoch < 1200, 0.6, 1.0))
    weights = np.where(epoch < 1400, 100.0 - epoch * 0.03, 58.0)
    phases = analysis.phase_boundaries({"epoch": epoch, "train_acc": train_acc, "test_acc": test_acc,
                                        "sum_sq_weights": weights})
    # clean-up ends once test accuracy is 1 and the weights are within 5% of their final 58
    # (at 1300 they are still 61 > 60.9); without excluded losses memorisation ends by the accuracy rule
    assert phases == {"memorisation_end": 300, "circuit_formation_end": 900, "cleanup_end": 1400,
                      "memorisation_end_acc": 300}
    never = analysis.phase_boundaries({"epoch": epoch, "train_acc": train_acc, "test_acc": 0 * test_acc,
                                       "sum_sq_weights": weights})
    assert never == {"memorisation_end": 300, "circuit_formation_end": None, "cleanup_end": None,
                     "memorisation_end_acc": 300}
    stopped = analysis.phase_boundaries({"epoch": epoch[:15], "train_acc": train_acc[:15],
                                         "test_acc": test_acc[:15], "sum_sq_weights": weights[:15]})
    assert stopped["cleanup_end"] is None  # ends at 1400 while the weights are still falling: not seen


def paper_like_run(excluded: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Snapshots shaped like the canonical run: train loss reaches its floor by 1400, the
    excluded loss falls with it, bottoms out at 1400 and rises until the test accuracy jumps."""
    epoch = np.array([0, 100, 300, 600, 1000, 1400, 1500, 2000, 3000, 5000, 9000, 9500, 12000])
    out = {"epoch": epoch,
           "train_loss": np.array([4.7, 1.0, 1e-2, 1e-4, 4e-6, 3.6e-7, 3.58e-7, 3.4e-7, 3.3e-7, 3.2e-7, 3e-7, 2e-7, 1e-7]),
           "excluded_loss": np.array([4.7, 1.1, 2e-2, 4e-4, 2e-4, 6.6e-5, 6.7e-5, 1e-4, 3e-4, 2e-3, 1.0, 3.0, 8.0]),
           "train_acc": np.array([0.01, 0.5] + [1.0] * 11), "test_acc": np.array([0.01] * 10 + [0.3, 0.6, 1.0]),
           "sum_sq_weights": np.linspace(2000, 900, epoch.size)}
    if excluded is not None:
        out["excluded_loss"] = excluded
    return out


def test_memorisation_ends_where_the_paper_ends_it():
    run = paper_like_run()
    assert analysis.memorisation_end_paper(run) == 1400
    assert analysis.memorisation_end_paper(run, until=9500) == 1400
    phases = analysis.phase_boundaries(run)
    assert phases["memorisation_end"] == 1400 and phases["memorisation_end_acc"] == 300  # not at 99% train accuracy
    assert phases["circuit_formation_end"] == 9500
    # one odd snapshot is not a turning point (running median of 3)
    spiked = run["excluded_loss"].copy()
    spiked[4] = 1e-5
    assert analysis.memorisation_end_paper(paper_like_run(spiked)) == 1400
    # an excluded loss that never turns upward: no paper boundary, the accuracy rule stands in
    falling = np.geomspace(4.7, 1e-6, run["epoch"].size)
    assert analysis.memorisation_end_paper(paper_like_run(falling)) is None
    assert analysis.phase_boundaries(paper_like_run(falling))["memorisation_end"] == 300
    # no excluded loss at all (no circuit): the same
    assert analysis.memorisation_end_paper(paper_like_run(np.full(run["epoch"].size, np.nan))) is None
    # a rise smaller than 1.5x is noise, not a turn
    small = np.where(run["epoch"] > 1400, 6.6e-5 * 1.3, run["excluded_loss"])
    assert analysis.memorisation_end_paper(paper_like_run(small)) is None


def test_phases_from_metrics_records():
    records = [{"epoch": e, "train_acc": min(1.0, e / 20), "test_acc": 1.0 if e >= 60 else 0.0,
                "weight_norm": 10.0 if e < 70 else 5.0} for e in range(0, 100, 10)]
    series = analysis.metrics_series(records)
    assert series["sum_sq_weights"][0] == 100.0
    assert analysis.phase_boundaries(series) == {"memorisation_end": 20, "circuit_formation_end": 60,
                                                 "cleanup_end": 70, "memorisation_end_acc": 20}
    assert analysis.metrics_series([{"epoch": 0, "train_acc": 1.0}]) is None


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with analysis.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_other_operations():
    # multiply has its (multiplicative) basis: restricted/excluded losses are defined, ours are not
    cfg = Config().replace(op="multiply", p=7, d_model=16, n_heads=2, d_mlp=20, frac=0.5)
    model = Transformer(cfg, seed=0).eval()
    ds = make_dataset("multiply", 7, 0.5, 0)
    values = analysis.measure(model, ds, [1])
    assert math.isfinite(values["restricted_loss"]) and math.isfinite(values["excluded_loss"])
    assert math.isnan(values["restricted_loss_abc"]) and math.isnan(values["excluded_loss_abc"])
    # a task without group structure: no restricted loss, and no circuit claimed
    cfg = cfg.replace(op="x2y2")
    model, ds = Transformer(cfg, seed=0).eval(), make_dataset("x2y2", 7, 0.5, 0)
    values = analysis.measure(model, ds, [1])
    assert math.isnan(values["restricted_loss"]) and math.isnan(values["excluded_loss"])
    assert math.isfinite(values["test_loss"])
    with pytest.raises(ValueError, match="group"):
        analysis.restricted_loss(model, ds, [1])
    summary = analysis.analyze_model(model, ds)
    assert summary["basis"]["kind"] == "none" and summary["circuit"] is False
    assert summary["key_frequencies"]["used"] == [] and "no group structure" in summary["circuit_reason"]


def test_any_p_and_width():
    # an untrained model with even p and odd widths: every piece runs and shapes follow p
    cfg = Config().replace(p=12, d_model=24, n_heads=3, d_mlp=37, frac=0.5)
    model = Transformer(cfg, seed=3).eval()
    ds = make_dataset("add", 12, 0.5, 0)
    assert analysis.embedding_fourier_norms(model).shape == (7,)
    assert analysis.neuron_frequencies(model).freq.shape == (37,)
    keys = analysis.key_frequencies(model)
    assert keys.freqs == [] and not keys.circuit and keys.candidates  # an untrained model: no circuit
    values = analysis.measure(model, ds, [6, 1])
    assert all(np.isfinite(v) for k, v in values.items()), values
    logits = analysis.grid_logits(model)
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, [6, 1], "a+b-c")  # 6: Nyquist
    torch.testing.assert_close(restricted + excluded, logits.double(), atol=1e-9, rtol=0)
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, [6, 1])  # the paper's
    torch.testing.assert_close(restricted + excluded, logits.double() + logits.double().mean(dim=(0, 1)), atol=1e-9,
                               rtol=0)


# --- analyze() on a run directory ---------------------------------------------------------------------------------------
def test_analyze_run_directory(tmp_path, fourier_model):
    cfg = fourier_model.cfg
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    early = Transformer(cfg, seed=1)  # random weights at "epoch 0"
    for epoch, model in ((0, early), (50, fourier_model)):
        weights = {f"model.{k}": v for k, v in model.state_dict().items()}
        save_checkpoint(snapshot_path(run, epoch), weights, {"config": cfg.to_dict(), "epoch": epoch, "step": epoch})
    with open(run / "metrics.jsonl", "w") as f:  # denser than the snapshots: phases come from it
        for epoch, train_acc, test_acc, norm in ((0, 0.02, 0.02, 3.0), (25, 1.0, 0.1, 3.0), (40, 1.0, 0.6, 2.5),
                                                 (50, 1.0, 1.0, 2.0)):
            f.write(json.dumps({"epoch": epoch, "step": epoch, "train_loss": 3.0 / (1 + epoch), "test_loss": 3.0,
                                "train_acc": train_acc, "test_acc": test_acc, "weight_norm": norm}) + "\n")
        f.write('{"epoch": 60, "trai')  # a torn last line, as a killed run leaves
    result = analysis.analyze(run, llc_settings=None)  # the LLC: test_llc.py
    out = run / "analysis"
    for name in ("fourier_spectra.png", "neuron_clusters.png", "logits_fourier.png", "attention.png",
                 "progress.png", "analysis.json"):
        assert (out / name).stat().st_size > 0, name
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["key_frequencies"]["used"] == list(FREQS)
    assert saved["progress"]["epoch"] == [0, 50]
    assert saved["progress"]["restricted_loss"][1] < 1e-6
    assert saved["phases_from"] == "metrics.jsonl and snapshots"
    # clean-up's end needs a plateau seen over later epochs; the run stops at 50
    assert saved["phases"] == {"memorisation_end": 25, "circuit_formation_end": 40, "cleanup_end": None,
                               "memorisation_end_acc": 25}
    assert saved["basis"]["kind"] == "additive" and saved["circuit"] is True and saved["llc"] is None
    assert saved["neurons"]["in_key_freqs"] == 1.0
    assert result["epoch"] == 50 and result["out_dir"] == str(out)
    # a single checkpoint: no progress measures; by default its figures go next to it
    single = analysis.analyze(snapshot_path(run, 0), tmp_path / "single", llc_settings=None)
    assert single["progress"] is None and single["phases"] is None
    assert "progress.png" not in single["figures"] and (tmp_path / "single" / "analysis.json").exists()
    assert analysis.default_out_dir(snapshot_path(run, 50)) == run / "checkpoints" / "epoch_0000050_analysis"
