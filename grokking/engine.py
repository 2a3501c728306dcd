"""The training engine: one epoch loop for one run or K runs trained together.

The pieces:

- :mod:`grokking.evaluation` (re-exported here): the runs' splits as ``[K, ...]`` tensors,
  per-run losses, and every run's figures from one pass over every pair.
- :class:`RunGroup`: runs that one program trains: one :class:`~grokking.model.Transformer`
  (K = 1) or one :class:`~grokking.model.StackedTransformer`. Every method of
  :mod:`grokking.methods` (gradient filter, orthogonalised gradient, clipping, optimiser) is
  written for one run's parameter list; a stacked group applies it to each run's parameters
  as views into the stacked weights, so a run steps the same way alone or in a batch.
- :class:`Run`: one run's identity and bookkeeping (its config, directory, records, status).
- :class:`Engine`: the loop. It owns the evaluation cadence, the metrics record, stop
  conditions, the non-finite check, snapshots, signals and the progress bar, and it is the
  one writer of a run directory's files (holding each one's lock while it trains).
- :func:`estimate_memory` / :func:`check_memory`: a run's peak memory from its config alone,
  refused before anything is built when it exceeds what is available.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import Config, ConfigError
from .data import Dataset
from .errors import GrokkingError
from .evaluation import (  # noqa: F401 - re-exported: the engine's evaluation names
    EVAL_CHUNK,
    FIGURE_KEYS,
    RunData,
    evaluate,
    evaluate_runs,
    per_run_train_loss,
    weight_norm,
    weight_norms,
)
from .fast import keep_freed_memory, select_logits_fn, unsupported_reason
from .figures import plot_run
from .methods import (
    GradFilter,
    build_optimizer,
    clip_gradients,
    loss_function,
    orthogonalize_gradients,
    set_learning_rate,
    warmup_factor,
)
from .model import StackedTransformer, Transformer
from .report import write_report
from .rundir import (
    CONFIG,
    METRICS,
    SUMMARY,
    RunDirError,
    RunLock,
    StorageError,
    atomic_write_json,
    first_at,
    last_path,
    new_run_id,
    os_error_text,
    prepare_run_dir,
    snapshot_epochs,
    snapshot_path,
)
from .version import __version__


class TrainingFailed(GrokkingError, RuntimeError):
    """A numerical fault (NaN/Inf) stopped the run; the last good checkpoint is kept."""


class TrainingInterrupted(GrokkingError, RuntimeError):
    """SIGINT/SIGTERM: the state was saved; ``signum`` says which signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class Callback(Protocol):
    def on_eval(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


# --- memory: estimated from the config, before anything is built ----------------------------------------
GIB = 1024**3
# The seed split shuffles a Python list of every pair (a tuple, its ints, the list slots, the
# rows looked up): about this many bytes per pair while the dataset is built (measured, p = 500).
_SEED_SPLIT_BYTES_PER_PAIR = 200


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory a group of runs needs beyond what the process holds before it is built, in
    bytes, and its largest parts (``parts``: name -> bytes). ``path``: the training path it
    assumes (``token tables``, ``fast`` or ``hooked``); ``device``: where the memory is."""

    total: int
    parts: dict[str, int]
    path: str
    device: str

    def describe(self, n: int = 3) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {_gb(size)}" for name, size in top)


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GB" if n_bytes < 10 * GIB else f"{n_bytes / GIB:.1f} GB"


def _n_pairs(cfg: Config) -> tuple[int, int]:
    """(every valid pair, training pairs) of the task, from the config alone."""
    n = cfg.n_classes
    n_all = n * (n - 1) if cfg.op == "divide" else n * n
    return n_all, max(1, int(cfg.frac * n_all))


def parameter_count(cfg: Config) -> int:
    """Weights of one run's model (biases, LayerNorms and the embeddings included)."""
    d, v, h, dh, m = cfg.d_model, cfg.d_vocab, cfg.n_heads, cfg.head_dim, cfg.d_mlp
    ln = 2 * d if cfg.layernorm else 0
    block = 4 * h * dh * d + 2 * d * m + m + d + 2 * ln
    return 2 * d * v + 3 * d + cfg.n_layers * block + ln


def _state_factor(cfg: Config) -> float:
    """Float32 copies of the weights that live through training: the weights, their gradients,
    the optimiser's state and the gradient filter's."""
    optimizer = {"adamw": 2.0, "adam": 2.0, "orthoadamw": 2.0, "muon": 2.0,
                 "sgd": 1.0 if cfg.momentum > 0 else 0.0}[cfg.optimizer]
    grad_filter = {"none": 0.0, "ema": 1.0, "ma": float(cfg.grokfast_window)}[cfg.grokfast]
    return 2.0 + optimizer + grad_filter


def _training_path(cfg: Config, device: torch.device, stacked: bool) -> str:
    if unsupported_reason(cfg) is not None or not cfg.fast:
        return "hooked"
    if device.type == "cpu" and not stacked and not cfg.layernorm:
        return "token tables"
    return "fast"


def _activations(cfg: Config, path: str, rows: int, k: int, grad: bool) -> int:
    """Peak bytes of one forward (and backward, with ``grad``) pass over ``rows`` examples of ``k``
    runs: the activations autograd keeps, plus the float64 loss (a cast of the logits, its
    log-softmax and, backwards, their gradients), which dominates when d_vocab is large."""
    d, v, h, dh, m = cfg.d_model, cfg.d_vocab, cfg.n_heads, cfg.head_dim, cfg.d_mlp
    b = rows * k
    mlp = m * (2 if cfg.act == "gelu" else 1)
    ln = 5 * d if cfg.layernorm else 0  # a LayerNorm keeps its centred input, scale and output
    if path == "token tables":
        tables = 4 * 2 * h * v * (m + v) + 4 * (m + v) * h * dh  # T_pre | T_logits and the W_z products
        kept = 4 * b * mlp + 100 * b * h  # post-activation; pattern, weights and the lookup plan
        loss = (24 if grad else 20) * b * v
        backward = 8 * b * m + 8 * b * v if grad else 0  # the MLP's gradient pass
        return (2 if grad else 1) * tables + kept + max(loss, backward)
    if path == "fast":
        c = h + h * dh
        kept = 4 * b * (2 * c + 6 * h + h * dh + 3 * d + mlp + ln + m)
        loss = (24 if grad else 20) * b * v
        return kept + loss + (4 * b * m if grad else 0)
    per_layer = 12 * b * (2 * d + 4 * h * dh + mlp + 2 * ln) + 72 * b * h
    if grad:
        # Measured: the saved activations of every layer, each a separate block of tens of MB, take
        # the heap about half as much again as their size (2 to 8 layers, p 150 to 400).
        return int(1.5 * (cfg.n_layers * per_layer + 12 * b * d + 28 * b * v + 24 * b))
    return per_layer + 12 * b * d + 28 * b * v + 24 * b


def estimate_memory(cfgs: Sequence[Config], device: torch.device | str | None = None,
                    stacked: bool = False) -> MemoryEstimate:
    """Peak memory to train ``cfgs`` as one program (one run; K stacked runs; or, with
    ``stacked=False`` and K > 1, K runs stepped in turn), computed from the configs alone:
    the weights with their gradients, optimiser and filter state; the data; the larger of the
    full-batch (or minibatch) training step and one evaluation chunk (:data:`EVAL_CHUNK`
    pairs), each for the path that will run (the token-table product, the dense fast path or
    the hooked forward); and the building of the seed split. Checked against measured peak
    RSS in ``tests/test_memory.py``."""
    cfgs = list(cfgs)
    cfg, k = cfgs[0], len(cfgs)
    device = torch.device(device) if device is not None else resolve_device(cfg.device)
    path = _training_path(cfg, device, stacked)
    n_all, _ = _n_pairs(cfg)
    n_train = max(_n_pairs(c)[1] for c in cfgs)
    params = parameter_count(cfg)
    state = sum(4 * params * _state_factor(c) for c in cfgs)
    biggest = 4 * max(cfg.d_mlp * cfg.d_model, cfg.d_model * cfg.d_vocab, cfg.n_heads * cfg.head_dim * cfg.d_model)
    if cfg.optimizer in ("orthoadamw", "muon"):
        state += 4 * biggest  # the orthogonalisation's and Newton-Schulz's temporaries
    build = 2 * 4 * params * k if stacked else 2 * biggest  # initial draws (stacked: the runs, then the stack)
    data = 48 * n_all + 40 * n_train + k * (58 * n_all + 32 * n_train)
    rows = n_train if cfg.batch_size == 0 or cfg.batch_size >= n_train or stacked else cfg.batch_size
    group = k if stacked else 1
    train_step = _activations(cfg, path, rows, group, grad=True)
    chunk = min(max(1, EVAL_CHUNK // group), n_all)
    evaluation = _activations(cfg, path, chunk, group, grad=False)
    split = _SEED_SPLIT_BYTES_PER_PAIR * cfg.n_classes ** 2 if cfg.split == "seed" else 16 * n_all
    kept = device.type == "cpu" and _keeps_freed_memory()
    # With freed blocks kept in the heap (fast.keep_freed_memory) the training step's blocks and
    # the evaluation chunk's, of other sizes, do not reuse each other's memory: both stay resident.
    activations = train_step + evaluation if kept else max(train_step, evaluation)
    steady = _RUNTIME_OVERHEAD + state + data + activations
    parts = {"weights, gradients and optimiser state": int(state), "data": int(data),
             f"training step ({rows} examples{f' x {group} runs' if group > 1 else ''})": int(train_step),
             f"evaluation chunk ({chunk} pairs)": int(evaluation), "building the split": int(split),
             "initial weights": int(build), "torch's own buffers": _RUNTIME_OVERHEAD}
    return MemoryEstimate(int(max(steady, _RUNTIME_OVERHEAD + split + data, _RUNTIME_OVERHEAD + state + build)),
                          parts, path, device.type)


# Thread pools, kernels' scratch space and the allocator's first arenas (measured on CPU: 0.1 GB).
_RUNTIME_OVERHEAD = 128 * 1024**2


def _keeps_freed_memory() -> bool:
    """Whether a CPU run here keeps freed memory in the heap (see fast.keep_freed_memory)."""
    return sys.platform.startswith("linux") and not os.environ.get("GROKKING_KEEP_MALLOC")


def available_memory(device: torch.device | str) -> int | None:
    """Bytes this process may still allocate on ``device``: the GPU's free memory, or on the host
    the smaller of MemAvailable (/proc/meminfo) and what a cgroup (v2 or v1) limit leaves; None
    when nothing tells."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or v1's huge number: no limit
            found.append(max(int(limit) - usage, 0))
        break
    return min(found) if found else None


def check_memory(estimate: MemoryEstimate, max_memory_gb: float = 0.0, what: str = "this run",
                 advice: str | None = None) -> None:
    """Refuse (ConfigError, one line, exit status 2) a run whose estimated peak exceeds
    ``max_memory_gb`` (0: the memory available now), with the estimate and what to change."""
    limit = int(max_memory_gb * GIB) if max_memory_gb else available_memory(estimate.device)
    if limit is None or estimate.total <= limit:
        return
    source = (f"--max-memory allows {_gb(limit)}" if max_memory_gb else
              f"the GPU has {_gb(limit)} free" if estimate.device == "cuda" else f"this machine has {_gb(limit)} available")
    raise ConfigError("max_memory", f"{what} needs about {_gb(estimate.total)} ({estimate.path} path: "
                                    f"{estimate.describe()}) and {source}. {advice or _advice(estimate)} "
                                    f"(or raise --max-memory if the estimate is too cautious)")


def _advice(estimate: MemoryEstimate) -> str:
    name = max(estimate.parts, key=lambda key: estimate.parts[key])
    if name.startswith("training step"):
        return "Lower p, or set --batch-size (minibatches), --d-mlp or --n-layers"
    if name.startswith("evaluation"):
        return "Lower p or d_mlp"
    if name.startswith("weights"):
        return "Lower d_model, d_mlp or n_layers (or use a gradient filter with a shorter window)"
    if name.startswith("building"):
        return "Use --split random (the seed split builds a Python list of every pair)"
    return "Lower p or the model's size"


# --- a group of runs trained by one program --------------------------------------------------------
class RunGroup:
    """Runs that one program trains: ``len(cfgs) == 1`` and ``stacked=False`` is one ordinary
    model; ``stacked=True`` holds the runs as one :class:`StackedTransformer`. All runs of a
    group take their optimiser steps together, so one step counter serves them all."""

    def __init__(self, cfgs: Sequence[Config], datasets: Sequence[Dataset], device: torch.device, *,
                 stacked: bool = False, log: Callable[[str], None] = print):
        self.cfgs, self.device, self.stacked, self.log = list(cfgs), device, stacked, log
        if device.type == "cpu":
            keep_freed_memory()
        cfg = self.cfgs[0]
        models = [Transformer(c).to(device) for c in self.cfgs]
        self.model: Transformer = StackedTransformer.from_models(models) if stacked else models[0]
        self.model.train()
        self.logits_fn, self.fast_reason = select_logits_fn(cfg)
        self.loss_fn = loss_function(cfg)
        self.datasets = list(datasets)
        self.data = RunData.from_datasets(self.datasets)
        self.step_count = 0
        self.params = self._run_parameters()
        # Fused Adam(W): one kernel per step (on CPU 0.14 ms against 0.6 for the default, canonical model).
        self.optimizers = [build_optimizer(c, self._named(params), fused=True) for c, params in zip(self.cfgs, self.params)]
        self.filters = [GradFilter(c, params) for c, params in zip(self.cfgs, self.params)]
        # On the device: a host-side permutation copied to a GPU each epoch would synchronise.
        self.batch_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self._set_train_split()
        self._loss = self._compiled_loss() if cfg.compile and not stacked else self._eager_loss

    @property
    def fast(self) -> bool:
        return self.fast_reason is None

    def _run_parameters(self) -> list[list[torch.Tensor]]:
        if isinstance(self.model, StackedTransformer):
            return [self.model.run_parameters(k) for k in range(self.model.n_runs)]
        return [[p for p in self.model.parameters() if p.requires_grad]]

    def _named(self, params: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        return list(zip([n for n, _ in self.model.named_parameters()], params))

    def _set_train_split(self) -> None:
        train_tokens, self.train_labels = self.datasets[0].split("train")
        self.train_a, self.train_b = train_tokens[:, 0].contiguous(), train_tokens[:, 1].contiguous()

    # --- one step ------------------------------------------------------------------------------
    def _eager_loss(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            return per_run_train_loss(self.model, self.data, self.cfgs[0], self.logits_fn).sum()
        return self.loss_fn(self.logits_fn(self.model, a, b), labels)

    def _compiled_loss(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        try:
            compiled = torch.compile(self._eager_loss, dynamic=False)
            # Compile now, at the training shape, so that a failure falls back before any step.
            compiled(self.train_a, self.train_b, self.train_labels).backward()
            self.model.zero_grad(set_to_none=True)
            return compiled
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            self.log(f"torch.compile unavailable here ({type(err).__name__}); training eagerly")
            return self._eager_loss

    def step(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> None:
        """One optimiser step of every run of the group."""
        self.model.zero_grad(set_to_none=True)
        self._loss(a, b, labels).backward()
        self.update()

    def update(self) -> None:
        """Step every run from the gradients now in its parameters: its gradient filter, ⊥Grad,
        clipping and optimiser, at its warm-up's learning rate, each applied to that run alone."""
        if self.stacked:  # the stacked gradients are new tensors: point each run's views at them
            for k, params in enumerate(self.params):
                for p, stacked in zip(params, self.model.parameters()):
                    p.grad = stacked.grad[k]
        for cfg, params, grad_filter, optimizer in zip(self.cfgs, self.params, self.filters, self.optimizers):
            set_learning_rate(optimizer, warmup_factor(cfg, self.step_count))
            if grad_filter.active:
                grad_filter.apply()
            if cfg.optimizer == "orthoadamw":
                orthogonalize_gradients(params)
            clip_gradients(params, cfg.grad_clip)
            optimizer.step()
        self.step_count += 1

    def train_epoch(self) -> None:
        cfg = self.cfgs[0]
        n = len(self.train_labels)
        if self.stacked or cfg.batch_size == 0 or cfg.batch_size >= n:
            self.step(self.train_a, self.train_b, self.train_labels)
            return
        order = torch.randperm(n, generator=self.batch_generator, device=self.device)
        for start in range(0, n, cfg.batch_size):
            if cfg.max_steps and self.step_count >= cfg.max_steps:
                return
            idx = order[start : start + cfg.batch_size]
            self.step(self.train_a[idx], self.train_b[idx], self.train_labels[idx])

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> list[tuple[dict[str, float], float]]:
        """Per run of the group: its figures and its weight norm (one host synchronisation)."""
        self.model.eval()
        figures = evaluate_runs(self.model, self.data, self.cfgs[0], self.logits_fn)
        self.model.train()
        norms = weight_norms(self.params).to(torch.float64)
        rows = torch.cat([figures, norms.unsqueeze(1)], 1).tolist()
        return [(dict(zip(FIGURE_KEYS, row[:6])), row[6]) for row in rows]

    def finite(self, slot: int) -> bool:
        return math.isfinite(weight_norms([self.params[slot]])[0].item())

    # --- state -------------------------------------------------------------------------------------
    def state_tensors(self, slot: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Run ``slot``'s full state as a single-run checkpoint: any run resumes alone."""
        model_state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        opt_state = self.optimizers[slot].state_dict()
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(self.filters[slot].state_tensors())
        tensors["rng.batch"] = self.batch_generator.get_state()
        tensors["split.train_idx"] = self.datasets[slot].train_idx
        tensors["split.test_idx"] = self.datasets[slot].test_idx
        return tensors, {"optim_groups": opt_state["param_groups"], "step": self.step_count}

    def weights(self, slot: int) -> dict[str, torch.Tensor]:
        state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        return {f"model.{k}": v for k, v in state.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], split: tuple | None) -> None:
        """Continue a single-run group from a checkpoint's state."""
        if split is not None:  # the stored split, in its order (the minibatch order indexes it)
            dataset = self.datasets[0]
            dataset.train_idx, dataset.test_idx = split[0].to(self.device), split[1].to(self.device)
            self.data = RunData.from_datasets(self.datasets)
            self._set_train_split()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        self.optimizers[0].load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
        self.filters[0].load_state_tensors(tensors, self.device)
        self.batch_generator.set_state(tensors["rng.batch"])
        self.step_count = int(meta["step"])

    def drop(self, slots: Sequence[int]) -> None:
        """Remove finished runs from a stacked group; the others continue with their state."""
        keep = [k for k in range(len(self.cfgs)) if k not in set(slots)]
        if not keep or not self.stacked:
            return
        old_optimizers, old_filters = [self.optimizers[k] for k in keep], [self.filters[k] for k in keep]
        self.cfgs = [self.cfgs[k] for k in keep]
        self.datasets = [self.datasets[k] for k in keep]
        self.model = self.model.select(keep)
        self.model.train()
        self.data = RunData.from_datasets(self.datasets)
        self.params = self._run_parameters()
        self.optimizers = []
        for cfg, params, old in zip(self.cfgs, self.params, old_optimizers):
            optimizer = build_optimizer(cfg, self._named(params), fused=True)
            optimizer.load_state_dict(old.state_dict())
            self.optimizers.append(optimizer)
        for grad_filter, params in zip(old_filters, self.params):
            grad_filter.params = params
        self.filters = old_filters


# --- runs and the loop --------------------------------------------------------------------------------
@dataclass
class Run:
    """One run: its config and run directory (None: nothing is written), where its weights live
    (``group`` and ``slot``), and everything the loop records about it."""

    cfg: Config
    out: Path | None
    group: RunGroup
    slot: int
    callbacks: list[Callback] = field(default_factory=list)
    batch: dict[str, Any] | None = None  # config.json's "batched" entry for a run of a batch
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    seconds_before: float = 0.0
    last_saved_epoch: int | None = None
    stop_reason: str | None = None
    status: str | None = None  # set when the run has finished
    error: str | None = None
    summary: dict[str, Any] | None = None
    metrics_file: IO[str] | None = None
    run_id: str | None = None  # made when the run directory is created; kept by every resume

    @property
    def identity(self) -> dict[str, Any]:
        """What every checkpoint of the run carries to say whose it is."""
        return {"run_id": self.run_id, "config_key": self.cfg.key()}

    @property
    def snapshot_at(self):
        return snapshot_epochs(self.cfg)

    @property
    def step_count(self) -> int:
        return self.group.step_count

    @property
    def training_path(self) -> str:
        return "fast" if self.group.fast else "hooked"

    def done(self, epoch: int) -> bool:
        cfg = self.cfg
        return epoch >= cfg.epochs or bool(cfg.max_steps and self.step_count >= cfg.max_steps)

    def stop_condition(self, record: dict[str, Any]) -> str | None:
        cfg = self.cfg
        if cfg.stop_at_test_acc is not None and record["test_acc"] >= cfg.stop_at_test_acc:
            return f"test_acc >= {cfg.stop_at_test_acc}"
        if cfg.stop_at_test_loss is not None and record["test_loss"] <= cfg.stop_at_test_loss:
            return f"test_loss <= {cfg.stop_at_test_loss}"
        return None

    def kept(self) -> str:
        if self.last_saved_epoch is None:
            return "no checkpoint was saved"
        return f"the last good checkpoint (epoch {self.last_saved_epoch}) is kept"


def summarize(records: list[dict[str, Any]], cfg: Config, status: str, seconds: float, epochs_run: int,
              steps: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    final = records[-1] if records else {}
    train99, test99 = first_at(records, "train_acc"), first_at(records, "test_acc")
    return {
        "status": status,
        "epoch_train_acc_99": train99,
        "epoch_test_acc_99": test99,
        "grokking_delay": None if train99 is None or test99 is None else test99 - train99,
        "final": {k: final.get(k) for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc",
                                            "all_loss", "all_acc", "weight_norm")},
        "epochs_run": epochs_run,
        "steps": steps,
        "seconds": round(seconds, 3),
        "seconds_per_epoch": seconds / epochs_run if epochs_run else None,
        "config_key": cfg.key(),
        **(extra or {}),
    }


@contextmanager
def signals_to_flag() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set a flag the loop checks between epochs (main thread only); the
    previous handlers are back when the loop ends."""
    flag = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Engine:
    """Train ``runs`` (held by ``groups``) from ``epoch`` to each run's budget or stop condition.

    Per epoch, for every run still training: evaluate every ``eval_every`` epochs and at the end,
    write the record, snapshot at ``snapshot_epochs``, stop at the budget or a stop condition.
    A run that finishes is finalised at that epoch and leaves its group; the others go on. A
    run whose loss or weights turn non-finite fails without overwriting its last good checkpoint;
    with ``raise_failures`` that ends the whole call with :class:`TrainingFailed`.
    """

    def __init__(self, runs: Sequence[Run], *, epoch: int = 0, progress: bool = True, raise_failures: bool = True,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                 stop: Callable[[], int] | None = None):
        self.runs, self.epoch, self.progress, self.raise_failures, self.log = list(runs), epoch, progress, raise_failures, log
        # A stop request from outside the loop (a sweep's signal, caught before the loop installed
        # its own handlers): the signal number, or 0. Checked where the loop checks its signals.
        self.stop = stop
        self.groups: list[RunGroup] = list(dict.fromkeys(r.group for r in self.runs))
        self._t0 = time.perf_counter()
        self._storage_error: str | None = None  # a file the runs could not write after they ended

    # --- the run directory: every file of it is written here -----------------------------------------
    def _start(self, run: Run, overwrite: bool) -> None:
        """Create (or reopen) the run directory; nothing has trained yet, so a file-system error
        here refuses the run (RunDirError, exit status 2)."""
        if run.out is None:
            return
        if not run.resumed:
            prepare_run_dir(run.out, overwrite)
        if run.run_id is None:  # a new run, or one written before run ids
            run.run_id = new_run_id()
        try:
            atomic_write_json(run.out / CONFIG, {
                "config": run.cfg.to_dict(), "config_key": run.cfg.key(), "run_id": run.run_id,
                "grokking_version": __version__, "torch": torch.__version__, "device": str(run.group.device),
                "training_path": run.training_path, "fast_path_fallback_reason": run.group.fast_reason,
                "argv": sys.argv, **({"batched": run.batch} if run.batch is not None else {}),
            })
            run.metrics_file = open(run.out / METRICS, "a")
        except OSError as err:
            raise RunDirError(f"out: cannot write the run directory: {os_error_text(err)}") from None

    def _meta(self, run: Run) -> dict[str, Any]:
        return {"config": run.cfg.to_dict(), "epoch": self.epoch, "step": run.step_count, "grokking_version": __version__}

    def _save(self, run: Run, snapshot: bool = True) -> None:
        """Snapshot and ``last.safetensors``; never non-finite weights: a fault between
        evaluations must not overwrite the last good checkpoint."""
        if not run.group.finite(run.slot):
            raise TrainingFailed(f"non-finite weights at epoch {self.epoch} (step {run.step_count}); {run.kept()}")
        if snapshot:
            save_checkpoint(snapshot_path(run.out, self.epoch), run.group.weights(run.slot), self._meta(run),
                            run.identity)
        tensors, meta = run.group.state_tensors(run.slot)
        save_checkpoint(last_path(run.out), tensors, {**self._meta(run), **meta, "seconds": self._seconds(run)},
                        run.identity)
        run.last_saved_epoch = self.epoch

    def _seconds(self, run: Run) -> float:
        return run.seconds_before + time.perf_counter() - self._t0

    def _record(self, run: Run, figures: dict[str, float], norm: float) -> dict[str, Any]:
        record = {"epoch": self.epoch, "step": run.step_count, **figures, "weight_norm": norm,
                  "lr": run.cfg.lr * warmup_factor(run.cfg, run.step_count), "seconds": round(self._seconds(run), 3)}
        if not (math.isfinite(figures["train_loss"]) and math.isfinite(norm)):
            raise TrainingFailed(f"non-finite {'loss' if not math.isfinite(figures['train_loss']) else 'weights'} "
                                 f"at epoch {self.epoch} (step {run.step_count}); {run.kept()}")
        run.records.append(record)
        if run.metrics_file is not None:
            run.metrics_file.write(json.dumps(record) + "\n")
            run.metrics_file.flush()
        for cb in run.callbacks:
            cb.on_eval(record)
        return record

    def _finish(self, run: Run, status: str) -> None:
        """Close the run: summary.json always; the curves and the report for a run that ended well."""
        run.status = status
        if run.metrics_file is not None:
            try:
                run.metrics_file.close()
            except OSError:  # its last record did not reach the disk: the error that said so is being handled
                pass
            run.metrics_file = None
        for cb in run.callbacks:
            cb.close()
        extra = {"stop_reason": run.stop_reason, "error": run.error, "device": str(run.group.device),
                 "training_path": run.training_path, **({"batched": run.batch} if run.batch is not None else {})}
        run.summary = summarize(run.records, run.cfg, status, self._seconds(run), self.epoch, run.step_count, extra)
        if run.out is None:
            return
        try:
            atomic_write_json(run.out / SUMMARY, run.summary)
        except OSError as err:
            # The run's state is in last.safetensors; without its summary it stays resumable.
            self._storage_error = self._storage_error or (
                f"{os_error_text(err)}; {run.kept()}; resume with: grokking train --resume {run.out}")
            return
        if status in ("completed", "stopped_early"):
            try:
                plot_run(run.out)
            except OSError as err:  # the run is saved; the figure is redrawn by `grokking plot`
                self.log(f"{run.out}: curves.png not written ({os_error_text(err)}); retry: grokking plot {run.out}")
            if run.cfg.report:
                try:
                    write_report(run.out)
                except Exception as err:  # noqa: BLE001 - the run is saved; the page is a convenience
                    self.log(f"report.html not written ({type(err).__name__}: {err}); retry: grokking report {run.out}")

    # --- the loop ------------------------------------------------------------------------------------
    def active(self) -> list[Run]:
        return [r for r in self.runs if r.status is None]

    def run(self, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train every run to its budget or stop condition; return the summaries, in order.

        Each run directory's lock (:class:`~grokking.rundir.RunLock`) is held throughout: a second
        writer is refused. A file-system error while training (a full disk, a lost permission)
        ends every run still training as ``crashed``, with the error in its summary.json, and
        raises :class:`~grokking.rundir.StorageError` (one line, exit status 1); the last good
        checkpoints stay resumable."""
        locks: list[RunLock] = []
        try:
            for run in self.runs:
                if run.out is not None:
                    locks.append(RunLock(run.out, "train").acquire())
            summaries = self._run(overwrite)
        finally:
            for lock in reversed(locks):
                lock.release()
        if self._storage_error is not None:
            raise StorageError(self._storage_error)
        return summaries

    def _run(self, overwrite: bool) -> list[dict[str, Any]]:
        for run in self.runs:
            self._start(run, overwrite)
        bar = self._progress_bar()
        self._t0 = time.perf_counter()
        # A resumed run's checkpoint epoch was evaluated (if due) and saved before: do not log it
        # twice, but do re-apply its stop condition. Without its record (it was lost) redo it.
        skip = set()
        for run in self.runs:
            last = run.records[-1] if run.records else None
            if run.resumed and (last is not None and last["epoch"] == self.epoch
                                or self.epoch % run.cfg.eval_every != 0 and not run.done(self.epoch)):
                skip.add(id(run))
                if last is not None and last["epoch"] == self.epoch:
                    run.stop_reason = run.stop_condition(last)
        try:
            with signals_to_flag() as flag:
                while self.active():
                    self._epoch(skip, bar)
                    skip = set()
                    if not self.active():
                        break
                    signum = flag["signum"] or (self.stop() if self.stop is not None else 0)
                    if signum:
                        self._interrupt(signum)
                    for group in self.groups:
                        group.train_epoch()
                    self.epoch += 1
        except KeyboardInterrupt:  # no signal handler here (not the main thread)
            for run in self.active():
                self._finish(run, "interrupted")
            raise
        except OSError as err:
            text = os_error_text(err)
            live = self.active()
            for run in live:
                run.error = f"file-system error at epoch {self.epoch}: {text}"
                self._finish(run, "crashed")
            kept = "; ".join(f"{r.out}: {r.kept()}" for r in live if r.out is not None) or "nothing was saved"
            resume = " ".join(str(r.out) for r in live if r.out is not None)
            raise StorageError(f"{text} (at epoch {self.epoch}); {kept}; fix it, then resume with: "
                               f"grokking train --resume {resume if len(live) == 1 else 'RUN'}") from None
        finally:
            if bar is not None:
                bar.close()
            error = sys.exc_info()[1]
            for run in self.active():  # an unexpected error: close what is open and say so
                if error is not None and run.error is None:
                    run.error = " ".join(f"{type(error).__name__}: {error}".splitlines())[:500]
                self._finish(run, "crashed")
        return [run.summary for run in self.runs]

    def _epoch(self, skip: set[int], bar: Any) -> None:
        """The bookkeeping of one epoch, for every run still training."""
        due = [r for r in self.active() if id(r) not in skip and (self.epoch % r.cfg.eval_every == 0 or r.done(self.epoch))]
        finished: list[tuple[Run, str]] = []
        for group in {id(r.group): r.group for r in due}.values():
            results = group.evaluate()
            for run in (r for r in due if r.group is group):
                figures, norm = results[run.slot]
                try:
                    record = self._record(run, figures, norm)
                except TrainingFailed as err:
                    finished.append(self._failed(run, err))
                    continue
                run.stop_reason = run.stop_condition(record)
        if due:
            self._update_bar(bar)
        for run in self.active():
            if any(r is run for r, _ in finished):
                continue
            done = run.done(self.epoch)
            if id(run) not in skip and run.out is not None and (self.epoch in run.snapshot_at or done or run.stop_reason):
                try:
                    self._save(run)
                except TrainingFailed as err:
                    finished.append(self._failed(run, err))
                    continue
            if done or run.stop_reason:
                finished.append((run, "stopped_early" if run.stop_reason and not done else "completed"))
        self._close(finished)

    def _failed(self, run: Run, err: TrainingFailed) -> tuple[Run, str]:
        run.error = str(err)
        if not self.raise_failures:
            self.log(f"{run.out or 'run'}: {run.error}")
        return run, "failed"

    def _close(self, finished: list[tuple[Run, str]]) -> None:
        for run, status in finished:
            self._finish(run, status)
        for group in self.groups:
            gone = [r.slot for r, _ in finished if r.group is group]
            if gone:
                group.drop(gone)
                for slot, run in enumerate(r for r in self.runs if r.group is group and r.status is None):
                    run.slot = slot
        failures = [run for run, status in finished if status == "failed"]
        if failures and self.raise_failures:
            raise TrainingFailed(failures[0].error or "run failed")

    def _interrupt(self, signum: int) -> None:
        live = self.active()
        for run in live:
            status = "interrupted"
            if run.out is not None:
                try:
                    self._save(run, snapshot=False)
                except TrainingFailed as err:
                    run.error, status = str(err), "failed"
            self._finish(run, status)
        if len(self.runs) == 1:
            message = f"interrupted at epoch {self.epoch}; resume with: grokking train --resume {self.runs[0].out}"
        else:
            outs = " ".join(str(r.out) for r in live)
            message = (f"interrupted at epoch {self.epoch}; continue a run alone with: "
                       f"grokking train --resume RUN (one of: {outs})")
        raise TrainingInterrupted(message, signum)

    # --- progress ---------------------------------------------------------------------------------------
    def _progress_bar(self) -> Any:
        if not self.progress:
            return None
        if len(self.runs) == 1 and self.runs[0].cfg.max_steps:
            run = self.runs[0]
            return tqdm(total=run.cfg.max_steps, initial=run.step_count, unit="step", dynamic_ncols=True,
                        mininterval=0.5, file=sys.stderr)
        return tqdm(total=max(r.cfg.epochs for r in self.runs), initial=self.epoch, unit="epoch", dynamic_ncols=True,
                    mininterval=0.5, file=sys.stderr)

    def _update_bar(self, bar: Any) -> None:
        if bar is None:
            return
        if len(self.runs) == 1:
            run = self.runs[0]
            bar.update((run.step_count if run.cfg.max_steps else self.epoch) - bar.n)
            if run.records:
                r = run.records[-1]
                bar.set_postfix_str(f"train {r['train_loss']:.2e}/{r['train_acc']:.3f} "
                                    f"test {r['test_loss']:.2e}/{r['test_acc']:.3f}", refresh=False)
            return
        bar.update(self.epoch - bar.n)
        best = max((r.records[-1]["test_acc"] for r in self.runs if r.records), default=0.0)
        bar.set_postfix_str(f"{len(self.active())}/{len(self.runs)} runs training, best test acc {best:.3f}",
                            refresh=False)
