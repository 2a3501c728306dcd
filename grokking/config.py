"""The one source of truth for every hyperparameter and run setting.

``Config`` holds the defaults (the seed notebook's recipe on the canonical Nanda et al.
task); the CLI builds one flag per field from it, the Python API takes it directly, and
``docs/config.md`` is generated from it. Presets are named partial configs.

All validation lives here: :func:`validate` raises :class:`ConfigError`, whose message is
one line naming the field and what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import (
    DIGITS_LEVELS,
    DIGITS_PIXELS,
    OPERATIONS,
    OPERATION_ALIASES,
    Dataset,
    group_size,
    is_prime,
    make_dataset,
    sequence_count,
    task_kind,
    task_names,
)
from .errors import InputError

MAX_P = 1000  # p^2 pairs of 3 tokens; beyond this the full-batch table stops fitting anywhere
MAX_SEQUENCES = 500_000  # a sequence task enumerates every list: beyond this, full-batch epochs take minutes


class ConfigError(InputError):
    """Bad configuration: ``str(err)`` is a one-line message naming the field."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def _f(default: Any, help: str, choices: tuple | None = None, min: float | None = None,
       max: float | None = None, min_open: bool = False, max_open: bool = False,
       optional: bool = False, group: str = "training") -> Any:
    meta = dict(help=help, choices=choices, min=min, max=max, min_open=min_open,
                max_open=max_open, optional=optional, group=group)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # --- task -------------------------------------------------------------------------
    op: str = _f("add", "the task: a binary operation, a sequence task, parity or digits (see `grokking ops`)",
                 choices=None, group="task")
    p: int = _f(113, "modulus / number of residues; a sequence task's number of symbols (S5 operations, "
                "parity and digits ignore it)", min=2, max=MAX_P, group="task")
    frac: float = _f(0.3, "fraction of all pairs (examples) used for training", min=0.0, max=1.0,
                     min_open=True, max_open=True, group="task")
    seed: int = _f(0, "seed for the split, the initial weights and the data order", min=0,
                   max=2**31 - 1, group="task")
    split: str = _f("seed", "'seed': the seed notebook's gen_train_test (same pairs, same order); "
                    "'random': a torch permutation of the valid pairs", choices=("seed", "random"),
                    group="task")
    label_noise: float = _f(0.0, "fraction of the training pairs whose label is replaced by a random wrong "
                            "answer (drawn from the seed); test pairs keep theirs", min=0.0, max=1.0,
                            max_open=True, group="task")
    seq_len: int = _f(5, "sequence tasks (sort, reverse, copy): the length of each list", min=1, max=64,
                      group="task")
    parity_bits: int = _f(40, "parity: bits per input string (Barak et al.'s n)", min=2, max=256, group="task")
    parity_k: int = _f(3, "parity: bits whose XOR is the label (Barak et al.'s k)", min=1, max=256, group="task")
    n_examples: int = _f(2000, "parity: distinct bit strings drawn (frac of them train)", min=2, max=10**6,
                         group="task")
    # --- model ------------------------------------------------------------------------
    model: str = _f("transformer", "'transformer': the seed's; 'mlp': an MLP over the task's input tokens "
                    "(Gromov 2023 with mlp_act = quadratic, mlp_input = onehot)",
                    choices=("transformer", "mlp"), group="model")
    mlp_input: str = _f("embed", "model = mlp: the input tokens as learned embeddings (d_model each, "
                        "concatenated), as concatenated one-hot codes, or as numbers ('value': each token's "
                        "value scaled to [-1, 1]; parity's bits become -1, +1, the digits' pixels 0..16 "
                        "-1..1)", choices=("embed", "onehot", "value"), group="model")
    mlp_act: str = _f("relu", "model = mlp: the hidden activation ('quadratic': x^2, as in Gromov 2023)",
                      choices=("relu", "gelu", "quadratic"), group="model")
    mlp_layers: int = _f(1, "model = mlp: hidden layers of width d_mlp", min=1, max=16, group="model")
    init_scale: float = _f(1.0, "multiply every initial weight by this (Omnigrok's alpha, over our init: "
                           "randn / sqrt(fan_in), zero biases; not PyTorch's default, so the same alpha gives "
                           "another norm)", min=0.0, max=1e3, min_open=True, group="model")
    n_layers: int = _f(1, "transformer blocks", min=1, max=64, group="model")
    d_model: int = _f(128, "residual stream width", min=1, max=8192, group="model")
    n_heads: int = _f(4, "attention heads", min=1, max=256, group="model")
    d_head: int = _f(0, "width of each head; 0 means d_model // n_heads", min=0, max=8192, group="model")
    d_mlp: int = _f(512, "MLP hidden width", min=1, max=65536, group="model")
    act: str = _f("relu", "MLP activation", choices=("relu", "gelu"), group="model")
    layernorm: bool = _f(False, "pre-LayerNorm before attention, MLP and unembed (the seed has none)",
                         group="model")
    # --- optimisation -----------------------------------------------------------------
    optimizer: str = _f("adamw", "optimizer; 'muon' uses Muon for hidden matrices and AdamW for the rest, "
                        "'orthoadamw' is AdamW on gradients orthogonalised to the weights",
                        choices=("adamw", "adam", "sgd", "muon", "orthoadamw"))
    lr: float = _f(1e-3, "peak learning rate", min=0.0, max=100.0, min_open=True)
    weight_decay: float = _f(1.0, "decoupled weight decay (AdamW-style; L2 for adam/sgd)", min=0.0, max=1e4)
    beta1: float = _f(0.9, "Adam beta1", min=0.0, max=1.0, max_open=True)
    beta2: float = _f(0.98, "Adam beta2", min=0.0, max=1.0, max_open=True)
    eps: float = _f(1e-8, "Adam epsilon", min=0.0, max=1.0, min_open=True)
    momentum: float = _f(0.9, "momentum for sgd and muon", min=0.0, max=1.0, max_open=True)
    muon_lr: float = _f(0.02, "Muon learning rate for the hidden matrices", min=0.0, max=100.0, min_open=True)
    warmup_steps: int = _f(10, "linear learning-rate warm-up, in optimiser steps (lr = lr * min(step/warmup, 1))",
                           min=0, max=10**9)
    lr_decay_steps: int = _f(0, "cosine decay of the learning rate from its peak to 0 over this many optimiser "
                             "steps, counted from step 0 and times the warm-up (lr 0 from then on); 0: constant "
                             "(the seed)", min=0, max=10**12)
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value; 0 disables", min=0.0, max=1e9)
    batch_size: int = _f(0, "examples per optimiser step; 0 means full batch (the seed)", min=0, max=10**9)
    epochs: int = _f(20000, "maximum number of epochs (passes over the training set)", min=0, max=10**9)
    max_steps: int = _f(0, "stop after this many optimiser steps; 0 means no step budget", min=0, max=10**12)
    loss: str = _f("ce", "'ce': float64 cross-entropy (the seed); 'stablemax': StableMax cross-entropy "
                   "(Prieto et al. 2025)", choices=("ce", "stablemax"))
    grokfast: str = _f("none", "Grokfast gradient filter (Lee et al. 2024)", choices=("none", "ema", "ma"))
    grokfast_alpha: float = _f(0.98, "Grokfast-EMA momentum", min=0.0, max=1.0, max_open=True)
    grokfast_lamb: float = _f(2.0, "Grokfast amplification of the slow gradient", min=0.0, max=1e3)
    grokfast_window: int = _f(100, "Grokfast-MA window, in steps", min=1, max=10**6)
    # --- loop, logging, stopping ------------------------------------------------------
    eval_every: int = _f(50, "evaluate train/test loss and accuracy every N epochs (one evaluation costs about "
                         "one training step)", min=1, max=10**9,
                         group="loop")
    checkpoint_every: int = _f(500, "save a weights snapshot every N epochs (0: only at the end)", min=0,
                               max=10**9, group="loop")
    checkpoint_log: int = _f(20, "extra log-spaced weight snapshots over the first decades of epochs "
                             "(0: none), for progress measures", min=0, max=10**4, group="loop")
    stop_at_test_acc: float | None = _f(None, "end the run at the first evaluation with test accuracy >= X",
                                        min=0.0, max=1.0, optional=True, group="loop")
    stop_at_test_loss: float | None = _f(None, "end the run at the first evaluation with test loss <= X",
                                         min=0.0, max=1e9, optional=True, group="loop")
    stop_hold: int = _f(0, "end the run only once its stop_at condition has held at every evaluation for N "
                        "epochs (0: at the first evaluation where it holds)", min=0, max=10**9, group="loop")
    device: str = _f("auto", "where to train: auto (cuda if available), cpu or cuda",
                     choices=("auto", "cpu", "cuda"), group="loop")
    fast: bool = _f(True, "use the fast last-position training path where the model allows it", group="loop")
    compile: bool = _f(False, "torch.compile the fast path (falls back if compilation fails)", group="loop")
    tensorboard: bool = _f(False, "also write TensorBoard event files (needs the 'monitor' extra)", group="loop")
    wandb: bool = _f(False, "also log to Weights & Biases, offline mode (needs the 'monitor' extra)", group="loop")
    report: bool = _f(True, "write report.html at the end of the run", group="loop")
    threads: int = _f(0, "torch threads on CPU: N fixes the count (a resumed run is then bit-exact); 0: choose "
                      "between 1 and the process's count by timing training epochs, and again every "
                      "few thousand epochs or when epochs slow down (a busy neighbour)", min=0, max=4096,
                      group="loop")
    max_memory: float = _f(0.0, "memory in GB a run may use (its estimated peak is checked before it starts); "
                           "0: what the machine has available (MemAvailable, a cgroup limit, or the GPU's free "
                           "memory)", min=0.0, max=1e6, group="loop")

    # ------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def n_classes(self) -> int:
        return group_size(self.op, self.p)

    @property
    def d_vocab(self) -> int:
        return self.n_classes + 1

    @property
    def task_kind(self) -> str:
        """``table``, ``sequence``, ``parity`` or ``digits`` (:func:`grokking.data.task_kind`)."""
        return task_kind(self.op)

    @property
    def n_ctx(self) -> int:
        """Tokens per example: ``a b =`` (3), a sequence task's 2L, parity's bits and ``=``, 64 pixels."""
        kind = self.task_kind
        return {"table": 3, "sequence": 2 * self.seq_len, "parity": self.parity_bits + 1,
                "digits": DIGITS_PIXELS}[kind]

    @property
    def n_inputs(self) -> int:
        """The input tokens an MLP reads: the two operands, the list, the bits, the pixels."""
        return {"table": 2, "sequence": self.seq_len, "parity": self.parity_bits, "digits": DIGITS_PIXELS}[self.task_kind]

    @property
    def n_symbols(self) -> int:
        """Values an input token takes (``=`` aside): n for a table, p symbols, 2 bits, 17 grey levels."""
        return {"table": self.n_classes, "sequence": self.p, "parity": 2, "digits": DIGITS_LEVELS}[self.task_kind]

    @property
    def output_len(self) -> int:
        """Answer tokens per example: 1, or a sequence task's seq_len."""
        return self.seq_len if self.task_kind == "sequence" else 1

    @property
    def n_all(self) -> int:
        """Examples of the task, train and test together, from the config alone."""
        kind, n = self.task_kind, self.n_classes
        if kind == "table":
            return n * (n - 1) if self.op == "divide" else n * n
        return {"sequence": sequence_count(self.p, self.seq_len), "parity": self.n_examples,
                "digits": 1797}[kind]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        return from_dict({**self.to_dict(), **changes})

    def key(self) -> str:
        """Stable short hash of the fields that change results (not the device). A field added
        after the first release counts only when it differs from its default, so the keys of
        earlier runs (in their checkpoints and sweep tables) stay what they were."""
        d = {k: v for k, v in self.to_dict().items()
             if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# Fields that choose where/how fast a run executes, not what it computes.
RUNTIME_FIELDS = frozenset({"device", "fast", "compile", "tensorboard", "wandb", "report", "threads", "max_memory"})

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(Config)}

