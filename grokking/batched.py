"""Many runs at once: K independent runs of the same architecture trained as one batch.

The K runs may differ in seed, learning rate, weight decay, Adam betas/eps, warm-up,
gradient clipping, training fraction, split, epochs and stopping rules; they must share the
shapes (``op, p, d_model, n_heads, d_head, d_mlp, n_layers=1, act, layernorm``) and the kind
of optimiser, loss and gradient filter (:func:`check_batch` says which field is wrong).

Pieces, from the bottom up:

- :class:`BatchedTransformer`: every seed weight with a leading run dimension ``K``
  (``embed.W_E [K, d_model, d_vocab]``, ``blocks.0.mlp.W_in [K, d_mlp, d_model]`` ...), the
  seed's parameter and hook names, HookPoints whose activations carry the leading ``K``,
  and ``run(k)`` to get run ``k`` back as an ordinary :class:`~grokking.model.Transformer`.
- :func:`batched_last_position_logits`: fast.py's exact last-position path with the ``K``
  dimension (per-vocabulary key/value/score tables per run, batched matrix products).
- :class:`FlatParameters`, :class:`StackedAdamW`, :class:`StackedGradFilter`: the K runs'
  weights as one ``[K, P]`` tensor, so AdamW/Adam, per-run clipping and Grokfast are a
  dozen whole-batch operations with per-run ``[K, 1]`` hyperparameters;
  :func:`orthogonalize_stacked` (⊥AdamW) and :class:`StackedMuonAdamW` (Muon, its
  Newton–Schulz iterations batched over the runs) work per parameter.
- :func:`train_batched` / :class:`BatchedTrainer`: per-run run directories with the same
  files as ``grokking train`` (their ``last.safetensors`` is a single-run checkpoint: any run
  can be continued alone with ``grokking train --resume RUN``), per-run stopping, and two
  strategies: ``stacked`` (the batched model; the CUDA choice) and ``loop`` (one ordinary
  :class:`~grokking.train.Trainer` step per run per epoch, in one process).
  :data:`CPU_STRATEGY` records which one measured faster on CPU.
- ``grokking batch --out DIR --grid seed=0,1,2,3 [train flags]``.

Each run's objective is its own mean loss over its own training pairs; the batch minimises
the sum of those means, so each run's gradient is the one it would get alone (the tests
hold a batch to separate runs).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .checkpoint import atomic_write_json
from .config import PRESETS, Config, ConfigError
from .data import Dataset
from .methods import is_hidden_matrix, muon_update, orthogonalized, per_example_loss, set_learning_rate, warmup_factor
from .model import HookPoint, Transformer, TransformerBlock, activation
from .train import (
    EVAL_CHUNK,
    Trainer,
    TrainingInterrupted,
    _signals_to_flag,
    evaluate,
    prepare_run_dir,
    resolve_device,
    summarize,
    weight_norm,
)

STRATEGIES = ("auto", "stacked", "loop")
# What "auto" picks on CPU. benchmark_batched(k=8, ...) on the canonical run (add, p=113,
# frac 0.3, default Config; evaluations included), 2 CPU cores, torch 2.13 CPU, median ms per
# run-epoch. Before fast.py's token tables (the dense path everywhere), three sessions at
# different loads: 8 sequential Trainers 766 / 379 / 247, stacked 367 / 281 / 143, loop 903 /
# 394 / 266. Since a single CPU run takes the token-table product (which the stacked model does
# not), on a quiet machine, 2026-11-29 (epochs=20, repeats=3): sequential 31.5, stacked 38.4,
# loop 31.6. The loop steps each run's own Trainer, so it costs what sequential runs cost;
# stacked is now the slower one on CPU.
CPU_STRATEGY = "loop"

# Fields that fix the shapes of the weights: every run of a batch must share them.
SHAPE_FIELDS = ("op", "p", "n_layers", "d_model", "n_heads", "head_dim", "d_mlp", "act", "layernorm")
# Fields that choose the computation (one kind per batch; their values per run would need
# a different program per run).
SHARED_FIELDS = ("optimizer", "loss", "grokfast", "device", "fast")
BATCHED_OPTIMIZERS = ("adamw", "adam", "orthoadamw", "muon")


# --- what a batch may hold ------------------------------------------------------------------------
def check_shapes(cfgs: Sequence[Config]) -> None:
    """Raise ConfigError (one line, naming the field) unless the configs can share one batched model."""
    if not cfgs:
        raise ConfigError("runs", "a batch needs at least one config")
    for name in SHAPE_FIELDS:
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            shown = ", ".join(str(v) for v in dict.fromkeys(values))
            raise ConfigError(name if name != "head_dim" else "d_head",
                              f"all runs of a batch must share the model shape; got {shown}")
    if cfgs[0].n_layers != 1:
        raise ConfigError("n_layers", f"batched training covers 1-layer models only; got {cfgs[0].n_layers}")


def check_batch(cfgs: Sequence[Config]) -> None:
    """Raise ConfigError (one line, naming the field) for anything batched training does not do."""
    check_shapes(cfgs)
    for name in SHARED_FIELDS:
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            shown = ", ".join(str(v) for v in dict.fromkeys(values))
            raise ConfigError(name, f"all runs of a batch must share it; got {shown}")
    cfg = cfgs[0]
    if cfg.grokfast == "ma" and len({c.grokfast_window for c in cfgs}) > 1:
        shown = ", ".join(str(w) for w in dict.fromkeys(c.grokfast_window for c in cfgs))
        raise ConfigError("grokfast_window", f"all runs of a batch must share it; got {shown}")
    if cfg.optimizer not in BATCHED_OPTIMIZERS:
        raise ConfigError("optimizer", f"batched training supports {', '.join(BATCHED_OPTIMIZERS)}; "
                                       f"got {cfg.optimizer!r}")
    for c in cfgs:
        if c.batch_size != 0:
            raise ConfigError("batch_size", f"batched training is full-batch only (0); got {c.batch_size}")
        for name in ("compile", "tensorboard", "wandb"):
            if getattr(c, name):
                raise ConfigError(name, "not supported by batched training; train this run alone")


# --- the batched model ----------------------------------------------------------------------------
def _empty(*shape: int) -> nn.Parameter:
    # Allocated on the meta device: the real tensors arrive with load_state_dict(assign=True).
    return nn.Parameter(torch.empty(*shape, device="meta"))


def _per_run(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-run ``[K, n]`` tensor so that it broadcasts over ``like = [K, ..., n]``."""
    return t.view(t.shape[0], *([1] * (like.dim() - 2)), t.shape[-1])


