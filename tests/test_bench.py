"""grokking bench: its rows and ratios, the TransformerLens peer (our model, trained the same way),
thread counts (the policy's, a fixed --threads N for every row, the caller's restored), and the
background load (started, stopped by PID, and dying with its parent). transformer_lens is
installed in the test environment: its absence is simulated, never skipped."""
from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import tiny_config

from grokking import bench
from grokking.cli import main
from grokking.interop import INSTALL_HINT
from grokking.train import Trainer

TINY = {"p": 13, "d_model": 32, "n_heads": 4, "d_mlp": 64}


@pytest.fixture
def two_threads():
    """The caller's thread count is 2 (the machine's cores) during the test, 1 again after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, Z, ...), or None when it no longer exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_every_row_every_ratio_and_the_whole_trainer(two_threads):
    # epochs=20: --grok's whole trainer then ends at its budget, which is all its ms/epoch needs.
    cfg = tiny_config(epochs=20, checkpoint_every=10)
    result = bench.run_bench(cfg, 2, 1, bench.SEED_LOOP, grok=True)
    ms = result["ms_per_epoch"]
    assert list(ms) == list(bench.ROWS) and all(v > 0 for v in ms.values())
    assert {row: len(t) for row, t in result["ms_per_epoch_all_reps"].items()} == {row: 1 for row in bench.ROWS}
    ratios = result["ratios"]
    assert set(ratios) == {"seed/ours", "transformer_lens/ours", "ours/ours_1_thread", "ours/floor",
                           "seed/whole_trainer"}
    for key, numerator, denominator, _, _ in bench.RATIOS:
        assert ratios[key] == round(ms[numerator] / ms[denominator], 3), key
    grokked = result["time_to_grok"]
    assert grokked["epochs_run"] == 20 and grokked["status"] == "completed"
    assert grokked["ms_per_epoch"] == pytest.approx(grokked["wall_seconds"] * 1000 / 20, abs=0.05 * 1000 / 20 + 1e-3)
    assert ratios["seed/whole_trainer"] == round(ms["seed_loop"] / grokked["ms_per_epoch"], 3)
    # Threads: the policy chose between 1 and the process's 2; the other rows ran at the process's 2.
    threads = result["threads"]
    assert threads["process"] == 2 and threads["requested"] == 0
    assert set(threads["rows"]["ours"]) <= {1, 2} and threads["rows"]["ours_1_thread"] == [1]
    assert threads["rows"]["seed_loop"] == threads["rows"]["transformer_lens"] == threads["rows"]["floor"] == [2]
    policy = threads["ours_policy"][0]
    assert policy["candidates"] == [1, 2] and len(policy["choices"]) == 1  # the warm-up covered its trial
    assert torch.get_num_threads() == 2  # the caller's count, restored
    # What the machine was, and everything JSON can carry.
    assert result["torch"] == torch.__version__
    assert result["transformer_lens_version"] == importlib.metadata.version("transformer-lens")
    assert result["cpu"]["cores"] >= 1 and isinstance(result["cpu"]["vector_extensions"], list)
    with open("/proc/cpuinfo") as f:  # Linux (the test machines): the kernel's own list of the CPU's flags
        flags = next(line for line in f if line.startswith(("flags", "Features"))).split(":", 1)[1].split()
    assert result["cpu"]["vector_extensions"] == [f for f in bench._VECTOR_FLAGS if f in flags]
    assert result["cpu"]["model"] and result["cpu"]["model"] != "unknown"
    assert json.loads(json.dumps(result)) == result
    text = bench.format_result(result)
    for label in ("seed loop", "TransformerLens", "ours (fast path)", "ours, 1 thread", "matmul floor",
                  "whole trainer (--grok)"):
        assert label in text, label
    for key, value in ratios.items():
        assert f"{value:9.2f}x  {key}" in text, key
    assert "speed-up vs seed" in text and "(grokking.seed_loop, cpu)" in text and result["seed_loop_device"] == "cpu"


def test_threads_n_is_honoured_by_every_row(two_threads, monkeypatch):
    seen: dict[str, list[int]] = {"seed_loop": [], "transformer_lens": [], "floor": [], "ours": []}
    time_reference, time_tl, time_floor = bench.time_reference, bench.time_transformer_lens, bench.time_floor

    def reference(reference, cfg, epochs, threads, device="cpu"):
        seen["seed_loop"].append(threads)  # the seed loop sets its own count from --threads
        return time_reference(reference, cfg, epochs, threads)

    def tl(*args, **kwargs):
        seen["transformer_lens"].append(torch.get_num_threads())
        return time_tl(*args, **kwargs)

    def floor(*args, **kwargs):
        seen["floor"].append(torch.get_num_threads())
        return time_floor(*args, **kwargs)

    class CountingTrainer(bench.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            step = self.group.train_epoch

            def counted() -> None:
                seen["ours"].append(torch.get_num_threads())
                step()

            self.group.train_epoch = counted

    monkeypatch.setattr(bench, "time_reference", reference)
    monkeypatch.setattr(bench, "time_transformer_lens", tl)
    monkeypatch.setattr(bench, "time_floor", floor)
    monkeypatch.setattr(bench, "Trainer", CountingTrainer)
    result = bench.run_bench(bench.Config().replace(**TINY, threads=1), 2, 1, bench.SEED_LOOP)
    assert set(result["ms_per_epoch"]) == {"seed_loop", "transformer_lens", "ours", "floor"}  # no 1-thread row
    assert all(counts and set(counts) == {1} for counts in seen.values()), seen
    assert len(seen["ours"]) == 3 + 2  # a fixed count has no trial: 3 warm-up epochs, then the timed ones
    assert all(counts == [1] for counts in result["threads"]["rows"].values())
    assert result["threads"]["ours_policy"][0]["candidates"] == [1]
    assert torch.get_num_threads() == 2


def test_transformer_lens_peer_is_our_model_and_trains_as_ours():
    cfg = bench.Config().replace(**TINY)
    peer = bench.TransformerLensPeer(cfg)
    trainer = Trainer(cfg, None, progress=False)
    group = trainer.group
    # Inputs: the training pairs as our trainer holds them, tokens a, b, '='.
    assert torch.equal(peer.tokens, group.train_tokens)
    assert (peer.tokens[:, 2] == cfg.p).all() and torch.equal(peer.labels, group.train_labels)

    def ours() -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            logits = group.logits_fn(group.model, group.train_tokens)
            return logits, group.loss_fn(logits, group.train_labels).item()

    with torch.no_grad():
        torch.testing.assert_close(peer.logits(), ours()[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(peer.logits(), group.model(peer.tokens)[:, -1], rtol=1e-5, atol=1e-5)
    peer_losses, our_losses = [], []
    for _ in range(8):
        our_losses.append(ours()[1])
        group.train_epoch()
        peer_losses.append(peer.train_epoch().item())
    assert peer_losses[1] == pytest.approx(peer_losses[0], rel=1e-12)  # warm-up: step 0 has lr 0
    assert all(b < a for a, b in itertools.pairwise(peer_losses[1:])), peer_losses
    assert peer_losses == pytest.approx(our_losses, rel=1e-4)  # the same model, the same recipe
    frozen = {k: v for k, v in peer.model.state_dict().items() if k.endswith(bench._ABSENT_BIASES)}
    assert frozen and all(not v.any() for v in frozen.values())  # TransformerLens's extra biases stay zero


def test_missing_transformer_lens_is_one_line_and_the_row_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # `import transformer_lens` now fails
    assert bench.transformer_lens_version() is None
    result = bench.run_bench(bench.Config().replace(**TINY, threads=1), 2, 1, None)
    assert "transformer_lens" not in result["ms_per_epoch"] and "transformer_lens/ours" not in result["ratios"]
    assert result["transformer_lens"] == {"missing": INSTALL_HINT}
    hint = [line for line in bench.format_result(result).splitlines() if "pip install" in line]
    assert len(hint) == 1 and "TransformerLens" in hint[0] and "pip install 'grokking-lab[interop]'" in hint[0]
    monkeypatch.delitem(sys.modules, "transformer_lens")
    skipped = bench.run_bench(bench.Config().replace(**TINY, threads=1), 2, 1, None, transformer_lens=False)
    assert skipped["transformer_lens"] == {"skipped": "--no-transformer-lens"}
    assert "transformer_lens" not in skipped["ms_per_epoch"]
    assert "skipped (--no-transformer-lens)" in bench.format_result(skipped)


def test_background_load_runs_while_timing_and_is_gone_afterwards(monkeypatch):
    started: list[list] = []
    during: list[dict[int, tuple[str | None, int]]] = []
    start, time_floor = bench.start_busy_processes, bench.time_floor

    def capture(k, procs):
        started.append(procs)
        start(k, procs)

    def floor(*args, **kwargs):
        during.append({p.pid: (process_state(p.pid), cpu_ticks(p.pid)) for p in started[0]})
        return time_floor(*args, **kwargs)

    monkeypatch.setattr(bench, "start_busy_processes", capture)
    monkeypatch.setattr(bench, "time_floor", floor)
    handler = signal.getsignal(signal.SIGTERM)
    result = bench.run_bench(bench.Config().replace(**TINY, threads=1), 2, 1, None, transformer_lens=False,
                             background=2)
    pids = result["background_load"]["pids"]
    assert result["background_load"]["processes"] == 2 and len(set(pids)) == 2
    assert pids == [p.pid for p in started[0]]
    # While the rows were timed: both alive and spinning (CPU time spent; a sleeper would have ~none).
    assert all(state in ("R", "S") and ticks > 0 for state, ticks in during[0].values()), during
    for pid in pids:
        assert_gone(pid)
    assert signal.getsignal(signal.SIGTERM) is handler


def test_background_load_is_stopped_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), bench.background_load(1) as pids:
        assert process_state(pids[0]) in ("R", "S")
        raise KeyboardInterrupt
    assert_gone(pids[0])


def test_background_load_is_stopped_on_sigterm(tmp_path):
    script = textwrap.dedent("""
        import os, sys, time
        from grokking import bench
        try:
            with bench.background_load(2) as pids:
                print(*pids, flush=True)
                time.sleep(60)
        except bench.BenchInterrupted as err:
            gone = []
            for pid in pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    gone.append(pid)
            print("gone", *gone, flush=True)
            sys.exit(err.exit_status)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert out.split() == ["gone", *map(str, pids)]  # stopped and reaped by the bench, before it exited


