"""The fast training path: the seed transformer's last-position logits, computed exactly,
with no work the loss does not need.

The loss reads only position 2 (the ``=`` token). For a 1-layer model, positions 0 and 1
hold one token each, so their keys, values and (with the constant ``=`` query) their
attention scores are functions of one vocabulary entry: we compute them once per entry
(``[2, d_vocab, ...]`` tables) and gather per example, instead of running attention over
``[batch, 3, 3]``. What remains per example is a softmax over three scores, a weighted
sum of three value vectors, ``W_O``, the MLP and the unembedding: the three large matrix
products that any exact implementation must do.

Parameters are read from the hooked :class:`~grokking.model.Transformer`, which stays the
source of truth; the trainer falls back to it for configurations this path does not cover
(see :func:`unsupported_reason`). ``tests/test_fast.py`` holds both paths to the same loss
and gradients.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys

import torch
import torch.nn.functional as F

from .config import Config
from .model import LayerNorm, Transformer, activation


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory.

    Every training step allocates and frees the same few megabyte-sized activations. By
    default glibc maps each such block fresh from the kernel and unmaps it on free, so every
    step pays thousands of page faults to zero the same memory again (measured here: about
    2,000 faults and 7% of a canonical CPU epoch). Process-wide and harmless for a training
    process; set GROKKING_KEEP_MALLOC=1 to leave the allocator alone. Returns whether applied.
    """
    if os.environ.get("GROKKING_KEEP_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))


def unsupported_reason(cfg: Config) -> str | None:
    """None if the fast path computes this configuration exactly, else why not."""
    if cfg.n_layers != 1:
        return f"n_layers={cfg.n_layers}: positions 0 and 1 depend on both tokens after the first layer"
    return None


def _layer_norm(ln: LayerNorm | None, x: torch.Tensor) -> torch.Tensor:
    if ln is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * ln.w + ln.b


def last_position_logits(model: Transformer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits at the ``=`` position for inputs ``a b =``: ``[batch, d_vocab]``, equal to
    ``model(tokens)[:, -1]`` within float32 round-off."""
    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    n_heads, d_head, d_model = attn.W_Q.shape
    W_E = model.embed.W_E  # [d_model, d_vocab]
    W_pos = model.pos_embed.W_pos  # [3, d_model]
    ln1 = getattr(block, "ln1", None)

    # Residual stream of every vocabulary entry at positions 0 and 1, and of '=' at position 2.
    resid_01 = W_E.T.unsqueeze(0) + W_pos[:2].unsqueeze(1)  # [2, V, d_model]
    resid_eq = W_E[:, model.eq_token] + W_pos[2]  # [d_model]
    x01, x_eq = _layer_norm(ln1, resid_01), _layer_norm(ln1, resid_eq)

    W_KV = torch.cat([attn.W_K, attn.W_V], 0).reshape(2 * n_heads * d_head, d_model)
    kv01 = (x01 @ W_KV.T).view(2, -1, 2, n_heads, d_head)  # [2, V, k|v, H, d_head]
    kv_eq = (W_KV @ x_eq).view(2, n_heads, d_head)
    q_eq = torch.einsum("ihd,d->ih", attn.W_Q, x_eq) / math.sqrt(d_head)  # [H, d_head]
    scores01 = (kv01[:, :, 0] * q_eq).sum(-1)  # [2, V, H]
    score_eq = (kv_eq[0] * q_eq).sum(-1)  # [H]

    # One table row per (position, token): [score per head | value per head].
    d_vocab = W_E.shape[1]
    table = torch.cat([scores01, kv01[:, :, 1].flatten(-2)], -1).view(2 * d_vocab, -1)
    rows = F.embedding(torch.stack([a, b + d_vocab], 1), table)  # [B, 2, H + H*d_head]
    scores = torch.cat([rows[..., :n_heads], score_eq.expand(a.shape[0], 1, n_heads)], 1)  # [B, 3, H]
    pattern = torch.softmax(scores, dim=1).unsqueeze(-1)  # [B, 3, H, 1]
    values01 = rows[..., n_heads:].view(-1, 2, n_heads, d_head)
    z = (pattern[:, :2] * values01).sum(1) + pattern[:, 2] * kv_eq[1]  # [B, H, d_head]

    resid_mid = resid_eq + z.flatten(1) @ attn.W_O.T
    post = activation(F.linear(_layer_norm(getattr(block, "ln2", None), resid_mid), mlp.W_in, mlp.b_in), mlp.act)
    resid_post = resid_mid + F.linear(post, mlp.W_out, mlp.b_out)
    return _layer_norm(getattr(model, "ln_final", None), resid_post) @ model.unembed.W_U


def hooked_last_position_logits(model: Transformer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference computation: the full hooked forward pass, last position."""
    tokens = torch.stack([a, b, torch.full_like(a, model.eq_token)], 1)
    return model(tokens)[:, -1]


def logits_fn(model: Transformer, use_fast: bool = True):
    """The last-position logits function the trainer uses for this model."""
    if use_fast and unsupported_reason(model.cfg) is None:
        return last_position_logits
    return hooked_last_position_logits
