"""The MLP model (grokking.mlp): Gromov's closed form, training through the engine, the run
directory, hooks, init_scale, batches, the analysis, and the one-line refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from grokking import analysis
from grokking.batched import BatchedTrainer, check_batch, choose_strategy, train_batched
from grokking.checkpoint import load_checkpoint, load_model
from grokking.cli import main
from grokking.config import Config, ConfigError
from grokking.errors import NotApplicableError
from grokking.factory import build_model
from grokking.fast import MLP_REASON, exact_logits_fn, select_logits_fn
from grokking.fourier import (
    ATTENTION_NOT_APPLICABLE,
    attention_to_inputs,
    embedding_matrix,
    grid_logits,
    neuron_logit_map,
)
from grokking.interop import InteropError, tl_state_dict, to_transformer_lens, transformer_lens_config
from grokking.memory import estimate_memory, parameter_count
from grokking.methods import build_optimizer, is_hidden_matrix
from grokking.mlp import MLP, gromov_config, gromov_model, gromov_weights, mlp_logits
from grokking.model import Transformer
from grokking.train import Trainer, read_metrics, train


def mlp_config(**changes) -> Config:
    """A tiny MLP run (p = 13) that trains in well under a second."""
    return tiny_config(**{**dict(model="mlp", d_model=16, d_mlp=64, lr=1e-2, threads=1), **changes})


def pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return a.flatten(), b.flatten()


def numpy_forward(W_in: np.ndarray, W_U: np.ndarray, n: int) -> np.ndarray:
    """Gromov's network written out: one-hot codes, x @ W1.T, squared, times W2 (float64)."""
    a, b = np.divmod(np.arange(n * n), n)
    x = np.zeros((n * n, 2 * n))
    x[np.arange(n * n), a] = 1.0
    x[np.arange(n * n), n + b] = 1.0
    return ((x @ W_in.T) ** 2) @ W_U


def one_line(err: BaseException) -> bool:
    return "\n" not in str(err) and bool(str(err))


