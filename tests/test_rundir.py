"""The run directory under damage, foreign files, concurrency and file-system errors.

Each test states what is on disk afterwards, not only the exit status:

- checkpoints are told from pickles by their whole structure (every first byte of a header length);
- a checkpoint of another run is refused on resume, eval and analyze, and left out of the snapshots;
- a damaged metrics line is reported and moved aside, never taken with the records after it;
- one writer per run directory, with the holder named; a killed holder's lock is taken over;
- file-system errors are one line, recorded in summary.json, and the run resumes where it was.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import Crash, CrashAt, assert_same_run, metrics_without_seconds
from test_sweep import TINY_FLAGS

from grokking import rundir
from grokking.checkpoint import (
    CheckpointError,
    checkpoint_kind,
    load_checkpoint,
    load_checkpoint_identity,
    load_model,
    load_snapshot_state,
    run_snapshots,
    save_checkpoint,
)
from grokking.analysis import analyze
from grokking.cli import main
from grokking.model import Transformer
from grokking.report import write_report
from grokking.rundir import RunLock, lock_note, lock_path, read_metrics
from grokking.sweep import read_results
from grokking.train import Trainer, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def one_line_error(capsys, prefix: str = "grokking: error: ") -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (what a refused command must leave alone)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- 1. format detection cannot misfire --------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_parts(tmp_path_factory):
    """A real run's last checkpoint: its tensors, meta and identity, to rewrite with other header lengths."""
    run = tmp_path_factory.mktemp("fmt") / "run"
    train(tiny_config(epochs=2), run, progress=False)
    return load_checkpoint_identity(run / "checkpoints" / "last.safetensors")


def with_header_length(data: bytes, residue: int) -> bytes:
    """The same safetensors file with its JSON header padded (spaces, as the format allows) so that
    the header length is ``residue`` modulo 256: the first byte of the file is ``residue``."""
    length = int.from_bytes(data[:8], "little")
    header, body = data[8:8 + length].rstrip(b" "), data[8 + length:]
    padded = header + b" " * ((residue - len(header)) % 256)
    assert len(padded) % 256 == residue
    return len(padded).to_bytes(8, "little") + padded + body


def writer_bytes(parts, pad: int, monkeypatch) -> bytes:
    """What our own writer (save_checkpoint) writes for the checkpoint with ``pad`` characters of
    padding in its metadata (captured in memory: the search below tries thousands)."""
    tensors, meta, identity = parts
    captured = []
    with monkeypatch.context() as patch:
        patch.setattr(rundir, "atomic_write_bytes", lambda path, data: captured.append(data))
        save_checkpoint("unused.safetensors", tensors, {**meta, "pad": "x" * pad}, identity)
    return captured[0]


def header_residues(parts, monkeypatch) -> dict[int, bytes]:
    """First byte -> our writer's bytes with that first byte, for every residue the writer reaches by
    padding the metadata (safetensors aligns its headers to 8 bytes: the multiples of 8)."""
    found: dict[int, bytes] = {}
    for pad in range(2200):
        data = writer_bytes(parts, pad, monkeypatch)
        found.setdefault(data[0], data)
    return found


def test_every_first_byte_of_a_header_length_loads_as_a_checkpoint(checkpoint_parts, tmp_path, capsys,
                                                                   monkeypatch):
    by_writer = header_residues(checkpoint_parts, monkeypatch)
    assert set(by_writer) == set(range(0, 256, 8))  # 0x80 among them: also the first byte of a pickle
    any_writer_file = next(iter(by_writer.values()))
    for residue in range(256):
        path = tmp_path / f"h{residue}.safetensors"
        # Residues the writer cannot reach: the same file with its header padded by hand (valid safetensors).
        path.write_bytes(by_writer.get(residue) or with_header_length(any_writer_file, residue))
        assert path.read_bytes()[0] == residue
        assert checkpoint_kind(path) == "safetensors", residue
        loaded = load_model(path)
        assert loaded.meta["epoch"] == 2 and loaded.identity == checkpoint_parts[2]
        assert torch.equal(loaded.model.embed.W_E, checkpoint_parts[0]["model.embed.W_E"])
        if residue in (0x80, 0x50, 0x00, 0x81, 0xFF) or residue % 37 == 0:
            assert main(["eval", str(path), "--json"]) == 0, capsys.readouterr().err
            assert json.loads(capsys.readouterr().out)["epoch"] == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(note=st.text(max_size=300), extra_pad=st.integers(0, 600))
