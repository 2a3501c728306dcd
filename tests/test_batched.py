"""Batched training: K runs as one model train as K separate runs would."""
import json
import os

import pytest
import torch
from conftest import tiny_config

from grokking.batched import (
    BatchedTrainer,
    BatchedTransformer,
    RunGroup,
    StackedData,
    batched_hooked_last_position_logits,
    batched_last_position_logits,
    check_batch,
    evaluate_batched,
    per_run_train_loss,
    train_batched,
)
from grokking.checkpoint import load_model, snapshots
from grokking.cli import main
from grokking.data import make_dataset
from grokking.fast import last_position_logits
from grokking.methods import loss_function
from grokking.model import Transformer
from grokking.train import Trainer, evaluate, read_metrics, train

# Three runs that differ in seed, weight decay, learning rate, training fraction (so train
# set size), clipping, learning-rate schedule and budget (the shortest leaves the batch early).
MIXED = [
    dict(seed=0, weight_decay=1.0, frac=0.3, lr=1e-2, epochs=30, lr_decay_steps=40),
    dict(seed=1, weight_decay=0.0, frac=0.5, lr=5e-3, epochs=20, beta2=0.99),
    dict(seed=2, weight_decay=0.3, frac=0.7, lr=1e-2, epochs=30, grad_clip=0.5, warmup_steps=3),
]


def mixed_configs(**changes):
    return [tiny_config(**{**run, "eval_every": 5, **changes}) for run in MIXED]


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    # Non-trivial biases and LayerNorm gains, so every parameter's gradient is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".b_in", ".b_out", ".w", ".b")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def test_initial_weights_are_each_runs_own_and_run_k_is_a_seed_model():
    cfgs = mixed_configs(layernorm=True)
    batched = BatchedTransformer(cfgs)
    assert batched.embed.W_E.shape == (3, 32, 14) and batched.blocks[0].mlp.W_in.shape == (3, 64, 32)
    for k, cfg in enumerate(cfgs):
        expected = Transformer(cfg).state_dict()
        got = batched.run(k).state_dict()
        assert list(got) == list(expected)
        assert all(torch.equal(got[name], t) for name, t in expected.items())


@pytest.mark.parametrize("changes", [{}, {"layernorm": True, "act": "gelu"}, {"d_head": 16, "n_heads": 2}],
                         ids=["seed", "ln-gelu", "d_head"])
def test_batched_fast_path_equals_each_runs_fast_path_and_the_hooked_forward(changes):
    torch.manual_seed(0)
    batched = perturbed(BatchedTransformer([tiny_config(seed=s, **changes) for s in range(3)]))
    ds = make_dataset("add", 13, 0.5, 0)
    with torch.no_grad():
        fast = batched_last_position_logits(batched, ds.tokens)
        hooked = batched_hooked_last_position_logits(batched, ds.tokens)
        assert fast.shape == (3, 169, 14)
        assert (fast - hooked).abs().max() < 1e-5
        for k in range(3):
            assert (fast[k] - last_position_logits(batched.run(k), ds.tokens)).abs().max() < 1e-5


def test_hooks_carry_a_leading_run_dimension_and_match_each_run():
    batched = BatchedTransformer([tiny_config(seed=s) for s in range(2)])
    tokens = make_dataset("add", 13, 0.5, 0).tokens[:5]
    logits, cache = batched.run_with_cache(tokens)
    assert logits.shape == (2, 5, 3, 14)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 5, 4, 3, 3)
    assert cache["blocks.0.mlp.hook_post"].shape == (2, 5, 3, 64)
    for k in range(2):
        _, single = batched.run(k).run_with_cache(tokens)
        for name in ("hook_embed", "blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_pre"):
            assert torch.allclose(cache[name][k], single[name], atol=1e-6), name
    assert all(not m._forward_hooks and not m._backward_hooks for m in batched.modules())
    # Intervene on one run only: zero run 1's MLP output; run 0 is untouched.
    def ablate(x, hook):
        x = x.clone()
        x[1] = 0
        return x
    patched = batched.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", ablate)])
    assert torch.equal(patched[0], logits[0]) and not torch.allclose(patched[1], logits[1])


