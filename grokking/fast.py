"""The fast training path: the seed transformer's last-position logits, computed exactly,
with no work the loss does not need.

The loss reads only position 2 (the ``=`` token). For a 1-layer model, positions 0 and 1
hold one token each, so their keys, values and (with the constant ``=`` query) their
attention scores are functions of one vocabulary entry: we compute them once per entry
(``[2, d_vocab, ...]`` tables) and gather per example, instead of running attention over
``[batch, 3, 3]``. What remains per example is a softmax over three scores, a weighted
sum of three value vectors, ``W_O``, the MLP and the unembedding.

On CPU, without LayerNorm after the attention, the same one-token-per-position argument goes
one step further (see "the token-table product" below): the MLP's input and the residual
stream's logits are weighted sums of per-token table rows, so of the dense products only
the MLP output's remain. Otherwise (LayerNorm, CUDA) the dense products run as written.

Parameters are read from the hooked :class:`~grokking.model.Transformer`, which stays the
source of truth; the trainer falls back to it for configurations this path does not cover
(see :func:`unsupported_reason`): :func:`answer_position_logits`, the hooked modules with the
last block computed at the answer positions alone. ``tests/test_fast.py`` holds every path to
the full hooked forward's loss and gradients. An MLP (``model = mlp``, :mod:`grokking.mlp`) has no positions to skip: its
logits function is its own forward (:func:`grokking.mlp.mlp_logits`), ``[B, n]``.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from .config import Config
from .factory import Model
from .mlp import MLP, mlp_logits
from .model import LayerNorm, StackedTransformer, Transformer, activation


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


#: config.json's fast_path_fallback_reason for an MLP run (its training_path is "hooked": its own forward).
MLP_REASON = "model=mlp: the fast path is the transformer's; an MLP trains through its own hooked forward"


def unsupported_reason(cfg: Config) -> str | None:
    """None if the fast path computes this configuration exactly, else why not."""
    if cfg.model == "mlp":
        return MLP_REASON
    if cfg.task_kind != "table":
        return (f"op={cfg.op}: a {cfg.task_kind} task has {cfg.n_ctx} tokens per example; the fast path is for "
                f"the 3 tokens 'a b ='")
    if cfg.n_layers != 1:
        return f"n_layers={cfg.n_layers}: positions 0 and 1 depend on both tokens after the first layer"
    return None


def select_logits_fn(cfg: Config) -> tuple["LogitsFn", str | None]:
    """The last-position logits function for this configuration, and why the fast one is not
    used (None when it is). The one selector: training, evaluation and analysis all use it."""
    if cfg.model == "mlp":
        return mlp_logits, MLP_REASON
    if not cfg.fast:
        return hooked_last_position_logits, "disabled by fast=false"
    reason = unsupported_reason(cfg)
    return (last_position_logits if reason is None else answer_position_logits), reason


def exact_logits_fn(cfg: Config) -> "LogitsFn":
    """The cheapest exact logits function for this configuration, whatever ``cfg.fast`` says
    (for analysis and evaluation, which need the numbers, not the training path)."""
    return select_logits_fn(cfg if cfg.fast else cfg.replace(fast=True))[0]


def _layer_norm(ln: LayerNorm | None, x: torch.Tensor) -> torch.Tensor:
    if ln is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    w, b = (ln.w, ln.b) if ln.stacked else (ln.w[None], ln.b[None])
    shape = (w.shape[0], *([1] * (x.dim() - 2)), w.shape[-1])
    return x / (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * w.view(shape) + b.view(shape)


def _per_run_tokens(n_runs: int, a: torch.Tensor) -> torch.Tensor:
    return a.expand(n_runs, -1) if a.dim() == 1 else a


def last_position_logits(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the ``=`` position for inputs ``a b =``, equal to ``model(tokens)[..., -1, :]``
    within float32 round-off (an MLP: its logits, :func:`~grokking.mlp.mlp_logits`).

    For one model, ``tokens`` is ``[B, 3]`` and the logits ``[B, d_vocab]``. For a
    :class:`~grokking.model.StackedTransformer`, ``tokens`` is ``[K, B, 3]`` (or ``[B, 3]`` for
    every run) and the logits ``[K, B, d_vocab]``. One computation serves both: a single model's
    weights are read as a stack of one. Only the operands are read (the third token is ``=``)."""
    return _last_position_logits(model, tokens, keep_plan_order=False)[0]


