"""``grokking bench``: our training loop against the seed's, TransformerLens's and the matmul floor.

Per repetition, interleaved so that machine noise hits every row alike, in this order:

1. seed loop: the seed notebook's loop in a subprocess of its own, which prints its own seconds
   per epoch: by default our transcription of it that ships with the package
   (:mod:`grokking.seed_loop`, ``python -m grokking.seed_loop``, held equal to the shared
   reference by its tests), or any script with the same command line (``--reference PATH``,
   e.g. ``../shared/reference/seed_reference.py``), run as-is. The packaged loop runs on the
   bench's device (``--device cuda``: the seed's ``model.to(device)``); another script, whose
   command line has no ``--device``, runs where it puts itself (the shared reference: the CPU),
   and the result says where (``seed_loop_device``);
2. TransformerLens: the same model (``grokking.interop.to_transformer_lens`` of a fresh
   Transformer: a HookedTransformer under TransformerLens 3.x, a TransformerBridge under 4.x)
   trained in this process the way one would train it there: full batch, torch's AdamW with the
   config's recipe and warm-up, float64 cross-entropy on the last position. The biases our
   model lacks stay frozen at zero, so it is our model, step for step. Needs the ``interop``
   extra (``pip install 'grokking-lab[interop]'``); ``--no-transformer-lens`` skips it;
3. ours: our trainer's epoch (fast path), driven by the thread policy exactly as ``grokking
   train`` drives it (``--threads 0``: timed trials of 1 thread against the process's count,
   see grokking.threads), after warm-up epochs that cover the policy's first trial;
4. ours, 1 thread (``--threads 0`` on CPU only): the same at one fixed thread, what the policy
   must stay close to beside a busy neighbour;
5. matmul floor: the model's three matrix products as written (residual to MLP, MLP to
   residual, residual to logits), forward and backward, on the training set. On CPU our epoch
   avoids most of them (fast.py's token tables), so it can run below this floor.

The seed loop, TransformerLens and the floor run at the process's thread count
(``OMP_NUM_THREADS``, else torch's choice), or at N for every row with ``--threads N``.
``--background-load K`` starts K busy processes before timing and stops them afterwards (each
also exits by itself should the bench die), to measure beside a busy neighbour. ``--grok`` adds
the whole trainer (evaluation, metrics, checkpoints, plots) to 99% test accuracy, in seconds and
in milliseconds per epoch. Ratios are of the medians over repetitions; absolute times on a
shared machine are noisy, so read the ratios. ``--json`` prints the result as one JSON object,
with the CPU's vector extensions and the versions of torch and TransformerLens.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import seed_loop
from .config import Config, build_dataset
from .data import task_kind
from .errors import GrokkingError, InputError
from .interop import DISTRIBUTION, INSTALL_HINT, InteropError, to_transformer_lens
from .memory import resolve_device
from .methods import lr_factor
from .model import Transformer
from .threads import ThreadPolicy, restored_threads
from .train import Trainer

#: The seed loop that ships with the package: the default baseline.
SEED_LOOP = Path(seed_loop.__file__).resolve()
#: The rows, in the order each repetition times them.
ROWS = ("seed_loop", "transformer_lens", "ours", "ours_1_thread", "floor")
#: The most busy processes ``--background-load`` starts (more would only swamp the machine).
MAX_BACKGROUND_LOAD = 64
# Checks its parent every few milliseconds, so that it dies with the bench even when the bench is
# killed outright (SIGKILL runs no clean-up); says it is running before it spins.
_BUSY = ("import os, sys\nparent = int(sys.argv[1])\nsys.stdout.write('1')\nsys.stdout.flush()\n"
         "while os.getppid() == parent:\n    for _ in range(100000):\n        pass\n")


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


def reference_device(reference: Path, device: torch.device) -> str:
    """Where the seed loop runs: the packaged one on the bench's device; another script, whose
    command line has no ``--device``, where it puts itself (the shared reference: the CPU)."""
    return device.type if reference == SEED_LOOP else "cpu"


def time_reference(reference: Path, cfg: Config, epochs: int, threads: int, device: str = "cpu") -> float:
    """Seconds per epoch of the seed's own loop, as it reports them."""
    cmd = reference_command(reference) + ["--epochs", str(epochs), "--log", str(10**9), "--p", str(cfg.p),
                                          "--frac", str(cfg.frac), "--seed", str(cfg.seed), "--threads", str(threads)]
    if device != "cpu":
        cmd += ["--device", device]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its failure is reported below
    found = re.search(r"seconds_per_epoch\s+([0-9.eE+-]+)", run.stdout)
    if run.returncode != 0 or found is None:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise GrokkingError(f"bench: the seed loop {reference} failed (exit status {run.returncode}): {last[:200]}")
    return float(found.group(1))


