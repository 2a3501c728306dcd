"""The seed's decoder-only transformer, with HookPoints, in one file.

Parameter names and shapes are the seed notebook's (``embed.W_E`` is ``[d_model, d_vocab]``,
``blocks.0.attn.W_K`` is ``[n_heads, d_head, d_model]``, ``unembed.W_U`` is
``[d_model, d_vocab]``, the attention ``mask`` buffer ...), so a seed ``state_dict`` loads
strictly. Initialisation draws the same random numbers in the same order as the seed, so
``Transformer(cfg, seed=s)`` starts from the same weights as the seed's code after
``torch.manual_seed(s)``.

Hook names follow TransformerLens (``hook_embed``, ``blocks.0.attn.hook_z``,
``blocks.0.mlp.hook_post``, ...) and also keep the seed's aliases ``attn.hook_attn_pre``
(= ``hook_attn_scores``) and ``attn.hook_attn`` (= ``hook_pattern``). As in
TransformerLens, ``hook_q/k/v/z`` are ``[batch, pos, head, d_head]`` and attention
patterns are ``[batch, head, query_pos, key_pos]``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config

# fn(activation, hook) -> replacement activation or None (TransformerLens convention)
HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]
NamedHooks = Sequence[tuple["str | Callable[[str], bool]", HookFn]]


class HookPoint(nn.Module):
    """Identity module that forward and backward hooks attach to, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add_hook(self, fn: HookFn, dir: str = "fwd") -> torch.utils.hooks.RemovableHandle:
        if dir == "fwd":
            def forward_hook(module, inputs, output):
                return fn(output, self)
            handle = self.register_forward_hook(forward_hook)
        elif dir == "bwd":
            def backward_hook(module, grad_input, grad_output):
                replaced = fn(grad_output[0], self)
                return None if replaced is None else (replaced,)
            handle = self.register_full_backward_hook(backward_hook)
        else:
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        self._handles.append(handle)
        return handle

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def has_hooks(self) -> bool:
        return bool(self._forward_hooks or self._backward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int, generator: torch.Generator):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab, generator=generator) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.W_E.T)


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int, generator: torch.Generator):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model, generator=generator) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_pos[: tokens.shape[-1]]