def test_a_busy_process_exits_by_itself_when_its_parent_dies():
    script = "import time\nfrom grokking import bench\nprocs = []\nbench.start_busy_processes(1, procs)\n" \
             "print(procs[0].pid, flush=True)\ntime.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    busy = int(parent.stdout.readline())
    assert process_state(busy) in ("R", "S")
    parent.kill()  # SIGKILL: no clean-up of its own runs
    parent.wait()
    deadline = time.monotonic() + 10
    while process_state(busy) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_state(busy) in (None, "Z")  # exited (a zombie until its new parent reaps it)


@pytest.mark.parametrize("value", ["-1", "65", "x"])
def test_a_bad_background_load_is_a_one_line_error(capsys, value):
    assert main(["bench", "--background-load", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--background-load" in err, err


def test_bad_reps_and_epochs_are_one_line_errors(capsys):
    for flags in (["--reps", "0"], ["--timed-epochs", "0"]):
        assert main(["bench", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flags[0] in err, err


def test_a_model_transformer_lens_cannot_express_leaves_the_row_out_in_one_line(monkeypatch):
    def refuse(model):
        raise bench.InteropError("cannot export this model to TransformerLens")

    monkeypatch.setattr(bench, "to_transformer_lens", refuse)
    result = bench.run_bench(bench.Config().replace(**TINY, threads=1), 2, 1, None)
    assert "transformer_lens" not in result["ms_per_epoch"] and "transformer_lens" not in result["threads"]["rows"]
    assert result["transformer_lens"]["unavailable"] == "cannot export this model to TransformerLens"
    lines = [line for line in bench.format_result(result).splitlines() if "not applicable" in line]
    assert len(lines) == 1 and "cannot export" in lines[0]
