"""Reliability: runs survive being killed, files are never half-written, faults stop a run cleanly.

The kill tests start real training processes (``python -m grokking.cli train``), kill them
with SIGKILL at seeded random moments (one of them while a checkpoint's temporary file is
on disk), resume each time with ``--resume``, and compare the finished run bit for bit with
an uninterrupted one: every metrics.jsonl line (the wall-clock ``seconds`` field excepted)
and every tensor of last.safetensors and of each snapshot.

Run ``pytest tests/test_reliability.py -s`` to see the kill points tried.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from grokking.checkpoint import atomic_write_bytes, load_checkpoint, snapshots
from grokking.cli import main
from grokking.config import ConfigError
from grokking.train import Trainer, TrainingFailed, read_metrics, resume, train

REPO = Path(__file__).resolve().parents[1]

# The kill-test config: minibatches exercise the batch-order generator, grokfast='ema' its filter
# state; checkpoints every 20 epochs plus the default 20 log-spaced snapshots (epochs 1, 2, 3, 4, 6, ...).
KILL_FLAGS = ["--p", "23", "--d-model", "32", "--d-mlp", "64", "--n-heads", "4", "--batch-size", "64",
              "--grokfast", "ema", "--epochs", "300", "--checkpoint-every", "20", "--eval-every", "5",
              "--no-report", "--quiet"]
N_RECORDS = 300 // 5 + 1
# Same thread count in every process: results are bit-identical only for the same thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
PROCESS_TIMEOUT = 300


def metrics_without_seconds(run: Path) -> list[dict]:
    """metrics.jsonl, each record without the wall-clock 'seconds' (the one field that may differ)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{what}: {key} differs"


def assert_same_run(run: Path, reference: Path) -> None:
    """Bit for bit: metrics (excluding seconds), every tensor of last.safetensors, every snapshot's weights."""
    ours, theirs = metrics_without_seconds(run), metrics_without_seconds(reference)
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs]
    assert ours == theirs
    (t_ours, m_ours), (t_ref, m_ref) = (load_checkpoint(r / "checkpoints" / "last.safetensors") for r in (run, reference))
    assert_same_tensors(t_ours, t_ref, "last.safetensors")
    assert {k: v for k, v in m_ours.items() if k != "seconds"} == {k: v for k, v in m_ref.items() if k != "seconds"}
    snaps, ref_snaps = snapshots(run), snapshots(reference)
    assert [e for e, _ in snaps] == [e for e, _ in ref_snaps]
    for (epoch, path), (_, ref_path) in zip(snaps, ref_snaps):
        assert_same_tensors(load_checkpoint(path)[0], load_checkpoint(ref_path)[0], f"snapshot {epoch}")
    drop = {"seconds", "seconds_per_epoch"}
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in drop}
    ref_summary = {k: v for k, v in json.loads((reference / "summary.json").read_text()).items() if k not in drop}
    assert summary == ref_summary and summary["status"] == "completed"
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


def launch(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "grokking.cli", "train", *args], cwd=REPO,
                                env={**ENV, **env}, stdout=sink, stderr=sink)


def wait(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=PROCESS_TIMEOUT)