def test_any_metadata_and_padding_is_still_a_checkpoint(checkpoint_parts, tmp_path, note, extra_pad):
    tensors, meta, identity = checkpoint_parts
    path = tmp_path / "p.safetensors"
    save_checkpoint(path, tensors, {**meta, "note": note}, identity)
    data = path.read_bytes()
    path.write_bytes(with_header_length(data, (data[0] + extra_pad) % 256))
    assert checkpoint_kind(path) == "safetensors"
    assert load_model(path).meta["note"] == note


def test_pickles_and_archives_are_still_seed_files_and_junk_is_refused_without_reading_it(tmp_path, capsys,
                                                                                         monkeypatch):
    state = {"model": Transformer(tiny_config()).state_dict()}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert checkpoint_kind(tmp_path / "zip.pth") == "zip" and checkpoint_kind(tmp_path / "legacy.pth") == "pickle"
    for name in ("zip.pth", "legacy.pth"):
        assert main(["eval", str(tmp_path / name), "--json"]) == 0
    capsys.readouterr()
    # A multi-GB file that is no checkpoint (sparse: no disk used) is refused from its first bytes.
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.write((2**40).to_bytes(8, "little") + b"not json")
        f.truncate(4 * 1024**3)
    read_whole = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_whole.append(self) or real_read_bytes(self))
    started = time.monotonic()
    assert main(["eval", str(big)]) == 2
    assert "is not a checkpoint" in one_line_error(capsys)
    assert time.monotonic() - started < 5 and big not in read_whole
    with pytest.raises(CheckpointError):
        load_checkpoint(big)
    assert big not in read_whole