@pytest.mark.parametrize("loss", ["ce", "stablemax"])
def test_summed_loss_gives_each_run_its_single_run_gradient(loss):
    cfgs = mixed_configs(loss=loss, layernorm=True)
    torch.manual_seed(1)
    batched = perturbed(BatchedTransformer(cfgs))
    datasets = [make_dataset(c.op, c.p, c.frac, c.seed) for c in cfgs]
    assert len({len(d.train_idx) for d in datasets}) == 3  # ragged train sets
    data = StackedData.from_datasets(datasets)
    per_run = per_run_train_loss(batched, data, cfgs[0])
    assert per_run.dtype == torch.float64 and per_run.shape == (3,)
    grads = torch.autograd.grad(per_run.sum(), list(batched.parameters()))
    for k, (cfg, ds) in enumerate(zip(cfgs, datasets)):
        model = batched.run(k)
        tokens, labels = ds.split("train")
        single = loss_function(cfg)(last_position_logits(model, tokens), labels)
        assert abs(per_run[k].item() - single.item()) < 1e-6 * single.item()
        single_grads = torch.autograd.grad(single, list(model.parameters()))
        for (name, _), g_batch, g_single in zip(model.named_parameters(), grads, single_grads):
            scale = g_single.abs().max().item() + 1e-12
            assert (g_batch[k] - g_single).abs().max().item() < 1e-5 * scale, (k, name)


def test_batched_evaluation_equals_train_evaluate_per_run():
    cfgs = mixed_configs()
    batched = BatchedTransformer(cfgs)
    datasets = [make_dataset(c.op, c.p, c.frac, c.seed) for c in cfgs]
    figures = evaluate_batched(batched, StackedData.from_datasets(datasets), cfgs[0])
    for k, ds in enumerate(datasets):
        expected = evaluate(batched.run(k), ds)
        for value, key in zip(figures[k].tolist(), expected):  # float32 logits: bmm vs mm round-off
            assert value == pytest.approx(expected[key], rel=1e-6 if key.endswith("loss") else 1e-12), key


def separate_records(cfgs):
    records = []
    for cfg in cfgs:
        trainer = Trainer(cfg, None, progress=False)
        trainer.run()
        records.append(trainer.records)
    return records


def assert_same_curves(batch_records, single_records, rel=1e-4):
    assert [r["epoch"] for r in batch_records] == [r["epoch"] for r in single_records]
    for got, want in zip(batch_records, single_records):
        for key in ("train_loss", "test_loss", "all_loss"):
            assert abs(got[key] - want[key]) <= rel * abs(want[key]), (got["epoch"], key, got[key], want[key])
        for key in ("train_acc", "test_acc"):
            assert got[key] == pytest.approx(want[key], abs=0.01), (got["epoch"], key)
        assert got["step"] == want["step"] and got["lr"] == pytest.approx(want["lr"])
        assert got["weight_norm"] == pytest.approx(want["weight_norm"], rel=1e-4)


@pytest.mark.parametrize("strategy", ["stacked", "separate", "loop"])
def test_batched_run_matches_separate_runs(strategy):
    cfgs = mixed_configs()
    trainer = BatchedTrainer(cfgs, None, strategy=strategy, progress=False)
    summaries = trainer.run()
    for run, single in zip(trainer.runs, separate_records(cfgs)):
        assert_same_curves(run.records, single)
        assert run.records[-1]["train_loss"] < 0.8 * run.records[0]["train_loss"]  # it did learn
    assert [s["epochs_run"] for s in summaries] == [30, 20, 30]


