"""Memory is estimated from the config before anything runs, and checked against what runs use.

The estimate (:func:`grokking.memory.estimate_memory`) is compared with the peak resident set size
(``VmHWM`` in ``/proc/self/status``) that a fresh process reaches training the config, over what it held
before the run was built. Stated accuracy: the measured peak lies within ``[0.5, 1.5]`` times the
estimate (measured 0.69 to 1.28 over the configurations below, see ``MEASURED``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from grokking import memory
from grokking.cli import main
from grokking.config import Config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
LOW, HIGH = 0.5, 1.5

MEASURE = r"""
import json, sys
import torch
torch.set_num_threads(1)
from grokking.config import Config
from grokking import memory
from grokking.batched import BatchedTrainer
from grokking.train import Trainer

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def rss():
    return status("VmRSS")

fields, k, strategy = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfgs = [Config(**{"device": "cpu", "epochs": 2, "eval_every": 1, "checkpoint_every": 0, "checkpoint_log": 0,
                  "report": False, **fields, "seed": seed}) for seed in range(k)]
estimate = memory.estimate_memory(cfgs, "cpu", stacked=strategy == "stacked")
before = rss()
if k > 1:
    BatchedTrainer(cfgs, None, strategy=strategy, progress=False).run()
else:
    Trainer(cfgs[0], None, progress=False).run()
# VmHWM, not ru_maxrss: the latter keeps the peak of the process that forked us (a large pytest).
peak = status("VmHWM")
print(json.dumps({"estimate": estimate.total, "measured": peak - before, "path": estimate.path}))
"""


def measure(fields: dict, k: int = 1, strategy: str = "separate") -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(fields), str(k), strategy], env=ENV,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


SIZES = [
    ({"p": 200}, 1, "separate", "token tables"),
    ({"p": 150, "n_layers": 2}, 1, "separate", "hooked"),
    pytest.param({"p": 500}, 1, "separate", "token tables", marks=pytest.mark.slow),
    pytest.param({"p": 300, "layernorm": True}, 1, "separate", "fast", marks=pytest.mark.slow),
    pytest.param({"p": 400, "fast": False}, 1, "separate", "hooked", marks=pytest.mark.slow),
    pytest.param({"d_model": 1024, "d_mlp": 4096}, 1, "separate", "token tables", marks=pytest.mark.slow),
    pytest.param({"p": 200}, 4, "stacked", "fast", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("fields, k, strategy, path", SIZES)
def test_the_estimate_matches_the_measured_peak_rss(fields, k, strategy, path):
    result = measure(fields, k, strategy)
    ratio = result["measured"] / result["estimate"]
    print(f"\n{fields} x{k} {strategy}: estimate {result['estimate'] / 2**30:.3f} GB, measured peak RSS "
          f"{result['measured'] / 2**30:.3f} GB, ratio {ratio:.2f}")
    assert result["path"] == path
    assert LOW <= ratio <= HIGH


def test_configs_that_exhausted_the_machine_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 23 * 2**30)  # the machine of the report
    cases = [(["--p", "1000", "--max-memory", "8"], "training step (300000 examples)"),
             (["--d-model", "8192", "--d-mlp", "65536"], "weights, gradients and optimiser state"),
             (["--p", "1000", "--n-layers", "64"], "training step (300000 examples)")]
    for flags, largest in cases:
        out = tmp_path / "run"
        assert main(["train", "--out", str(out), *flags, "--quiet"]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grokking: error: max_memory: this run needs about "), err
        assert largest in lines[0] and ("Lower" in lines[0] or "Use" in lines[0])
        assert not out.exists()


def test_the_estimate_follows_the_config():
    base = memory.estimate_memory([Config(device="cpu")], "cpu")
    assert base.path == "token tables"
    assert memory.estimate_memory([Config(device="cpu", p=1000)], "cpu").total > 20 * base.total
    assert memory.estimate_memory([Config(device="cpu", n_layers=2)], "cpu").path == "hooked"
    assert memory.estimate_memory([Config(device="cpu", layernorm=True)], "cpu").path == "fast"
    ma = memory.estimate_memory([Config(device="cpu", grokfast="ma", grokfast_window=100)], "cpu")
    state = "weights, gradients and optimiser state"
    assert ma.parts[state] == pytest.approx(4 * memory.parameter_count(Config()) * (2 + 2 + 100))
    cfgs = [Config(device="cpu", seed=s) for s in range(8)]
    assert memory.estimate_memory(cfgs, "cpu", stacked=True).total > memory.estimate_memory(cfgs, "cpu").total


def test_a_sweep_is_refused_when_its_runs_together_do_not_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 3 * 2**30)
    flags = ["--p", "500", "--grid", "seed=0,1,2,3", "--epochs", "1", "--quiet"]
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *flags, "--backend", "process", "--workers", "4"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("grokking: error: max_memory: --workers 4 needs about ") and "fewer --workers" in line
    assert not out.exists()
    assert main(["sweep", "--out", str(out), *flags, "--dry-run"]) == 0  # one at a time fits
    capsys.readouterr()


def test_available_memory_reads_the_machine():
    available = memory.available_memory("cpu")
    assert available is not None and 0 < available
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
               for line in Path("/proc/meminfo").read_text().splitlines()}
    assert available <= meminfo["MemTotal"]