# --- 2. a checkpoint belongs to its run ----------------------------------------------------------------
@pytest.fixture
def two_runs(tmp_path):
    """Two runs of the same shapes, seeds 0 and 1 (B trained further, so its checkpoint is later)."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_config(epochs=20, checkpoint_every=10), a, progress=False)
    train(tiny_config(epochs=30, checkpoint_every=10, seed=1), b, progress=False)
    return a, b


def test_config_and_checkpoints_carry_the_run_id(two_runs):
    a, b = two_runs
    ids = []
    for run in (a, b):
        info = json.loads((run / "config.json").read_text())
        assert len(info["run_id"]) == 32
        for path in [run / "checkpoints" / "last.safetensors", *(p for _, p in rundir.snapshots(run))]:
            _, _, identity = load_checkpoint_identity(path)
            assert identity == {"run_id": info["run_id"], "config_key": info["config_key"]}
        ids.append(info["run_id"])
    assert ids[0] != ids[1]


def test_resume_eval_and_analyze_refuse_another_runs_checkpoint(two_runs, capsys):
    a, b = two_runs
    shutil.copy(b / "checkpoints" / "last.safetensors", a / "checkpoints" / "last.safetensors")
    before = tree(a)
    assert main(["train", "--resume", str(a), "--epochs", "40", "--quiet"]) == 2
    line = one_line_error(capsys)
    assert "not a checkpoint of the run" in line and "written by run" in line
    assert tree(a) == before  # nothing rewound, nothing continued
    assert main(["eval", str(a), "--json"]) == 2
    assert "not a checkpoint of the run" in one_line_error(capsys)
    assert main(["analyze", str(a)]) == 2
    assert "not a checkpoint of the run" in one_line_error(capsys)
    assert tree(a) == before and not (a / "analysis").exists()


def test_a_foreign_snapshot_is_skipped_and_named(two_runs, caplog):
    a, b = two_runs
    foreign = a / "checkpoints" / "epoch_0000030.safetensors"
    shutil.copy(b / "checkpoints" / "epoch_0000030.safetensors", foreign)
    skipped: list = []
    assert [e for e, _ in run_snapshots(a, skipped)] == [0, 10, 20]
    assert skipped[0][0] == foreign and "written by run" in skipped[0][1]
    with caplog.at_level(logging.WARNING, logger="grokking"):
        run_snapshots(a)
    assert "epoch_0000030.safetensors" in caplog.text
    with pytest.raises(CheckpointError, match="not a checkpoint of the run"):
        load_snapshot_state(foreign)
    load_snapshot_state(a / "checkpoints" / "epoch_0000020.safetensors")


def test_analyze_leaves_a_foreign_snapshot_out_of_the_progress_measures_and_names_it(two_runs, tmp_path):
    a, b = two_runs
    foreign = a / "checkpoints" / "epoch_0000015.safetensors"
    shutil.copy(b / "checkpoints" / "epoch_0000010.safetensors", foreign)
    lines: list[str] = []
    result = analyze(a, tmp_path / "out", llc_settings=None, log=lines.append)
    assert result["progress"]["epoch"] == [0, 10, 20]  # epoch 15 is another run's
    assert [s["path"] for s in result["snapshots_skipped"]] == [str(foreign)]
    assert "written by run" in result["snapshots_skipped"][0]["reason"]
    assert any(str(foreign) in line and "left out" in line for line in lines)
    on_disk = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert on_disk["snapshots_skipped"] == result["snapshots_skipped"]


def test_analyze_of_a_run_whose_checkpoint_has_another_p_is_one_line(tmp_path, capsys):
    a, c = tmp_path / "a", tmp_path / "c"
    train(tiny_config(epochs=10, checkpoint_every=5), a, progress=False)
    train(tiny_config(epochs=10, checkpoint_every=5, p=11), c, progress=False)
    shutil.copy(c / "checkpoints" / "last.safetensors", a / "checkpoints" / "last.safetensors")
    assert main(["analyze", str(a)]) == 2
    assert "not a checkpoint of the run" in one_line_error(capsys)
    # and a foreign snapshot of another p among the run's own: refused in one line, not a traceback
    train(tiny_config(epochs=10, checkpoint_every=5), a, overwrite=True, progress=False)
    shutil.copy(c / "checkpoints" / "epoch_0000005.safetensors", a / "checkpoints" / "epoch_0000007.safetensors")
    code = main(["analyze", str(a)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1
    assert code == 0 or (code == 2 and "epoch_0000007" in err)


def test_checkpoints_written_before_run_ids_still_load_and_resume(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(epochs=20, checkpoint_every=10)
    train(cfg.replace(epochs=10), run, progress=False)
    # Rewrite the run as an older version wrote it: no run id in config.json or the checkpoints.
    info = json.loads((run / "config.json").read_text())
    del info["run_id"]
    (run / "config.json").write_text(json.dumps(info))
    for path in [run / "checkpoints" / "last.safetensors", *(p for _, p in rundir.snapshots(run))]:
        tensors, meta, _ = load_checkpoint_identity(path)
        save_checkpoint(path, tensors, meta)
        assert load_checkpoint_identity(path)[2] == {}
    assert load_model(run).meta["epoch"] == 10
    assert [e for e, _ in run_snapshots(run)] == [0, 10]
    Trainer.resume(run, {"epochs": 20}, progress=False).run()
    train(cfg, tmp_path / "ref", progress=False)
    assert metrics_without_seconds(run) == metrics_without_seconds(tmp_path / "ref")
    assert len(json.loads((run / "config.json").read_text())["run_id"]) == 32  # it has one from now on


def test_an_old_checkpoint_of_another_config_is_still_refused(two_runs, capsys):
    a, b = two_runs
    tensors, meta, _ = load_checkpoint_identity(b / "checkpoints" / "last.safetensors")
    save_checkpoint(a / "checkpoints" / "last.safetensors", tensors, meta)  # no run id: compared by config
    assert main(["train", "--resume", str(a), "--quiet"]) == 2
    assert "seed=1 there, 0 in config.json" in one_line_error(capsys)


# --- 3. metrics.jsonl never loses a valid record ----------------------------------------------------------
def test_read_metrics_reports_damaged_lines_with_their_numbers(tmp_path, caplog):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"epoch": 0}\n{"epoch": 5, "x": "\xff"}\nnot json\n[1]\n'
                                             b'{"epoch": 10}\n{"epoch": 15, "tr')
    problems: list = []
    assert [r["epoch"] for r in read_metrics(tmp_path, problems)] == [0, 10]
    assert [(p.line, p.reason) for p in problems] == [(2, "not UTF-8"), (3, "not JSON"),
                                                      (4, "not a record with an integer epoch")]
    with caplog.at_level(logging.WARNING, logger="grokking"):
        assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 10]
    assert "3 damaged line(s)" in caplog.text and "line 2" in caplog.text  # the torn last line is not "damaged"


def test_resume_moves_a_damaged_middle_line_aside_and_keeps_every_record(tmp_path, capsys):
    cfg = tiny_config(epochs=60, checkpoint_every=20)
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    with pytest.raises(Crash):  # killed after its record of epoch 45; last checkpoint at 40
        Trainer(cfg, run, progress=False, callbacks=[CrashAt(45)]).run()
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = '{"epoch": 10, "step": 10, "train_lo\n'  # damaged in the middle (epoch 10)
    (run / "metrics.jsonl").write_text("".join(lines))
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "line 3" in err and "metrics.damaged.jsonl" in err
    moved = [json.loads(line) for line in (run / "metrics.damaged.jsonl").read_text().splitlines()]
    assert [(m["line"], m["text"]) for m in moved] == [(3, lines[2].rstrip("\n"))]
    ours, ref = metrics_without_seconds(run), metrics_without_seconds(tmp_path / "ref")
    assert [r["epoch"] for r in ours] == [e for e in range(0, 61, 5) if e != 10]  # only the damaged one is missing
    assert ours == [r for r in ref if r["epoch"] != 10]


# --- 4. one writer per run directory ----------------------------------------------------------------------
HOLDER = ("import sys, time\nfrom grokking.rundir import RunLock\n"
          "lock = RunLock(sys.argv[1], 'test holder').acquire()\nprint('held', flush=True)\ntime.sleep(300)\n")


def hold(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "20", "--checkpoint-log", "0",
             "--no-report", "--quiet"]
    assert main(["train", "--out", str(run), *flags]) == 0
    capsys.readouterr()
    before = tree(run)
    holder = hold(run)
    try:
        note = lock_note(lock_path(run))
        assert note.pid == holder.pid and note.host == socket.gethostname()
        for argv in (["train", "--resume", str(run), "--epochs", "40", "--quiet"],
                     ["train", "--out", str(run), "--overwrite", *flags]):
            assert main(argv) == 2
            line = one_line_error(capsys)
            assert f"process {holder.pid} on {socket.gethostname()}" in line and "is in use" in line
        with pytest.raises(rundir.RunDirError, match=f"process {holder.pid}"):
            Trainer.resume(run, progress=False)
        assert tree(run) == before
        holder.send_signal(signal.SIGKILL)  # no cleanup: the kernel alone frees the lock
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    stale = json.loads((lock_path(run).with_name(lock_path(run).name + ".pid")).read_text())
    assert stale["pid"] == holder.pid  # the dead holder's note is still there ...
    assert lock_note(lock_path(run)) is None  # ... and not believed
    trainer = Trainer.resume(run, {"epochs": 40}, progress=False)
    note = lock_note(lock_path(run))
    assert note.pid == os.getpid() and note.host == socket.gethostname() and note.command == "resume"
    trainer.run()
    assert lock_note(lock_path(run)) is None
    assert read_metrics(run)[-1]["epoch"] == 40


def test_batch_and_sweep_points_hold_the_run_lock(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *TINY_FLAGS, "--grid", "seed=0,1", "--dry-run"]) == 0
    run_dirs = [Path(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    holder = hold(run_dirs[1])
    try:
        assert main(["sweep", "--out", str(out), *TINY_FLAGS, "--grid", "seed=0,1", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert f"process {holder.pid}" in err
        rows = {r["name"]: r for r in read_results(out)}
        assert rows["seed=0"]["status"] == "completed"
        assert rows["seed=1"]["status"] == "running" and f"process {holder.pid}" in rows["seed=1"]["error"]
        assert not run_dirs[1].exists()
        batch = tmp_path / "batch"
        run = batch / "runs" / "seed=1"
        (batch / "runs").mkdir(parents=True)
        batch_holder = hold(run)
        try:
            assert main(["batch", "--out", str(batch), *TINY_FLAGS, "--grid", "seed=0,1", "--quiet"]) == 2
            assert "is in use" in one_line_error(capsys) and not run.exists()
        finally:
            batch_holder.kill()
            batch_holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert main(["sweep", "--out", str(out), *TINY_FLAGS, "--grid", "seed=0,1", "--quiet"]) == 0
    rows = read_results(out)
    assert {r["status"] for r in rows} == {"completed"}


@pytest.mark.slow
def test_two_resumes_of_a_run_that_trains_cannot_lose_epochs(tmp_path):
    run = tmp_path / "run"
    flags = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "100000", "--eval-every", "50",
             "--checkpoint-every", "200", "--checkpoint-log", "0", "--no-report", "--quiet"]
    log = tmp_path / "log"
    with open(log, "wb") as sink:
        first = subprocess.Popen([sys.executable, "-m", "grokking.cli", "train", "--out", str(run), *flags],
                                 env=ENV, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.safetensors").exists():
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for argv in (["--resume", str(run), "--quiet"], ["--out", str(run), "--overwrite", *flags]):
            second = subprocess.run([sys.executable, "-m", "grokking.cli", "train", *argv], env=ENV,
                                    capture_output=True, text=True, timeout=120, check=False)
            assert second.returncode == 2, second.stderr
            assert f"process {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130
    finally:
        if first.poll() is None:
            first.kill()
    epochs = [r["epoch"] for r in read_metrics(run)]
    assert epochs == list(range(0, epochs[-1] + 1, 50))  # one writer: not an epoch missing or repeated


# --- 6. OS errors are one line, recorded, and resumable ---------------------------------------------------
class FailingWrite:
    """rundir.atomic_write_bytes that raises ``errno`` at call number ``at`` (1-based), for paths matching."""

    def __init__(self, monkeypatch, at: int, code: int = errno.ENOSPC, match: str = ""):
        self.real, self.at, self.code, self.match, self.calls = rundir.atomic_write_bytes, at, code, match, 0
        monkeypatch.setattr(rundir, "atomic_write_bytes", self)

    def __call__(self, path, data):
        if self.match in str(path):
            self.calls += 1
            if self.calls == self.at:
                raise OSError(self.code, os.strerror(self.code), str(path))
        return self.real(path, data)


def test_a_full_disk_mid_run_is_one_line_recorded_and_the_run_resumes_the_same(tmp_path, monkeypatch, capsys):
    flags = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--n-heads", "4", "--epochs", "40",
             "--checkpoint-every", "10", "--checkpoint-log", "0", "--eval-every", "5", "--batch-size", "32",
             "--no-report", "--quiet"]
    assert main(["train", "--out", str(tmp_path / "ref"), *flags]) == 0
    run = tmp_path / "run"
    # Checkpoint writes: snapshot 0, last 0, snapshot 10, last 10, snapshot 20 <- the disk is full here.
    FailingWrite(monkeypatch, at=5, match=".safetensors")
    capsys.readouterr()
    assert main(["train", "--out", str(run), *flags]) == 1
    line = one_line_error(capsys, "grokking: run failed: ")
    assert "epoch_0000020.safetensors: No space left on device" in line and f"--resume {run}" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "crashed" and "No space left on device" in summary["error"]
    assert load_checkpoint(run / "checkpoints" / "last.safetensors")[1]["epoch"] == 10
    assert not list(run.rglob("*.tmp"))
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(run, tmp_path / "ref")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_summary_that_cannot_be_written_leaves_the_run_resumable(tmp_path, monkeypatch, capsys, code):
    run = tmp_path / "run"
    cfg = tiny_config(epochs=10, checkpoint_every=5)
    FailingWrite(monkeypatch, at=1, code=code, match="summary.json")
    assert main(["train", "--out", str(run), "--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "10",
                 "--checkpoint-every", "5", "--checkpoint-log", "0", "--eval-every", "5", "--no-report",
                 "--quiet"]) == 1
    assert f"summary.json: {os.strerror(code)}" in one_line_error(capsys, "grokking: run failed: ")
    assert not (run / "summary.json").exists()
    monkeypatch.undo()
    assert Trainer.resume(run, progress=False).run()["status"] == "completed"
    train(cfg, tmp_path / "ref", progress=False)
    assert metrics_without_seconds(run) == metrics_without_seconds(tmp_path / "ref")


def test_file_system_errors_before_a_run_starts_are_exit_2(tmp_path, monkeypatch, capsys):
    flags = ["--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "5", "--checkpoint-log", "0",
             "--no-report", "--quiet"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--out", str(blocker / "run"), *flags]) == 2  # ENOTDIR
    assert f"{blocker} is not a directory" in one_line_error(capsys)
    FailingWrite(monkeypatch, at=1, code=errno.EROFS, match="config.json")
    assert main(["train", "--out", str(tmp_path / "ro"), *flags]) == 2
    assert "config.json: Read-only file system" in one_line_error(capsys)
    assert not (tmp_path / "ro" / "summary.json").exists()


def test_analyze_report_and_plot_write_failures_are_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train(tiny_config(epochs=20, checkpoint_every=5, report=True), run, progress=False)
    for argv, prefix, match in ((["analyze", str(run)], "grokking: failed: ", ".png"),
                                (["report", str(run)], "grokking: failed: ", "report.html"),
                                (["plot", str(run)], "grokking: failed: ", "curves.png")):
        with monkeypatch.context() as patch:
            FailingWrite(patch, at=1, code=errno.ENOSPC, match=match)
            assert main(argv) == 1, argv
        line = one_line_error(capsys, prefix)
        assert "No space left on device" in line and match in line, line
        if argv[0] == "plot":
            assert "cannot write" in line and "cannot read" not in line
    # reading: an unreadable config.json is said as such (not "cannot read" for a write, nor "missing")
    real_read_bytes = Path.read_bytes

    def unreadable(self):
        if self.name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    assert main(["plot", str(run)]) == 2
    assert "config.json: Permission denied" in one_line_error(capsys)


def test_the_report_says_config_json_is_unreadable_and_that_the_run_is_being_written(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(epochs=10), run, progress=False)
    real_read_bytes = Path.read_bytes

    def unreadable(self):
        if self.name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_bytes(self)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", unreadable)
        page = write_report(run).read_text()
    assert "config.json: Permission denied" in page and "No config.json." not in page
    assert "being written now" not in page
    with RunLock(run, "train"):
        page = write_report(run).read_text()
    assert f"being written now, by process {os.getpid()}" in page
    (run / "config.json").unlink()
    assert "No config.json." in write_report(run).read_text()


def test_a_sweep_stops_at_a_full_disk_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), *TINY_FLAGS, "--grid", "seed=0,1,2", "--quiet"]
    with monkeypatch.context() as patch:
        FailingWrite(patch, at=3, code=errno.ENOSPC, match=".safetensors")  # the first run's final snapshot
        assert main(args) == 1
    line = one_line_error(capsys, "grokking: run failed: ")
    assert "No space left on device" in line and "the sweep stopped" in line
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    assert len(runs) == 1  # no run started after it
    assert json.loads((runs[0] / "summary.json").read_text())["status"] == "crashed"
    assert main(args) == 0
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["completed"] * 3


# --- 8. smaller ----------------------------------------------------------------------------------------------
def test_resume_takes_no_report_and_max_memory(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(epochs=10, report=True), run, progress=False)
    assert main(["train", "--resume", str(run), "--epochs", "20", "--no-report", "--max-memory", "4",
                 "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["report"] is False and config["max_memory"] == 4.0 and config["epochs"] == 20
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    allowed = one_line_error(capsys).split("(only ")[1]
    assert "--report" in allowed and "--max-memory" in allowed and "--epochs" in allowed


def test_lock_probe_does_not_take_the_lock_from_a_writer(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "train"):
        assert lock_note(lock_path(run)).pid == os.getpid()
        with RunLock(run, "again"):  # reentrant in one thread (a sweep point, then its trainer)
            pass
        assert lock_note(lock_path(run)).pid == os.getpid()
    assert lock_note(lock_path(run)) is None


CONTENDER = """
import sys, time
from pathlib import Path
from grokking.rundir import exclusive
lock, log, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
held = 0
while held < n:
    with exclusive(lock, "contender") as mine:
        if mine:
            held += 1
            with open(log, "a") as f:
                f.write("in\\n")
            time.sleep(0.001)
            with open(log, "a") as f:
                f.write("out\\n")
"""


def test_the_lock_excludes_contenders_while_its_file_is_removed_on_every_release(tmp_path):
    lock, log = tmp_path / ".run.lock", tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(lock), str(log), "40"], env=ENV)
             for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    lines = log.read_text().split()
    assert len(lines) == 3 * 40 * 2 and lines == ["in", "out"] * (3 * 40)  # never two holders at once
    assert not lock.exists() and not (tmp_path / ".run.lock.pid").exists()