@pytest.mark.parametrize("changes", [dict(grokfast="ema"), dict(grokfast="ma", grokfast_window=3),
                                     dict(optimizer="adam", weight_decay=1e-3), dict(loss="stablemax"),
                                     dict(optimizer="orthoadamw", weight_decay=0.3),
                                     dict(optimizer="muon", warmup_steps=3)],
                         ids=["grokfast-ema", "grokfast-ma", "adam-l2", "stablemax", "orthoadamw", "muon"])
def test_methods_match_separate_runs(changes):
    # The two runs differ in seed and in each method's own per-run knobs.
    per_run = ((0, dict(grokfast_lamb=2.0, muon_lr=0.02, momentum=0.95, grad_clip=0.0)),
               (1, dict(grokfast_lamb=0.5, muon_lr=0.05, momentum=0.5, grad_clip=0.05)))
    cfgs = [tiny_config(seed=s, epochs=12, eval_every=4, lr=3e-3, **knobs, **changes) for s, knobs in per_run]
    trainer = BatchedTrainer(cfgs, None, strategy="stacked", progress=False)
    trainer.run()
    for run, single in zip(trainer.runs, separate_records(cfgs)):
        assert_same_curves(run.records, single)


class FlatRuns:
    """A stacked group's runs seen as flat ``[K, P]`` weights and gradients, to compare each run's
    update with torch's optimiser on one flat vector."""

    def __init__(self, cfgs, weights):
        datasets = [make_dataset(c.op, c.p, c.frac, c.seed) for c in cfgs]
        self.group = RunGroup(cfgs, datasets, torch.device("cpu"), stacked=True)
        self.sizes = [p.numel() for p in self.group.params[0]]
        with torch.no_grad():
            for k, params in enumerate(self.group.params):
                for p, chunk in zip(params, weights[k].split(self.sizes)):
                    p.copy_(chunk.view_as(p))

    @property
    def data(self) -> torch.Tensor:
        return torch.stack([torch.cat([p.detach().flatten() for p in params]) for params in self.group.params])

    @property
    def grad(self) -> torch.Tensor:
        return torch.stack([torch.cat([p.grad.flatten() for p in params]) for params in self.group.params])

    def set_grad(self, grad: torch.Tensor) -> None:
        for p, chunk in zip(self.group.model.parameters(), grad.split(self.sizes, 1)):
            p.grad = chunk.reshape(p.shape).clone()


def n_weights(cfg) -> int:
    return sum(p.numel() for p in Transformer(cfg).parameters())


def flat_optimizer(cfgs, weights):
    """The stacked runs and the function that applies one update to every run (filter, clipping, optimiser)."""
    flat = FlatRuns(cfgs, weights)
    return flat, flat.group


def test_per_run_hyperparameters_give_torch_adamw_updates_for_each_run():
    cfgs = [tiny_config(seed=0, weight_decay=0.0, lr=1e-3, warmup_steps=0),
            tiny_config(seed=0, weight_decay=1.0, lr=1e-3, warmup_steps=0),
            tiny_config(seed=0, weight_decay=0.1, lr=3e-3, beta1=0.8, beta2=0.9, eps=1e-6, warmup_steps=3)]
    torch.manual_seed(0)
    n = n_weights(cfgs[0])
    start = torch.randn(n).expand(3, n).clone()  # the same weights for every run
    flat, optimizer = flat_optimizer(cfgs, start)
    singles = [torch.nn.Parameter(start[0].clone()) for _ in cfgs]
    torch_opts = [torch.optim.AdamW([p], lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=c.weight_decay)
                  for p, c in zip(singles, cfgs)]
    from grokking.methods import lr_factor
    for step in range(6):
        grad = torch.randn(n)
        flat.set_grad(grad.expand(3, n))
        optimizer.update()
        for p, opt, cfg in zip(singles, torch_opts, cfgs):
            opt.param_groups[0]["lr"] = cfg.lr * lr_factor(cfg, step)
            p.grad = grad.clone()
            opt.step()
        if step == 0:  # the warm-up's step 0 has lr 0 (run 2); runs 0 and 1 have no warm-up
            assert torch.equal(flat.data[2], start[2]) and not torch.equal(flat.data[0], start[0])
        for k, p in enumerate(singles):
            assert torch.allclose(flat.data[k], p.detach(), rtol=1e-5, atol=1e-7), (step, k)
    # Weight decay really is per run: same gradients, wd 0 vs wd 1.
    assert (flat.data[0] - flat.data[1]).abs().max() > 1e-4