def n_lines(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def temp_files(run: Path) -> list[Path]:
    return [*run.glob(".*.tmp"), *(run / "checkpoints").glob(".*.tmp")] if run.exists() else []


def checkpoint_temp_files(run: Path) -> list[Path]:
    return list((run / "checkpoints").glob(".*.safetensors.*.tmp"))


def poll_until(proc: subprocess.Popen, condition, interval: float = 0.02) -> bool:
    """True when ``condition()`` holds while ``proc`` still runs; False if it exited first."""
    while proc.poll() is None:
        if condition():
            return True
        time.sleep(interval)
    return False


def uninterrupted_run(out: Path, flags: list[str], n_records: int) -> Path:
    log = out.parent / "log.txt"
    proc = launch(["--out", str(out), *flags], log)
    assert wait(proc) == 0, log.read_text()
    assert n_lines(out) == n_records
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    return uninterrupted_run(tmp_path_factory.mktemp("reference") / "run", KILL_FLAGS, N_RECORDS)


# Eight kills need a run that outlasts them: each may let it advance by several evaluations
# (and an early one by seconds), so 300 epochs can finish before the last kill on a quiet machine.
LONG_KILL_FLAGS = [*KILL_FLAGS[: KILL_FLAGS.index("--epochs") + 1], "900", *KILL_FLAGS[KILL_FLAGS.index("--epochs") + 2:]]


@pytest.fixture(scope="module")
def long_reference_run(tmp_path_factory) -> Path:
    return uninterrupted_run(tmp_path_factory.mktemp("long_reference") / "run", LONG_KILL_FLAGS, 900 // 5 + 1)


def kill_and_resume(out: Path, schedule: list[str], seed: int, max_advance: int = 5,
                    flags: list[str] = KILL_FLAGS) -> list[dict]:
    """Start the run, SIGKILL it once per entry of ``schedule``, resuming it each time; then finish it.

    ``progress``: after a seeded random number of further evaluations plus a random delay.
    ``write``: while a checkpoint's temporary file exists (writes are slowed by the test hook
    GROKKING_TEST_SLOW_WRITE so that the window is wide enough to hit).
    ``early``: a seeded random delay after the process starts (often before its first checkpoint).
    """
    rng = random.Random(seed)
    log = out.parent / f"{out.name}.log"
    kills = []
    for mode in schedule:
        args = ["--resume", str(out), "--quiet"] if (out / "config.json").exists() else ["--out", str(out), "--overwrite", *flags]
        slow = {"GROKKING_TEST_SLOW_WRITE": "0.04"} if mode == "write" else {}
        before = n_lines(out)
        started = time.monotonic()
        proc = launch(args, log, **slow)
        if mode == "progress":
            target = before + rng.randint(1, max_advance)
            hit = poll_until(proc, lambda: n_lines(out) >= target)
            time.sleep(rng.uniform(0.0, 0.15))
        elif mode == "write":
            target = before + rng.randint(0, 3)
            hit = poll_until(proc, lambda: n_lines(out) >= target and bool(checkpoint_temp_files(out)), 0.005)
        else:
            delay = rng.uniform(0.5, 4.0)
            hit = poll_until(proc, lambda: time.monotonic() - started >= delay)
        proc.kill()
        rc = proc.wait(timeout=PROCESS_TIMEOUT)
        assert hit and rc == -signal.SIGKILL, f"{mode}: the run finished before the kill ({rc}); see {log}"
        leftovers = temp_files(out)
        raw = (out / "metrics.jsonl").read_bytes() if (out / "metrics.jsonl").exists() else b""
        last = out / "checkpoints" / "last.safetensors"
        last_epoch = load_checkpoint(last)[1]["epoch"] if last.exists() else None  # never half-written
        kills.append({"mode": mode, "after_s": round(time.monotonic() - started, 2), "records": raw.count(b"\n"),
                      "torn_line": bool(raw) and not raw.endswith(b"\n"), "last_epoch": last_epoch,
                      "temp_files": [p.name for p in leftovers]})
        if mode == "write":
            assert checkpoint_temp_files(out), "the kill did not land inside a checkpoint write"
    proc = launch(["--resume", str(out), "--quiet"] if (out / "config.json").exists() else ["--out", str(out), "--overwrite", *flags], log)
    assert wait(proc) == 0, log.read_text()
    return kills


def report(name: str, kills: list[dict]) -> None:
    print(f"\n{name}: {len(kills)} SIGKILLs, then resumed to the end; kill points:")
    for k in kills:
        print(f"  {k}")


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference_run):
    """The default-suite variant: two kills, one of them during a checkpoint write."""
    out = tmp_path / "run"
    kills = kill_and_resume(out, ["write", "progress"], seed=1)
    report("fast kill test", kills)
    assert_same_run(out, reference_run)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_many_sigkills_then_resume_is_bit_identical(tmp_path, long_reference_run, seed):
    out = tmp_path / "run"
    kills = kill_and_resume(out, ["early", "write", "progress", "write", "progress", "early", "progress", "write"],
                            seed=seed, max_advance=8, flags=LONG_KILL_FLAGS)
    report(f"slow kill test (seed {seed})", kills)
    assert_same_run(out, long_reference_run)


def test_sigint_and_sigterm_save_exit_cleanly_and_resume_bit_identical(tmp_path, reference_run):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    for signum, args, after in ((signal.SIGINT, ["--out", str(out), *KILL_FLAGS], 5),
                                (signal.SIGTERM, ["--resume", str(out), "--quiet"], 10)):
        log.write_bytes(b"")
        before = n_lines(out)
        proc = launch(args, log)
        assert poll_until(proc, lambda: n_lines(out) >= before + after), log.read_text()
        proc.send_signal(signum)
        assert wait(proc) == 128 + signum, log.read_text()
        err = log.read_text().strip().splitlines()
        assert len(err) == 1 and f"grokking train --resume {out}" in err[0], err
        epoch = int(err[0].split("interrupted at epoch ")[1].split(";")[0])
        tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
        assert meta["epoch"] == epoch  # saved at the very epoch it stopped
        assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert wait(launch(["--resume", str(out), "--quiet"], log)) == 0, log.read_text()
    assert_same_run(out, reference_run)


# --- in-process resume: every kind of state -------------------------------------------------------------
class Crash(Exception):
    """Stands in for a kill: raised from a callback right after an evaluation was logged."""


class CrashAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_eval(self, record):
        if record["epoch"] == self.epoch:
            raise Crash

    def close(self):
        pass


VARIANTS = {
    "full_batch": dict(),
    "minibatch_ema": dict(batch_size=16, grokfast="ema"),
    "ma_orthoadamw_clip_layernorm": dict(grokfast="ma", grokfast_window=7, optimizer="orthoadamw", grad_clip=0.5,
                                         layernorm=True, batch_size=32),
    "muon_random_split": dict(optimizer="muon", split="random", batch_size=20),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_crash_then_resume_matches_an_uninterrupted_run(tmp_path, variant):
    cfg = tiny_config(epochs=50, checkpoint_log=4, **VARIANTS[variant])
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    with pytest.raises(Crash):
        Trainer(cfg, run, progress=False, callbacks=[CrashAt(35)]).run()
    assert json.loads((run / "summary.json").read_text())["status"] == "crashed"
    assert read_metrics(run)[-1]["epoch"] == 35
    # A kill mid-line leaves a torn record; records after the checkpoint epoch (20) are dropped too.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 40, "step": 40, "train_lo')
    trainer = Trainer.resume(run, progress=False)
    assert trainer.epoch == 20 and [r["epoch"] for r in read_metrics(run)] == [0, 5, 10, 15, 20]
    trainer.run()
    assert_same_run(run, tmp_path / "ref")


def test_run_killed_before_its_first_checkpoint_starts_again_on_resume(tmp_path, capsys):
    cfg = tiny_config(epochs=20, batch_size=16)
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    with pytest.raises(Crash):  # epoch 0 logged, nothing saved yet
        Trainer(cfg, run, progress=False, callbacks=[CrashAt(0)]).run()
    assert not (run / "checkpoints" / "last.safetensors").exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "starting it again from epoch 0" in capsys.readouterr().err
    assert_same_run(run, tmp_path / "ref")


def test_resume_without_a_run_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "missing", empty):
        assert main(["train", "--resume", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "resume" in err[0], err
    assert main(["train", "--resume", str(empty), "--lr", "0.1"]) == 2  # a resumed run keeps its config
    assert "drop --lr" in capsys.readouterr().err


def test_resume_refuses_a_corrupt_last_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(epochs=5), run, progress=False)
    last = run / "checkpoints" / "last.safetensors"
    data = bytearray(last.read_bytes())
    data[-3] ^= 0xFF
    last.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SHA-256" in err[0]


def test_resuming_a_finished_or_stopped_run_changes_nothing(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(epochs=2000, lr=1e-2, frac=0.6, stop_at_test_acc=0.5, checkpoint_every=7)
    first = train(cfg, run, progress=False)
    assert first["status"] == "stopped_early"
    before = metrics_without_seconds(run)
    again = Trainer.resume(run, progress=False).run()
    assert again["status"] == "stopped_early" and again["epochs_run"] == first["epochs_run"]
    assert metrics_without_seconds(run) == before


def test_extending_a_finished_run_continues_it_as_if_started_with_the_larger_budget(tmp_path, capsys):
    cfg = tiny_config(epochs=80, batch_size=16, grokfast="ema")
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    assert train(cfg.replace(epochs=40), run, progress=False)["epochs_run"] == 40
    assert main(["train", "--resume", str(run), "--epochs", "80", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 80
    assert_same_run(run, tmp_path / "ref")
    capsys.readouterr()
    # The budget can only grow, and nothing but the budget can change.
    assert main(["train", "--resume", str(run), "--epochs", "60"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grokking: error: epochs: 60 is below the 80"), err
    assert main(["train", "--resume", str(run), "--epochs", "100", "--weight-decay", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "drop --weight-decay" in err and "--epochs" not in err.split("(")[0]
    with pytest.raises(ConfigError, match="lr: cannot change on resume"):
        Trainer.resume(run, {"lr": 0.1}, progress=False)
    assert_same_run(run, tmp_path / "ref")  # refused resumes wrote nothing


def test_a_run_stopped_at_its_target_continues_with_a_new_one(tmp_path):
    cfg = tiny_config(epochs=300, lr=1e-2, frac=0.6)
    full = train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    first = train(cfg.replace(stop_at_test_acc=0.3), run, progress=False)
    assert first["status"] == "stopped_early" and first["epochs_run"] < 300
    again = resume(run, progress=False, stop_at_test_acc=None)
    assert again["status"] == "completed" and again["epochs_run"] == full["epochs_run"] == 300
    ours, theirs = metrics_without_seconds(run), metrics_without_seconds(tmp_path / "ref")
    assert ours == theirs


def test_same_config_and_seed_give_identical_runs(tmp_path):
    cfg = tiny_config(epochs=30, batch_size=16, grokfast="ema")
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_loaded_tensors_are_owned_aligned_copies(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=2, grokfast="ema"), run, progress=False)
    tensors, _ = load_checkpoint(run / "checkpoints" / "last.safetensors")
    for name, t in tensors.items():
        assert t.is_contiguous() and t.data_ptr() % 64 == 0, name
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name  # owns its memory


# --- numerical faults ----------------------------------------------------------------------------------
def test_overflowing_config_fails_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    # lr 100 and weight decay 1e4 multiply the weights by -999999 each step: float32 overflows in ~7 steps.
    flags = ["--p", "13", "--d-model", "16", "--d-mlp", "16", "--n-heads", "2", "--lr", "100", "--weight-decay", "1e4",
             "--warmup-steps", "0", "--epochs", "100", "--eval-every", "1", "--checkpoint-every", "1",
             "--checkpoint-log", "0", "--no-report", "--quiet"]
    assert main(["train", "--out", str(run), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0], err
    failed_epoch = int(err[0].split(" at epoch ")[1].split(" ")[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and f"epoch {failed_epoch}" in summary["error"]
    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == failed_epoch - 1 and f"epoch {failed_epoch - 1}" in err[0]
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert all(math.isfinite(r["train_loss"]) for r in read_metrics(run))
    assert main(["eval", str(run), "--json"]) == 0  # the kept checkpoint loads and evaluates


def test_fault_between_evaluations_is_caught_before_it_is_saved(tmp_path):
    """Weights turning NaN at epoch 8 with evaluations every 10 epochs: the snapshot at epoch 9 refuses."""
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(epochs=40, eval_every=10, checkpoint_every=3), run, progress=False)
    step = trainer.group.train_epoch

    def faulty_epoch():
        step()
        if trainer.epoch == 7:  # the epoch that ends at 8
            with torch.no_grad():
                trainer.model.embed.W_E[0, 0] = float("nan")

    trainer.group.train_epoch = faulty_epoch
    with pytest.raises(TrainingFailed, match="non-finite weights at epoch 9 .*epoch 6"):
        trainer.run()
    assert load_checkpoint(run / "checkpoints" / "last.safetensors")[1]["epoch"] == 6
    assert [e for e, _ in snapshots(run)] == [0, 3, 6]
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


# --- atomic files -------------------------------------------------------------------------------------
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


def test_every_writer_in_train_and_plots_is_atomic():
    """Run files are written by rundir.atomic_write_*; the one append is metrics.jsonl (engine.py)."""
    for module in ("train.py", "engine.py", "figures.py"):
        source = (REPO / "grokking" / module).read_text()
        for forbidden in (".write_text(", ".write_bytes(", "json.dump(", "np.save(", "torch.save("):
            assert forbidden not in source, (module, forbidden)
        opens = [line.strip() for line in source.splitlines() if "open(" in line and "os.open(" not in line]
        assert all('"a"' in line for line in opens), opens
        assert "savefig(path" not in source and ".savefig(buffer" in (REPO / "grokking" / "figures.py").read_text()


def test_read_metrics_drops_a_torn_line_and_keeps_the_records_around_a_foreign_one(tmp_path):
    # One damaged line must not hide the valid records after it (every reader uses this rule).
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 5}\n[1, 2]\n{"epoch": 10}\n')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 5, 10]
    (tmp_path / "metrics.jsonl").write_bytes(b'{"epoch": 0}\n{"epoch": 5, "x": "\xff\n{"epo')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0]