# Fields added after the first release, with their defaults (see Config.key).
LATER_FIELDS: dict[str, Any] = {name: FIELDS[name].default for name in
                                ("label_noise", "model", "mlp_input", "mlp_act", "mlp_layers", "init_scale",
                                 "seq_len", "parity_bits", "parity_k", "n_examples", "stop_hold", "lr_decay_steps")}


def field_type(name: str) -> type:
    default = FIELDS[name].default
    if name in ("stop_at_test_acc", "stop_at_test_loss"):
        return float
    return type(default)


# --- presets ---------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # Nanda et al. 2023 / the seed notebook: 1 layer, full batch, AdamW 1e-3, wd 1, p=113, 30%.
    "nanda": {},
    # Power et al. 2022, Appendix A.1: 2 layers, width 128, 4 heads, AdamW lr 1e-3,
    # betas (0.9, 0.98), 10 warm-up steps, mini-batches of 512, weight decay 1 (their best,
    # Fig. 2), p=97, a budget of optimisation steps (the paper: 1e5; ours is 1e4 on a CPU).
    "power": {"n_layers": 2, "p": 97, "batch_size": 512, "weight_decay": 1.0, "epochs": 10**9,
              "max_steps": 10_000, "eval_every": 10, "split": "random", "frac": 0.5},
    # The fastest recipe that stays grokked (scripts/fast_preset.py, docs/acceleration.md): the seed
    # model, AdamW at 20x the seed's peak learning rate and 3x its weight decay, the gradient norm
    # clipped to 0.5, and the learning rate decayed to 0 along a cosine over the 300 epochs.
    # Canonical task, seeds 0-9 at 1 and 2 threads: 99% test accuracy at epochs 90-160 and train
    # accuracy at or above 0.9 once it has passed 99%, through epoch 300 (the lowest, 0.92, a dip
    # at one evaluation; docs/acceleration.md has the tables). At a constant rate the
    # same recipe falls back after grokking on some seeds (fast_constant, below, dips to 0.94 test
    # accuracy on seed 4). The run ends once test accuracy has stayed >= 99% for 50 epochs, or at
    # epoch 300 (--stop-hold 0 --stop-at-test-acc none runs all 300; a longer --epochs needs a
    # longer --lr-decay-steps: the rate is 0 after it). Tuned on add only; for divide mod 97 the
    # comparison in docs/acceleration.md (run with fast_unclipped's recipe) found --loss stablemax.
    "fast": {"lr": 2e-2, "weight_decay": 3.0, "grad_clip": 0.5, "lr_decay_steps": 300, "epochs": 300,
             "eval_every": 10, "checkpoint_every": 50, "stop_at_test_acc": 0.99, "stop_hold": 50},
    # fast before the decay: lr 1.5e-2 constant; 99% test at epochs 110-170 on seeds 0-4, then
    # hovering around it (seed 4: 0.94-1.0), so its hold can last to epoch 300.
    "fast_constant": {"lr": 1.5e-2, "weight_decay": 3.0, "grad_clip": 0.5, "epochs": 300, "eval_every": 10,
                      "checkpoint_every": 50, "stop_at_test_acc": 0.99, "stop_hold": 50},
    # The first fast recipe (no clipping, no decay): as quick to reach 99% test, but unstable after it.
    "fast_unclipped": {"lr": 2e-2, "weight_decay": 2.0, "epochs": 400, "eval_every": 10, "checkpoint_every": 50},
}