def assert_continues_like_a_separate_run(resumed: Trainer, cfg, epochs: int) -> None:
    """A batched run's checkpoint, resumed alone for more epochs, ends close to a separate run."""
    resumed.cfg = resumed.cfg.replace(epochs=epochs)
    resumed.run()
    longer = Trainer(cfg.replace(epochs=epochs), None, progress=False)
    longer.run()
    assert resumed.records[-1]["epoch"] == epochs
    assert resumed.records[-1]["train_loss"] == pytest.approx(longer.records[-1]["train_loss"], rel=1e-4)


def test_batched_muon_and_orthoadamw_checkpoints_resume_as_single_runs(tmp_path):
    for optimizer in ("muon", "orthoadamw"):
        cfgs = [tiny_config(seed=s, optimizer=optimizer, epochs=10, eval_every=5, checkpoint_every=10, lr=3e-3,
                            weight_decay=0.3) for s in (0, 1)]
        outs = [tmp_path / optimizer / "a", tmp_path / optimizer / "b"]
        train_batched(cfgs, outs, progress=False, strategy="stacked")
        resumed = Trainer.resume(outs[1], progress=False)
        if optimizer == "muon":  # the saved state is MuonAdamW's: momentum for hidden matrices, Adam moments else
            kinds = {tuple(sorted(st)) for st in resumed.optimizer.state.values()}
            assert kinds == {("momentum_buffer",), ("exp_avg", "exp_avg_sq", "step")}
        assert_continues_like_a_separate_run(resumed, cfgs[1], epochs=16)


def test_per_run_gradient_clipping():
    cfgs = [tiny_config(grad_clip=0.0), tiny_config(grad_clip=0.1), tiny_config(grad_clip=1e6)]
    torch.manual_seed(0)
    n = n_weights(cfgs[0])
    flat, optimizer = flat_optimizer(cfgs, torch.randn(n).expand(3, n).clone())
    grad = torch.randn(n)
    flat.set_grad(grad.expand(3, n))
    optimizer.update()  # clips each run's gradient (then steps, which leaves the gradients as they are)
    assert torch.equal(flat.grad[0], grad) and torch.equal(flat.grad[2], grad)  # off, and far below the limit
    reference = [torch.nn.Parameter(torch.zeros(n))]
    reference[0].grad = grad.clone()
    torch.nn.utils.clip_grad_norm_(reference, 0.1)
    assert torch.allclose(flat.grad[1], reference[0].grad, rtol=1e-6)
    assert flat.grad[1].norm().item() == pytest.approx(0.1, rel=1e-5)


def test_unsupported_batches_are_refused_naming_the_field():
    cases = [([tiny_config(), tiny_config(d_model=64)], "d_model"),
             ([tiny_config(n_layers=2)], "n_layers"),
             ([tiny_config(optimizer="sgd")], "optimizer"),
             ([tiny_config(optimizer="muon"), tiny_config()], "optimizer"),
             ([tiny_config(), tiny_config(loss="stablemax")], "loss"),
             ([tiny_config(batch_size=16)], "batch_size"),
             ([tiny_config(compile=True)], "compile"),
             ([tiny_config(grokfast="ema"), tiny_config()], "grokfast")]
    for cfgs, name in cases:
        with pytest.raises(ValueError, match=f"^{name}: "):
            check_batch(cfgs)