# --- Gromov's closed form ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [23, 59, 97])
def test_gromov_closed_form_adds_every_pair_exactly(n):
    groups_per_freq = 2
    width = 9 * groups_per_freq * ((n - 1) // 2) + 5  # 5 leftover neurons, silent by construction
    weights = gromov_weights(n, width, seed=n)
    W_in, W_U = (weights[k].double().numpy() for k in ("layers.0.W_in", "unembed.W_U"))
    reference = numpy_forward(W_in, W_U, n)
    a, b = np.divmod(np.arange(n * n), n)
    answer = (a + b) % n
    # The derivation's prediction: a delta, (9/4) * groups per frequency * (n [c = a + b] - 1).
    delta = (np.arange(n)[None, :] == answer[:, None]).astype(np.float64)
    assert np.allclose(reference, 9 / 4 * groups_per_freq * (n * delta - 1), atol=1e-6 * width)
    assert (reference.argmax(1) == answer).all()
    model = gromov_model(n, width, seed=n)
    with torch.no_grad():
        logits = model.forward_operands(torch.as_tensor(a), torch.as_tensor(b)).double().numpy()
    assert logits.shape == (n * n, n)
    assert np.allclose(logits, reference, rtol=1e-5, atol=1e-4)
    assert (logits.argmax(1) == answer).all()  # 100% on every pair, in the model's float32


def test_gromov_with_one_frequency_and_gromovs_random_phases():
    # One group: frequency 1 alone; for prime n that already gives every answer.
    n = 23
    a, b = pairs(n)
    with torch.no_grad():
        one = gromov_model(n, 9, seed=1)
        assert (one.forward_operands(a, b).argmax(1) == (a + b) % n).all()
        # Gromov's random phases cancel the other terms only on average: right at large width ...
        wide = gromov_model(n, 4096, seed=0, random_phases=True)
        assert (wide.forward_operands(a, b).argmax(1) == (a + b) % n).all()
        # ... and not at a small one (the exact construction is, at 9 neurons).
        narrow = gromov_model(n, 9, seed=0, random_phases=True)
        assert (narrow.forward_operands(a, b).argmax(1) == (a + b) % n).float().mean() < 1
    with pytest.raises(ConfigError, match="^d_mlp: ") as err:
        gromov_weights(n, 8)
    assert one_line(err.value)


def test_gromov_network_is_the_configured_mlp_and_evaluates_through_the_engine():
    cfg = gromov_config(23, 99)
    model = MLP(cfg)
    assert [n for n, _ in model.named_parameters()] == ["layers.0.W_in", "unembed.W_U"]  # no biases
    assert model.layers[0].W_in.shape == (99, 46) and model.unembed.W_U.shape == (99, 23)
    # Loaded into a run of zero epochs: the engine's own evaluation says 100% on every pair.
    trainer = Trainer(cfg.replace(epochs=0, threads=1), None, progress=False)
    trainer.model.load_state_dict(gromov_weights(23, 99), strict=True)
    summary = trainer.run()
    assert summary["final"]["all_acc"] == 1.0 and summary["final"]["train_acc"] == 1.0


# --- training through the engine, the run directory -----------------------------------------------------
@pytest.mark.parametrize("changes", [dict(), dict(mlp_input="onehot", mlp_act="quadratic"),
                                     dict(mlp_act="gelu", mlp_layers=2), dict(optimizer="muon", warmup_steps=3)],
                         ids=["embed-relu", "gromov", "gelu-2-layers", "muon"])
def test_an_mlp_run_trains_and_its_loss_falls(changes):
    cfg = mlp_config(**changes)
    trainer = Trainer(cfg, None, progress=False)
    assert isinstance(trainer.model, MLP)
    trainer.run()
    records = trainer.records
    assert records[-1]["train_loss"] < 0.5 * records[0]["train_loss"]
    assert records[-1]["train_acc"] > records[0]["train_acc"]


def test_an_mlp_run_resumes_bit_for_bit(tmp_path):
    cfg = mlp_config(epochs=40, batch_size=16, grokfast="ema", checkpoint_every=10)
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    train(cfg.replace(epochs=20), run, progress=False)
    Trainer.resume(run, {"epochs": 40}, progress=False).run()

    def without_seconds(path):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(path)]

    assert without_seconds(run) == without_seconds(tmp_path / "ref") and len(read_metrics(run)) == 9
    ours, theirs = (load_checkpoint(p / "checkpoints" / "last.safetensors")[0] for p in (run, tmp_path / "ref"))
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_cli_trains_an_mlp_whose_checkpoint_loads_back_with_equal_logits(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--model", "mlp", "--mlp-input", "onehot", "--p", "13", "--d-mlp", "48", "--epochs", "30",
             "--eval-every", "10", "--checkpoint-every", "10", "--checkpoint-log", "0", "--threads", "1"]
    assert main(["train", *flags, "--out", str(out), "--no-report", "--quiet"]) == 0
    capsys.readouterr()
    written = json.loads((out / "config.json").read_text())
    assert written["config"]["model"] == "mlp"
    assert written["training_path"] == "mlp" and written["fast_path_fallback_reason"] == MLP_REASON
    loaded = load_model(out)
    assert isinstance(loaded.model, MLP) and loaded.meta["epoch"] == 30
    # The same config trained in this process: the loaded weights give its logits exactly.
    trainer = Trainer(loaded.cfg, None, progress=False)
    trainer.run()
    a, b = pairs(13)
    with torch.no_grad():
        assert torch.equal(loaded.model.forward_operands(a, b), trainer.model.eval().forward_operands(a, b))
    assert main(["eval", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    last = read_metrics(out)[-1]
    assert evaluated["train_loss"] == pytest.approx(last["train_loss"], rel=1e-6)
    assert evaluated["test_acc"] == last["test_acc"]


@pytest.mark.parametrize("changes", [dict(mlp_input="onehot", mlp_act="quadratic"), dict(mlp_layers=2)],
                         ids=["onehot", "embed-2-layers"])
def test_analyze_reads_an_mlp_run_and_says_what_does_not_apply(tmp_path, changes):
    run = tmp_path / "run"
    train(mlp_config(epochs=20, checkpoint_every=10, **changes), run, progress=False)
    result = analysis.analyze(run, llc_settings=None)
    assert result["not_applicable"] == {"attention": ATTENTION_NOT_APPLICABLE}
    assert "attention.png" not in result["figures"]
    assert {"fourier_spectra.png", "neuron_clusters.png", "progress.png"} <= set(result["figures"])
    assert not (run / "analysis" / "attention.png").exists()
    assert result["neurons"]["n_neurons"] == 64 and len(result["progress"]["epoch"]) == 3
    last = read_metrics(run)[-1]
    assert result["measures"]["train_acc"] == pytest.approx(last["train_acc"])


def test_the_analysis_finds_the_closed_forms_single_frequency():
    model = gromov_model(23, 9, seed=3)  # every neuron at frequency 1
    result = analysis.analyze_model(model)
    assert result["circuit"] and result["key_frequencies"]["used"] == [1]
    assert result["key_frequencies"]["embedding"]["freqs"] == [1]
    # h^2 = ... + cos(w(a+b)) + cos(w(a-b)) + cos(2wa)/2 + cos(2wb)/2: frequency 1 holds 2 / 2.5 of it.
    assert result["neurons"]["freq"] == [1] * 9
    assert np.allclose(result["neurons"]["frac_explained"], 0.8)
    assert result["measures"]["test_acc"] == 1.0
    # The embedding is the first layer's columns over a and over b; the neuron-logit map is W_U.T.
    W_in = model.layers[0].W_in.detach().double().numpy()
    assert np.array_equal(embedding_matrix(model), np.concatenate([W_in[:, :23].T, W_in[:, 23:].T], 1))
    assert torch.equal(neuron_logit_map(model), model.unembed.W_U.detach().T)
    assert torch.equal(grid_logits(model).reshape(-1, 23), model.forward_operands(*pairs(23)).detach())


# --- hooks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mlp_input, width", [("embed", 16), ("onehot", 13)])
def test_run_with_cache_gives_the_documented_hooks_and_shapes(mlp_input, width):
    model = MLP(mlp_config(mlp_input=mlp_input, mlp_layers=2))  # d_model 16: unused with one-hot codes
    tokens = torch.tensor([[1, 2, 13], [3, 4, 13], [12, 0, 13], [5, 5, 13], [0, 7, 13]])
    logits, cache = model.run_with_cache(tokens)
    assert {k: tuple(v.shape) for k, v in cache.items()} == {
        "hook_embed": (5, 2, width), "layers.0.hook_pre": (5, 64), "layers.0.hook_post": (5, 64),
        "layers.1.hook_pre": (5, 64), "layers.1.hook_post": (5, 64)}
    assert logits.shape == (5, 13)
    assert torch.equal(cache["layers.1.hook_post"], torch.relu(cache["layers.1.hook_pre"]))
    with torch.no_grad():
        assert torch.equal(model(tokens), logits)  # the gathered one-hot path gives the same numbers
        assert torch.equal(model(tokens[:, :2]), logits)  # '=' is ignored
    if mlp_input == "onehot":
        a, b = tokens[:, 0], tokens[:, 1]
        assert torch.equal(cache["hook_embed"][:, 0], torch.nn.functional.one_hot(a, 13).float())
        assert torch.equal(cache["hook_embed"][:, 1], torch.nn.functional.one_hot(b, 13).float())
    # A hook that edits the input takes effect (here: every example becomes the first one's input).
    patched = model.run_with_hooks(tokens, [("hook_embed", lambda x, hook: x[:1].expand_as(x))])
    assert torch.allclose(patched, logits[:1].expand_as(logits), atol=1e-6)
    _, grads = model.run_with_cache(tokens, incl_bwd=True, loss_fn=lambda out: out.sum())
    assert grads["layers.0.hook_post_grad"].shape == (5, 64)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


# --- init_scale -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [mlp_config(mlp_layers=2), mlp_config(mlp_input="onehot", mlp_act="quadratic"),
                                 tiny_config(), tiny_config(layernorm=True, n_layers=2)],
                         ids=["mlp", "gromov", "transformer", "transformer-ln"])
