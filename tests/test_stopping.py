"""Sweeps stop when told, and leave nothing behind when killed.

- SIGTERM / SIGINT to a sweep: no new run starts, the runs in flight save ``last.safetensors`` and
  end as ``interrupted``, and the sweep exits 143 / 130 within seconds;
- SIGKILL of a process-pool sweep's parent alone: its workers save and exit (``PR_SET_PDEATHSIG``, or
  the watchdog thread used where the kernel cannot tell them), and a rerun finishes every run with no
  row saying ``running``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_sweep import TINY_FLAGS

from grokking.rundir import lock_note, lock_path, read_json
from grokking.sweep import read_results

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# Long enough that a run is still training when the signal comes, short enough for a rerun to finish
# (the tiny model takes 1 to 7 ms an epoch, on a quiet or a busy machine).
LONG = [*TINY_FLAGS, "--epochs", "2500", "--eval-every", "50", "--checkpoint-every", "250"]
GRID = ["--grid", "seed=0,1,2,3"]


def launch(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grokking.cli", "sweep", "--out", str(out), *LONG, *GRID,
                             "--no-sweep-report", "--quiet", *extra], cwd=out.parent, env=env or ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def runs_in_flight(out: Path) -> list[Path]:
    """Run directories whose lock is held (by a worker or the sweep itself) and that have a checkpoint."""
    return [d for d in sorted((out / "runs").glob("*")) if d.is_dir() and lock_note(lock_path(d)) is not None
            and (d / "checkpoints" / "last.safetensors").exists()]


def wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in state  # a zombie nobody reaped (a container's PID 1 may not): it is gone


def assert_stopped_cleanly(out: Path, in_flight: list[Path]) -> None:
    for run in in_flight:
        assert read_json(run / "summary.json")["status"] == "interrupted", run
        assert (run / "checkpoints" / "last.safetensors").exists()
        assert lock_note(lock_path(run)) is None
    rows = {r["name"]: r for r in read_results(out)}
    assert all(r["status"] != "running" for r in rows.values()), rows
    assert {r["status"] for r in rows.values()} <= {"interrupted", "pending"}


@pytest.mark.parametrize("backend, signum, workers", [("process", signal.SIGTERM, 2),
                                                      ("sequential", signal.SIGINT, 1)])
def test_a_signal_stops_the_sweep_at_once_and_no_queued_run_starts(tmp_path, backend, signum, workers):
    out = tmp_path / "sweep"
    proc = launch(out, "--backend", backend, "--workers", str(workers))
    try:
        wait_for(lambda: len(runs_in_flight(out)) == workers, proc)
        in_flight = runs_in_flight(out)
        sent = time.monotonic()
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 128 + signum, err
    assert elapsed < 10, f"the sweep took {elapsed:.1f} s to stop"
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err or "stopped by signal" in err, err
    assert_stopped_cleanly(out, in_flight)
    started = [d for d in (out / "runs").glob("*") if (d / "config.json").exists()]
    assert sorted(started) == in_flight  # the queued runs never started


@pytest.mark.slow  # a minute each: most of it the rerun that finishes the four runs
@pytest.mark.parametrize("watchdog", [False, True], ids=["pdeathsig", "watchdog"])
def test_sigkill_of_the_parent_takes_its_workers_and_a_rerun_finishes_every_run(tmp_path, watchdog):
    out = tmp_path / "sweep"
    env = {**ENV, **({"GROKKING_TEST_WATCHDOG": "1"} if watchdog else {})}
    proc = launch(out, "--backend", "process", "--workers", "2", env=env)
    try:
        wait_for(lambda: len(runs_in_flight(out)) == 2, proc)
        in_flight = runs_in_flight(out)
        workers = [lock_note(lock_path(run)).pid for run in in_flight]
        assert proc.pid not in workers and len(set(workers)) == 2
        proc.send_signal(signal.SIGKILL)  # the parent alone: its workers are not signalled by anyone
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while not all(dead(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.1)
    assert_stopped_cleanly(out, in_flight)
    # The rerun: the interrupted runs continue from their checkpoints; every run ends; none "running".
    rerun = subprocess.run([sys.executable, "-m", "grokking.cli", "sweep", "--out", str(out), *LONG, *GRID,
                            "--no-sweep-report", "--backend", "process", "--workers", "2"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("(resumed;") == len(in_flight)
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["completed"] * 4, rows