def test_run_directories_are_complete_loadable_and_resumable(tmp_path):
    cfgs = [tiny_config(seed=0, epochs=25, eval_every=5, checkpoint_every=10),
            tiny_config(seed=1, frac=0.5, epochs=25, eval_every=5, checkpoint_every=10, stop_at_test_acc=0.0)]
    outs = [tmp_path / "a", tmp_path / "b"]
    summaries = train_batched(cfgs, outs, progress=False, strategy="stacked")
    single = tmp_path / "single"
    train(cfgs[0], single, progress=False)
    for out in outs + [single]:
        assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoints", "curves.png",
                                                   "summary.json"}
    # Same snapshot epochs as a separate run; the stopped run is finalised at its stop epoch.
    assert [e for e, _ in snapshots(outs[0])] == [e for e, _ in snapshots(single)] == [0, 10, 20, 25]
    assert summaries[1]["status"] == "stopped_early" and summaries[1]["epochs_run"] == 0
    assert [e for e, _ in snapshots(outs[1])] == [0]
    assert summaries[0]["status"] == "completed" and summaries[0]["epochs_run"] == 25
    assert json.loads((outs[0] / "summary.json").read_text()) == summaries[0]
    assert json.loads((outs[0] / "config.json").read_text())["batched"]["n_runs"] == 2
    # The last checkpoint holds the final weights: evaluating it gives the last record.
    loaded = load_model(outs[0])
    last = read_metrics(outs[0])[-1]
    figures = evaluate(loaded.model, loaded.dataset)
    assert figures["train_loss"] == pytest.approx(last["train_loss"], rel=1e-5)
    assert loaded.meta["epoch"] == 25
    # ... and it is a single-run checkpoint: the run continues alone, close to a separate run.
    assert_continues_like_a_separate_run(Trainer.resume(outs[0], progress=False), cfgs[0], epochs=30)


