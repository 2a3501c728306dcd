"""Optimisers, losses and gradient filters: the seed recipe and the acceleration methods.

- ``ce``: the seed's cross-entropy, with logits cast to float64 (float32 log-softmax
  underflows on confident predictions and gives loss spikes).
- ``stablemax``: StableMax cross-entropy, Prieto et al. 2025 ("Grokking at the edge of
  numerical stability"): s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise, p_i = s(x_i) / sum s.
- ``orthoadamw``: their ⊥AdamW: each parameter's gradient loses its component along the
  weight and is rescaled to the original gradient norm, then AdamW steps.
- ``muon``: Muon (Jordan et al. 2024) for the hidden matrices (attention and MLP weights; an
  MLP model's hidden layers, the first one excepted when it reads one-hot codes: that one is its
  embedding), AdamW for embeddings, unembedding and biases; decoupled weight decay on both.
- Grokfast (Lee et al. 2024): ``ema`` adds lamb * EMA_alpha(grad); ``ma`` adds lamb * the
  mean of the last ``window`` gradients (nothing until the window is full, as in their code).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

from .config import Config

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- losses ------------------------------------------------------------------------------------
class _Float64Logits(torch.autograd.Function):
    """``logits.to(torch.float64)``, whose gradient returns to the logits' dtype with subnormal
    numbers flushed to zero.

    Once predictions are confident, most of the float64 gradient ``(p - onehot) / N`` lies
    below the smallest normal float32 (1.2e-38). Cast back, those entries are subnormal, and
    every CPU product that reads them slows several-fold (measured: the canonical model's
    epoch went from 24 to 170-210 ms at one thread, on an Intel Xeon with AVX-512, once the
    fast preset's predictions were confident). Zero instead changes nothing AdamW can see:
    next to the gradient of any example not yet that confident (1e-10 and up) such entries
    vanish in float32 round-off, and a weight gradient made of them alone is below ~1e-34, so
    AdamW's step, m / (sqrt(v) + 1e-8), is below 1e-26 of the learning rate with them or
    without."""

    @staticmethod
    def forward(ctx, logits):  # type: ignore[override]
        ctx.dtype = logits.dtype
        return logits.to(torch.float64)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _cast_without_subnormals(grad, ctx.dtype)


def _cast_without_subnormals(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 gradient in ``dtype``, entries below its smallest normal number set to 0
    (``hardshrink``: the cast and the flush in two passes, no mask tensor)."""
    return F.hardshrink(grad.to(dtype), torch.finfo(dtype).tiny)


def float64_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits in float64 for a loss: float32 log-softmax underflows on confident
    predictions. The gradient comes back without subnormals (see :class:`_Float64Logits`).
    StableMax takes its float64 here; the cross-entropy computes its own
    (:class:`_Float64CrossEntropy`) and flushes its gradient alike."""
    if logits.dtype == torch.float64 or not torch.is_grad_enabled() or not logits.requires_grad:
        return logits.to(torch.float64)
    return _Float64Logits.apply(logits)


class _Float64CrossEntropy(torch.autograd.Function):
    """Per-example cross-entropy ``[N]`` of logits ``[N, C]`` computed in float64:
    ``F.cross_entropy(logits.double(), labels, reduction="none")`` within float64 round-off.

    ``log_softmax`` over rows as short as a vocabulary (114) runs row by row, and its backward
    computes ``exp`` again: here one vectorised ``exp`` pass over the whole array is saved for
    the backward, which writes ``(softmax - onehot) * g`` over them and casts it back once
    (measured: the canonical batch's loss forward and backward 1.5-2x faster, 5% of an epoch). The
    gradient comes back in the logits' dtype without subnormals (see :class:`_Float64Logits`)."""

    @staticmethod
    def forward(ctx, logits, labels):  # type: ignore[override]
        shifted = logits.to(torch.float64, copy=True)  # a new tensor even for float64 logits: changed in place
        shifted -= shifted.amax(-1, keepdim=True)
        picked = shifted.gather(1, labels[:, None])[:, 0]
        exp = shifted.exp_()
        total = exp.sum(-1, keepdim=True)
        ctx.save_for_backward(exp, total, labels)
        ctx.dtype = logits.dtype
        return total.log()[:, 0] - picked

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        exp, total, labels = ctx.saved_tensors
        grad = grad.to(torch.float64)[:, None]
        # In place: nothing else reads the saved exponentials (a second backward through this
        # graph raises autograd's in-place error instead of reading them changed).
        grad_logits = exp.mul_(grad / total)
        # One entry per row: a plain index_put_ (deterministic on CUDA, where scatter_add_ over
        # two dimensions is refused under torch.use_deterministic_algorithms).
        rows = torch.arange(len(labels), device=labels.device)
        grad_logits.index_put_((rows, labels), grad_logits[rows, labels] - grad[:, 0])
        return _cast_without_subnormals(grad_logits, ctx.dtype), None


def float64_cross_entropy_per_example(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Float64 cross-entropy of each example: logits ``[..., C]``, labels ``[...]`` -> ``[...]``."""
    flat = _Float64CrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return flat.view(labels.shape)


def cross_entropy_float64(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed's loss: the mean float64 cross-entropy (see :class:`_Float64CrossEntropy`)."""
    return float64_cross_entropy_per_example(logits, labels).mean()


def _stablemax_log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    x = float64_logits(logits)
    s = torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))
    return torch.log(s) - torch.log(s.sum(-1, keepdim=True))


def stablemax_probabilities(logits: torch.Tensor) -> torch.Tensor:
    return _stablemax_log_probabilities(logits).exp()


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -_stablemax_log_probabilities(logits).gather(-1, labels[:, None]).mean()


def per_example_loss(cfg: Config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unreduced float64 loss, for evaluation and for the per-run means of a stacked batch."""
    if cfg.loss == "stablemax":
        return -_stablemax_log_probabilities(logits).gather(-1, labels[:, None])[:, 0]
    return float64_cross_entropy_per_example(logits, labels)


def loss_function(cfg: Config) -> LossFn:
    return stablemax_cross_entropy if cfg.loss == "stablemax" else cross_entropy_float64


# --- gradient filters --------------------------------------------------------------------------
class GradFilter:
    """Rewrites ``p.grad`` in place after backward and before the optimiser step."""

    def __init__(self, cfg: Config, params: list[torch.nn.Parameter]):
        self.kind = cfg.grokfast
        self.alpha, self.lamb, self.window = cfg.grokfast_alpha, cfg.grokfast_lamb, cfg.grokfast_window
        self.params = params
        self.buffers: list[torch.Tensor] = []  # EMA: [shape]; MA: [window, *shape] ring
        self.count = 0  # gradients seen (MA ring position and fill)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @torch.no_grad()
    def apply(self) -> None:
        if self.kind == "ema":
            if not self.buffers:
                self.buffers = [p.grad.detach().clone() for p in self.params]
            else:
                for ema, p in zip(self.buffers, self.params):
                    ema.mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            for ema, p in zip(self.buffers, self.params):
                p.grad.add_(ema, alpha=self.lamb)
        elif self.kind == "ma":
            if not self.buffers:
                self.buffers = [p.new_zeros((self.window, *p.shape)) for p in self.params]
            slot = self.count % self.window
            for ring, p in zip(self.buffers, self.params):
                ring[slot].copy_(p.grad)
            self.count += 1
            if self.count >= self.window:
                for ring, p in zip(self.buffers, self.params):
                    p.grad.add_(ring.mean(0), alpha=self.lamb)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"filter.{i}": b for i, b in enumerate(self.buffers)}
        out["filter.count"] = torch.tensor(self.count)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        n = sum(1 for k in tensors if k.startswith("filter.") and k != "filter.count")
        self.buffers = [tensors[f"filter.{i}"].to(device) for i in range(n)]
        self.count = int(tensors["filter.count"]) if "filter.count" in tensors else 0


def orthogonalized(w: torch.Tensor, g: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """⊥Grad of flattened weights and gradients ``[..., n]`` (one vector per leading index): the
    gradient without its component along the weight, rescaled to the gradient's norm."""
    g_orth = g - (w * g).sum(-1, keepdim=True) / ((w * w).sum(-1, keepdim=True) + eps) * w
    return g_orth * (g.norm(dim=-1, keepdim=True) / (g_orth.norm(dim=-1, keepdim=True) + eps))


@torch.no_grad()
def orthogonalize_gradients(params: list[torch.nn.Parameter], eps: float = 1e-30) -> None:
    """⊥Grad on every parameter's gradient, in place (see :func:`orthogonalized`)."""
    for p in params:
        if p.grad is not None:
            p.grad.copy_(orthogonalized(p.detach().flatten(), p.grad.flatten(), eps).view_as(p.grad))


# --- AdamW ---------------------------------------------------------------------------------------
class FusedAdamW:
    """``torch.optim.AdamW(..., fused=True)``: the same update, state and ``state_dict``, without
    ``torch.optim.Optimizer`` underneath.

    The first torch optimiser a process builds imports ``torch._dynamo`` (``add_param_group`` is
    wrapped in ``torch._disable_dynamo``), a large share of a short run's start-up.
    :meth:`step` calls the kernel torch's fused AdamW calls (``torch._fused_adamw_``, after adding
    one to every step count), so the parameters are torch's bit for bit, and a ``state_dict`` of
    either loads into the other (``tests/test_methods.py``). One parameter group; parameters
    without a gradient are skipped, as torch skips them."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float):
        self.param_groups: list[dict[str, Any]] = [dict(
            params=list(params), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False,
            maximize=False, foreach=None, capturable=False, differentiable=False, fused=True,
            decoupled_weight_decay=True)]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._pre_hooks: OrderedDict[int, Callable] = OrderedDict()  # weak-referenceable, for the handles
        self._post_hooks: OrderedDict[int, Callable] = OrderedDict()

    @staticmethod
    def available() -> bool:
        return hasattr(torch, "_fused_adamw_")

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` before every step, as torch's optimisers call it."""
        handle = RemovableHandle(self._pre_hooks)
        self._pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` after every step."""
        handle = RemovableHandle(self._post_hooks)
        self._post_hooks[handle.id] = hook
        return handle

    def step(self) -> None:
        for hook in list(self._pre_hooks.values()):
            hook(self, (), {})
        self._step()
        for hook in list(self._post_hooks.values()):
            hook(self, (), {})

    @torch.no_grad()
    def _step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                            [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=float(group["lr"]),
                            beta1=float(beta1), beta2=float(beta2), weight_decay=float(group["weight_decay"]),
                            eps=float(group["eps"]), maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict[str, Any]:
        params = self.param_groups[0]["params"]
        index = {id(p): i for i, p in enumerate(params)}
        return {"state": {index[id(p)]: dict(s) for p, s in self.state.items()},
                "param_groups": [{**{k: v for k, v in self.param_groups[0].items() if k != "params"},
                                  "params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        (saved,) = state_dict["param_groups"]  # one group, as written by state_dict
        params = self.param_groups[0]["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(f"optimizer state: {len(saved['params'])} parameters saved, {len(params)} here")
        by_index = dict(zip(saved["params"], params))
        self.param_groups[0].update({k: v for k, v in saved.items() if k != "params"})
        self.param_groups[0]["betas"] = tuple(self.param_groups[0]["betas"])
        self.state = {}
        for idx, values in state_dict["state"].items():
            p = by_index[int(idx)]
            self.state[p] = {key: value.detach().to(device=p.device, dtype=torch.float32 if key == "step" else p.dtype,
                                                    copy=True) for key, value in values.items()}


#: What :func:`build_optimizer` returns.
Optimizer = Union[torch.optim.Optimizer, FusedAdamW]


# --- Muon ----------------------------------------------------------------------------------------
def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximate U V^T of g = U S V^T with the quintic iteration of Jordan et al.; ``g`` is
    ``[..., m, n]`` (leading dimensions are independent matrices, e.g. the runs of a batch)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (torch.linalg.matrix_norm(g, keepdim=True) + 1e-7)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


def muon_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D matrix Muon orthogonalises for a parameter of this shape: the linear map it is
    (``W_Q/K/V [n_heads, d_head, d_model]`` -> ``[n_heads * d_head, d_model]``)."""
    return (math.prod(shape[:-1]), shape[-1]) if len(shape) == 3 else (shape[0], math.prod(shape[1:]))


def muon_update(update: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Muon's step direction for a (Nesterov) momentum ``update`` of ``[..., *shape]``:
    orthogonalised as a matrix, scaled by sqrt(max(1, rows / cols))."""
    lead = update.shape[: update.ndim - len(shape)]
    rows, cols = muon_matrix_shape(shape)
    ortho = newton_schulz(update.reshape(*lead, rows, cols)) * max(1.0, rows / cols) ** 0.5
    return ortho.reshape(update.shape)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on groups with ``muon=True`` (matrices, reshaped to 2-D), AdamW on the rest."""

    def __init__(self, groups: list[dict], betas=(0.9, 0.98), eps=1e-8, momentum=0.95):
        super().__init__(groups, dict(betas=betas, eps=eps, momentum=momentum, muon=False, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(p.grad)
                    update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
                    p.mul_(1 - lr * wd).add_(muon_update(update, tuple(p.shape)), alpha=-lr)
                else:
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    t = float(state["step"])
                    p.mul_(1 - lr * wd)
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**t))


def is_hidden_matrix(name: str, p: torch.Tensor, onehot_input: bool = False) -> bool:
    """A matrix Muon steps: a transformer block's, or an MLP model's hidden layer's
    (``layers.{i}.W_in``) except the first one's when the input is one-hot codes (an embedding)."""
    if p.ndim < 2:
        return False
    if name.startswith("blocks."):
        return True
    return name.startswith("layers.") and not (onehot_input and name.startswith("layers.0."))


def build_optimizer(cfg: Config, model: torch.nn.Module | Sequence[tuple[str, torch.Tensor]],
                    fused: bool | None = None) -> "Optimizer":
    """The optimiser for ``cfg`` over one run's parameters: a model, or ``(name, tensor)`` pairs
    (a stacked run's views, under the seed's names). Every group records its peak lr as
    ``initial_lr`` for the warm-up. ``fused=True`` builds AdamW as :class:`FusedAdamW`."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] if isinstance(model, torch.nn.Module) \
        else list(model)
    params = [p for _, p in named]
    betas = (cfg.beta1, cfg.beta2)
    onehot = cfg.model == "mlp" and cfg.mlp_input == "onehot"
    if cfg.optimizer in ("adamw", "orthoadamw") and fused and FusedAdamW.available():
        opt: Optimizer = FusedAdamW(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.optimizer in ("adamw", "orthoadamw"):
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                fused=fused)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "muon":
        opt = MuonAdamW([
            dict(params=[p for n, p in named if is_hidden_matrix(n, p, onehot)], lr=cfg.muon_lr, muon=True,
                 weight_decay=cfg.weight_decay),
            dict(params=[p for n, p in named if not is_hidden_matrix(n, p, onehot)], lr=cfg.lr, muon=False,
                 weight_decay=cfg.weight_decay),
        ], betas=betas, eps=cfg.eps, momentum=cfg.momentum)
    else:  # validated in config; kept for a clear message if the choices grow
        raise ValueError(f"optimizer must be one of adamw, adam, sgd, muon, orthoadamw; got {cfg.optimizer!r}")
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]
    return opt


def lr_factor(cfg: Config, step: int) -> float:
    """The learning rate of optimiser step ``step`` over ``cfg.lr``: the seed's LambdaLR warm-up,
    min(step / warmup_steps, 1) (step 0 has lr 0, as in the seed), times the cosine decay
    0.5 * (1 + cos(pi * min(step / lr_decay_steps, 1))) when ``lr_decay_steps`` is set. A function of
    the step alone, so a resumed run continues the same schedule whatever its new epoch budget."""
    warm = 1.0 if cfg.warmup_steps == 0 else min(step / cfg.warmup_steps, 1.0)
    if cfg.lr_decay_steps == 0:
        return warm
    return warm * 0.5 * (1.0 + math.cos(math.pi * min(step / cfg.lr_decay_steps, 1.0)))


def set_learning_rate(opt: "Optimizer", factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] * factor


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