def test_init_scale_multiplies_every_initial_weight_exactly(cfg):
    plain, scaled = build_model(cfg).state_dict(), build_model(cfg.replace(init_scale=0.3)).state_dict()
    parameters = {name for name, _ in build_model(cfg).named_parameters()}
    assert sorted(plain) == sorted(scaled)
    for name in plain:
        want = plain[name] * 0.3 if name in parameters else plain[name]  # buffers (the mask) are not weights
        assert torch.equal(scaled[name], want), name


def test_init_scale_one_leaves_the_transformer_bit_identical_to_the_seeds(seed_reference):
    torch.manual_seed(0)
    ref = seed_reference.Transformer(d_vocab=114)
    ours = Transformer(Config(seed=0, init_scale=1.0))
    for (name, mine), theirs in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(mine, theirs), name
    assert Config(init_scale=1.0).key() == Config().key()


# --- batches ------------------------------------------------------------------------------------------------
def test_a_batch_of_mlp_runs_trains_separately_and_equals_single_runs():
    cfgs = [mlp_config(seed=0, epochs=20), mlp_config(seed=1, lr=3e-3, epochs=15)]
    trainer = BatchedTrainer(cfgs, None, strategy="auto", progress=False)
    assert trainer.strategy == "separate"
    trainer.run()
    for run, cfg in zip(trainer.runs, cfgs):
        single = Trainer(cfg, None, progress=False)
        single.run()
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in run.records] == \
               [{k: v for k, v in r.items() if k != "seconds"} for r in single.records]
    assert choose_strategy("auto", torch.device("cuda"), "mlp") == "separate"  # never stacked, on any device
    assert choose_strategy("auto", torch.device("cuda")) == "stacked"