# --- ours -------------------------------------------------------------------------------------------
def time_ours(cfg: Config, epochs: int, policy: ThreadPolicy) -> tuple[float, list[int]]:
    """Seconds per epoch of our trainer's epoch under ``policy``, called as the Engine calls it,
    and the thread count of each timed epoch. The warm-up covers the policy's first trial, so
    the timed epochs run at the count it chose (unless it tries again: a neighbour came)."""
    trainer = Trainer(cfg, None, progress=False)
    warmup = 3 + (policy.trial * len(policy.candidates) if policy.automatic else 0)
    policy.start()
    counts: list[int] = []
    start = 0.0
    for epoch in range(warmup + epochs):
        if epoch == warmup:
            _sync(trainer.device)
            start = time.perf_counter()
        policy.before_epoch(epoch)
        counts.append(torch.get_num_threads())
        began = time.perf_counter()
        trainer.group.train_epoch()
        policy.after_epoch(time.perf_counter() - began)  # unsynchronised, as the Engine's
    _sync(trainer.device)
    return (time.perf_counter() - start) / epochs, counts[warmup:]


# --- TransformerLens ----------------------------------------------------------------------------
def transformer_lens_version() -> str | None:
    """The installed TransformerLens version, or None where it does not import."""
    try:
        import transformer_lens  # noqa: F401 - the optional 'interop' extra
    except ImportError:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# TransformerLens's zero biases that our model does not have: 3.x names, then 4.x (bridge) names.
_ABSENT_BIASES = ("attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O", "unembed.b_U",
                  "attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias", "unembed.bias")


