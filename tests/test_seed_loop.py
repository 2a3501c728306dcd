"""grokking.seed_loop, the bench's packaged baseline, is the seed's loop: the shared reference's
initial weights, splits, losses and final weights, its command line and its output."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SEED_REFERENCE
from grokking import bench, seed_loop
from grokking.checkpoint import load_model
from grokking.config import Config
from grokking.errors import InputError

P, EPOCHS = 23, 6


@pytest.mark.parametrize("n_layers", [1, 2])
def test_initial_weights_are_the_reference_s(seed_reference, n_layers):
    torch.manual_seed(3)
    reference = seed_reference.Transformer(d_vocab=P + 1, num_layers=n_layers).state_dict()
    torch.manual_seed(3)
    ours = seed_loop.SeedTransformer(d_vocab=P + 1, n_layers=n_layers).state_dict()
    assert list(ours) == list(reference)  # the seed's names, in the seed's order
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name


def test_forward_is_the_reference_s(seed_reference):
    torch.manual_seed(0)
    reference = seed_reference.Transformer(d_vocab=P + 1)
    ours = seed_loop.SeedTransformer(d_vocab=P + 1)
    ours.load_state_dict(reference.state_dict())
    tokens = torch.tensor([(a, b, P) for a in range(P) for b in range(P)])
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), reference(tokens), rtol=0, atol=0)


def run_loop(command: list[str], saved: Path) -> tuple[dict, str]:
    out = subprocess.run(command + ["--p", str(P), "--epochs", str(EPOCHS), "--log", "2", "--threads", "1",
                                    "--save", str(saved)], check=True, capture_output=True, text=True).stdout
    return torch.load(saved, weights_only=False), out


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """Ours and the reference, each run once as the bench runs them: in a subprocess."""
    where = tmp_path_factory.mktemp("seed_loops")
    ours = run_loop(bench.reference_command(bench.SEED_LOOP), where / "ours.pth")
    reference = run_loop([sys.executable, str(SEED_REFERENCE)], where / "reference.pth")
    return ours, reference, where / "ours.pth"


def test_training_is_the_reference_s(both_runs):
    """Both programs run as the bench runs them, in subprocesses: same splits, and per-epoch
    losses, final weights and report lines equal to float32 round-off. (The forward pass is
    bit-identical, see above; the backward passes of a few products are summed in another
    order, so the weights drift apart by float32 round-off from the first step on, some 1e-9
    relative in the losses after a few epochs. Any change of model or recipe moves them by
    orders of magnitude more.)"""
    (ours, our_out), (reference, reference_out), _ = both_runs
    assert ours["train_data"] == reference["train_data"] and ours["test_data"] == reference["test_data"]
    assert ours["epoch"] == reference["epoch"] == EPOCHS - 1
    for key in ("train_losses", "test_losses"):
        assert len(ours[key]) == EPOCHS
        assert ours[key][0] == reference[key][0], key  # before any step: bit for bit
        assert ours[key] == pytest.approx(reference[key], rel=1e-7, abs=0), key
    assert ours["train_losses"][-1] < ours["train_losses"][0]  # it trains
    assert list(ours["model"]) == list(reference["model"])
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(ours["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert ours["optimizer"]["state"].keys() == reference["optimizer"]["state"].keys()
    assert ours["scheduler"]["last_epoch"] == reference["scheduler"]["last_epoch"] == EPOCHS

    def lines(text: str) -> list[list[str]]:  # epoch and the four numbers, without the timing line
        return [line.split() for line in text.splitlines() if not line.startswith("seconds_per_epoch")]

    assert [row[0] for row in lines(our_out)] == ["0", "2", "4", "5"] == [row[0] for row in lines(reference_out)]
    for mine, theirs in zip(lines(our_out), lines(reference_out)):
        assert [float(x) for x in mine] == pytest.approx([float(x) for x in theirs], abs=2e-6)
    assert re.search(r"^seconds_per_epoch \d+\.\d{6}$", our_out.splitlines()[-1])


def test_saved_run_is_a_seed_checkpoint(both_runs):
    """--save writes the seed's final.pth, which our loader reads as a seed checkpoint."""
    (ours, _), _, saved = both_runs
    loaded = load_model(saved)
    assert loaded.cfg.p == P
    model = seed_loop.SeedTransformer(d_vocab=P + 1)
    model.load_state_dict(ours["model"])
    tokens = torch.tensor([(a, b, P) for a in range(P) for b in range(P)])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), model(tokens), rtol=1e-5, atol=1e-5)


def test_bench_times_the_packaged_loop_unless_told_otherwise(tmp_path):
    assert bench.find_reference() == bench.SEED_LOOP == Path(seed_loop.__file__).resolve()
    assert bench.reference_command(bench.SEED_LOOP)[1:] == ["-P", "-m", "grokking.seed_loop"]
    assert bench.find_reference(str(SEED_REFERENCE)) == SEED_REFERENCE.resolve()
    assert bench.reference_command(SEED_REFERENCE.resolve())[1:] == [str(SEED_REFERENCE.resolve())]
    with pytest.raises(InputError, match="no such file"):
        bench.find_reference(str(tmp_path / "missing.py"))
    seconds = bench.time_reference(bench.SEED_LOOP, Config().replace(p=P), epochs=2, threads=1)
    assert 0 < seconds < 60


def test_the_packaged_loop_runs_on_the_benchs_device_and_another_script_where_it_puts_itself(monkeypatch):
    assert bench.reference_device(bench.SEED_LOOP, torch.device("cuda")) == "cuda"
    assert bench.reference_device(SEED_REFERENCE.resolve(), torch.device("cuda")) == "cpu"  # it has no --device
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="seconds_per_epoch 0.25\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench.time_reference(bench.SEED_LOOP, Config(), 5, 1, "cuda") == 0.25
    assert bench.time_reference(bench.SEED_LOOP, Config(), 5, 1) == 0.25
    assert commands[0][-2:] == ["--device", "cuda"] and "--device" not in commands[1]