class BatchedEmbed(nn.Module):
    def __init__(self, n_runs: int, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = _empty(n_runs, d_model, d_vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [K, B, n] -> [K, B, n, d_model]
        runs = torch.arange(self.W_E.shape[0], device=tokens.device).view(-1, 1, 1)
        return self.W_E.transpose(1, 2)[runs, tokens]


class BatchedPosEmbed(nn.Module):
    def __init__(self, n_runs: int, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = _empty(n_runs, n_ctx, d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # -> [K, 1, n, d_model]
        return self.W_pos[:, None, : tokens.shape[-1]]


class BatchedUnembed(nn.Module):
    def __init__(self, n_runs: int, d_vocab: int, d_model: int):
        super().__init__()
        self.W_U = _empty(n_runs, d_model, d_vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("rbpd,rdv->rbpv", x, self.W_U)


class BatchedLayerNorm(nn.Module):
    def __init__(self, n_runs: int, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.w = _empty(n_runs, d_model)
        self.b = _empty(n_runs, d_model)
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * _per_run(self.w, x) + _per_run(self.b, x)


class BatchedAttention(nn.Module):
    def __init__(self, n_runs: int, d_model: int, n_heads: int, d_head: int, n_ctx: int):
        super().__init__()
        self.W_K = _empty(n_runs, n_heads, d_head, d_model)
        self.W_Q = _empty(n_runs, n_heads, d_head, d_model)
        self.W_V = _empty(n_runs, n_heads, d_head, d_model)
        self.W_O = _empty(n_runs, d_model, d_head * n_heads)
        self.register_buffer("mask", torch.empty(n_ctx, n_ctx, device="meta"))  # shared by all runs
        self.d_head = d_head
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_attn_pre = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_attn = HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the seed's Attention, with a run index r
        q = self.hook_q(torch.einsum("rbpd,rihd->rbpih", x, self.W_Q))
        k = self.hook_k(torch.einsum("rbpd,rihd->rbpih", x, self.W_K))
        v = self.hook_v(torch.einsum("rbpd,rihd->rbpih", x, self.W_V))
        n = x.shape[-2]
        scores = torch.einsum("rbqih,rbkih->rbiqk", q, k) / math.sqrt(self.d_head)
        scores = scores.masked_fill(self.mask[:n, :n] == 0, float("-inf"))
        scores = self.hook_attn_pre(self.hook_attn_scores(scores))
        pattern = self.hook_attn(self.hook_pattern(F.softmax(scores, dim=-1)))
        z = self.hook_z(torch.einsum("rbiqk,rbkih->rbqih", pattern, v))
        return torch.einsum("rbpf,rdf->rbpd", z.flatten(-2), self.W_O)


class BatchedMLP(nn.Module):
    def __init__(self, n_runs: int, d_model: int, d_mlp: int, act: str):
        super().__init__()
        self.W_in = _empty(n_runs, d_mlp, d_model)
        self.b_in = _empty(n_runs, d_mlp)
        self.W_out = _empty(n_runs, d_model, d_mlp)
        self.b_out = _empty(n_runs, d_model)
        self.act = act
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(torch.einsum("rbpd,rmd->rbpm", x, self.W_in) + _per_run(self.b_in, x))
        post = self.hook_post(activation(pre, self.act))
        return torch.einsum("rbpm,rdm->rbpd", post, self.W_out) + _per_run(self.b_out, post)


class BatchedBlock(nn.Module):
    def __init__(self, cfg: Config, n_runs: int, n_ctx: int):
        super().__init__()
        # Registration order = the seed's, so parameters() lines up with Transformer's.
        if cfg.layernorm:
            self.ln1 = BatchedLayerNorm(n_runs, cfg.d_model)
            self.ln2 = BatchedLayerNorm(n_runs, cfg.d_model)
        self.attn = BatchedAttention(n_runs, cfg.d_model, cfg.n_heads, cfg.head_dim, n_ctx)
        self.mlp = BatchedMLP(n_runs, cfg.d_model, cfg.d_mlp, cfg.act)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    forward = TransformerBlock.forward  # the seed's residual wiring works unchanged on [K, ...] tensors


class BatchedTransformer(nn.Module):
    """K seed transformers of one shape as one module.

    ``BatchedTransformer(cfgs)`` starts run ``k`` from ``Transformer(cfgs[k])``'s weights.
    Inputs are ``[K, B, 3]`` tokens (or ``[B, 3]``, the same for every run); outputs are
    ``[K, B, 3, d_vocab]`` logits. Hooks work as on the seed model (``hooks``,
    ``run_with_hooks``, ``run_with_cache``), with a leading ``K`` on every activation
    (``hook_pos_embed`` is ``[K, 1, 3, d_model]``: the same for every example).
    """

    n_ctx = Transformer.n_ctx

    def __init__(self, cfgs: Sequence[Config], state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        check_shapes(cfgs)
        self.cfgs = list(cfgs)
        cfg, n_runs = self.cfgs[0], len(self.cfgs)
        self.embed = BatchedEmbed(n_runs, cfg.d_vocab, cfg.d_model)
        self.pos_embed = BatchedPosEmbed(n_runs, self.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList([BatchedBlock(cfg, n_runs, self.n_ctx)])
        if cfg.layernorm:
            self.ln_final = BatchedLayerNorm(n_runs, cfg.d_model)
        self.unembed = BatchedUnembed(n_runs, cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
        if state is None:
            state = stack_state_dicts([Transformer(c) for c in self.cfgs])
        self.load_state_dict(state, strict=True, assign=True)

    @classmethod
    def from_models(cls, models: Sequence[Transformer]) -> "BatchedTransformer":
        """Stack existing models (their current weights, on their device)."""
        return cls([m.cfg for m in models], stack_state_dicts(models))

    @property
    def n_runs(self) -> int:
        return self.embed.W_E.shape[0]

    @property
    def eq_token(self) -> int:
        return self.cfgs[0].d_vocab - 1

    def _parameters_by_name(self) -> dict[str, nn.Parameter]:
        return dict(self.named_parameters())

    def run_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Run ``k``'s weights under the seed's names (a ``Transformer`` loads it strictly)."""
        stacked = self._parameters_by_name()
        return {name: (t[k] if name in stacked else t).detach().clone() for name, t in self.state_dict().items()}

    def run(self, k: int) -> Transformer:
        """Run ``k`` as an ordinary seed transformer (a copy, on this module's device)."""
        model = Transformer(self.cfgs[k])
        model.load_state_dict(self.run_state_dict(k), strict=True)
        return model.to(self.embed.W_E.device)

    def select(self, runs: Sequence[int]) -> "BatchedTransformer":
        """A new batched model holding copies of the given runs, in that order."""
        index = torch.tensor(list(runs), device=self.embed.W_E.device)
        stacked = self._parameters_by_name()
        state = {name: (t[index] if name in stacked else t.clone()) for name, t in self.state_dict().items()}
        return BatchedTransformer([self.cfgs[k] for k in runs], state)

    forward = Transformer.forward  # embed, block, unembed: the seed's code on the batched submodules

    # The seed model's hook machinery works unchanged: it only walks HookPoints and calls self(tokens).
    hook_dict = Transformer.hook_dict
    _select = Transformer._select
    reset_hooks = Transformer.reset_hooks
    hooks = Transformer.hooks
    run_with_hooks = Transformer.run_with_hooks
    run_with_cache = Transformer.run_with_cache

    def __call__(self, tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if tokens.dim() == 2:  # the same inputs for every run
            tokens = tokens.expand(self.n_runs, *tokens.shape)
        return super().__call__(tokens, *args, **kwargs)


def stack_state_dicts(models: Sequence[Transformer]) -> dict[str, torch.Tensor]:
    """Seed state dicts stacked along a new leading run dimension (buffers are shared, not stacked)."""
    states = [m.state_dict() for m in models]
    buffers = {name for name, _ in models[0].named_buffers()}
    return {name: states[0][name].clone() if name in buffers else torch.stack([s[name] for s in states])
            for name in states[0]}


# --- the batched fast path --------------------------------------------------------------------------
def _layer_norm(ln: BatchedLayerNorm | None, x: torch.Tensor) -> torch.Tensor:
    if ln is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * _per_run(ln.w, x) + _per_run(ln.b, x)


def _per_run_tokens(model: BatchedTransformer, a: torch.Tensor) -> torch.Tensor:
    return a.expand(model.n_runs, -1) if a.dim() == 1 else a


def batched_last_position_logits(model: BatchedTransformer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits at the ``=`` position for inputs ``a b =``: ``a, b`` are ``[K, B]`` (or ``[B]`` for
    all runs); returns ``[K, B, d_vocab]``, run k's equal to ``fast.last_position_logits(model.run(k), a[k], b[k])``
    within float32 round-off. The same algorithm as fast.py, with a leading run index."""
    a, b = _per_run_tokens(model, a), _per_run_tokens(model, b)
    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    n_runs, n_heads, d_head, d_model = attn.W_Q.shape
    W_E = model.embed.W_E  # [K, d_model, V]
    W_pos = model.pos_embed.W_pos  # [K, 3, d_model]
    d_vocab = W_E.shape[-1]
    ln1 = getattr(block, "ln1", None)

    # Residual stream of every vocabulary entry at positions 0 and 1, and of '=' at position 2, per run.
    resid_01 = W_E.transpose(1, 2).unsqueeze(1) + W_pos[:, :2].unsqueeze(2)  # [K, 2, V, d_model]
    resid_eq = W_E[:, :, model.eq_token] + W_pos[:, 2]  # [K, d_model]
    x01, x_eq = _layer_norm(ln1, resid_01), _layer_norm(ln1, resid_eq)

    W_KV = torch.cat([attn.W_K, attn.W_V], 1).reshape(n_runs, 2 * n_heads * d_head, d_model)
    kv01 = torch.bmm(x01.reshape(n_runs, 2 * d_vocab, d_model), W_KV.transpose(1, 2))
    kv01 = kv01.view(n_runs, 2, d_vocab, 2, n_heads, d_head)  # [K, 2, V, k|v, H, d_head]
    kv_eq = torch.bmm(W_KV, x_eq.unsqueeze(-1)).view(n_runs, 2, n_heads, d_head)
    q_eq = torch.einsum("rihd,rd->rih", attn.W_Q, x_eq) / math.sqrt(d_head)  # [K, H, d_head]
    scores01 = (kv01[:, :, :, 0] * q_eq[:, None, None]).sum(-1)  # [K, 2, V, H]
    score_eq = (kv_eq[:, 0] * q_eq).sum(-1)  # [K, H]

    # One table row per (run, position, token): [score per head | value per head].
    table = torch.cat([scores01, kv01[:, :, :, 1].flatten(-2)], -1).view(n_runs * 2 * d_vocab, -1)
    run_offset = torch.arange(n_runs, device=a.device).unsqueeze(1) * (2 * d_vocab)
    rows = F.embedding(torch.stack([a + run_offset, b + d_vocab + run_offset], -1), table)  # [K, B, 2, C]
    n_examples = a.shape[1]
    scores = torch.cat([rows[..., :n_heads], score_eq[:, None, None].expand(n_runs, n_examples, 1, n_heads)], 2)
    pattern = torch.softmax(scores, dim=2).unsqueeze(-1)  # [K, B, 3, H, 1]
    values01 = rows[..., n_heads:].view(n_runs, n_examples, 2, n_heads, d_head)
    z = (pattern[:, :, :2] * values01).sum(2) + pattern[:, :, 2] * kv_eq[:, 1, None]  # [K, B, H, d_head]

    resid_mid = resid_eq.unsqueeze(1) + torch.bmm(z.flatten(2), attn.W_O.transpose(1, 2))  # [K, B, d_model]
    mlp_in = _layer_norm(getattr(block, "ln2", None), resid_mid)
    post = activation(torch.baddbmm(mlp.b_in.unsqueeze(1), mlp_in, mlp.W_in.transpose(1, 2)), mlp.act)
    resid_post = resid_mid + torch.baddbmm(mlp.b_out.unsqueeze(1), post, mlp.W_out.transpose(1, 2))
    return torch.bmm(_layer_norm(getattr(model, "ln_final", None), resid_post), model.unembed.W_U)


def batched_hooked_last_position_logits(model: BatchedTransformer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference: the full hooked batched forward pass, last position (``[K, B, d_vocab]``)."""
    a, b = _per_run_tokens(model, a), _per_run_tokens(model, b)
    tokens = torch.stack([a, b, torch.full_like(a, model.eq_token)], -1)
    return model(tokens)[:, :, -1]


BatchedLogitsFn = Callable[[BatchedTransformer, torch.Tensor, torch.Tensor], torch.Tensor]


# --- per-run data and losses -------------------------------------------------------------------------
@dataclass
class StackedData:
    """The K runs' splits as rectangular tensors.

    Train sets differ in size between runs (different ``frac``) and content (different
    seeds): each run's pairs are padded to the largest set, and ``mask`` marks the real ones.
    Evaluation runs over every pair, the same for all runs (labels can differ: ``rand``).
    """

    a: torch.Tensor  # [K, N] first operand of run k's training pairs, in its split order (padded)
    b: torch.Tensor  # [K, N]
    labels: torch.Tensor  # [K, N]
    mask: torch.Tensor  # [K, N] float64: 1 for a real training pair, 0 for padding
    n_train: torch.Tensor  # [K] float64
    all_a: torch.Tensor  # [M] every pair
    all_b: torch.Tensor  # [M]
    all_labels: torch.Tensor  # [K, M]
    in_train: torch.Tensor  # [K, M] bool
    in_test: torch.Tensor  # [K, M] bool

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> "StackedData":
        device = datasets[0].tokens.device
        sizes = [len(d.train_idx) for d in datasets]
        n_runs, width = len(datasets), max(sizes)
        a = torch.zeros(n_runs, width, dtype=torch.long, device=device)
        b, labels = torch.zeros_like(a), torch.zeros_like(a)
        mask = torch.zeros(n_runs, width, dtype=torch.float64, device=device)
        n_all = len(datasets[0].labels)
        in_train = torch.zeros(n_runs, n_all, dtype=torch.bool, device=device)
        in_test = torch.zeros_like(in_train)
        for k, d in enumerate(datasets):
            n = sizes[k]
            a[k, :n], b[k, :n] = d.tokens[d.train_idx, 0], d.tokens[d.train_idx, 1]
            labels[k, :n] = d.labels[d.train_idx]
            mask[k, :n] = 1.0
            in_train[k, d.train_idx] = True
            in_test[k, d.test_idx] = True
        return cls(a, b, labels, mask, torch.tensor(sizes, dtype=torch.float64, device=device),
                   datasets[0].tokens[:, 0], datasets[0].tokens[:, 1],
                   torch.stack([d.labels for d in datasets]), in_train, in_test)


def per_run_train_loss(model: BatchedTransformer, data: StackedData, cfg: Config,
                       logits_fn: BatchedLogitsFn = batched_last_position_logits) -> torch.Tensor:
    """``[K]`` float64: run k's mean loss over its own training pairs. Their sum is the batch's
    objective, so the gradient reaching run k's weights is the one it would get alone."""
    logits = logits_fn(model, data.a, data.b)
    per_example = per_example_loss(cfg, logits.flatten(0, 1), data.labels.flatten()).view_as(data.mask)
    return (per_example * data.mask).sum(1) / data.n_train


@torch.no_grad()
def evaluate_batched(model: BatchedTransformer, data: StackedData, cfg: Config,
                     logits_fn: BatchedLogitsFn = batched_last_position_logits) -> torch.Tensor:
    """``[K, 6]`` float64: for each run, :func:`grokking.train.evaluate`'s figures (train, test and
    all-pair loss; train, test and all-pair accuracy), from one batched pass over every pair."""
    n_runs, n_all = data.all_labels.shape
    chunk = max(1, EVAL_CHUNK // n_runs)
    losses, hits = [], []
    for start in range(0, n_all, chunk):
        labels = data.all_labels[:, start : start + chunk]
        logits = logits_fn(model, data.all_a[start : start + chunk], data.all_b[start : start + chunk])
        losses.append(per_example_loss(cfg, logits.flatten(0, 1), labels.flatten()).view_as(labels))
        hits.append((logits.argmax(-1) == labels).to(torch.float64))
    loss, hit = torch.cat(losses, 1), torch.cat(hits, 1)

    def mean_over(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        # torch.where, not a product: an infinite test loss must not turn the train mean into NaN.
        return torch.where(where, x, 0.0).sum(1) / where.sum(1)

    return torch.stack([mean_over(loss, data.in_train), mean_over(loss, data.in_test), loss.mean(1),
                        mean_over(hit, data.in_train), mean_over(hit, data.in_test), hit.mean(1)], 1)


FIGURE_KEYS = ("train_loss", "test_loss", "all_loss", "train_acc", "test_acc", "all_acc")  # evaluate()'s order


# --- flat parameters and the stacked optimiser ---------------------------------------------------------
class FlatParameters:
    """The parameters of a batched model as views into one ``[K, P]`` tensor (``data``), and
    their gradients as views into another (``grad``), so that per-run operations (optimiser,
    clipping, norms) are single whole-batch operations with ``[K, 1]`` hyperparameters.

    Backward accumulates into the existing ``.grad`` views in place, so ``grad`` is filled
    by ``loss.backward()`` after ``grad.zero_()``; never ``zero_grad(set_to_none=True)``.
    """

    def __init__(self, params: Sequence[nn.Parameter]):
        params = list(params)
        n_runs = params[0].shape[0]
        self.shapes = [tuple(p.shape[1:]) for p in params]
        self.sizes = [math.prod(s) for s in self.shapes]
        with torch.no_grad():
            self.data = torch.cat([p.detach().reshape(n_runs, -1) for p in params], 1)
        self.grad = torch.zeros_like(self.data)
        for p, value, grad in zip(params, self.unflatten(self.data), self.unflatten(self.grad)):
            p.data = value
            p.grad = grad

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat [..., P]`` shaped as the parameters: ``[..., *shape]`` each."""
        lead = flat.shape[:-1]
        return [chunk.view(*lead, *shape) for chunk, shape in zip(flat.split(self.sizes, -1), self.shapes)]


@torch.no_grad()
def orthogonalize_stacked(flat: FlatParameters) -> None:
    """⊥Grad (methods.orthogonalize_gradients) of every run's every parameter, in place."""
    for w, g in zip(flat.data.split(flat.sizes, 1), flat.grad.split(flat.sizes, 1)):
        g.copy_(orthogonalized(w, g))


def _column(values: Sequence[float], device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(list(values), dtype=dtype, device=device).unsqueeze(1)  # [K, 1]


class StackedGradFilter:
    """Grokfast (methods.GradFilter) on a ``[K, P]`` gradient, with per-run alpha and lambda."""

    def __init__(self, cfgs: Sequence[Config], device: torch.device):
        self.kind, self.window = cfgs[0].grokfast, cfgs[0].grokfast_window
        self.alpha = _column([c.grokfast_alpha for c in cfgs], device, torch.float32)
        self.lamb = _column([c.grokfast_lamb for c in cfgs], device, torch.float32)
        self.buffer: torch.Tensor | None = None  # EMA: [K, P]; MA: [window, K, P] ring
        self.count = 0  # gradients seen (the MA ring position and fill), as GradFilter.count

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @torch.no_grad()
    def apply(self, grad: torch.Tensor) -> None:
        if self.kind == "ema":
            if self.buffer is None:
                self.buffer = grad.clone()
            else:
                self.buffer.mul_(self.alpha).add_(grad * (1 - self.alpha))
            grad.add_(self.buffer * self.lamb)
        elif self.kind == "ma":
            if self.buffer is None:
                self.buffer = grad.new_zeros((self.window, *grad.shape))
            self.buffer[self.count % self.window].copy_(grad)
            self.count += 1
            if self.count >= self.window:
                grad.add_(self.buffer.mean(0) * self.lamb)

    def select(self, slots: torch.Tensor, cfgs: Sequence[Config]) -> None:
        device = self.alpha.device
        self.alpha = _column([c.grokfast_alpha for c in cfgs], device, torch.float32)
        self.lamb = _column([c.grokfast_lamb for c in cfgs], device, torch.float32)
        if self.buffer is not None:
            self.buffer = self.buffer[slots] if self.kind == "ema" else self.buffer[:, slots]

    def run_buffers(self, slot: int, flat: FlatParameters) -> list[torch.Tensor]:
        """Run ``slot``'s filter state in methods.GradFilter's layout (one tensor per parameter)."""
        if self.buffer is None:
            return []
        row = self.buffer[slot] if self.kind == "ema" else self.buffer[:, slot]
        return [t.clone() for t in flat.unflatten(row)]


class StackedAdamW:
    """AdamW (``decoupled=True``) or Adam with L2 weight decay, as torch.optim's, for K runs at
    once on a ``[K, P]`` parameter tensor, with per-run lr, weight decay, betas, eps,
    warm-up and gradient clipping (each run's own global norm, as ``clip_grad_norm_``).

    All runs of a batch take their steps together, so one step counter serves all; the
    per-run scalars are ``[K, 1]`` device tensors and the step is a Python int, so a step
    needs no host synchronisation.
    """

    def __init__(self, flat: FlatParameters, cfgs: Sequence[Config]):
        self.flat = flat
        self.decoupled = cfgs[0].optimizer != "adam"  # adamw, and the AdamW of orthoadamw and muon
        self.exp_avg = torch.zeros_like(flat.data)
        self.exp_avg_sq = torch.zeros_like(flat.data)
        self.steps = 0  # optimiser steps taken by every run of the batch
        self._set_hyperparameters(cfgs)

    def _set_hyperparameters(self, cfgs: Sequence[Config]) -> None:
        device = self.flat.data.device
        # lr * warm-up factor per (step, run), tabulated from methods.warmup_factor up to the
        # longest warm-up; later steps use the last row (the factor is 1 from there on).
        longest = max(c.warmup_steps for c in cfgs)
        self.lr_by_step = torch.tensor([[c.lr * warmup_factor(c, s) for c in cfgs] for s in range(longest + 1)],
                                       dtype=torch.float64, device=device)
        self.weight_decay = _column([c.weight_decay for c in cfgs], device)
        self.beta1 = _column([c.beta1 for c in cfgs], device)
        self.beta2 = _column([c.beta2 for c in cfgs], device)
        self.eps = _column([c.eps for c in cfgs], device, torch.float32)
        self.max_norm = _column([c.grad_clip for c in cfgs], device, torch.float32)
        self.clipping = any(c.grad_clip > 0 for c in cfgs)

    def select(self, slots: torch.Tensor, flat: FlatParameters, cfgs: Sequence[Config]) -> None:
        """Keep only the given runs (after the batch dropped the others); ``flat`` is the new storage."""
        self.flat = flat
        self.exp_avg, self.exp_avg_sq = self.exp_avg[slots], self.exp_avg_sq[slots]
        self._set_hyperparameters(cfgs)

    @torch.no_grad()
    def clip(self) -> None:
        if not self.clipping:
            return
        grad = self.flat.grad
        norm = grad.norm(dim=1, keepdim=True)
        coef = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s formula
        grad.mul_(torch.where(self.max_norm > 0, coef, torch.ones_like(coef)))

    @torch.no_grad()
    def step(self) -> None:
        """One update of every run, from ``flat.grad``; lr is the warm-up's for step ``steps``."""
        param, grad = self.flat.data, self.flat.grad
        lr = self.lr_by_step[min(self.steps, len(self.lr_by_step) - 1)].unsqueeze(1)  # [K, 1] float64
        t = self.steps + 1  # Adam's step count after this update (bias corrections)
        if self.decoupled:
            param.mul_((1 - lr * self.weight_decay).float())
        else:
            grad = grad.add(param * self.weight_decay.float())
        self.exp_avg.lerp_(grad, (1 - self.beta1).float())
        self.exp_avg_sq.mul_(self.beta2.float()).add_(grad.square().mul_((1 - self.beta2).float()))
        bias_correction2_sqrt = (1 - self.beta2**t).sqrt().float()
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        step_size = (lr / (1 - self.beta1**t)).float()
        param.addcmul_(self.exp_avg / denom, -step_size)
        self.steps += 1

    def run_state(self, slot: int) -> list[dict[str, torch.Tensor]]:
        """Run ``slot``'s Adam state per parameter, in torch.optim.AdamW's layout (empty before step 1)."""
        if self.steps == 0:
            return []
        step = torch.tensor(float(self.steps), dtype=torch.float32)
        return [{"step": step.clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
                for m, v in zip(self.flat.unflatten(self.exp_avg[slot]), self.flat.unflatten(self.exp_avg_sq[slot]))]


class StackedMuonAdamW(StackedAdamW):
    """methods.MuonAdamW for K runs: Muon (per-run muon_lr, momentum, weight decay and warm-up)
    on the hidden matrices, whose Newton–Schulz iterations run as one batched matrix product
    per parameter, and the stacked AdamW on the rest. ``muon[i]`` says whether parameter i
    (in the flat order) is a hidden matrix."""

    def __init__(self, flat: FlatParameters, cfgs: Sequence[Config], muon: Sequence[bool]):
        self.muon = list(muon)
        super().__init__(flat, cfgs)
        self.momentum_buffer = [torch.zeros_like(g) if m else None for g, m in zip(flat.unflatten(flat.grad), muon)]

    def _set_hyperparameters(self, cfgs: Sequence[Config]) -> None:
        super()._set_hyperparameters(cfgs)
        device = self.flat.data.device
        longest = max(c.warmup_steps for c in cfgs)
        self.muon_lr_by_step = torch.tensor([[c.muon_lr * warmup_factor(c, s) for c in cfgs]
                                             for s in range(longest + 1)], dtype=torch.float64, device=device)
        self.momentum = _column([c.momentum for c in cfgs], device, torch.float32)

    def select(self, slots: torch.Tensor, flat: FlatParameters, cfgs: Sequence[Config]) -> None:
        super().select(slots, flat, cfgs)
        self.momentum_buffer = [None if b is None else b[slots] for b in self.momentum_buffer]

    @torch.no_grad()
    def step(self) -> None:
        muon_params = [(i, p) for i, p in enumerate(self.flat.unflatten(self.flat.data)) if self.muon[i]]
        before = [p.clone() for _, p in muon_params]
        lr = self.muon_lr_by_step[min(self.steps, len(self.muon_lr_by_step) - 1)].unsqueeze(1)  # [K, 1]
        super().step()  # AdamW on every column; the Muon parameters are then set from their old values
        grads = self.flat.unflatten(self.flat.grad)
        for (i, p), old in zip(muon_params, before):
            shape = self.flat.shapes[i]
            per_run = (-1, *([1] * len(shape)))
            momentum, buf = self.momentum.view(per_run), self.momentum_buffer[i]
            buf.mul_(momentum).add_(grads[i])
            update = muon_update(grads[i] + momentum * buf, shape)  # Nesterov
            p.copy_(old * (1 - lr * self.weight_decay).float().view(per_run) - update * lr.float().view(per_run))

    def run_state(self, slot: int) -> list[dict[str, torch.Tensor]]:
        """Run ``slot``'s state in methods.MuonAdamW's layout: momentum for the hidden matrices."""
        adam = super().run_state(slot)
        if not adam:
            return []
        return [{"momentum_buffer": self.momentum_buffer[i][slot].clone()} if m else state
                for i, (m, state) in enumerate(zip(self.muon, adam))]


def stacked_optimizer(model: BatchedTransformer, flat: FlatParameters, cfgs: Sequence[Config]) -> StackedAdamW:
    if cfgs[0].optimizer == "muon":
        muon = [is_hidden_matrix(name, p[0]) for name, p in model.named_parameters()]
        return StackedMuonAdamW(flat, cfgs, muon)
    return StackedAdamW(flat, cfgs)


# --- the two strategies ------------------------------------------------------------------------------
@dataclass
class _Run:
    """One run of the batch: its config, its run directory, and a single-run Trainer that
    holds its dataset, initial weights and checkpoint format (the loop strategy trains it)."""

    index: int
    cfg: Config
    out: Path | None
    trainer: Trainer
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics_file: IO[str] | None = None
    stop_reason: str | None = None
    status: str | None = None  # set when the run has finished
    error: str | None = None
    summary: dict[str, Any] | None = None


class StackedEngine:
    """All active runs as one BatchedTransformer; a finished run is dropped from the batch."""

    name = "stacked"

    def __init__(self, runs: Sequence[_Run]):
        self.runs = {r.index: r for r in runs}
        self.active = [r.index for r in runs]
        cfg = runs[0].cfg
        self.cfg = cfg
        self.logits_fn = batched_last_position_logits if cfg.fast else batched_hooked_last_position_logits
        self.model = BatchedTransformer.from_models([r.trainer.model for r in runs])
        self.model.train()
        # Flat storage and saved optimiser state rely on the seed's parameter order.
        assert [n for n, _ in self.model.named_parameters()] == [n for n, _ in runs[0].trainer.model.named_parameters()]
        self.flat = FlatParameters(list(self.model.parameters()))
        self.optimizer = stacked_optimizer(self.model, self.flat, [r.cfg for r in runs])
        self.grad_filter = StackedGradFilter([r.cfg for r in runs], self.flat.data.device)
        self.data = StackedData.from_datasets([r.trainer.dataset for r in runs])

    def step_count(self, index: int) -> int:
        return self.optimizer.steps

    def train_epoch(self) -> None:
        self.flat.grad.zero_()
        with warnings.catch_warnings():
            # The .grad views are strided (one row per run of the flat tensor); autograd says so.
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            per_run_train_loss(self.model, self.data, self.cfg, self.logits_fn).sum().backward()
        if self.grad_filter.active:
            self.grad_filter.apply(self.flat.grad)
        if self.cfg.optimizer == "orthoadamw":
            orthogonalize_stacked(self.flat)
        self.optimizer.clip()
        self.optimizer.step()

    def evaluate(self) -> dict[int, tuple[dict[str, float], float]]:
        self.model.eval()
        figures = evaluate_batched(self.model, self.data, self.cfg, self.logits_fn)
        self.model.train()
        norms = self.flat.data.norm(dim=1).to(torch.float64)
        rows = torch.cat([figures, norms.unsqueeze(1)], 1).tolist()  # the one host sync of an evaluation
        return {index: (dict(zip(FIGURE_KEYS, row[:6])), row[6]) for index, row in zip(self.active, rows)}

    def sync_trainer(self, index: int) -> None:
        """Put run ``index``'s current weights and optimiser state into its single-run Trainer."""
        slot = self.active.index(index)
        trainer = self.runs[index].trainer
        trainer.model.load_state_dict(self.model.run_state_dict(slot), strict=True)
        trainer.optimizer.state.clear()
        for p, state in zip(trainer.params, self.optimizer.run_state(slot)):
            group = trainer.optimizer.param_groups[0]
            if group.get("fused") or group.get("capturable"):
                state["step"] = state["step"].to(p.device)
            trainer.optimizer.state[p] = state
        trainer.step_count = self.optimizer.steps
        set_learning_rate(trainer.optimizer, warmup_factor(trainer.cfg, trainer.step_count))
        trainer.grad_filter.buffers = self.grad_filter.run_buffers(slot, self.flat)
        trainer.grad_filter.count = self.grad_filter.count

    def drop(self, indices: Sequence[int]) -> None:
        if not indices:
            return
        keep = [slot for slot, index in enumerate(self.active) if index not in indices]
        self.active = [self.active[slot] for slot in keep]
        if not keep:
            return
        slots = torch.tensor(keep, device=self.flat.data.device)
        cfgs = [self.runs[i].cfg for i in self.active]
        self.model = self.model.select(keep)
        self.model.train()
        self.flat = FlatParameters(list(self.model.parameters()))
        self.optimizer.select(slots, self.flat, cfgs)
        self.grad_filter.select(slots, cfgs)
        self.data = StackedData.from_datasets([self.runs[i].trainer.dataset for i in self.active])


class LoopEngine:
    """One ordinary Trainer step per active run per epoch (bit-identical to separate runs)."""

    name = "loop"

    def __init__(self, runs: Sequence[_Run]):
        self.runs = {r.index: r for r in runs}
        self.active = [r.index for r in runs]

    def step_count(self, index: int) -> int:
        return self.runs[index].trainer.step_count

    def train_epoch(self) -> None:
        for index in self.active:
            self.runs[index].trainer._train_epoch()

    def evaluate(self) -> dict[int, tuple[dict[str, float], float]]:
        results = {}
        for index in self.active:
            t = self.runs[index].trainer
            t.model.eval()
            figures = evaluate(t.model, t.dataset, t.logits_fn, t.cfg)
            t.model.train()
            results[index] = (figures, weight_norm(t.model).item())
        return results

    def sync_trainer(self, index: int) -> None:
        pass  # the Trainer is the run's state

    def drop(self, indices: Sequence[int]) -> None:
        self.active = [i for i in self.active if i not in indices]


def choose_strategy(strategy: str, device: torch.device) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError("strategy", f"must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy != "auto":
        return strategy
    return "stacked" if device.type == "cuda" else CPU_STRATEGY


# --- the driver ----------------------------------------------------------------------------------------
class BatchedTrainer:
    """Train K runs as one batch, writing one ordinary run directory per run.

    The epoch loop is Trainer.run's, per run: evaluate every ``eval_every`` epochs and at
    the end, snapshot at ``snapshot_epochs``, stop at the budget or a stop condition. A run
    that finishes (or fails with a non-finite loss) is finalised at that epoch and dropped
    from the batch; the others go on.
    """

    def __init__(self, cfgs: Sequence[Config], outs: Sequence[str | Path] | None = None, *,
                 strategy: str = "auto", progress: bool = True,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)):
        cfgs = list(cfgs)
        check_batch(cfgs)
        if outs is not None:
            outs = [Path(o) for o in outs]
            if len(outs) != len(cfgs):
                raise ConfigError("outs", f"one run directory per config: {len(outs)} for {len(cfgs)} configs")
            if len({o.resolve() for o in outs}) != len(outs):
                raise ConfigError("outs", "two runs of the batch share a run directory")
        self.device = resolve_device(cfgs[0].device)
        self.strategy = choose_strategy(strategy, self.device)
        self.progress, self.log = progress, log
        self.runs = [_Run(k, cfg, outs[k] if outs else None, Trainer(cfg, outs[k] if outs else None, progress=False))
                     for k, cfg in enumerate(cfgs)]
        self.epoch = 0

    @property
    def training_path(self) -> str:
        return "fast" if self.runs[0].cfg.fast else "hooked"

    def _done(self, run: _Run, engine: StackedEngine | LoopEngine) -> bool:
        cfg = run.cfg
        return self.epoch >= cfg.epochs or bool(cfg.max_steps and engine.step_count(run.index) >= cfg.max_steps)

    def _batch_info(self, run: _Run) -> dict[str, Any]:
        return {"strategy": self.strategy, "n_runs": len(self.runs), "index": run.index}

    def _open_run_dir(self, run: _Run, overwrite: bool) -> None:
        prepare_run_dir(run.out, overwrite)
        atomic_write_json(run.out / "config.json", {  # Trainer.run's config.json, plus the batch
            "config": run.cfg.to_dict(), "config_key": run.cfg.key(), "grokking_version": __version__,
            "torch": torch.__version__, "device": str(self.device), "training_path": self.training_path,
            "fast_path_fallback_reason": None if run.cfg.fast else "disabled by fast=false", "argv": sys.argv,
            "batched": self._batch_info(run),
        })
        run.metrics_file = open(run.out / "metrics.jsonl", "a")

    def _save(self, run: _Run, engine: StackedEngine | LoopEngine, elapsed: float, snapshot: bool = True) -> bool:
        """Write run's snapshot and last.safetensors; False (and nothing written) if its weights
        are not finite: a fault between evaluations must not overwrite the last good checkpoint."""
        engine.sync_trainer(run.index)
        trainer = run.trainer
        trainer.epoch, trainer.seconds_before = self.epoch, elapsed
        if not math.isfinite(weight_norm(trainer.model).item()):
            run.error = (f"non-finite weights at epoch {self.epoch} (step {engine.step_count(run.index)}); "
                         "the last good checkpoint is kept")
            return False
        if snapshot:
            trainer.save_snapshot()
        trainer.save_last()
        return True

    def _finish(self, run: _Run, status: str, engine: StackedEngine | LoopEngine, elapsed: float) -> None:
        run.status = status
        if run.metrics_file is not None:
            run.metrics_file.close()
            run.metrics_file = None
        extra = {"stop_reason": run.stop_reason, "error": run.error, "device": str(self.device),
                 "training_path": self.training_path, "batched": self._batch_info(run)}
        run.summary = summarize(run.records, run.cfg, status, elapsed, self.epoch, engine.step_count(run.index), extra)
        if run.out is None:
            return
        atomic_write_json(run.out / "summary.json", run.summary)
        if status in ("completed", "stopped_early"):  # as Trainer.run: no figures for a failed run
            from .plots import plot_run

            plot_run(run.out)
            if run.cfg.report:
                run.trainer._write_report()

    def _record(self, run: _Run, figures: dict[str, float], norm: float, step: int, elapsed: float) -> dict[str, Any]:
        # Trainer._evaluate's record
        return {"epoch": self.epoch, "step": step, **figures, "weight_norm": norm,
                "lr": run.cfg.lr * warmup_factor(run.cfg, step), "seconds": round(elapsed, 3)}

    def run(self, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train every run to its budget or stop condition; return the summaries, in input order."""
        engine: StackedEngine | LoopEngine = (StackedEngine if self.strategy == "stacked" else LoopEngine)(self.runs)
        for run in self.runs:
            if run.out is not None:
                self._open_run_dir(run, overwrite)
        bar = self._progress_bar()
        t0 = time.perf_counter()
        try:
            with _signals_to_flag() as flag:
                while engine.active:
                    self._epoch(engine, time.perf_counter() - t0, bar)
                    if not engine.active:
                        break
                    if flag["signum"]:
                        elapsed = time.perf_counter() - t0
                        for index in list(engine.active):
                            run = self.runs[index]
                            saved = run.out is None or self._save(run, engine, elapsed, snapshot=False)
                            self._finish(run, "interrupted" if saved else "failed", engine, elapsed)
                        outs = " ".join(str(self.runs[i].out) for i in engine.active)
                        raise TrainingInterrupted(f"interrupted at epoch {self.epoch}; continue a run alone with: "
                                                  f"grokking train --resume RUN (one of: {outs})", flag["signum"])
                    engine.train_epoch()
                    self.epoch += 1
        except KeyboardInterrupt:  # no signal handler here (not the main thread): as Trainer.run
            for run in self.runs:
                if run.status is None:
                    self._finish(run, "interrupted", engine, time.perf_counter() - t0)
            raise
        finally:
            if bar is not None:
                bar.close()
            for run in self.runs:  # an unexpected error: close what is open, say so (as Trainer.run)
                if run.status is None:
                    self._finish(run, "crashed", engine, time.perf_counter() - t0)
        return [run.summary for run in self.runs]

    def _epoch(self, engine: StackedEngine | LoopEngine, elapsed: float, bar) -> None:
        """Trainer.run's per-epoch bookkeeping, for every active run."""
        live = [self.runs[i] for i in engine.active]
        due = [r for r in live if self.epoch % r.cfg.eval_every == 0 or self._done(r, engine)]
        finished: list[tuple[_Run, str]] = []
        if due:
            results = engine.evaluate()
            for run in due:
                figures, norm = results[run.index]
                record = self._record(run, figures, norm, engine.step_count(run.index), elapsed)
                if not (math.isfinite(figures["train_loss"]) and math.isfinite(norm)):
                    what = "loss" if not math.isfinite(figures["train_loss"]) else "weights"
                    run.error = (f"non-finite {what} at epoch {self.epoch} (step {record['step']}); "
                                 "the last good checkpoint is kept")
                    self.log(f"run {run.index} ({run.out}): {run.error}")
                    finished.append((run, "failed"))
                    continue
                run.records.append(record)
                if run.metrics_file is not None:
                    run.metrics_file.write(json.dumps(record) + "\n")
                    run.metrics_file.flush()
                run.stop_reason = run.trainer._stop_reason(record)
            self._update_bar(bar, engine)
        for run in live:
            if any(r is run for r, _ in finished):
                continue
            done = self._done(run, engine)
            if run.out is not None and (self.epoch in run.trainer.snapshot_at or done or run.stop_reason):
                if not self._save(run, engine, elapsed):
                    self.log(f"run {run.index} ({run.out}): {run.error}")
                    finished.append((run, "failed"))
                    continue
            if done or run.stop_reason:
                finished.append((run, "stopped_early" if run.stop_reason and not done else "completed"))
        for run, status in finished:
            self._finish(run, status, engine, elapsed)
        engine.drop([run.index for run, _ in finished])

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=max(r.cfg.epochs for r in self.runs), unit="epoch", dynamic_ncols=True, mininterval=0.5,
                    file=sys.stderr)

    def _update_bar(self, bar, engine: StackedEngine | LoopEngine) -> None:
        if bar is None:
            return
        bar.update(self.epoch - bar.n)
        last = [r.records[-1] for r in self.runs if r.records]
        best = max((rec["test_acc"] for rec in last), default=0.0)
        bar.set_postfix_str(f"{len(engine.active)}/{len(self.runs)} runs training, best test acc {best:.3f}",
                            refresh=False)


def train_batched(cfgs: Sequence[Config], outs: Sequence[str | Path] | None, progress: bool = True, *,
                  strategy: str = "auto", overwrite: bool = False) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` as one batch; run k's directory is ``outs[k]`` (nothing is
    written when ``outs`` is None). Returns the runs' summaries (summary.json), in order."""
    return BatchedTrainer(cfgs, outs, strategy=strategy, progress=progress).run(overwrite=overwrite)


# --- benchmark -------------------------------------------------------------------------------------------
def benchmark_batched(k: int = 8, epochs: int = 20, repeats: int = 3, base: Config | None = None,
                      strategies: Sequence[str] = ("sequential", "stacked", "loop")) -> dict[str, float]:
    """Milliseconds per run-epoch (median over ``repeats``) to train ``k`` seeds of ``base``
    (default: the canonical run, on CPU) for ``epochs`` epochs, evaluations included, no files:
    ``sequential`` = k separate ``train()`` calls, ``stacked``/``loop`` = one batched call.
    The strategies alternate within each repetition (in a rotating order), so slow phases of
    a shared machine fall on all of them."""
    base = base or Config(device="cpu")
    cfgs = [base.replace(seed=s, epochs=epochs, checkpoint_log=0, report=False) for s in range(k)]
    from .train import train

    def once(strategy: str) -> float:
        start = time.perf_counter()
        if strategy == "sequential":
            for cfg in cfgs:
                train(cfg, None, progress=False)
        else:
            train_batched(cfgs, None, progress=False, strategy=strategy)
        return (time.perf_counter() - start) * 1000 / (k * epochs)

    times: dict[str, list[float]] = {s: [] for s in strategies}
    for rep in range(repeats):
        order = list(strategies[rep % len(strategies):]) + list(strategies[: rep % len(strategies)])
        for strategy in order:
            times[strategy].append(once(strategy))
    return {s: statistics.median(t) for s, t in times.items()}


# --- command line ----------------------------------------------------------------------------------------
def parse_grid(entries: Sequence[str]) -> list[dict[str, str]]:
    """``["seed=0,1", "lr=1e-3,3e-3"]`` -> the cartesian product as override dicts (in order)."""
    from .sweep import parse_grid_flags

    axes = parse_grid_flags(entries)
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def grid_run_name(overrides: dict[str, str]) -> str:
    return "_".join(f"{k}={v}" for k, v in overrides.items()) or "run"


def cmd_batch(args: argparse.Namespace) -> int:
    from .cli import UsageError, config_from_args

    base = config_from_args(args)
    grid = parse_grid(args.grid or [])
    cfgs = [base.replace(**overrides) for overrides in grid]
    out = Path(args.out)
    outs = [out / "runs" / grid_run_name(o) for o in grid]
    check_batch(cfgs)
    resolve_device(base.device)  # refuse an unavailable device before touching the disk
    for run_dir in outs:  # refuse before writing anything
        if run_dir.exists() and not run_dir.is_dir():
            raise UsageError(f"out: {run_dir} exists and is not a directory")
        if run_dir.exists() and any(run_dir.iterdir()) and not args.overwrite:
            prepare_run_dir(run_dir, overwrite=False)  # raises the one-line refusal
    trainer = BatchedTrainer(cfgs, outs, strategy=args.strategy, progress=not args.quiet)
    summaries = trainer.run(overwrite=args.overwrite)
    manifest = {"strategy": trainer.strategy, "device": str(trainer.device), "grid": args.grid or [],
                "runs": [{"out": str(o), "overrides": g, **s} for o, g, s in zip(outs, grid, summaries)]}
    atomic_write_json(out / "batch.json", manifest)
    print(json.dumps(manifest, indent=2))
    return 1 if any(s["status"] == "failed" for s in summaries) else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """``grokking batch``: train a grid of runs of one shape as one batch."""
    from .cli import add_config_flags

    p = subparsers.add_parser(
        "batch", help="train a grid of runs (seeds, lr, wd, frac ...) as one batched model",
        description="Train every combination of the --grid values as one batch; each run gets an ordinary "
                    "run directory DIR/runs/FIELD=VALUE_... (resumable alone with grokking train --resume). "
                    "Other flags fix a field for every run.")
    p.add_argument("--out", required=True, help="batch directory: runs go to OUT/runs/, the manifest to OUT/batch.json")
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a config field and its values; repeat for a cartesian product")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help=f"stacked: one batched model; loop: one ordinary step per run; auto: stacked on cuda, "
                        f"{CPU_STRATEGY} on cpu (measured faster there)")
    p.add_argument("--config", help="TOML or JSON file of config fields")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see grokking train --help)")
    p.add_argument("--overwrite", action="store_true", help="replace non-empty run directories")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_batch)
