"""Tasks beyond the plain tables, trained end to end: label noise (its metrics against an
independent computation from the saved weights) and the mixed operations."""
from __future__ import annotations

import torch
from conftest import tiny_config
from test_reliability import assert_same_run

from grokking.batched import train_batched
from grokking.checkpoint import load_model
from grokking.cli import main
from grokking.data import make_dataset
from grokking.evaluation import NOISE_KEYS
from grokking.rundir import read_metrics
from grokking.train import resume, train


def test_label_noise_metrics_match_the_saved_weights(tmp_path):
    cfg = tiny_config(p=17, frac=0.6, label_noise=0.25, epochs=60, eval_every=10)
    run = tmp_path / "noisy"
    train(cfg, run, progress=False)
    last = read_metrics(run)[-1]
    assert set(NOISE_KEYS) <= set(last)
    loaded = load_model(run)
    data = make_dataset("add", 17, 0.6, cfg.seed, cfg.split, 0.25)
    with torch.no_grad():  # the hooked forward, not the training path
        predicted = loaded.model(data.tokens)[:, -1, :17].argmax(-1)
    noisy = torch.zeros(len(data.labels), dtype=torch.bool)
    noisy[data.noisy_idx] = True
    train_rows = torch.zeros_like(noisy)
    train_rows[data.train_idx] = True
    hit = predicted == data.labels
    true_hit = predicted == data.clean_labels
    assert last["train_acc_clean"] == hit[train_rows & ~noisy].double().mean().item()
    assert last["train_acc_corrupted"] == hit[noisy].double().mean().item()
    assert last["train_acc_corrupted_true"] == true_hit[noisy].double().mean().item()
    assert last["train_acc"] == hit[train_rows].double().mean().item()
    # test pairs keep their true labels
    assert last["test_acc"] == true_hit[data.test_idx].double().mean().item()


def test_no_noise_no_noise_figures_and_a_noisy_run_resumes_bit_for_bit(tmp_path):
    train(tiny_config(epochs=10), tmp_path / "clean", progress=False)
    assert not set(NOISE_KEYS) & set(read_metrics(tmp_path / "clean")[-1])
    cfg = tiny_config(label_noise=0.2, epochs=40, checkpoint_every=20)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg.replace(epochs=20), tmp_path / "parts", progress=False)
    resume(tmp_path / "parts", progress=False, epochs=40)
    assert_same_run(tmp_path / "parts", tmp_path / "whole")


def test_a_batch_mixing_noisy_and_clean_runs_records_noise_figures_only_for_the_noisy(tmp_path):
    cfgs = [tiny_config(epochs=20, label_noise=0.3), tiny_config(epochs=20, seed=1)]
    outs = [tmp_path / "noisy", tmp_path / "clean"]
    train_batched(cfgs, outs, progress=False, strategy="stacked")
    assert set(NOISE_KEYS) <= set(read_metrics(outs[0])[-1])
    assert not set(NOISE_KEYS) & set(read_metrics(outs[1])[-1])
    train(cfgs[0], tmp_path / "alone", progress=False)
    for key in ("train_acc_clean", "train_acc_corrupted", "test_acc"):
        assert read_metrics(outs[0])[-1][key] == read_metrics(tmp_path / "alone")[-1][key]


def test_the_mixed_operations_train_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "mixed"
    assert main(["train", "--op", "+*", "--p", "13", "--d-model", "32", "--n-heads", "4", "--d-mlp", "64",
                 "--epochs", "5", "--out", str(out), "--quiet", "--no-report"]) == 0
    assert load_model(out).cfg.op == "addmul"
    assert main(["train", "--op", "mul+", "--p", "13", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "op" in err[0] and "addmul" in err[0]