class TransformerLensPeer:
    """Our model, from ``Transformer(cfg)``'s initial weights, exported to TransformerLens and
    trained there: full batch over the training pairs, ``torch.optim.AdamW`` with the config's
    lr, weight decay, betas and eps and its linear warm-up (the seed's recipe), float64
    cross-entropy on the logits of the last position ('='). The biases TransformerLens adds
    (Q/K/V/O, unembedding) stay zero and frozen: the parameters trained are ours."""

    def __init__(self, cfg: Config, device: torch.device | str = "cpu"):
        self.model = to_transformer_lens(Transformer(cfg).to(device)).train()
        dataset = build_dataset(cfg).to(device)
        self.tokens, self.labels = dataset.split("train")  # [N, 3] tokens a, b, '='; the answer
        # Matched by storage, as the bridge's parameter names are its wrapped modules', not its state_dict's.
        absent = {t.data_ptr() for k, t in self.model.state_dict().items() if k.endswith(_ABSENT_BIASES)}
        params = []
        for p in self.model.parameters():
            if p.data_ptr() in absent:
                p.requires_grad_(False)
            else:
                params.append(p)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(cfg, step))

    def logits(self) -> torch.Tensor:
        """Logits at '=' for every training pair, ``[N, d_vocab]``."""
        return self.model(self.tokens)[:, -1]

    def train_epoch(self) -> torch.Tensor:
        """One optimiser step on the full batch; returns the loss before it."""
        loss = seed_loop.float64_cross_entropy(self.logits(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def time_transformer_lens(cfg: Config, epochs: int, device: torch.device, warmup: int = 3) -> float:
    """Seconds per epoch of :class:`TransformerLensPeer`, after ``warmup`` epochs."""
    peer = TransformerLensPeer(cfg, device)
    for _ in range(warmup):
        peer.train_epoch()
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        peer.train_epoch()
    _sync(device)
    return (time.perf_counter() - start) / epochs


# --- the floor ----------------------------------------------------------------------------------
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


def _set_threads(n: int) -> int:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def time_to_grok(cfg: Config) -> dict[str, Any]:
    """The whole trainer (evaluation, metrics, checkpoints, plots) until 99% test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = Trainer(cfg.replace(stop_at_test_acc=0.99, report=False), Path(tmp) / "run", progress=False).run()
        wall = time.perf_counter() - start
    epochs = summary["epochs_run"]
    return {"wall_seconds": round(wall, 1), "epochs_run": epochs,
            "ms_per_epoch": round(wall / epochs * 1000, 3) if epochs else None,
            "epoch_test_acc_99": summary["epoch_test_acc_99"], "epoch_train_acc_99": summary["epoch_train_acc_99"],
            "status": summary["status"], "threads": summary.get("threads")}


# --- background load ----------------------------------------------------------------------------
class BenchInterrupted(GrokkingError):
    """SIGTERM while the bench held busy processes; they were stopped first."""

    def __init__(self, signum: int):
        super().__init__(f"bench: stopped by signal {signum}; its background load was stopped")
        self.exit_status = 128 + signum


def start_busy_processes(k: int, procs: list[subprocess.Popen]) -> None:
    """Start ``k`` busy processes, appended to ``procs`` as each starts (so that a failure half
    way leaves the caller every one to stop); return once each is spinning."""
    for _ in range(k):
        procs.append(subprocess.Popen([sys.executable, "-I", "-c", _BUSY, str(os.getpid())], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    for proc in procs:
        ready = proc.stdout.read(1) if proc.stdout is not None else b""
        if proc.stdout is not None:
            proc.stdout.close()
        if ready != b"1":
            raise GrokkingError(f"bench: a background-load process did not start (exit status {proc.poll()})")


def stop_busy_processes(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()  # reaped: its PID no longer exists


@contextmanager
def background_load(k: int) -> Iterator[list[int]]:
    """``k`` busy processes while the block runs, stopped however it ends (an exception,
    Ctrl-C, or SIGTERM, which raises :class:`BenchInterrupted` meanwhile); yields their PIDs."""
    procs: list[subprocess.Popen] = []
    previous: Any = None
    catch = k > 0 and threading.current_thread() is threading.main_thread()
    if catch:
        def on_sigterm(signum: int, frame: Any) -> None:
            raise BenchInterrupted(signum)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        start_busy_processes(k, procs)
        yield [p.pid for p in procs]
    finally:
        try:
            stop_busy_processes(procs)
        finally:  # a second SIGTERM while stopping them must not leave our handler installed
            if catch:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# --- the bench ----------------------------------------------------------------------------------
def check_bench_args(epochs: int, reps: int, background: int, model: str = "transformer", op: str = "add") -> None:
    """One-line InputErrors for values the bench cannot run with."""
    if task_kind(op) != "table":
        raise InputError(f"bench: --op must be a binary table (the seed loop trains 'a b ='); got {op}")
    if model != "transformer":
        raise InputError(f"bench: --model must be transformer (the seed loop and TransformerLens train the seed's "
                         f"transformer); got {model}")
    if epochs < 1:
        raise InputError(f"bench: --timed-epochs must be >= 1; got {epochs}")
    if reps < 1:
        raise InputError(f"bench: --reps must be >= 1; got {reps}")
    if not 0 <= background <= MAX_BACKGROUND_LOAD:
        raise InputError(f"bench: --background-load must be between 0 and {MAX_BACKGROUND_LOAD}; got {background}")


def run_bench(cfg: Config, epochs: int, reps: int, reference: Path | None, grok: bool = False, *,
              transformer_lens: bool = True, background: int = 0) -> dict[str, Any]:
    """Time every row ``reps`` times, interleaved (see the module's docstring); the result holds
    each row's median ms per epoch, every repetition's, the ratios, the thread counts each row
    ran at and what the machine was. The caller's thread count is restored."""
    check_bench_args(epochs, reps, background, cfg.model, cfg.op)
    device = resolve_device(cfg.device)
    process_threads = torch.get_num_threads()
    fixed = cfg.threads or process_threads  # the rows that have no thread policy of their own
    slow_epochs = max(epochs // 4, 5)  # the seed's and TransformerLens's loops are ~20x slower
    n_train = len(build_dataset(cfg).train_idx)
    tl_version = transformer_lens_version() if transformer_lens else None
    tl: dict[str, str] = ({"version": tl_version} if tl_version is not None
                          else {"skipped": "--no-transformer-lens"} if not transformer_lens else {"missing": INSTALL_HINT})
    one_thread = cfg.threads == 0 and device.type == "cpu"
    seed_device = None if reference is None else reference_device(reference, device)
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    threads: dict[str, list[int]] = {row: [] for row in ROWS}
    policies: list[dict[str, Any]] = []
    with restored_threads(), background_load(background) as pids:
        for _ in range(reps):
            if reference is not None:
                times["seed_loop"].append(time_reference(reference, cfg, slow_epochs, fixed, seed_device))
                threads["seed_loop"].append(fixed)
            if "version" in tl and "unavailable" not in tl:
                try:
                    count = _set_threads(fixed)
                    times["transformer_lens"].append(time_transformer_lens(cfg, slow_epochs, device))
                    threads["transformer_lens"].append(count)
                except InteropError as err:  # a model TransformerLens cannot express: the row is absent
                    tl["unavailable"] = str(err)
            _set_threads(process_threads)  # what the policy takes for "the process's count"
            policy = ThreadPolicy(cfg.threads, automatic=device.type == "cpu", most=process_threads)
            seconds, counts = time_ours(cfg, epochs, policy)
            times["ours"].append(seconds)
            threads["ours"] += counts
            policies.append(policy.summary())
            if one_thread:
                seconds, counts = time_ours(cfg, epochs, ThreadPolicy(1))
                times["ours_1_thread"].append(seconds)
                threads["ours_1_thread"] += counts
            threads["floor"].append(_set_threads(fixed))
            times["floor"].append(time_floor(cfg, n_train, epochs, device))
        _set_threads(process_threads)  # as `grokking train` would start
        grokked = time_to_grok(cfg) if grok else None
    ms = {row: round(statistics.median(t) * 1000, 3) for row, t in times.items() if t}
    result: dict[str, Any] = {
        "config": {k: getattr(cfg, k) for k in ("op", "p", "frac", "d_model", "d_mlp", "batch_size")},
        "n_train": n_train, "device": str(device), "reps": reps, "epochs_per_rep": epochs,
        "slow_epochs_per_rep": slow_epochs,
        "ms_per_epoch": ms,
        "ms_per_epoch_all_reps": {row: [round(x * 1000, 3) for x in t] for row, t in times.items() if t},
        "ratios": ratios(ms, grokked),
        "threads": {"process": process_threads, "requested": cfg.threads,
                    "rows": {row: sorted(set(n)) for row, n in threads.items() if n}, "ours_policy": policies},
        "background_load": {"processes": background, "pids": pids},
        "seed_loop": None if reference is None else ("grokking.seed_loop" if reference == SEED_LOOP else str(reference)),
        "seed_loop_device": seed_device,
        "transformer_lens": tl,
        "cpu": cpu_info(), "torch": torch.__version__, "transformer_lens_version": tl_version,
    }
    if grokked is not None:
        result["time_to_grok"] = grokked
    return result


#: (key, numerator, denominator, what it says): every ratio is of the reported medians.
RATIOS = (
    ("seed/ours", "seed_loop", "ours", "speed-up vs seed", "target >= 20x"),
    ("transformer_lens/ours", "transformer_lens", "ours", "speed-up vs TL", "target >= 8x"),
    ("ours/ours_1_thread", "ours", "ours_1_thread", "ours / ours 1 thread",
     "target <= 1.15x beside one busy process"),
    ("ours/floor", "ours", "floor", "ours / floor", ""),
)


def ratios(ms: dict[str, float], grokked: dict[str, Any] | None = None) -> dict[str, float]:
    """The ratios of the rows present, from the medians as reported."""
    out = {key: round(ms[a] / ms[b], 3) for key, a, b, _, _ in RATIOS if a in ms and b in ms and ms[b] > 0}
    if grokked is not None and grokked.get("ms_per_epoch") and "seed_loop" in ms:
        out["seed/whole_trainer"] = round(ms["seed_loop"] / grokked["ms_per_epoch"], 3)
    return out


_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                 "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
                 "asimd", "sve", "sve2", "bf16", "i8mm", "sme")  # x86 flags, then ARM Features


def cpu_info() -> dict[str, Any]:
    """The CPU's model, usable cores and vector extensions (from /proc/cpuinfo where there is
    one), and the kernels torch dispatches to."""
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: what the platform module knows
        text = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "Hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {"model": model or platform.processor() or platform.machine() or "unknown", "cores": cores,
            "vector_extensions": [f for f in _VECTOR_FLAGS if f in flags], "torch_capability": capability}


_LABELS = {"seed_loop": "seed loop", "transformer_lens": "TransformerLens", "ours": "ours (fast path)",
           "ours_1_thread": "ours, 1 thread", "floor": "matmul floor"}


def format_result(r: dict[str, Any]) -> str:
    """The result as a table: each row's median ms per epoch and threads, then the ratios."""
    ms, rows, cpu, tl = r["ms_per_epoch"], r["threads"]["rows"], r["cpu"], r["transformer_lens"]
    requested = r["threads"]["requested"] or f"0 (automatic; process {r['threads']['process']})"
    load = r["background_load"]
    lines = [f"grokking bench: {r['config']} n_train={r['n_train']} on {r['device']}, {r['reps']} interleaved reps",
             (f"  {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['vector_extensions']) or 'no vector flags read'}), "
              f"torch {r['torch']}, TransformerLens {r['transformer_lens_version'] or '-'}; threads {requested}; "
              f"background load {load['processes']} busy process{'' if load['processes'] == 1 else 'es'}"),
             f"  {'row':22} {'median':>9}           {'what':28} threads"]
    notes = {"seed_loop": f"({r['seed_loop']}, {r.get('seed_loop_device') or 'cpu'})",
             "transformer_lens": f"({tl.get('version', '')}, same model)",
             "ours": "(thread policy)" if r["threads"]["requested"] == 0 else "(fixed threads)",
             "ours_1_thread": "(fixed 1 thread)", "floor": "(3 products, fwd + bwd)"}
    for row in ROWS:
        if row in ms:
            counts = ",".join(map(str, rows.get(row, [])))
            lines.append(f"  {_LABELS[row]:22} {ms[row]:9.2f} ms/epoch  {notes[row]:28} {counts}")
        elif row == "transformer_lens":
            why = ("skipped (--no-transformer-lens)" if "skipped" in tl else f"not installed: {tl['missing']}"
                   if "missing" in tl else f"not applicable: {tl.get('unavailable')}")
            lines.append(f"  {_LABELS[row]:22} {why}")
    g = r.get("time_to_grok")
    if g is not None:
        per_epoch = f"{g['ms_per_epoch']:9.2f} ms/epoch" if g["ms_per_epoch"] else f"{'-':>9} ms/epoch"
        lines.append(f"  {'whole trainer (--grok)':22} {per_epoch}  to 99% test acc in {g['wall_seconds']:.1f} s "
                     f"(epoch {g['epoch_test_acc_99']}, train 99% at epoch {g['epoch_train_acc_99']}, "
                     f"{g['epochs_run']} epochs)")
    lines.append("  ratios (of the medians)")
    ratio = r["ratios"]
    for key, _, _, label, target in (*RATIOS, ("seed/whole_trainer", "", "", "seed / whole trainer",
                                               "target >= 20x")):
        if key in ratio:
            lines.append(f"  {label:22} {ratio[key]:9.2f}x  {key}{f' ({target})' if target else ''}")
    return "\n".join(lines)
