"""The seed's decoder-only transformer, with HookPoints, in one file: one run, or K runs stacked.

Parameter names and shapes are the seed notebook's (``embed.W_E`` is ``[d_model, d_vocab]``,
``blocks.0.attn.W_K`` is ``[n_heads, d_head, d_model]``, ``unembed.W_U`` is
``[d_model, d_vocab]``, the attention ``mask`` buffer ...), so a seed ``state_dict`` loads
strictly. Initialisation draws the same random numbers in the same order as the seed, so
``Transformer(cfg, seed=s)`` starts from the same weights as the seed's code after
``torch.manual_seed(s)``.

:class:`StackedTransformer` is K such models of one shape as one module: every weight has a
leading run dimension (``embed.W_E [K, d_model, d_vocab]``), inputs are ``[K, B, 3]`` (or
``[B, 3]`` for all runs) and every activation carries the leading ``K``. The components are
the same classes: each is written once, and a stacked weight's run dimension is lined up
with the activations by :func:`_align`.

Hook names follow TransformerLens (``hook_embed``, ``blocks.0.attn.hook_z``,
``blocks.0.mlp.hook_post``, ...) and also keep the seed's aliases ``attn.hook_attn_pre``
(= ``hook_attn_scores``) and ``attn.hook_attn`` (= ``hook_pattern``). As in
TransformerLens, ``hook_q/k/v/z`` are ``[batch, pos, head, d_head]`` and attention
patterns are ``[batch, head, query_pos, key_pos]``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config, ConfigError
from .hooks import HookedRootModule, HookFn, HookPoint, NamedHooks  # noqa: F401 - HookPoint is public here too


class _Init:
    """Creates the weights: drawn from the seed's generator for one run, or left empty (on the
    meta device, filled by ``load_state_dict(assign=True)``) with a leading run dimension.

    ``init_scale`` (Omnigrok's alpha) multiplies every initial weight, LayerNorm gains included;
    at 1.0 no multiplication happens, so the weights are the seed's bit for bit."""

    def __init__(self, generator: torch.Generator | None, n_runs: int | None, init_scale: float = 1.0):
        self.generator, self.n_runs, self.init_scale = generator, n_runs, init_scale

    def _scaled(self, t: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(t if self.init_scale == 1.0 else t * self.init_scale)

    def randn(self, *shape: int, scale: float) -> nn.Parameter:
        if self.n_runs is not None:
            return nn.Parameter(torch.empty(self.n_runs, *shape, device="meta"))
        return self._scaled(torch.randn(*shape, generator=self.generator) / scale)

    def const(self, value: float, *shape: int) -> nn.Parameter:
        if self.n_runs is not None:
            return nn.Parameter(torch.empty(self.n_runs, *shape, device="meta"))
        return self._scaled(torch.full(shape, value))


def _align(t: torch.Tensor, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    """``t`` viewed to broadcast against activations ``x``: a stacked weight ``[K, *w]`` becomes
    ``[K, 1, ..., 1, *w]`` so that its run dimension meets the activations' (``[K, B, ...]``)."""
    if not stacked:
        return t
    return t.view(t.shape[0], *([1] * (x.dim() - t.dim())), *t.shape[1:])


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int, init: _Init):
        super().__init__()
        self.stacked = init.n_runs is not None
        self.W_E = init.randn(d_model, d_vocab, scale=math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return F.embedding(tokens, self.W_E.T)
        runs = torch.arange(self.W_E.shape[0], device=tokens.device).view(-1, *([1] * (tokens.dim() - 1)))
        return self.W_E.transpose(1, 2)[runs, tokens]


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int, init: _Init):
        super().__init__()
        self.stacked = init.n_runs is not None
        self.W_pos = init.randn(n_ctx, d_model, scale=math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [n, d] or [K, 1, n, d]: the same for every example
        pos = self.W_pos[..., : tokens.shape[-1], :]
        return pos.unsqueeze(1) if self.stacked else pos


class Unembed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int, init: _Init):
        super().__init__()
        self.stacked = init.n_runs is not None
        self.W_U = init.randn(d_model, d_vocab, scale=math.sqrt(d_vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ _align(self.W_U, x, self.stacked)


class LayerNorm(nn.Module):
    """Standard LayerNorm (biased variance, eps 1e-5), as TransformerLens's ``LN``."""

    def __init__(self, d_model: int, init: _Init, eps: float = 1e-5):
        super().__init__()
        self.stacked = init.n_runs is not None
        self.w = init.const(1.0, d_model)
        self.b = init.const(0.0, d_model)
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * _align(self.w, x, self.stacked) + _align(self.b, x, self.stacked)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, init: _Init):
        super().__init__()
        self.stacked = init.n_runs is not None
        scale = math.sqrt(d_model)
        self.W_K = init.randn(n_heads, d_head, d_model, scale=scale)
        self.W_Q = init.randn(n_heads, d_head, d_model, scale=scale)
        self.W_V = init.randn(n_heads, d_head, d_model, scale=scale)
        self.W_O = init.randn(d_model, d_head * n_heads, scale=scale)
        self.register_buffer("mask", torch.tril(torch.ones((n_ctx, n_ctx))))  # shared by stacked runs
        self.d_head = d_head
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_attn_pre = HookPoint()  # the seed's name for the scaled, masked scores
        self.hook_pattern = HookPoint()
        self.hook_attn = HookPoint()  # the seed's name for the pattern
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """The attention output at every position, or with ``queries = m`` at the last m only (keys
        and values still from every position: the same numbers for those rows, less work)."""
        def heads(inputs: torch.Tensor, W: torch.Tensor) -> torch.Tensor:  # [..., pos, head, d_head]
            return torch.einsum("...pd,...ihd->...pih", inputs, W.unsqueeze(1) if self.stacked else W)

        n = x.shape[-2]
        first = 0 if queries is None else n - queries
        q = self.hook_q(heads(x[..., first:, :], self.W_Q))
        k, v = self.hook_k(heads(x, self.W_K)), self.hook_v(heads(x, self.W_V))
        scores = torch.einsum("...qih,...kih->...iqk", q, k) / math.sqrt(self.d_head)
        scores = scores.masked_fill(self.mask[first:n, :n] == 0, float("-inf"))
        scores = self.hook_attn_pre(self.hook_attn_scores(scores))
        pattern = self.hook_attn(self.hook_pattern(F.softmax(scores, dim=-1)))
        z = self.hook_z(torch.einsum("...iqk,...kih->...qih", pattern, v)).flatten(-2)
        return z @ _align(self.W_O, z, self.stacked).mT


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act: str, init: _Init):
        super().__init__()
        self.stacked = init.n_runs is not None
        self.W_in = init.randn(d_mlp, d_model, scale=math.sqrt(d_model))
        self.b_in = init.const(0.0, d_mlp)
        self.W_out = init.randn(d_model, d_mlp, scale=math.sqrt(d_model))
        self.b_out = init.const(0.0, d_model)
        self.act = act
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stacked
        pre = self.hook_pre(x @ _align(self.W_in, x, s).mT + _align(self.b_in, x, s))
        post = self.hook_post(activation(pre, self.act))
        return post @ _align(self.W_out, post, s).mT + _align(self.b_out, post, s)


def activation(x: torch.Tensor, act: str) -> torch.Tensor:
    return F.relu(x) if act == "relu" else F.gelu(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: Config, n_ctx: int, init: _Init):
        super().__init__()
        # Registration order = the seed's, so parameters() lines up across the two forms.
        if cfg.layernorm:
            self.ln1 = LayerNorm(cfg.d_model, init)
            self.ln2 = LayerNorm(cfg.d_model, init)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.head_dim, n_ctx, init)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp, cfg.act, init)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """The residual stream after the block at every position, or with ``last = m`` at the last m."""
        x = self.hook_resid_pre(x)
        attn_in = self.ln1(x) if hasattr(self, "ln1") else x
        kept = x if last is None else x[..., x.shape[-2] - last:, :]
        x = self.hook_resid_mid(kept + self.hook_attn_out(self.attn(attn_in, last)))
        mlp_in = self.ln2(x) if hasattr(self, "ln2") else x
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(mlp_in)))


