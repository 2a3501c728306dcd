"""``grokking bench``: our training loop against the seed's, and against the matmul floor.

Per repetition, interleaved so that machine noise hits all three alike:

1. the seed notebook's loop, in a subprocess of its own, which prints its own seconds per
   epoch: by default our transcription of it that ships with the package
   (:mod:`grokking.seed_loop`, ``python -m grokking.seed_loop``, held equal to the shared
   reference by its tests), or any script with the same command line (``--reference PATH``,
   e.g. ``../shared/reference/seed_reference.py``), run as-is;
2. our trainer's epoch (fast path, full batch) on the same configuration, in this process;
3. the floor: the three matrix products of the model as written, on the training set
   (residual to MLP, MLP to residual, residual to logits), forward and backward. On CPU our
   epoch avoids most of them (fast.py's token tables), so it can run below this floor.

``--grok`` adds the end-to-end time to 99% test accuracy with the whole trainer (evaluation,
metrics, checkpoints, plots). Absolute times on a shared machine are noisy; read the ratios.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import seed_loop
from .config import Config
from .data import make_dataset
from .errors import GrokkingError, InputError
from .memory import resolve_device
from .train import Trainer

#: The seed loop that ships with the package: the default baseline.
SEED_LOOP = Path(seed_loop.__file__).resolve()


def find_reference(explicit: str | None = None) -> Path:
    """The seed-loop script to time: ``explicit`` (it must exist), else the packaged
    :mod:`grokking.seed_loop`."""
    if not explicit:
        return SEED_LOOP
    path = Path(explicit).expanduser()
    if not path.is_file():
        raise InputError(f"bench: --reference {explicit}: no such file")
    return path.resolve()


def reference_command(reference: Path) -> list[str]:
    """How to run ``reference``: the packaged loop as a module (``-P``: this interpreter's
    ``grokking``, never one in the working directory), any other script by its path."""
    if reference == SEED_LOOP:
        return [sys.executable, "-P", "-m", seed_loop.__name__]
    return [sys.executable, str(reference)]


def time_reference(reference: Path, cfg: Config, epochs: int, threads: int) -> float:
    """Seconds per epoch of the seed's own loop, as it reports them."""
    cmd = reference_command(reference) + ["--epochs", str(epochs), "--log", str(10**9), "--p", str(cfg.p),
                                          "--frac", str(cfg.frac), "--seed", str(cfg.seed), "--threads", str(threads)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"seconds_per_epoch\s+([0-9.eE+-]+)", run.stdout)
    if run.returncode != 0 or found is None:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise GrokkingError(f"bench: the seed loop {reference} failed (exit status {run.returncode}): {last[:200]}")
    return float(found.group(1))


def time_ours(cfg: Config, epochs: int, warmup: int = 3) -> float:
    trainer = Trainer(cfg, None, progress=False)
    for _ in range(warmup):
        trainer.group.train_epoch()
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.group.train_epoch()
    _sync(trainer.device)
    return (time.perf_counter() - start) / epochs


def time_floor(cfg: Config, n_train: int, epochs: int, device: torch.device) -> float:
    """Forward and backward of the model's three big products, nothing else."""
    d, m, v = cfg.d_model, cfg.d_mlp, cfg.d_vocab
    g = torch.Generator().manual_seed(0)
    x, pre, resid = (torch.randn(n_train, k, generator=g).to(device) for k in (d, m, d))
    W_in, W_out, W_U = torch.randn(m, d).to(device), torch.randn(d, m).to(device), torch.randn(d, v).to(device)
    g_logits, g_pre, g_resid = (torch.randn(n_train, k, generator=g).to(device) for k in (v, m, d))

    def epoch() -> None:
        x @ W_in.T, pre @ W_out.T, resid @ W_U  # forward
        resid.T @ g_logits, g_logits @ W_U.T  # unembed backward
        g_resid.T @ pre, g_resid @ W_out  # MLP out backward
        g_pre.T @ x, g_pre @ W_in  # MLP in backward

    for _ in range(3):
        epoch()
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    _sync(device)
    return (time.perf_counter() - start) / epochs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_to_grok(cfg: Config) -> dict[str, Any]:
    """The whole trainer (evaluation, metrics, checkpoints, plots) until 99% test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = Trainer(cfg.replace(stop_at_test_acc=0.99, report=False), Path(tmp) / "run", progress=False).run()
        wall = time.perf_counter() - start
    return {"wall_seconds": round(wall, 1), "epoch_test_acc_99": summary["epoch_test_acc_99"],
            "epoch_train_acc_99": summary["epoch_train_acc_99"], "status": summary["status"]}


def run_bench(cfg: Config, epochs: int, reps: int, reference: Path | None, threads: int, grok: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    n_train = len(make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, cfg.split).train_idx)
    times: dict[str, list[float]] = {"seed_reference": [], "ours": [], "floor": []}
    for _ in range(reps):
        if reference is not None:
            times["seed_reference"].append(time_reference(reference, cfg, max(epochs // 4, 5), threads))
        times["ours"].append(time_ours(cfg, epochs))
        times["floor"].append(time_floor(cfg, n_train, epochs, device))
    ms = {k: statistics.median(v) * 1000 for k, v in times.items() if v}
    result: dict[str, Any] = {
        "config": {k: getattr(cfg, k) for k in ("op", "p", "frac", "d_model", "d_mlp", "batch_size")},
        "n_train": n_train, "device": str(device), "threads": threads, "reps": reps, "epochs_per_rep": epochs,
        "ms_per_epoch": {k: round(v, 2) for k, v in ms.items()},
        "ms_per_epoch_all_reps": {k: [round(x * 1000, 2) for x in v] for k, v in times.items() if v},
        "ours_over_floor": round(ms["ours"] / ms["floor"], 2),
        "seed_loop": None if reference is None else ("grokking.seed_loop" if reference == SEED_LOOP else str(reference)),
        "cpu": _cpu_name(), "torch": torch.__version__,
    }
    if "seed_reference" in ms:
        result["speedup_vs_seed_reference"] = round(ms["seed_reference"] / ms["ours"], 1)
    if grok:
        result["time_to_grok"] = time_to_grok(cfg)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def format_result(r: dict[str, Any]) -> str:
    ms = r["ms_per_epoch"]
    lines = [f"grokking bench: {r['config']} n_train={r['n_train']} on {r['device']}, {r['threads']} threads, "
             f"{r['reps']} interleaved reps ({r['cpu']}, torch {r['torch']})"]
    if "seed_reference" in ms:
        lines.append(f"  seed loop             {ms['seed_reference']:9.2f} ms/epoch  ({r['seed_loop']})")
    lines.append(f"  ours (fast path)      {ms['ours']:9.2f} ms/epoch")
    lines.append(f"  matmul floor          {ms['floor']:9.2f} ms/epoch")
    if "speedup_vs_seed_reference" in r:
        lines.append(f"  speed-up vs seed      {r['speedup_vs_seed_reference']:9.1f}x")
    lines.append(f"  ours / floor          {r['ours_over_floor']:9.2f}x")
    if "time_to_grok" in r:
        g = r["time_to_grok"]
        lines.append(f"  time to 99% test acc  {g['wall_seconds']:9.1f} s  (epoch {g['epoch_test_acc_99']}, "
                     f"train 99% at epoch {g['epoch_train_acc_99']}; whole trainer)")
    return "\n".join(lines)
