"""Fourier analysis and progress measures (grokking.analysis), on models built by hand.

The centrepiece is a transformer whose weights implement the Fourier algorithm of Nanda et
al. exactly enough to be judged by the real forward pass: it must add mod p on every pair,
and the analysis must find the frequencies it was built with.
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

P = 23
FREQS = (3, 7, 11)


def build_fourier_model(p: int = P, freqs: tuple[int, ...] = FREQS, knot_step: float = 0.25,
                        logit_scale: float = 20.0) -> Transformer:
    """A 1-layer transformer that computes (a + b) mod p with the Fourier algorithm.

    Residual stream (one block of dims per role, 2 per frequency for cos and sin):
      tokens   cos(w a), sin(w a) of the token at its own position (embedding)
      eq       1 on the '=' token: the only thing the queries read
      pos      +10 at position 0, -10 at position 1 (positional embedding): the keys
      a, b     the token waves of positions 0 and 1, copied to '=' by heads 0 and 1
      out      cos(w (a + b)), sin(w (a + b)), written by the MLP, read by W_U
    Head 0 scores keys by +pos and head 1 by -pos, so from '=' each puts all its weight on
    one input (softmax margin ~ exp(-100)). The MLP forms products with
    x y = ((x + y)^2 - (x - y)^2) / 4, each square the piecewise-linear interpolant of z^2
    on knots 0, h, 2h, .. of |z| <= 2 written with ReLUs (exact at the knots, error <= h^2/4):
      cos(u + v) = [Q(ca + cb) - Q(ca - cb) - Q(sa + sb) + Q(sa - sb)] / 4
      sin(u + v) = [Q(sa + cb) - Q(sa - cb) + Q(ca + sb) - Q(ca - sb)] / 4
    W_U then reads cos(w (a + b - c)) = cos(w (a + b)) cos(w c) + sin(w (a + b)) sin(w c).
    """
    n_f = len(freqs)
    eq_dim, pos_dim = 2 * n_f, 2 * n_f + 1
    a_dim, b_dim, out_dim = 2 * n_f + 2, 4 * n_f + 2, 6 * n_f + 2
    d_model = out_dim + 2 * n_f
    d_head = 2 * n_f
    knots = [j * knot_step for j in range(int(round(2 / knot_step)))]
    d_mlp = n_f * 8 * 2 * len(knots)
    cfg = Config().replace(p=p, d_model=d_model, n_heads=2, d_head=d_head, d_mlp=d_mlp)
    model = Transformer(cfg, seed=0)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        x = torch.arange(p, dtype=torch.float64)
        for i, k in enumerate(freqs):
            w = 2 * math.pi * k / p
            model.embed.W_E[2 * i, :p] = torch.cos(w * x)
            model.embed.W_E[2 * i + 1, :p] = torch.sin(w * x)
            model.unembed.W_U[out_dim + 2 * i, :p] = logit_scale * torch.cos(w * x)
            model.unembed.W_U[out_dim + 2 * i + 1, :p] = logit_scale * torch.sin(w * x)
        model.embed.W_E[eq_dim, p] = 1.0
        model.pos_embed.W_pos[0, pos_dim] = 10.0
        model.pos_embed.W_pos[1, pos_dim] = -10.0
        attn = model.blocks[0].attn
        for head, sign, target in ((0, 1.0, a_dim), (1, -1.0, b_dim)):
            attn.W_Q[head, 0, eq_dim] = 20.0
            attn.W_K[head, 0, pos_dim] = sign
            for j in range(2 * n_f):
                attn.W_V[head, j, j] = 1.0
                attn.W_O[target + j, head * d_head + j] = 1.0
        mlp, neuron = model.blocks[0].mlp, 0
        for i in range(n_f):
            ca, sa, cb, sb = a_dim + 2 * i, a_dim + 2 * i + 1, b_dim + 2 * i, b_dim + 2 * i + 1
            cos_out, sin_out = out_dim + 2 * i, out_dim + 2 * i + 1
            # (output dim, x, y, sign of y inside the square, sign of the square in the sum)
            squares = [(cos_out, ca, cb, 1, 1), (cos_out, ca, cb, -1, -1), (cos_out, sa, sb, 1, -1),
                       (cos_out, sa, sb, -1, 1), (sin_out, sa, cb, 1, 1), (sin_out, sa, cb, -1, -1),
                       (sin_out, ca, sb, 1, 1), (sin_out, ca, sb, -1, -1)]
            for out, x_dim, y_dim, y_sign, weight in squares:
                for j, knot in enumerate(knots):
                    slope_change = knot_step if j == 0 else 2 * knot_step
                    for side in (1.0, -1.0):  # ReLU(z - t) + ReLU(-z - t): the even hinge
                        mlp.W_in[neuron, x_dim] = side
                        mlp.W_in[neuron, y_dim] = side * y_sign
                        mlp.b_in[neuron] = -knot
                        mlp.W_out[out, neuron] = weight * slope_change / 4
                        neuron += 1
    return model.eval()


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
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, FREQS)
    torch.testing.assert_close(restricted + excluded, logits.double(), atol=1e-9, rtol=0)
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
    # (at 1300 they are still 61 > 60.9)
    assert phases == {"memorisation_end": 300, "circuit_formation_end": 900, "cleanup_end": 1400}
    never = analysis.phase_boundaries({"epoch": epoch, "train_acc": train_acc, "test_acc": 0 * test_acc,
                                       "sum_sq_weights": weights})
    assert never == {"memorisation_end": 300, "circuit_formation_end": None, "cleanup_end": None}
    stopped = analysis.phase_boundaries({"epoch": epoch[:15], "train_acc": train_acc[:15],
                                         "test_acc": test_acc[:15], "sum_sq_weights": weights[:15]})
    assert stopped["cleanup_end"] is None  # ends at 1400 while the weights are still falling: not seen


def test_phases_from_metrics_records():
    records = [{"epoch": e, "train_acc": min(1.0, e / 20), "test_acc": 1.0 if e >= 60 else 0.0,
                "weight_norm": 10.0 if e < 70 else 5.0} for e in range(0, 100, 10)]
    series = analysis.metrics_series(records)
    assert series["sum_sq_weights"][0] == 100.0
    assert analysis.phase_boundaries(series) == {"memorisation_end": 20, "circuit_formation_end": 60,
                                                 "cleanup_end": 70}
    assert analysis.metrics_series([{"epoch": 0, "train_acc": 1.0}]) is None


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with analysis.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_other_operations():
    cfg = Config().replace(op="multiply", p=7, d_model=16, n_heads=2, d_mlp=20, frac=0.5)
    model = Transformer(cfg, seed=0).eval()
    ds = make_dataset("multiply", 7, 0.5, 0)
    values = analysis.measure(model, ds, [1])
    assert math.isnan(values["restricted_loss"]) and math.isnan(values["excluded_loss"])
    assert math.isfinite(values["test_loss"])
    with pytest.raises(ValueError, match="multiply"):
        analysis.restricted_loss(model, ds, [1])


def test_any_p_and_width():
    # an untrained model with even p and odd widths: every piece runs and shapes follow p
    cfg = Config().replace(p=12, d_model=24, n_heads=3, d_mlp=37, frac=0.5)
    model = Transformer(cfg, seed=3).eval()
    ds = make_dataset("add", 12, 0.5, 0)
    assert analysis.embedding_fourier_norms(model).shape == (7,)
    assert analysis.neuron_frequencies(model).freq.shape == (37,)
    keys = analysis.key_frequencies(model).freqs
    values = analysis.measure(model, ds, keys)
    assert all(np.isfinite(v) for v in values.values())
    logits = analysis.grid_logits(model)
    restricted, excluded = analysis.restricted_and_excluded_logits(logits, [6, 1])  # 6: the Nyquist frequency
    torch.testing.assert_close(restricted + excluded, logits.double(), atol=1e-9, rtol=0)


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
    result = analysis.analyze(run)
    out = run / "analysis"
    for name in ("fourier_spectra.png", "neuron_clusters.png", "logits_fourier.png", "attention.png",
                 "progress.png", "analysis.json"):
        assert (out / name).stat().st_size > 0, name
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["key_frequencies"]["used"] == list(FREQS)
    assert saved["progress"]["epoch"] == [0, 50]
    assert saved["progress"]["restricted_loss"][1] < 1e-6
    assert saved["phases_from"] == "metrics.jsonl"
    # clean-up's end needs a plateau seen over later epochs; the run stops at 50
    assert saved["phases"] == {"memorisation_end": 25, "circuit_formation_end": 40, "cleanup_end": None}
    assert saved["neurons"]["in_key_freqs"] == 1.0
    assert result["epoch"] == 50 and result["out_dir"] == str(out)
    # a single checkpoint: no progress measures; by default its figures go next to it
    single = analysis.analyze(snapshot_path(run, 0), tmp_path / "single")
    assert single["progress"] is None and single["phases"] is None
    assert "progress.png" not in single["figures"] and (tmp_path / "single" / "analysis.json").exists()
    assert analysis.default_out_dir(snapshot_path(run, 50)) == run / "checkpoints" / "epoch_0000050_analysis"
