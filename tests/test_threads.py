"""The thread policy: a fixed count stays fixed; the automatic one keeps the faster count,
tries again on schedule and when epochs slow down, and the process's count is restored."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from test_reliability import metrics_without_seconds

from grokking.rundir import read_metrics
from grokking import threads
from grokking.threads import ThreadPolicy, restored_threads
from grokking.train import resume, train


def drive(policy, seconds_by_threads, epochs, start=0):
    """Run ``epochs`` epochs whose wall time depends on the thread count set for each."""
    used = []
    for epoch in range(start, start + epochs):
        policy.before_epoch(epoch)
        used.append(torch.get_num_threads())
        policy.after_epoch(seconds_by_threads[torch.get_num_threads()])
    return used


def test_a_fixed_count_is_used_for_every_epoch():
    with restored_threads():
        policy = ThreadPolicy(1, most=2)
        assert not policy.automatic
        assert drive(policy, {1: 0.06, 2: 0.04}, 10) == [1] * 10
        assert policy.choices == []


def test_the_automatic_policy_keeps_the_faster_count_and_follows_a_neighbour():
    with restored_threads():
        policy = ThreadPolicy(0, most=2, every=100, trial=3, slow=1.5, patience=5)
        quiet = {1: 0.064, 2: 0.039}
        used = drive(policy, quiet, 20)
        assert used[:6] == [1, 2, 1, 2, 1, 2]  # interleaved trial epochs
        assert used[6:] == [2] * 14 and policy.current == 2
        assert policy.choices[-1]["ms"] == {"1": 64.0, "2": 39.0}
        # A busy neighbour: two threads now take 135 ms, one thread 60 ms. After `patience` slow
        # epochs the policy tries again and moves to one thread.
        loaded = {1: 0.060, 2: 0.135}
        used = drive(policy, loaded, 5 + 6 + 10, start=20)
        assert used[:5] == [2] * 5 and used[5:11] == [1, 2, 1, 2, 1, 2] and used[11:] == [1] * 10
        assert policy.current == 1 and len(policy.choices) == 2


def test_the_automatic_policy_tries_again_on_schedule():
    with restored_threads():
        policy = ThreadPolicy(0, most=2, every=10, trial=1)
        used = drive(policy, {1: 0.05, 2: 0.04}, 2 + 10 + 2)
        assert used == [1, 2] + [2] * 10 + [1, 2]
        assert [c["epoch"] for c in policy.choices] == [1, 13]


def test_one_core_means_nothing_to_choose_and_the_count_is_restored():
    before = torch.get_num_threads()
    with restored_threads():
        policy = ThreadPolicy(0, most=1)
        assert not policy.automatic and drive(policy, {1: 0.05}, 3) == [1, 1, 1]
        torch.set_num_threads(2)
    assert torch.get_num_threads() == before


# --- in a real run ---------------------------------------------------------------------------------


def test_a_run_records_the_count_it_used_and_leaves_the_callers_count(tmp_path):
    with restored_threads():
        torch.set_num_threads(2)
        train(tiny_config(epochs=20, threads=1), tmp_path / "fixed", progress=False)
        assert torch.get_num_threads() == 2  # the caller's count, back
        assert {r["threads"] for r in read_metrics(tmp_path / "fixed")} == {1}
        info = json.loads((tmp_path / "fixed" / "config.json").read_text())
        assert info["config"]["threads"] == 1 and info["threads"] == {"requested": 1, "candidates": [1]}
        summary = json.loads((tmp_path / "fixed" / "summary.json").read_text())
        assert summary["threads"]["current"] == 1 and summary["threads"]["choices"] == []


def test_an_automatic_run_times_both_counts_and_records_its_choice(tmp_path):
    with restored_threads():
        torch.set_num_threads(2)
        train(tiny_config(epochs=20, threads=0), tmp_path / "auto", progress=False)
        assert torch.get_num_threads() == 2
        summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
        choice = summary["threads"]["choices"][0]
        assert summary["threads"]["candidates"] == [1, 2] and set(choice["ms"]) == {"1", "2"}
        assert choice["threads"] == min((1, 2), key=lambda n: (choice["ms"][str(n)], n))
        later = [r["threads"] for r in read_metrics(tmp_path / "auto") if r["epoch"] > choice["epoch"]]
        assert later and set(later) == {choice["threads"]}


def test_a_fixed_count_resumes_bit_for_bit(tmp_path):
    with restored_threads():
        torch.set_num_threads(2)
        cfg = tiny_config(epochs=40, threads=2, checkpoint_every=20)
        train(cfg, tmp_path / "whole", progress=False)
        train(cfg.replace(epochs=20), tmp_path / "parts", progress=False)
        torch.set_num_threads(1)  # another caller's count: the run's own is what counts
        resume(tmp_path / "parts", progress=False, epochs=40)
        whole, parts = metrics_without_seconds(tmp_path / "whole"), metrics_without_seconds(tmp_path / "parts")
        assert whole == parts and {r["threads"] for r in whole} == {2}


# A fresh process's first float64 cross-entropy at 2 threads, and its second. Before it, a matrix
# product leaves both OpenMP threads spinning, so that they enter the loss's exp together: the
# moment MKL's vector math, unsettled, picks a wrong kernel for one thread's chunk.
_FIRST_LOSS = """
import hashlib, torch
from grokking.methods import float64_cross_entropy_per_example
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
logits, labels = torch.randn(3830, 114, generator=g), torch.randint(0, 114, (3830,), generator=g)
a, b = torch.randn(3830, 128, generator=g), torch.randn(128, 512, generator=g)
(a @ b).sum()
first = float64_cross_entropy_per_example(logits, labels)
second = float64_cross_entropy_per_example(logits, labels)
print(torch.equal(first, second), hashlib.sha256(first.numpy().tobytes()).hexdigest())
"""


def test_importing_the_package_settles_the_vector_math():
    assert threads._vector_math_settled
    threads.settle_vector_math()  # idempotent
    assert threads._vector_math_settled


@pytest.mark.slow
def test_the_first_loss_of_a_process_is_the_same_in_every_process():
    """Without :func:`grokking.threads.settle_vector_math` at import, about 2 processes in 5
    computed this first loss with one thread's chunk of ``exp`` off by up to 3.3e-9 (MKL 2024.2,
    AVX-512): 12 processes all alike then happen about once in a thousand times."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_NUM_THREADS", None)
    results = []
    for _ in range(12):
        proc = subprocess.run([sys.executable, "-c", _FIRST_LOSS], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(tuple(proc.stdout.split()))
    assert all(same == "True" for same, _ in results), results
    assert len({digest for _, digest in results}) == 1, results