class Unembed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int, generator: torch.Generator):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab, generator=generator) / math.sqrt(d_vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_U


class LayerNorm(nn.Module):
    """Standard LayerNorm (biased variance, eps 1e-5), as TransformerLens's ``LN``."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int, generator: torch.Generator):
        super().__init__()
        g = generator
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) / math.sqrt(d_model))
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) / math.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model, generator=g) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * n_heads, generator=g) / math.sqrt(d_model))
        self.register_buffer("mask", torch.tril(torch.ones((n_ctx, n_ctx))))
        self.d_head = d_head
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_attn_pre = HookPoint()  # the seed's name for the scaled, masked scores
        self.hook_pattern = HookPoint()
        self.hook_attn = HookPoint()  # the seed's name for the pattern
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.hook_q(torch.einsum("bpd,ihd->bpih", x, self.W_Q))
        k = self.hook_k(torch.einsum("bpd,ihd->bpih", x, self.W_K))
        v = self.hook_v(torch.einsum("bpd,ihd->bpih", x, self.W_V))
        n = x.shape[-2]
        scores = torch.einsum("bqih,bkih->biqk", q, k) / math.sqrt(self.d_head)
        scores = scores.masked_fill(self.mask[:n, :n] == 0, float("-inf"))
        scores = self.hook_attn_pre(self.hook_attn_scores(scores))
        pattern = self.hook_attn(self.hook_pattern(F.softmax(scores, dim=-1)))
        z = self.hook_z(torch.einsum("biqk,bkih->bqih", pattern, v))
        return z.flatten(-2) @ self.W_O.T


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act: str, generator: torch.Generator):
        super().__init__()
        g = generator
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model, generator=g) / math.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp, generator=g) / math.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.act = act
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in.T + self.b_in)
        post = self.hook_post(activation(pre, self.act))
        return post @ self.W_out.T + self.b_out


def activation(x: torch.Tensor, act: str) -> torch.Tensor:
    return F.relu(x) if act == "relu" else F.gelu(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: Config, n_ctx: int, generator: torch.Generator):
        super().__init__()
        if cfg.layernorm:
            self.ln1 = LayerNorm(cfg.d_model)
            self.ln2 = LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.head_dim, n_ctx, generator)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp, cfg.act, generator)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        attn_in = self.ln1(x) if hasattr(self, "ln1") else x
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(attn_in)))
        mlp_in = self.ln2(x) if hasattr(self, "ln2") else x
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(mlp_in)))


class Transformer(nn.Module):
    """The seed's transformer. Inputs are ``[batch, 3]`` tokens ``a b =``; output is
    ``[batch, 3, d_vocab]`` logits (the task reads the last position)."""

    n_ctx = 3

    def __init__(self, cfg: Config, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        d_vocab = cfg.d_vocab
        self.embed = Embed(d_vocab, cfg.d_model, generator)
        self.pos_embed = PosEmbed(self.n_ctx, cfg.d_model, generator)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, self.n_ctx, generator) for _ in range(cfg.n_layers))
        if cfg.layernorm:
            self.ln_final = LayerNorm(cfg.d_model)
        self.unembed = Unembed(d_vocab, cfg.d_model, generator)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    @property
    def eq_token(self) -> int:
        return self.cfg.d_vocab - 1

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            x = block(x)
        if hasattr(self, "ln_final"):
            x = self.ln_final(x)
        return self.unembed(x)

    # --- hooks ---------------------------------------------------------------------------
    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def _select(self, name: "str | Callable[[str], bool]") -> list[HookPoint]:
        points = self.hook_dict
        if callable(name):
            return [hp for n, hp in points.items() if name(n)]
        if name not in points:
            raise KeyError(f"no hook point named {name!r}; known: {', '.join(points)}")
        return [points[name]]

    def reset_hooks(self) -> None:
        for hp in self.hook_dict.values():
            hp.remove_hooks()

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: NamedHooks = (), bwd_hooks: NamedHooks = ()) -> Iterator["Transformer"]:
        """Attach hooks for the duration of a ``with`` block; they are removed even on error."""
        handles = []
        try:
            for hooks, direction in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name, fn in hooks:
                    for hp in self._select(name):
                        handles.append((hp, hp.add_hook(fn, direction)))
            yield self
        finally:
            for hp, handle in handles:
                handle.remove()
                hp._handles = [h for h in hp._handles if h is not handle]

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: NamedHooks = (), bwd_hooks: NamedHooks = (),
                       loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Forward with temporary hooks. Backward hooks need ``loss_fn(logits) -> scalar``:
        the backward pass runs inside, while the hooks are still attached."""
        if bwd_hooks and loss_fn is None:
            raise ValueError("backward hooks need loss_fn: the backward pass must run before the hooks are removed")
        with self.hooks(fwd_hooks, bwd_hooks):
            logits = self(tokens)
            if loss_fn is not None:
                loss_fn(logits).backward()
        return logits

    def run_with_cache(self, tokens: torch.Tensor, names_filter: "Callable[[str], bool] | Iterable[str] | None" = None,
                       incl_bwd: bool = False, loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that returns ``(logits, cache)``, the cache mapping hook names to
        detached activations (and, with ``incl_bwd``, ``name + "_grad"`` to gradients of
        ``loss_fn(logits)``)."""
        if names_filter is None:
            keep: Callable[[str], bool] = lambda name: True  # noqa: E731
        elif callable(names_filter):
            keep = names_filter
        else:
            wanted = set(names_filter)
            keep = wanted.__contains__
        cache: dict[str, torch.Tensor] = {}

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = tensor.detach()

        def save_grad(tensor: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name + "_grad"] = tensor.detach()

        if incl_bwd and loss_fn is None:
            raise ValueError("incl_bwd needs loss_fn(logits) -> scalar to differentiate")
        logits = self.run_with_hooks(tokens, [(keep, save)], [(keep, save_grad)] if incl_bwd else (),
                                     loss_fn=loss_fn if incl_bwd else None)
        return logits, cache