def logits_in_any_order(logits_fn: "LogitsFn", model: Model, tokens: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logits_fn(model, tokens)`` with its rows possibly permuted: ``(logits, order)``, where
    ``logits[i]`` is the row of ``tokens[order[i]]`` (``order`` None: the tokens' own order).

    The token-table product computes its rows sorted by (a, b). A loss that treats every
    example alike (a mean of per-example terms) has the same value up to the order of its sum
    and bit-for-bit the same gradients with ``labels[order]`` as with the rows put back, and
    skips that permutation and its gradient (a ``[B, d_vocab]`` copy each way)."""
    if logits_fn is last_position_logits:
        return _last_position_logits(model, tokens, keep_plan_order=True)
    return logits_fn(model, tokens), None


def _last_position_logits(model: Model, tokens: torch.Tensor, keep_plan_order: bool
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(model, MLP):
        return mlp_logits(model, tokens), None
    stacked = isinstance(model, StackedTransformer)
    a, b = tokens[..., 0], tokens[..., 1]

    def lead(t: torch.Tensor) -> torch.Tensor:  # every weight with its run dimension
        return t if stacked else t.unsqueeze(0)

    block = model.blocks[0]
    attn, mlp = block.attn, block.mlp
    W_Q, W_K, W_V, W_O = lead(attn.W_Q), lead(attn.W_K), lead(attn.W_V), lead(attn.W_O)
    n_runs, n_heads, d_head, d_model = W_Q.shape
    W_E, W_pos = lead(model.embed.W_E), lead(model.pos_embed.W_pos)  # [K, d_model, V], [K, 3, d_model]
    d_vocab = W_E.shape[-1]
    a, b = (_per_run_tokens(n_runs, a), _per_run_tokens(n_runs, b)) if stacked else (a[None], b[None])
    ln1 = getattr(block, "ln1", None)

    # Residual stream of every vocabulary entry at positions 0 and 1, and of '=' at position 2, per run.
    resid_01 = W_E.transpose(1, 2).unsqueeze(1) + W_pos[:, :2].unsqueeze(2)  # [K, 2, V, d_model]
    resid_eq = W_E[:, :, model.eq_token] + W_pos[:, 2]  # [K, d_model]
    x01, x_eq = _layer_norm(ln1, resid_01), _layer_norm(ln1, resid_eq)

    W_KV = torch.cat([W_K, W_V], 1).reshape(n_runs, 2 * n_heads * d_head, d_model)
    kv01 = torch.bmm(x01.reshape(n_runs, 2 * d_vocab, d_model), W_KV.transpose(1, 2))
    kv01 = kv01.view(n_runs, 2, d_vocab, 2, n_heads, d_head)  # [K, 2, V, k|v, H, d_head]
    kv_eq = torch.bmm(W_KV, x_eq.unsqueeze(-1)).view(n_runs, 2, n_heads, d_head)
    q_eq = torch.einsum("rihd,rd->rih", W_Q, x_eq) / math.sqrt(d_head)  # [K, H, d_head]
    scores01 = (kv01[:, :, :, 0] * q_eq[:, None, None]).sum(-1)  # [K, 2, V, H]
    score_eq = (kv_eq[:, 0] * q_eq).sum(-1)  # [K, H]

    # One table row per (run, position, token): [score per head | value per head]; the
    # token-table product keeps the values in its own tables, so it gathers only the scores.
    token_tables = not stacked and uses_token_tables(model, tokens)
    table = scores01 if token_tables else torch.cat([scores01, kv01[:, :, :, 1].flatten(-2)], -1)
    run_offset = torch.arange(n_runs, device=a.device).unsqueeze(1) * (2 * d_vocab)
    lookups = torch.stack([a + run_offset, b + d_vocab + run_offset], -1)  # [K, B, 2]
    flat_table = table.reshape(n_runs * 2 * d_vocab, -1)
    # On CPU index_select's gradient (index_add_) costs a fraction of embedding's, which sorts the
    # lookups every step; on CUDA embedding's is the deterministic one (index_add_ uses atomics).
    rows = (flat_table.index_select(0, lookups.flatten()).view(*lookups.shape, -1) if lookups.device.type == "cpu"
            else F.embedding(lookups, flat_table))  # [K, B, 2, C]
    n_examples = a.shape[1]
    scores = torch.cat([rows[..., :n_heads], score_eq[:, None, None].expand(n_runs, n_examples, 1, n_heads)], 2)
    pattern = torch.softmax(scores, dim=2)  # [K, B, 3, H]
    if token_tables:
        logits, plan = _logits_through_token_tables(model, tokens, pattern[0], kv01[0, :, :, 1], kv_eq[0, 1],
                                                    resid_eq[0])
        return (logits, plan.order) if keep_plan_order else (logits.index_select(0, plan.unsort), None)
    values01 = rows[..., n_heads:].view(n_runs, n_examples, 2, n_heads, d_head)
    pattern = pattern.unsqueeze(-1)
    z = (pattern[:, :, :2] * values01).sum(2) + pattern[:, :, 2] * kv_eq[:, 1, None]  # [K, B, H, d_head]

    resid_mid = resid_eq.unsqueeze(1) + torch.bmm(z.flatten(2), W_O.transpose(1, 2))  # [K, B, d_model]
    mlp_in = _layer_norm(getattr(block, "ln2", None), resid_mid)
    W_in, b_in, W_out, b_out = lead(mlp.W_in), lead(mlp.b_in), lead(mlp.W_out), lead(mlp.b_out)
    post = activation(torch.baddbmm(b_in.unsqueeze(1), mlp_in, W_in.transpose(1, 2)), mlp.act)
    resid_post = resid_mid + torch.baddbmm(b_out.unsqueeze(1), post, W_out.transpose(1, 2))
    logits = torch.bmm(_layer_norm(getattr(model, "ln_final", None), resid_post), lead(model.unembed.W_U))
    return (logits if stacked else logits[0]), None


# --- the token-table product (CPU, no LayerNorm after attention) ----------------------------------
#
# Without ln2 and ln_final, everything between the attention pattern and the MLP's
# nonlinearity is linear. resid_mid = resid_eq + sum over (position, head) of
# pattern * (value @ W_O_head), positions 0 and 1 hold one token each, and each head's
# pattern sums to one (so the '=' position's share is 1 - the other two), hence
#   [pre-activation | resid_mid @ W_U] = constant + sum over (pos < 2, head) of
#                                         pattern[n, pos, head] * T[row(pos, head, token)]
# with T's rows = (value(token) - value('=')) @ ([W_in; W_U^T] @ W_O_head)^T: one
# [2*H*V, d_mlp + V] table per step, and per example a weighted sum of 2H of its rows (an
# embedding bag). The constant is added, not looked up: its gradient is a sum over every
# example, which an embedding bag would accumulate one by one in float32 (``sum`` is pairwise).
# That replaces residual -> W_in and residual -> W_U, forward and gradients, by table lookups
# and a sampled product; only the MLP output (relu(pre) @ W_out^T W_U, forward and its two
# gradients) stays dense: about half the multiply-adds of the dense path, measured 1.5x faster
# per CPU epoch of the canonical run at 1 and 2 threads. It is not used on CUDA, where dense
# products are what the device is best at (unmeasured: no GPU here).

def uses_token_tables(model: Transformer, tokens: torch.Tensor) -> bool:
    """Whether :func:`last_position_logits` takes the token-table product for these inputs."""
    block = model.blocks[0]
    return tokens.device.type == "cpu" and not hasattr(block, "ln2") and not hasattr(model, "ln_final")


class _BagPlan:
    """The lookups of one batch of (a, b): the rows each example reads, in increasing order, as
    a sparse ``[B, 2*H*V]`` pattern (whose sampled product with the table is the weights'
    gradient), and the same lookups grouped by row (a CSR transpose), which turns the table's
    gradient into another embedding bag.

    The bags run over the examples sorted by (a, b): consecutive examples then read the same
    position-0 rows and nearby position-1 rows, which the cache keeps (measured 2x faster
    forward and 1.3x backward bags of the canonical batch). ``order`` sorts the examples and
    ``unsort`` puts them back."""

    def __init__(self, tokens: torch.Tensor, n_heads: int, d_vocab: int):
        self.order = torch.argsort(tokens[:, 0] * d_vocab + tokens[:, 1])
        self.unsort = torch.empty_like(self.order)
        self.unsort[self.order] = torch.arange(len(self.order), device=self.order.device)
        a, b = tokens[self.order, 0], tokens[self.order, 1]
        n = a.shape[0]
        head_base = torch.arange(n_heads, device=a.device)[:, None] * (2 * d_vocab)  # row = h*2V + pos*V + token
        self.rows = torch.stack([head_base + a[:, None, None], head_base + d_vocab + b[:, None, None]], -1)
        self.rows = self.rows.reshape(n, 2 * n_heads)  # (head, position) order: increasing
        self.n_rows = 2 * n_heads * d_vocab
        self.key = (tokens._version, n_heads, d_vocab)
        self.tokens = tokens
        # Built on the first backward pass only: evaluation (no_grad) needs just the rows.
        self._pattern: torch.Tensor | None = None
        self._transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def matches(self, tokens: torch.Tensor, n_heads: int, d_vocab: int) -> bool:
        return self.tokens is tokens and self.key == (tokens._version, n_heads, d_vocab)

    def pattern(self) -> torch.Tensor:
        if self._pattern is None:
            n, k = self.rows.shape
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore")
                self._pattern = torch.sparse_csr_tensor(
                    torch.arange(0, n * k + 1, k, device=self.rows.device), self.rows.flatten(),
                    torch.zeros(n * k, device=self.rows.device), size=(n, self.n_rows), check_invariants=False)
        return self._pattern

    def transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(order, example of each sorted lookup, first sorted lookup of each row)."""
        if self._transpose is None:
            flat = self.rows.flatten()
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=self.n_rows)
            self._transpose = (order, order // self.rows.shape[1], torch.cumsum(counts, 0) - counts)
        return self._transpose


# Full-batch training passes the same tokens every step, and evaluation its own between steps
# (a fresh slice each time): the two most recently used plans are kept, so that evaluation
# never evicts the training plan.
_recent_plans: list[_BagPlan] = []


def _bag_plan(tokens: torch.Tensor, n_heads: int, d_vocab: int) -> _BagPlan:
    plan = next((p for p in _recent_plans if p.matches(tokens, n_heads, d_vocab)), None)
    if plan is None:
        plan = _BagPlan(tokens, n_heads, d_vocab)
    _recent_plans[:] = [plan, *(p for p in _recent_plans if p is not plan)][:2]
    return plan


class _TokenTableMix(torch.autograd.Function):
    """``(pre, resid_logits)[n] = c + sum_k w[n, k] * T[rows[n, k]]``, for ``T, c`` split into
    their pre-activation and logit columns.

    The gradient of ``w`` is ``g[n] . T[rows[n, k]]``: a sampled dense product at the plan's
    sparse pattern, which computes only those 2H dot products per example."""

    @staticmethod
    def forward(ctx, T_pre, T_logits, c_pre, c_logits, w, plan):  # type: ignore[override]
        ctx.plan = plan
        ctx.save_for_backward(T_pre, T_logits, w)
        # Detached: given inputs that require grad, embedding_bag also builds indices for its own
        # backward, which this function replaces.
        bag = dict(per_sample_weights=w.detach(), mode="sum")
        pre = F.embedding_bag(plan.rows, T_pre.detach(), **bag).add_(c_pre)
        return pre, F.embedding_bag(plan.rows, T_logits.detach(), **bag).add_(c_logits)

    @staticmethod
    def backward(ctx, g_pre, g_logits):  # type: ignore[override]
        T_pre, T_logits, w = ctx.saved_tensors
        plan = ctx.plan
        order, example, offsets = plan.transpose()
        bag = dict(offsets=offsets, per_sample_weights=w.flatten()[order], mode="sum")
        g_pre, g_logits = g_pre.contiguous(), g_logits.contiguous()
        grad_T_pre = F.embedding_bag(example, g_pre, **bag)
        grad_T_logits = F.embedding_bag(example, g_logits, **bag)
        grad_w = torch.sparse.sampled_addmm(plan.pattern(), g_pre, T_pre.T, beta=0.0).values()
        grad_w += torch.sparse.sampled_addmm(plan.pattern(), g_logits, T_logits.T, beta=0.0).values()
        return grad_T_pre, grad_T_logits, g_pre.sum(0), g_logits.sum(0), grad_w.view_as(w), None


def _logits_through_token_tables(model: Transformer, tokens: torch.Tensor, pattern: torch.Tensor,
                                 value_table: torch.Tensor, value_eq: torch.Tensor, resid_eq: torch.Tensor
                                 ) -> tuple[torch.Tensor, _BagPlan]:
    """The logits in the plan's order (sorted by (a, b)), and the plan."""
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    W_U = model.unembed.W_U  # [d_model, V]
    n_heads, d_head = value_eq.shape
    d_vocab = W_U.shape[1]
    relative_values = value_table.permute(2, 0, 1, 3).reshape(n_heads, 2 * d_vocab, d_head) - value_eq[:, None]
    tables, constants = [], []
    # What the residual stream feeds: the MLP's input and the logits (with the MLP's output bias).
    for W_read, bias in ((mlp.W_in, mlp.b_in), (W_U.T, mlp.b_out @ W_U)):
        W_z = W_read @ attn.W_O  # [n_out, H*d_head]
        tables.append(torch.bmm(relative_values, W_z.view(-1, n_heads, d_head).permute(1, 2, 0)).flatten(0, 1))
        constants.append(W_read @ resid_eq + W_z @ value_eq.flatten() + bias)  # '=' fully attended, per head
    plan = _bag_plan(tokens, n_heads, d_vocab)
    # [B, 2H] in the plan's example order, (head, position) as the plan's rows
    weights = pattern[:, :2].transpose(1, 2).flatten(1).index_select(0, plan.order)
    pre, resid_logits = _TokenTableMix.apply(*tables, *constants, weights, plan)
    W_post = mlp.W_out.T @ W_U  # [d_mlp, V]: the MLP's output read straight into the logits
    if mlp.act == "relu":
        logits = _ReluThenProduct.apply(pre, W_post, resid_logits)
    else:
        logits = torch.addmm(resid_logits, activation(pre, mlp.act), W_post)
    return logits, plan


class _ReluThenProduct(torch.autograd.Function):
    """``c + relu(x) @ W`` with the ReLU and its gradient done in place: on CPU, writing a fresh
    ``[B, d_mlp]`` buffer costs several times the ReLU itself (measured 1.2 ms against 0.2)."""

    @staticmethod
    def forward(ctx, x, W, c):  # type: ignore[override]
        post = x.relu_()  # x is the token-table sum, used nowhere else (a saved copy would fail its version check)
        ctx.save_for_backward(post, W)
        return torch.addmm(c, post, W)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        post, W = ctx.saved_tensors
        g_post = g @ W.T
        torch.ops.aten.threshold_backward.grad_input(g_post, post, 0, grad_input=g_post)
        return g_post, (g.T @ post).T, g  # [V, B] @ [B, d_mlp]: measured 1.4x faster than post.T @ g


def hooked_last_position_logits(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """The reference computation: the full hooked forward pass at the answer positions (the
    last; a sequence task's last ``seq_len``), one model or stacked; an MLP's forward has no
    positions (:func:`~grokking.mlp.mlp_logits`)."""
    if isinstance(model, MLP):
        return mlp_logits(model, tokens)
    answers = model.cfg.output_len
    return _answer_rows(model(tokens)[..., -answers:, :], answers)


def _answer_rows(logits: torch.Tensor, answers: int) -> torch.Tensor:
    """The answer positions' logits ``[..., answers, d_vocab]``, the position dropped for one answer."""
    return logits[..., 0, :] if answers == 1 else logits


def answer_position_logits(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`hooked_last_position_logits` with the last block computed at the answer positions
    alone (:meth:`~grokking.model.Transformer.forward`'s ``last``): the same numbers within
    float32 round-off, and for one layer over T tokens about T times less MLP and unembedding
    work. What a transformer the fast path does not cover (more layers, other tasks) trains with."""
    if isinstance(model, MLP):
        return mlp_logits(model, tokens)
    answers = model.cfg.output_len
    return _answer_rows(model(tokens, answers), answers)


#: ``logits_fn(model, tokens)``: ``[B, d_vocab]`` for a transformer ('=' included), ``[B, n]`` for an
#: MLP, ``[K, B, d_vocab]`` for a stacked transformer, with a position dimension before the last for
#: a sequence task's answers (``[B, L, d_vocab]``). Labels are < n, so the loss and argmax read them alike.
LogitsFn = Callable[[Model, torch.Tensor], torch.Tensor]
