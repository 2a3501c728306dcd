"""The command line end to end: a short run writes a complete run directory; eval, errors."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import SEED_REFERENCE, tiny_config
from grokking.checkpoint import load_checkpoint, load_model, snapshots
from grokking.cli import main
from grokking.config import ConfigError, validate
from grokking.train import resume, train

SUMMARY_KEYS = {"epoch_train_acc_99", "epoch_test_acc_99", "final", "epochs_run", "seconds", "seconds_per_epoch", "status"}
METRIC_KEYS = {"epoch", "step", "train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"}

TINY_FLAGS = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--eval-every", "5", "--checkpoint-every", "20",
              "--checkpoint-log", "0", "--no-report", "--quiet"]


def test_short_training_run_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "40", *TINY_FLAGS]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["p"] == 13 and config["config"]["op"] == "add" and config["config"]["lr"] == 1e-3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(0, 41, 5))
    assert all(METRIC_KEYS <= set(r) for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["epochs_run"] == 40 and summary["final"]["train_loss"] == records[-1]["train_loss"]
    assert [e for e, _ in snapshots(out)] == [0, 20, 40]
    tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == 40 and meta["config"]["p"] == 13
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The last checkpoint reproduces the last logged figures.
    assert main(["eval", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["train_loss"] == pytest.approx(records[-1]["train_loss"], rel=1e-9)
    assert evaluated["test_acc"] == pytest.approx(records[-1]["test_acc"])


def test_stop_at_test_acc_ends_the_run_at_the_first_evaluation_above(tmp_path):
    summary = train(tiny_config(epochs=2000, lr=1e-2, stop_at_test_acc=0.5, frac=0.6), tmp_path / "r", progress=False)
    assert summary["status"] == "stopped_early"
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_acc"] >= 0.5 and all(r["test_acc"] < 0.5 for r in records[:-1])
    assert summary["epochs_run"] == records[-1]["epoch"] < 2000


def _first_held(records: list[dict], floor: float, hold: int) -> int | None:
    """The first evaluation at which test_acc >= floor has held at every evaluation for >= hold epochs."""
    start = None
    for r in records:
        if r["test_acc"] < floor:
            start = None
            continue
        start = r["epoch"] if start is None else start
        if r["epoch"] - start >= hold:
            return r["epoch"]
    return None


def test_stop_hold_ends_the_run_once_the_condition_has_held_for_that_many_epochs(tmp_path):
    # The same run without a stop, then with the hold rule: the stop lands where the unstopped
    # run's records first show the condition held for 30 epochs, later than the plain stop.
    base = tiny_config(epochs=600, lr=1e-2, frac=0.6)
    train(base, tmp_path / "full", progress=False)
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    expected = _first_held(full, 0.44, 30)
    first = next(r["epoch"] for r in full if r["test_acc"] >= 0.44)
    assert expected is not None and expected > first + 30  # the curve dips after first crossing: a real test
    summary = train(base.replace(stop_at_test_acc=0.44, stop_hold=30), tmp_path / "held", progress=False)
    assert summary["status"] == "stopped_early" and summary["epochs_run"] == expected
    assert summary["stop_reason"].startswith("test_acc >= 0.44 at every evaluation from epoch ")
    # Resumed in the middle of a streak, the run counts the streak it had before and stops at the same epoch.
    mid = expected - 10
    part = train(base.replace(stop_at_test_acc=0.44, stop_hold=30, epochs=mid), tmp_path / "resumed", progress=False)
    assert part["status"] == "completed" and part["epochs_run"] == mid
    again = resume(tmp_path / "resumed", progress=False, epochs=600)
    assert again["status"] == "stopped_early" and again["epochs_run"] == expected
    assert again["stop_reason"] == summary["stop_reason"]


def test_stop_hold_without_a_condition_is_a_one_line_error():
    with pytest.raises(ConfigError, match="stop_hold.*stop_at_test_acc or stop_at_test_loss"):
        validate(tiny_config(stop_hold=50))


def test_minibatch_and_step_budget(tmp_path):
    summary = train(tiny_config(batch_size=16, epochs=1000, max_steps=25, eval_every=1), tmp_path / "r", progress=False)
    assert summary["steps"] == 25
    # 50 training pairs in batches of 16: 4 steps an epoch, so step 25 is the first step of epoch 7.
    assert summary["epochs_run"] == 7
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 4, 8, 12, 16, 20, 24, 25]


def test_same_config_same_metrics(tmp_path):
    a = train(tiny_config(epochs=30, batch_size=32), tmp_path / "a", progress=False)
    b = train(tiny_config(epochs=30, batch_size=32), tmp_path / "b", progress=False)
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if k != "seconds"}  # noqa: E731
                          for l in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")
    assert a["final"] == b["final"]


def test_eval_of_a_seed_checkpoint_matches_the_reference_model(tmp_path, capsys, seed_reference):
    saved = tmp_path / "final.pth"
    subprocess.run([sys.executable, str(SEED_REFERENCE), "--epochs", "3", "--p", "23", "--save", str(saved)],
                   check=True, capture_output=True)
    assert main(["eval", str(saved), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert set(ours) >= {"train_loss", "test_loss", "train_acc", "test_acc", "all_loss", "all_acc"}
    # Independent computation with the reference model on the split stored in the file.
    blob = torch.load(saved, weights_only=True)
    ref = seed_reference.Transformer(d_vocab=24)
    ref.load_state_dict(blob["model"])
    for split in ("train", "test"):
        data = torch.tensor(blob[f"{split}_data"])
        labels = (data[:, 0] + data[:, 1]) % 23
        with torch.no_grad():
            logits = ref(data)[:, -1]
        assert ours[f"{split}_loss"] == pytest.approx(seed_reference.cross_entropy_high_precision(logits, labels).item(), rel=1e-5)
        assert ours[f"{split}_acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    loaded = load_model(saved)
    assert loaded.cfg.p == 23 and len(loaded.dataset.train_idx) == len(blob["train_data"])


class Malicious:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_that_would_execute_code_is_refused(tmp_path, capsys):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": Malicious(str(target))}, evil)
    assert not target.exists()
    assert main(["eval", str(evil), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not target.exists()


BAD_INPUTS = [
    (["--op", "nope"], "op"),
    (["--op", "divide", "--p", "100"], "p"),
    (["--frac", "1.5"], "frac"),
    (["--frac", "0"], "frac"),
    (["--d-model", "130"], "d_model"),
    (["--lr", "abc"], "lr"),
    (["--epochs", "-3"], "epochs"),
]


@pytest.mark.parametrize("flags,field", BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, flags, field):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
    assert not out.exists()


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["eval", str(corrupt)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_non_empty_out_directory_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", "--out", str(out), "--epochs", "1", *TINY_FLAGS]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(["train", "--out", str(out), "--epochs", "1", "--overwrite", *TINY_FLAGS]) == 0
    assert not (out / "keep.txt").exists() and (out / "summary.json").exists()


def test_help_documents_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag, default in [("--weight-decay", "1.0"), ("--stop-at-test-acc", "None"), ("--eval-every", "50"),
                          ("--frac", "0.3"), ("--p", "113"), ("--device", "auto")]:
        assert flag in text and f"(default: {default})" in text
