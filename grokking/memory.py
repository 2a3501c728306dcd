"""What a run needs from the machine, known before anything is built: its device, and its peak
memory computed from the config alone (:func:`estimate_memory`), refused in one line by
:func:`check_memory` when it exceeds what is available or ``--max-memory``.

The estimate follows the path that will train (the CPU token-table product, the dense fast
path or the hooked forward, or an MLP's forward); ``tests/test_memory.py`` checks it against
measured peak RSS.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import Config, ConfigError
from .evaluation import EVAL_CHUNK
from .fast import unsupported_reason
from .mlp import has_biases, input_width


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


GIB = 1024**3
# The seed split shuffles a Python list of every pair (a tuple, its ints, the list slots, the
# rows looked up): about this many bytes per pair while the dataset is built (measured, p = 500).
_SEED_SPLIT_BYTES_PER_PAIR = 200


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory a group of runs needs beyond what the process holds before it is built, in
    bytes, and its largest parts (``parts``: name -> bytes). ``path``: the training path it
    assumes (``token tables``, ``fast``, ``hooked`` or ``mlp``); ``device``: where the memory is."""

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
    """(every example, training examples) of the task, from the config alone."""
    n_all = cfg.n_all
    return n_all, max(1, int(cfg.frac * n_all))


def _mlp_matrices(cfg: Config) -> list[tuple[int, int]]:
    """The shapes of an MLP model's matrices: its embedding (if any), hidden layers, unembedding."""
    n, m = cfg.n_classes, cfg.d_mlp
    embed = [(cfg.d_model, cfg.n_symbols)] if cfg.mlp_input == "embed" else []
    return embed + [(m, input_width(cfg))] + [(m, m)] * (cfg.mlp_layers - 1) + [(m, cfg.output_len * n)]


def parameter_count(cfg: Config) -> int:
    """Weights of one run's model (biases, LayerNorms and the embeddings included)."""
    if cfg.model == "mlp":
        return sum(r * c for r, c in _mlp_matrices(cfg)) + (cfg.mlp_layers * cfg.d_mlp if has_biases(cfg) else 0)
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
    if cfg.model == "mlp":
        return "mlp"
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
    b = rows * k * cfg.output_len  # a sequence task's answer positions count as examples for the loss
    if path == "mlp":
        # Per example: the embeddings, each layer's pre- and post-activation (and GELU's
        # intermediate), the logits; the float64 loss over n classes; backwards, a layer's
        # gradients at a time. The hooked transformer's heap factor of 1.5, to be safe.
        n, acts = cfg.n_classes, cfg.mlp_layers * m * (3 if cfg.mlp_act == "gelu" else 2)
        embed = cfg.n_inputs * d if cfg.mlp_input == "embed" else 0
        kept = 4 * b * (embed + acts + n)
        loss = (24 if grad else 20) * b * n
        return int(1.5 * (kept + loss + (8 * b * (m + embed) if grad else 0)))
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
    positions = cfg.n_ctx / 3 / cfg.output_len  # the hooked terms below were fitted at 3 tokens per example
    per_layer = int(positions * (12 * b * (2 * d + 4 * h * dh + mlp + 2 * ln) + 24 * cfg.n_ctx * b * h))
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
    if cfg.model == "mlp":
        biggest = 4 * max(r * c for r, c in _mlp_matrices(cfg))
    else:
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
    seed_split = cfg.split == "seed" and cfg.task_kind == "table"
    split = _SEED_SPLIT_BYTES_PER_PAIR * cfg.n_classes ** 2 if seed_split else 16 * n_all
    data *= cfg.n_ctx / 3  # the data terms were fitted at 3 tokens per example
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