def test_cli_batch_trains_the_grid(tmp_path, capsys):
    flags = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "3", "--eval-every", "1",
             "--checkpoint-log", "0", "--no-report", "--quiet"]
    code = main(["batch", "--out", str(tmp_path / "b"), "--grid", "seed=0,1", "--grid", "weight_decay=0,1", *flags])
    assert code == 0
    manifest = json.loads((tmp_path / "b" / "batch.json").read_text())
    names = sorted(p.name for p in (tmp_path / "b" / "runs").iterdir())
    assert names == ["seed=0_weight_decay=0", "seed=0_weight_decay=1", "seed=1_weight_decay=0", "seed=1_weight_decay=1"]
    assert len(manifest["runs"]) == 4 and all(r["status"] == "completed" for r in manifest["runs"])
    cfg = json.loads((tmp_path / "b" / "runs" / "seed=1_weight_decay=0" / "config.json").read_text())["config"]
    assert cfg["seed"] == 1 and cfg["weight_decay"] == 0.0 and cfg["p"] == 13
    capsys.readouterr()
    assert main(["batch", "--out", str(tmp_path / "c"), "--grid", "d_model=32,64", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d_model" in err and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_benchmark_reports_each_strategy():
    from grokking.batched import benchmark_batched

    result = benchmark_batched(k=2, epochs=2, repeats=1, base=tiny_config(device="cpu"))
    assert set(result) == {"sequential", "stacked", "separate"} and all(v > 0 for v in result.values())


def test_a_run_that_fails_stops_alone_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    original = RunGroup.train_epoch

    def poisoned(self):  # run 1's weights turn to NaN at step 7, as a diverging run's would
        original(self)
        seeds = [c.seed for c in self.cfgs]
        if self.step_count == 7 and 1 in seeds:
            with torch.no_grad():
                for p in self.params[seeds.index(1)]:
                    p.fill_(float("nan"))

    monkeypatch.setattr(RunGroup, "train_epoch", poisoned)
    cfgs = [tiny_config(seed=s, epochs=15, eval_every=5, checkpoint_every=5) for s in range(3)]
    outs = [tmp_path / str(s) for s in range(3)]
    summaries = train_batched(cfgs, outs, progress=False, strategy="stacked")
    assert [s["status"] for s in summaries] == ["completed", "failed", "completed"]
    assert "non-finite" in summaries[1]["error"] and summaries[1]["epochs_run"] == 10
    assert [r["epoch"] for r in read_metrics(outs[1])] == [0, 5]
    assert load_model(outs[1]).meta["epoch"] == 5  # the last good checkpoint
    for k in (0, 2):
        assert_same_curves(read_metrics(outs[k]), separate_records([cfgs[k]])[0])


ODD_SIZES = dict(p=7, d_model=20, n_heads=2, d_mlp=36)  # b_out has 20 elements: a vector and a tail


@pytest.mark.parametrize("shape", [dict(), ODD_SIZES], ids=["tiny", "odd-sizes-forced"])
def test_a_shared_recipe_steps_all_runs_in_one_optimiser_exactly_as_each_runs_own(shape):
    """Runs with one AdamW recipe step through one optimiser over the stacked weights: the same
    weights and optimiser state, bit for bit, as each run through its own, also after a run
    leaves the group. Sizes that are not whole vectors keep their own optimisers (the CPU
    kernel's scalar tail rounds differently), and forcing the shared one on them shows why.
    ``GROKKING_TEST_DEVICE=cuda`` runs it on a GPU (scripts/gpu_check.sh does)."""
    device = torch.device(os.environ.get("GROKKING_TEST_DEVICE", "cpu"))
    cfgs = [tiny_config(seed=s, warmup_steps=3, weight_decay=1.0, lr=3e-3, **shape) for s in range(3)]
    datasets = [make_dataset(c.op, c.p, c.frac, c.seed).to(device) for c in cfgs]
    shared, own = (RunGroup(cfgs, datasets, device, stacked=True) for _ in range(2))
    own.shared = None  # each run through its own optimiser, as for runs with different recipes
    if shape:
        assert shared.shared is None
        shared.SHARED_ALIGNMENT = 1
        shared.shared = shared._shared_optimizer()
    assert shared.shared is not None
    torch.manual_seed(0)

    def step_both(n: int) -> None:
        for _ in range(n):
            grads = [torch.randn_like(p) for p in shared.model.parameters()]
            for group in (shared, own):
                for p, g in zip(group.model.parameters(), grads):
                    p.grad = g.clone()
                group.update()

    def assert_same() -> None:
        for a, b in zip(shared.model.parameters(), own.model.parameters()):
            assert torch.equal(a, b)
        for slot in range(len(shared.cfgs)):
            (mine, meta), (theirs, their_meta) = shared.state_tensors(slot), own.state_tensors(slot)
            assert mine.keys() == theirs.keys() and meta == their_meta
            for key in mine:
                assert torch.equal(mine[key], theirs[key]), (slot, key)

    step_both(5)
    if shape and device.type == "cpu":
        with pytest.raises(AssertionError):
            assert_same()
        return
    assert_same()
    for group in (shared, own):
        group.drop([1])
    assert shared.shared is not None and len(shared.cfgs) == 2
    step_both(4)
    assert_same()


def test_runs_with_different_recipes_or_per_run_methods_keep_their_own_optimisers():
    datasets = [make_dataset("add", 13, 0.3, s) for s in range(2)]
    for changes in (dict(lr=1e-2), dict(weight_decay=0.5), dict(grad_clip=0.5), dict(grokfast="ema"),
                    dict(optimizer="adam")):
        cfgs = [tiny_config(seed=0), tiny_config(seed=1, **changes)]
        if "grokfast" in changes or "grad_clip" in changes or "optimizer" in changes:
            cfgs[0] = cfgs[0].replace(**changes)
        assert RunGroup(cfgs, datasets, torch.device("cpu"), stacked=True).shared is None, changes
    same = [tiny_config(seed=0), tiny_config(seed=1)]
    assert RunGroup(same, datasets, torch.device("cpu"), stacked=True).shared is not None
    assert RunGroup(same[:1], datasets[:1], torch.device("cpu")).shared is None  # one run: its own optimiser