def test_refusals_are_one_line_naming_the_field():
    cases = [
        (lambda: train_batched([mlp_config()], None, progress=False, strategy="stacked"), ConfigError, "strategy: "),
        (lambda: check_batch([mlp_config(), mlp_config(mlp_act="gelu")]), ConfigError, "mlp_act: "),
        (lambda: check_batch([mlp_config(), tiny_config()]), ConfigError, "model: "),
        (lambda: check_batch([tiny_config(), mlp_config(d_model=32)]), ConfigError, "model: "),
        (lambda: mlp_config(n_layers=2), ConfigError, "n_layers: "),
        (lambda: mlp_config(act="gelu"), ConfigError, "act: "),
        (lambda: mlp_config(layernorm=True), ConfigError, "layernorm: "),
        (lambda: MLP(tiny_config()), ConfigError, "model: "),
        (lambda: to_transformer_lens(MLP(mlp_config())), InteropError, "cannot export model=mlp"),
        (lambda: tl_state_dict(MLP(mlp_config())), InteropError, "cannot export model=mlp"),
        (lambda: transformer_lens_config(mlp_config()), InteropError, "cannot export model=mlp"),
        (lambda: attention_to_inputs(MLP(mlp_config())), NotApplicableError, "attention: "),
        (lambda: neuron_logit_map(MLP(mlp_config(mlp_layers=2)), layer=0), NotApplicableError, "layer: "),
    ]
    for call, error, start in cases:
        with pytest.raises(error) as err:
            call()
        assert str(err.value).startswith(start) and one_line(err.value), str(err.value)
    mlp_config(d_model=30)  # an embedding width need not divide by the transformer's heads


# --- the pieces that know the model kind -----------------------------------------------------------------------
@pytest.mark.parametrize("changes", [dict(), dict(mlp_input="onehot"), dict(mlp_act="quadratic", mlp_layers=3),
                                     dict(mlp_input="onehot", mlp_act="gelu", mlp_layers=2)])
def test_parameter_count_and_memory_path_follow_the_mlp(changes):
    cfg = mlp_config(**changes)
    assert parameter_count(cfg) == sum(p.numel() for p in MLP(cfg).parameters())
    estimate = estimate_memory([cfg], "cpu")
    assert estimate.path == "mlp" and estimate.total > 4 * parameter_count(cfg)


def test_logits_functions_and_muon_groups_for_an_mlp():
    cfg = mlp_config()
    assert select_logits_fn(cfg) == (mlp_logits, MLP_REASON)
    assert select_logits_fn(cfg.replace(fast=False))[0] is mlp_logits and exact_logits_fn(cfg) is mlp_logits
    model = MLP(mlp_config(mlp_layers=2))
    hidden = {n for n, p in model.named_parameters() if is_hidden_matrix(n, p)}
    assert hidden == {"layers.0.W_in", "layers.1.W_in"}  # not the embedding, unembedding or biases
    onehot = mlp_config(mlp_input="onehot", mlp_layers=2, optimizer="muon")
    groups = build_optimizer(onehot, MLP(onehot)).param_groups
    muon_shapes = [tuple(p.shape) for p in groups[0]["params"]]
    assert groups[0]["muon"] and muon_shapes == [(64, 64)]  # the first layer reads one-hot codes: an embedding
    assert math.isclose(groups[1]["lr"], onehot.lr)
