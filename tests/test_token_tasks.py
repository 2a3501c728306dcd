"""The tasks that are not binary tables: sort/reverse/copy (openai/grok's list tasks), sparse parity
and the digits images. Each dataset is checked against an independent computation of its examples,
and each trains end to end through the engine on the transformer and the MLP."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from grokking.cli import main
from grokking.config import Config, ConfigError, build_dataset
from grokking.data import task_kind, task_names
from grokking.evaluation import evaluate
from grokking.fast import hooked_last_position_logits, select_logits_fn
from grokking.mlp import MLP
from grokking.model import Transformer
from grokking.train import Trainer, train

SEQUENCE = {"sort": sorted, "reverse": lambda xs: list(reversed(xs)), "copy": list}


@pytest.mark.parametrize("op", sorted(SEQUENCE))
def test_sequence_examples_are_every_list_with_its_answer_teacher_forced(op):
    p, length = 6, 3
    ds = build_dataset(Config(op=op, p=p, seq_len=length, frac=0.5))
    lists = [list(t) for t in itertools.permutations(range(p), length)]  # openai/grok's _make_lists
    assert ds.tokens.shape == (math.perm(p, length), 2 * length) and ds.labels.shape == (len(lists), length)
    for row, labels, xs in zip(ds.tokens.tolist(), ds.labels.tolist(), lists):
        answer = SEQUENCE[op](xs)
        assert labels == answer
        assert row == xs + [p] + answer[:-1]  # x_1..x_L = y_1..y_{L-1}: y_i predicted before it is read
    assert ds.output_len == length and ds.n == p and ds.eq_token == p


def test_parity_examples_are_distinct_strings_labelled_by_the_xor_of_the_first_k_bits():
    cfg = Config(op="parity", parity_bits=12, parity_k=3, n_examples=1500, frac=0.5, seed=4)
    ds = build_dataset(cfg)
    bits = ds.tokens[:, :-1].numpy()
    assert ds.tokens.shape == (1500, 13) and (ds.tokens[:, -1] == 2).all() and set(np.unique(bits)) <= {0, 1}
    assert len({tuple(r) for r in bits.tolist()}) == 1500  # no test string repeats a training one
    expected = [int(r[0]) ^ int(r[1]) ^ int(r[2]) for r in bits.tolist()]
    assert ds.labels.tolist() == expected
    assert 0.45 < ds.labels.double().mean() < 0.55  # balanced, as uniform strings are
    other = build_dataset(cfg.replace(seed=5))
    assert not torch.equal(other.tokens, ds.tokens) and torch.equal(build_dataset(cfg).tokens, ds.tokens)
    assert len(ds.train_idx) == 750 and len(set(ds.train_idx.tolist()) | set(ds.test_idx.tolist())) == 1500


def test_digits_are_sklearns_bundled_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    ds = build_dataset(Config(op="digits", model="mlp", mlp_input="value", frac=0.5))
    assert torch.equal(ds.tokens, torch.from_numpy(digits.data.astype(np.int64)))
    assert torch.equal(ds.labels, torch.from_numpy(digits.target.astype(np.int64)))
    assert ds.n == 10 and ds.tokens.shape == (1797, 64) and int(ds.tokens.max()) == 16


def test_the_seed_split_of_a_token_task_is_the_seed_procedure_over_its_rows():
    import random

    ds = build_dataset(Config(op="copy", p=5, seq_len=2, frac=0.3, seed=7))
    rows = list(range(20))
    random.seed(7)
    random.shuffle(rows)
    assert ds.train_idx.tolist() == rows[:6] and ds.test_idx.tolist() == rows[6:]


def test_every_task_is_listed_with_its_kind(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for name in task_names():
        assert name in out
    assert {task_kind(n) for n in task_names()} == {"table", "sequence", "parity", "digits"}
    assert "mlp" in out and "transformer" in out


def test_sequence_loss_and_accuracy_match_an_independent_computation():
    cfg = Config(op="sort", p=5, seq_len=3, frac=0.5, d_model=32, d_mlp=64, n_heads=2)
    model, ds = Transformer(cfg), build_dataset(cfg)
    figures = evaluate(model, ds)
    with torch.no_grad():
        logits = model(ds.tokens)[:, -3:, :].double()  # positions '=', y_1, y_2 predict y_1, y_2, y_3
    log_probs = torch.log_softmax(logits, -1)
    token_loss = -log_probs.gather(-1, ds.labels[..., None])[..., 0]  # [N, 3]
    right = (logits.argmax(-1) == ds.labels).all(-1).double()
    for split, idx in (("train", ds.train_idx), ("test", ds.test_idx)):
        assert figures[f"{split}_loss"] == pytest.approx(token_loss[idx].mean().item(), rel=1e-6)  # float32 logits
        assert figures[f"{split}_acc"] == pytest.approx(right[idx].mean().item(), abs=1e-12)


def test_a_sequence_answer_is_right_under_teacher_forcing_exactly_when_greedy_decoding_is():
    cfg = Config(op="reverse", p=5, seq_len=3, frac=0.5, d_model=32, d_mlp=64, n_heads=2, lr=1e-2, epochs=16,
                 report=False, threads=1)
    trainer = Trainer(cfg, None, progress=False)
    trainer.run()
    model, ds = trainer.model.eval(), trainer.dataset
    with torch.no_grad():
        forced = hooked_last_position_logits(model, ds.tokens).argmax(-1)
        context = ds.tokens[:, :4].clone()  # x_1 x_2 x_3 =
        for _ in range(2):
            step = model(context)[:, -1].argmax(-1)
            context = torch.cat([context, step[:, None]], 1)
        greedy = torch.cat([context[:, 4:], model(context)[:, -1].argmax(-1)[:, None]], 1)
    forced_right, greedy_right = (forced == ds.labels).all(1), (greedy == ds.labels).all(1)
    assert 0 < forced_right.double().mean() < 1  # partly learned: both kinds of example occur
    assert torch.equal(forced_right, greedy_right)


@pytest.mark.parametrize("changes", [
    {"op": "sort", "p": 6, "seq_len": 3},
    {"op": "copy", "p": 6, "seq_len": 3, "model": "mlp"},
    {"op": "parity", "parity_bits": 10, "n_examples": 400},
    {"op": "parity", "parity_bits": 10, "n_examples": 400, "model": "mlp", "mlp_input": "value"},
    {"op": "digits", "model": "mlp", "mlp_input": "value"},
    {"op": "digits", "model": "mlp", "mlp_input": "onehot", "mlp_layers": 2},
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_token_tasks_train_resume_and_record_why_the_fast_path_is_not_used(tmp_path, changes):
    cfg = Config(frac=0.5, d_model=32, d_mlp=64, n_heads=2, lr=1e-2, epochs=20, eval_every=5,
                 checkpoint_every=10, report=False, threads=1, **changes)
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg.replace(epochs=10), tmp_path / "half", progress=False)
    resumed = Trainer.resume(tmp_path / "half", {"epochs": 20}, progress=False).run()
    assert resumed["final"] == full["final"]  # bit for bit at a fixed thread count
    written = json.loads((tmp_path / "full" / "config.json").read_text())
    assert written["training_path"] == ("mlp" if cfg.model == "mlp" else "hooked")
    assert select_logits_fn(cfg)[1] is not None and written["fast_path_fallback_reason"]
    first = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["epoch"] == 0 and full["final"]["train_loss"] < first["train_loss"]  # it trained


def test_the_mlp_reads_only_the_input_tokens():
    cfg = Config(op="sort", p=6, seq_len=3, model="mlp", mlp_input="onehot", d_mlp=16)
    model, ds = MLP(cfg), build_dataset(cfg)
    with torch.no_grad():
        logits = model(ds.tokens)
        changed = ds.tokens.clone()
        changed[:, 3:] = 0  # '=' and the teacher-forced answers: not the MLP's inputs
        assert logits.shape == (len(ds.labels), 3, 6) and torch.equal(model(changed), logits)
        built = torch.nn.functional.one_hot(ds.tokens[:, :3], 6).float().flatten(1) @ model.layers[0].W_in.T
        expected = model.unembed(torch.relu(built + model.layers[0].b_in))
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_value_inputs_are_the_tokens_scaled_to_plus_minus_one():
    cfg = Config(op="parity", parity_bits=8, n_examples=50, model="mlp", mlp_input="value", d_mlp=16)
    model, ds = MLP(cfg), build_dataset(cfg)
    seen = []
    model.hook_embed.add_hook(lambda x, hook: seen.append(x.clone()))
    model(ds.tokens)
    assert torch.equal(seen[0], ds.tokens[:, :8].float() * 2 - 1)


@pytest.mark.parametrize("changes,field", [
    ({"op": "sort", "p": 113}, "p"),
    ({"op": "sort", "p": 4, "seq_len": 5}, "seq_len"),
    ({"op": "sort", "p": 6, "seq_len": 3, "label_noise": 0.1}, "label_noise"),
    ({"op": "parity", "parity_k": 41}, "parity_k"),
    ({"op": "parity", "parity_bits": 4, "n_examples": 17}, "n_examples"),
    ({"op": "digits"}, "model"),
])
def test_bad_token_task_configs_name_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        Config().replace(**changes)
    assert err.value.field == field and "\n" not in str(err.value)


def test_analysis_says_plainly_that_a_token_task_has_no_fourier_circuit(tmp_path, capsys):
    cfg = Config(op="parity", parity_bits=8, n_examples=100, frac=0.5, d_model=16, d_mlp=32, n_heads=2,
                 epochs=2, report=False, threads=1)
    train(cfg, tmp_path / "run", progress=False)
    assert main(["analyze", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "parity task" in err and "binary tables" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "analysis").exists()


def test_a_stacked_batch_of_parity_runs_is_refused_and_auto_trains_them_separately(tmp_path):
    from grokking.batched import BatchedTrainer

    cfgs = [Config(op="parity", parity_bits=8, n_examples=100, frac=0.5, d_model=16, d_mlp=32, n_heads=2,
                   epochs=2, report=False, threads=1, seed=s) for s in range(2)]
    with pytest.raises(ConfigError, match="strategy"):
        BatchedTrainer(cfgs, [tmp_path / "a", tmp_path / "b"], strategy="stacked", progress=False)
    results = BatchedTrainer(cfgs, [tmp_path / "a", tmp_path / "b"], progress=False).run()
    for cfg, result in zip(cfgs, results):
        assert result["final"] == train(cfg, tmp_path / f"alone{cfg.seed}", progress=False)["final"]


def test_a_parity_transformer_exports_to_transformer_lens_and_back():
    pytest.importorskip("transformer_lens", reason="the interop extra (CI installs it)")
    from grokking.interop import from_transformer_lens, to_transformer_lens

    cfg = Config(op="parity", parity_bits=8, n_examples=100, d_model=32, d_mlp=64, n_heads=2)
    model, ds = Transformer(cfg), build_dataset(cfg)
    exported = to_transformer_lens(model)
    with torch.no_grad():
        torch.testing.assert_close(exported(ds.tokens), model(ds.tokens), rtol=0, atol=1e-5)  # 9 positions
        assert torch.equal(from_transformer_lens(exported, base=cfg)(ds.tokens), model(ds.tokens))