def _show(value: Any, repr_: bool = True, limit: int = 80) -> str:
    """A value for an error message: one line, bounded length, never itself an error."""
    try:
        text = repr(value) if repr_ else str(value)
    except (ValueError, RecursionError):  # an int with more digits than Python will print; deep nesting
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(name: str, value: Any) -> Any:
    if name == "op" and isinstance(value, str) and value in OPERATION_ALIASES:
        return OPERATION_ALIASES[value]
    meta = FIELDS[name].metadata
    want = field_type(name)
    if value is None or (meta["optional"] and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if meta["optional"]:
            return None
        raise ConfigError(name, f"must be a {want.__name__}, got {_show(value)}")
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(name, f"must be true or false, got {_show(value)}")
    if want is int:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be an integer, got {_show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", "")) if any(c in value for c in ".eE") else int(value.replace("_", ""))
            except ValueError:
                number = None
            if isinstance(number, int) or (isinstance(number, float) and math.isfinite(number) and number.is_integer()):
                return int(number)
        raise ConfigError(name, f"must be an integer, got {_show(value)}")
    if want is float:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be a number, got {_show(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
            raise ConfigError(name, f"must be a number, got {_show(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(name, f"must be a finite number, got {_show(value)}")
        return number
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {_show(value)}")
    return value


def validate(cfg: Config) -> Config:
    """Check every field and the relations between them; return ``cfg`` or raise ConfigError."""
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        meta = f.metadata
        if value is None:
            if not meta["optional"]:
                raise ConfigError(name, "must be set")
            continue
        choices = task_names() if name == "op" else meta["choices"]
        if choices is not None and value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}; got {_show(value)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta["min"], meta["max"]
            if lo is not None and (value < lo or (meta["min_open"] and value == lo)):
                raise ConfigError(name, f"must be {'>' if meta['min_open'] else '>='} {lo}; got {_show(value, repr_=False)}")
            if hi is not None and (value > hi or (meta["max_open"] and value == hi)):
                raise ConfigError(name, f"must be {'<' if meta['max_open'] else '<='} {hi}; got {_show(value, repr_=False)}")
    kind = cfg.task_kind
    if kind == "table" and OPERATIONS[cfg.op].needs_prime and not is_prime(cfg.p):
        raise ConfigError("p", f"operation {cfg.op!r} needs a prime p (modular inverse); got {cfg.p}")
    if kind != "table":
        _validate_token_task(cfg)
    if cfg.model == "mlp":
        _validate_mlp(cfg)
    elif cfg.d_head == 0 and cfg.d_model % cfg.n_heads:
        raise ConfigError("d_model", f"must be divisible by n_heads={cfg.n_heads} (or set d_head); got {cfg.d_model}")
    if kind == "table":  # the seed split cuts all n^2 pairs, then drops the ones that do not exist
        n_pairs = cfg.n_classes ** 2
        empty = int(cfg.frac * n_pairs) < 1 or int(cfg.frac * n_pairs) >= cfg.n_all
    else:
        n_pairs = cfg.n_all
        empty = int(cfg.frac * n_pairs) < 1 or int(cfg.frac * n_pairs) >= n_pairs
    if empty:
        unit = "pairs" if kind == "table" else "examples"
        raise ConfigError("frac", f"leaves an empty train or test set for {n_pairs:,} {unit}; got {cfg.frac}")
    if cfg.stop_hold and cfg.stop_at_test_acc is None and cfg.stop_at_test_loss is None:
        raise ConfigError("stop_hold", f"needs stop_at_test_acc or stop_at_test_loss, the condition to hold; "
                                       f"got stop_hold={cfg.stop_hold} with neither")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        pass  # an evaluation-only run of the initial weights is allowed
    return cfg


def _validate_token_task(cfg: Config) -> None:
    """The sizes of the tasks that are not tables, and what each allows."""
    kind = cfg.task_kind
    if kind == "sequence":
        count = sequence_count(cfg.p, cfg.seq_len)
        if cfg.seq_len > cfg.p:
            raise ConfigError("seq_len", f"{cfg.op} lists hold distinct symbols: must be <= p = {cfg.p}; got {cfg.seq_len}")
        if count > MAX_SEQUENCES:
            raise ConfigError("p", f"{cfg.op} enumerates every list of seq_len = {cfg.seq_len} distinct symbols out of "
                                   f"p: {count:,} lists, at most {MAX_SEQUENCES:,} allowed; got p = {cfg.p} "
                                   f"(for example p = 10 with seq_len = 5: 30,240 lists)")
        if cfg.label_noise > 0:
            raise ConfigError("label_noise", f"is for one-token answers; {cfg.op} answers with seq_len tokens; "
                                             f"must be 0; got {cfg.label_noise}")
    if kind == "parity":
        if cfg.parity_k > cfg.parity_bits:
            raise ConfigError("parity_k", f"must be <= parity_bits = {cfg.parity_bits}; got {cfg.parity_k}")
        if cfg.n_examples > 2 ** cfg.parity_bits:
            raise ConfigError("n_examples", f"must be <= 2^parity_bits = {2 ** cfg.parity_bits} distinct strings; "
                                            f"got {cfg.n_examples}")
    if kind == "digits":
        if cfg.model != "mlp":
            raise ConfigError("model", f"digits are 64-pixel images, not tokens: must be mlp; got {cfg.model}")
        if importlib.util.find_spec("sklearn") is None:
            raise ConfigError("op", "digits needs scikit-learn, which is not installed: "
                                    "pip install 'grokking-lab[digits]'")


def _validate_mlp(cfg: Config) -> None:
    """Refuse the transformer's fields that an MLP would silently ignore where their value suggests
    otherwise: more blocks, another activation, LayerNorm. (The head fields, and d_model with one-hot
    input, are left alone: no value of theirs suggests anything about an MLP, and a transformer's
    base config may set them.)"""
    def default(name: str) -> Any:
        return FIELDS[name].default

    if cfg.n_layers != default("n_layers"):
        raise ConfigError("n_layers", f"model = mlp has no transformer blocks; set mlp_layers (its hidden layers) "
                                      f"instead; got {cfg.n_layers}")
    if cfg.act != default("act"):
        raise ConfigError("act", f"is the transformer's; for model = mlp set mlp_act (relu, gelu, quadratic); "
                                 f"got {cfg.act}")
    if cfg.layernorm:
        raise ConfigError("layernorm", "model = mlp has no LayerNorm; must be false")


def from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from a (possibly partial) mapping; unknown keys are errors."""
    values = (base or Config()).to_dict()
    for key, value in d.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in FIELDS:
            shown = key if isinstance(key, str) and key.isidentifier() else repr(key)
            raise ConfigError(shown, f"unknown config field (known: {', '.join(FIELDS)})")
        values[name] = _coerce(name, value)
    return validate(Config(**values))


def build_dataset(cfg: Config, split: str | None = None) -> Dataset:
    """The dataset ``cfg`` trains on (``split`` overrides ``cfg.split``): the one place a config
    becomes a :class:`~grokking.data.Dataset`."""
    return make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, split or cfg.split, cfg.label_noise,
                        seq_len=cfg.seq_len, parity_bits=cfg.parity_bits, parity_k=cfg.parity_k,
                        n_examples=cfg.n_examples)


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}; got {name!r}")
    return dict(PRESETS[name])


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a mapping (validated later by from_dict)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise ConfigError("config", f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                          f"{(str(err).splitlines() or ['nested too deeply'])[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a table of fields")
    return data


def markdown_table() -> str:
    """The reference table in docs/config.md (regenerate with `grokking config --markdown`)."""
    rows = ["| field | default | allowed | meaning |", "|---|---|---|---|"]
    for name, f in FIELDS.items():
        meta = f.metadata
        choices = task_names() if name == "op" else meta["choices"]
        if choices:
            allowed = ", ".join(choices)
        elif field_type(name) is bool:
            allowed = "true, false"
        else:
            lo = "" if meta["min"] is None else f"{'>' if meta['min_open'] else '>='} {meta['min']:g}"
            hi = "" if meta["max"] is None else f"{'<' if meta['max_open'] else '<='} {meta['max']:g}"
            allowed = ", ".join(x for x in (lo, hi) if x) + (" or none" if meta["optional"] else "")
        rows.append(f"| `{name}` | `{f.default}` | {allowed} | {meta['help']} |")
    return "\n".join(rows)
