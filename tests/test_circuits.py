"""Models built by hand for each kind of task, analysed back to exactly what was built; and
"no circuit" as an answer (the rule of grokking.groups.key_components_of_norms).

The models (tests/handbuilt.py) compute their task through the real forward pass: modular
multiplication and division through discrete-log Fourier features, S5 composition through one
chosen irreducible representation. The analysis must name the basis, find the frequencies or
the irrep that were built in, and restrict the logits to them without losing the answers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from grokking import analysis, groups
from grokking.config import Config
from grokking.data import make_dataset
from grokking.model import Transformer
from grokking.train import train
from handbuilt import build_multiplicative_model, build_s5_model


@pytest.mark.parametrize("op", ["multiply", "divide"])
def test_hand_built_multiplicative_model_is_read_in_the_discrete_log_basis(op):
    p, freqs = 23, (2, 5)
    model = build_multiplicative_model(p, freqs, op)
    dataset = make_dataset(op, p, 0.3, 0)
    summary = analysis.analyze_model(model, dataset)
    assert summary["basis"]["kind"] == "multiplicative" and "discrete log base 5" in summary["basis"]["name"]
    assert summary["circuit"] is True
    keys = summary["key_frequencies"]
    assert keys["used"] == list(freqs) and keys["embedding"]["freqs"] == list(freqs)
    assert keys["logits"]["freqs"] == list(freqs)
    m = summary["measures"]
    assert m["train_acc"] == m["test_acc"] == 1.0
    assert m["restricted_loss"] < 1e-4 and m["restricted_loss"] <= 1.01 * m["test_loss"] + 1e-9
    assert m["excluded_loss"] > 0.9 * math.log(p - 1)  # without the key directions: chance or worse
    assert math.isnan(m["restricted_loss_abc"])  # ours is additive only
    assert m["key_share_embedding"] == pytest.approx(1.0) and m["key_share_neuron_logit"] == pytest.approx(1.0)
    assert summary["neurons"]["in_key_freqs"] == 1.0
    apart = summary["pairs_apart"]  # the pairs with a 0, answered by the flag, not the circuit
    assert apart["n_pairs"] == (2 * p - 1 if op == "multiply" else p - 1) and apart["acc"] == 1.0
    # in the additive basis the same model has no sparse spectrum: the basis matters
    additive = analysis.key_frequencies(model, basis=groups.task_basis("add", p))
    assert additive.explained < 0.9 or not additive.circuit


@pytest.fixture(scope="module")
def s5_dataset():
    return make_dataset("perm_xy", 5, 0.4, 0)


@pytest.mark.parametrize("irrep", [2, 3])  # the standard irrep [4,1], and standard x sign [2,1,1,1]
def test_hand_built_s5_model_is_read_in_its_irrep(irrep, s5_dataset):
    model = build_s5_model(groups.s5_irreps()[irrep])
    summary = analysis.analyze_model(model, s5_dataset)
    assert summary["basis"]["kind"] == "s5" and summary["circuit"] is True
    keys = summary["key_frequencies"]
    assert keys["used"] == [irrep] and keys["used_labels"] == [groups.S5_IRREP_NAMES[irrep]]
    assert keys["embedding"]["freqs"] == [irrep] and keys["logits"]["freqs"] == [irrep]
    assert keys["embedding"]["explained"] == pytest.approx(1.0)
    m = summary["measures"]
    assert m["test_acc"] == 1.0 and m["restricted_loss"] < 1e-6
    assert m["excluded_loss"] > 0.9 * math.log(120)
    assert summary["logits_key_share"] > 0.99
    # ReLUs of the irrep's matrix elements put harmonics into other irreps; still most neurons are at the irrep
    clusters = {k: v for k, v in summary["neurons"]["clusters"].items() if k != "unclustered"}
    assert summary["neurons"]["in_key_freqs"] > 0.9 and max(clusters, key=clusters.get) == str(irrep)


def test_an_untrained_model_has_no_circuit():
    for op, p in (("add", 31), ("multiply", 23), ("perm_xy", 5)):
        model = Transformer(Config().replace(op=op, p=p, d_model=64, d_mlp=128), seed=0).eval()
        summary = analysis.analyze_model(model, make_dataset(op, p, 0.3, 0))
        assert summary["circuit"] is False, op
        assert summary["key_frequencies"]["used"] == [] and "no sparse set" in summary["circuit_reason"]
        assert summary["key_frequencies"]["neuron_logit"]["concentration"] < 0.2
        assert math.isnan(summary["measures"]["restricted_loss"])


def test_a_model_trained_one_epoch_has_no_circuit(tmp_path):
    """The issue's example: p = 31 after one epoch used to report 'key frequencies' [3, 9, 11, 13]."""
    train(Config(p=31, epochs=1, report=False), tmp_path / "run", progress=False)
    result = analysis.analyze(tmp_path / "run", llc_settings=None)
    assert result["circuit"] is False and result["key_frequencies"]["used"] == []
    assert result["key_frequencies"]["neuron_logit"]["candidates"]  # the gap rule still picks candidates ...
    assert result["key_frequencies"]["neuron_logit"]["concentration"] < 0.2  # ... that chance explains
    assert "no sparse set of frequencies" in result["circuit_reason"]


def test_the_no_circuit_rule_on_spectra():
    basis = groups.task_basis("add", 113)
    rng = np.random.default_rng(0)
    d = 128  # independent columns
    energy = rng.chisquare(2 * d, 56)  # a random spectrum: squared norm per frequency
    noise = groups.key_components_of_norms(np.sqrt(np.concatenate([[1.0], energy])), basis, "test", d)
    assert not noise.circuit and noise.freqs == [] and noise.concentration < 0.1
    # five frequencies holding 99% of the norm
    sparse = energy * 1e-3
    sparse[[13, 34, 40, 41, 51]] = energy.sum() / 5
    found = groups.key_components_of_norms(np.sqrt(np.concatenate([[1.0], sparse])), basis, "test", d)
    assert found.circuit and found.freqs == [14, 35, 41, 42, 52] and found.concentration > 0.95
    # the null grows with the number of keys: what the top k of a random spectrum hold
    assert 5 / 56 < groups.null_share(basis.dims, 5, d) < 0.12  # the 5 largest of 56 noisy ones: a little above 5/56
    assert groups.null_share(basis.dims, 5, 1) > groups.null_share(basis.dims, 5, d)  # fewer columns: noisier
    # irreps: one 6-dim irrep holding 90% of S5's norm is a circuit although it has 36 of 119 rows
    s5 = groups.task_basis("perm_xy", 5)
    norms = np.sqrt(np.array([1.0, 1, 16, 16, 25, 25, 36]) * 0.1 / 118)
    norms[6] = np.sqrt(0.9)
    irrep = groups.key_components_of_norms(norms, s5, "test", 64)
    assert irrep.circuit and irrep.freqs == [6] and irrep.labels == ["6d [3,1,1]"]