class Transformer(HookedRootModule):
    """The seed's transformer. Inputs are ``[batch, n_ctx]`` tokens (``a b =`` for a binary table,
    ``n_ctx = cfg.n_ctx``); output is ``[batch, n_ctx, d_vocab]`` logits (the task reads the last
    position, or a sequence task's last ``seq_len``)."""

    def __init__(self, cfg: Config, seed: int | None = None, *, n_runs: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_ctx = cfg.n_ctx
        generator = None if n_runs is not None else torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        init = _Init(generator, n_runs, cfg.init_scale)
        d_vocab = cfg.d_vocab
        self.embed = Embed(d_vocab, cfg.d_model, init)
        self.pos_embed = PosEmbed(self.n_ctx, cfg.d_model, init)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, self.n_ctx, init) for _ in range(cfg.n_layers))
        if cfg.layernorm:
            self.ln_final = LayerNorm(cfg.d_model, init)
        self.unembed = Unembed(d_vocab, cfg.d_model, init)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.setup()

    @property
    def eq_token(self) -> int:
        return self.cfg.d_vocab - 1

    def forward(self, tokens: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """``[..., n_ctx, d_vocab]`` logits; with ``last = m``, ``[..., m, d_vocab]`` at the last m
        positions only, the last block computed there alone (what a loss on the answers needs)."""
        x = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for i, block in enumerate(self.blocks):
            x = block(x, last if i == len(self.blocks) - 1 else None)
        if hasattr(self, "ln_final"):
            x = self.ln_final(x)
        return self.unembed(x)


# --- K runs as one module ------------------------------------------------------------------------
#: Fields that fix the shapes of the weights: the runs of a stacked model must share them.
SHAPE_FIELDS = ("op", "p", "n_ctx", "n_layers", "d_model", "n_heads", "head_dim", "d_mlp", "act", "layernorm")


def check_shapes(cfgs: Sequence[Config]) -> None:
    """Raise ConfigError (one line, naming the field) unless the configs can share one stacked model."""
    if not cfgs:
        raise ConfigError("runs", "a batch needs at least one config")
    for name in SHAPE_FIELDS:
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            shown = ", ".join(str(v) for v in dict.fromkeys(values))
            raise ConfigError(name if name != "head_dim" else "d_head",
                              f"all runs of a batch must share the model shape; got {shown}")


def stack_state_dicts(models: Sequence[Transformer]) -> dict[str, torch.Tensor]:
    """Seed state dicts stacked along a new leading run dimension (buffers are shared, not stacked)."""
    states = [m.state_dict() for m in models]
    buffers = {name for name, _ in models[0].named_buffers()}
    return {name: states[0][name].clone() if name in buffers else torch.stack([s[name] for s in states])
            for name in states[0]}


class StackedTransformer(Transformer):
    """K seed transformers of one shape as one module.

    ``StackedTransformer(cfgs)`` starts run ``k`` from ``Transformer(cfgs[k])``'s weights.
    Inputs are ``[K, B, 3]`` tokens (or ``[B, 3]``, the same for every run); outputs are
    ``[K, B, 3, d_vocab]`` logits. Hooks work as on the seed model, with a leading ``K`` on
    every activation (``hook_pos_embed`` is ``[K, 1, 3, d_model]``: the same for every example).
    """

    def __init__(self, cfgs: Sequence[Config], state: dict[str, torch.Tensor] | None = None):
        check_shapes(cfgs)
        super().__init__(cfgs[0], n_runs=len(cfgs))
        self.cfgs = list(cfgs)
        if state is None:
            state = stack_state_dicts([Transformer(c) for c in self.cfgs])
        self.load_state_dict(state, strict=True, assign=True)

    @classmethod
    def from_models(cls, models: Sequence[Transformer]) -> "StackedTransformer":
        """Stack existing models (their current weights, on their device)."""
        return cls([m.cfg for m in models], stack_state_dicts(models))

    @property
    def n_runs(self) -> int:
        return self.embed.W_E.shape[0]

    def run_parameters(self, k: int) -> list[torch.Tensor]:
        """Run ``k``'s parameters, in the seed's order, as views into the stacked ones: leaf
        tensors whose ``.grad`` is a view of the stacked gradient. The package's optimisers and
        gradient filters work on one run's parameter list, so they step run ``k`` through these."""
        views = []
        for p in self.parameters():
            view = p.detach()[k]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            view.grad = p.grad[k]
            views.append(view)
        return views

    def run_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Run ``k``'s weights under the seed's names (a ``Transformer`` loads it strictly)."""
        stacked = dict(self.named_parameters())
        return {name: (t[k] if name in stacked else t).detach().clone() for name, t in self.state_dict().items()}

    def run(self, k: int) -> Transformer:
        """Run ``k`` as an ordinary seed transformer (a copy, on this module's device)."""
        model = Transformer(self.cfgs[k])
        model.load_state_dict(self.run_state_dict(k), strict=True)
        return model.to(self.embed.W_E.device)

    def select(self, runs: Sequence[int]) -> "StackedTransformer":
        """A new stacked model holding copies of the given runs, in that order."""
        index = torch.tensor(list(runs), device=self.embed.W_E.device)
        stacked = dict(self.named_parameters())
        state = {name: (t[index] if name in stacked else t.clone()) for name, t in self.state_dict().items()}
        return StackedTransformer([self.cfgs[k] for k in runs], state)

    def __call__(self, tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if tokens.dim() == 2:  # the same inputs for every run
            tokens = tokens.expand(self.n_runs, *tokens.shape)
        return super().__call__(tokens, *args, **kwargs)
