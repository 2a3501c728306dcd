"""An MLP over a task's input tokens, with HookPoints; and the closed-form weights of Gromov (2023).

``MLP(cfg)`` (``cfg.model == "mlp"``) reads the first ``cfg.n_inputs`` of the dataset's tokens
(a table's ``a b =``: the two operands, since ``=`` carries nothing an MLP could use; a sequence
task's list, without the teacher-forced answer tokens the transformer reads; parity's bits; the
digits' 64 pixels) and returns ``[B, n]`` logits over the n answer classes (``[B, L, n]`` for a
sequence task's L answer tokens). The transformer's logits have a column for ``=`` too
(``[B, d_vocab]``, the seed's unembedding); the MLP has no such class, since ``=`` is never an
answer. Every consumer reads the two alike: the labels are ``< n``, the loss and argmax run over
the columns there are, and the analysis keeps the first ``n``.

The input (``cfg.mlp_input``), over ``T = cfg.n_inputs`` tokens of ``s = cfg.n_symbols`` values
(for a table ``T = 2`` and ``s = n``):

- ``"embed"``: one learned table ``embed.W_E [d_model, s]`` (the seed's layout, without the
  ``=`` column; initialised like the seed's, ``randn / sqrt(d_model)``) embeds every token,
  and the embeddings are concatenated: ``T d_model`` inputs;
- ``"onehot"``: the concatenated one-hot codes of the tokens: ``T s`` inputs, no embedding
  (``d_model`` is then unused).
  The first layer's columns over ``a`` (``W_in[:, :n]``) and over ``b`` (``W_in[:, n:]``) are
  then what ``W_E`` is to the transformer. They are gathered rather than multiplied by a
  ``[B, T s]`` one-hot matrix (which at p = 1000 would take gigabytes); the sum is the same
  float32 number for two tokens (adding exact zeros changes nothing), and when a hook is
  attached to ``hook_embed`` the one-hot codes are built and multiplied, so that a hook which
  edits them takes effect;
- ``"value"``: each token as a number, ``2 t / (s - 1) - 1`` in ``[-1, 1]``: ``T`` inputs (parity's
  bits as Barak et al.'s -1, +1; the digits' grey levels).

Then ``cfg.mlp_layers`` hidden layers of width ``d_mlp``, ``post = act(x @ W_in.T + b_in)``, and
``logits = post @ unembed.W_U`` (``W_U [d_mlp, L n]``, no bias, as the seed's unembedding).
Activations ``relu``, ``gelu`` (exact erf) or ``quadratic`` (``x^2``). Biases: a hidden layer has
``b_in`` (zero at init, as the seed's MLP) unless the activation is quadratic: Gromov's network has
none (with ``x^2`` a bias adds only a term linear in the pre-activation and a constant).

Initialisation, from ``torch.Generator().manual_seed(cfg.seed)`` in this order: ``W_E``, then
per layer ``W_in ~ randn / sqrt(fan_in)`` (``fan_in`` = the layer's input width), then
``W_U ~ randn / sqrt(d_mlp)``; every weight times ``cfg.init_scale``.

Names. Weights: ``embed.W_E``, ``layers.{i}.W_in [d_mlp, d_in]``, ``layers.{i}.b_in [d_mlp]``,
``unembed.W_U``. Hooks (TransformerLens's names where they apply; no positions): ``hook_embed``
``[B, T, d_model]`` (embed), ``[B, T, s]`` (onehot: the one-hot codes) or ``[B, T]`` (value),
``layers.{i}.hook_pre`` and ``layers.{i}.hook_post`` ``[B, d_mlp]`` (before and after the activation).

Gromov's network (arXiv 2301.02679) is ``mlp_input="onehot"``, ``mlp_act="quadratic"``,
``mlp_layers=1``: :func:`gromov_weights` builds its closed-form solution, :func:`gromov_config`
its config.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config, ConfigError
from .hooks import HookedRootModule, HookPoint

#: Fields that fix the shapes of an MLP's weights.
MLP_SHAPE_FIELDS = ("op", "p", "n_ctx", "mlp_input", "mlp_act", "mlp_layers", "d_mlp", "d_model")


def has_biases(cfg: Config) -> bool:
    """Whether the hidden layers have biases: not with the quadratic activation (Gromov's has none)."""
    return cfg.mlp_act != "quadratic"


def input_width(cfg: Config) -> int:
    """The first hidden layer's input width: T embeddings, T one-hot codes or T numbers."""
    per_token = {"embed": cfg.d_model, "onehot": cfg.n_symbols, "value": 1}[cfg.mlp_input]
    return cfg.n_inputs * per_token


def mlp_activation(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "quadratic":
        return x * x
    return F.relu(x) if act == "relu" else F.gelu(x)


class _Draw:
    """The initial weights, drawn in order from one generator, each times ``init_scale`` (not
    multiplied at all at 1.0)."""

    def __init__(self, seed: int, init_scale: float):
        self.generator, self.init_scale = torch.Generator().manual_seed(seed), init_scale

    def _scaled(self, t: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(t if self.init_scale == 1.0 else t * self.init_scale)

    def randn(self, *shape: int, fan_in: int) -> nn.Parameter:
        return self._scaled(torch.randn(*shape, generator=self.generator) / math.sqrt(fan_in))

    def zeros(self, *shape: int) -> nn.Parameter:
        return self._scaled(torch.zeros(shape))


class OperandEmbed(nn.Module):
    """One embedding table for every input token (``W_E [d_model, s]``, the seed's layout)."""

    def __init__(self, d_model: int, n: int, draw: _Draw):
        super().__init__()
        self.W_E = draw.randn(d_model, n, fan_in=d_model)

    def forward(self, operands: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, d_model]
        return F.embedding(operands, self.W_E.T)


class HiddenLayer(nn.Module):
    def __init__(self, d_in: int, d_mlp: int, act: str, bias: bool, draw: _Draw):
        super().__init__()
        self.W_in = draw.randn(d_mlp, d_in, fan_in=d_in)
        if bias:
            self.b_in = draw.zeros(d_mlp)
        self.act = act
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def finish(self, pre: torch.Tensor) -> torch.Tensor:
        """The bias, the activation and both hooks, given ``x @ W_in.T``."""
        if hasattr(self, "b_in"):
            pre = pre + self.b_in
        return self.hook_post(mlp_activation(self.hook_pre(pre), self.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x @ self.W_in.T)


class MLPUnembed(nn.Module):
    def __init__(self, d_mlp: int, n: int, output_len: int, draw: _Draw):
        super().__init__()
        self.W_U = draw.randn(d_mlp, output_len * n, fan_in=d_mlp)
        self.output_len = output_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.W_U
        return logits if self.output_len == 1 else logits.unflatten(-1, (self.output_len, -1))


class MLP(HookedRootModule):
    """The MLP of ``cfg`` (see the module docstring). ``MLP(cfg, seed=s)`` draws its weights from
    seed ``s`` instead of ``cfg.seed``. Inputs ``[B, n_ctx]`` (or just the ``[B, n_inputs]`` input
    tokens); output ``[B, n]``, or ``[B, L, n]`` for a sequence task."""

    def __init__(self, cfg: Config, seed: int | None = None):
        super().__init__()
        if cfg.model != "mlp":
            raise ConfigError("model", f"MLP needs model = mlp; got {cfg.model!r}")
        self.cfg = cfg
        self.n = n = cfg.n_classes
        self.n_inputs, self.n_symbols = cfg.n_inputs, cfg.n_symbols
        self.input_kind = cfg.mlp_input
        draw = _Draw(cfg.seed if seed is None else seed, cfg.init_scale)
        if self.input_kind == "embed":
            self.embed = OperandEmbed(cfg.d_model, self.n_symbols, draw)
        widths = [input_width(cfg)] + [cfg.d_mlp] * cfg.mlp_layers
        self.layers = nn.ModuleList(HiddenLayer(d_in, cfg.d_mlp, cfg.mlp_act, has_biases(cfg), draw)
                                    for d_in in widths[:-1])
        self.unembed = MLPUnembed(cfg.d_mlp, n, cfg.output_len, draw)
        self.hook_embed = HookPoint()
        self.setup()

    @property
    def eq_token(self) -> int:
        return self.n

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, n]`` (or ``[B, L, n]``) logits for ``[B, T']`` tokens, of which the first
        ``n_inputs`` are read."""
        inputs = tokens[..., : self.n_inputs]
        first = self.layers[0]
        if self.input_kind == "embed":
            post = first(self.hook_embed(self.embed(inputs)).flatten(-2))
        elif self.input_kind == "value":
            values = inputs.to(first.W_in.dtype) * (2.0 / (self.n_symbols - 1)) - 1.0
            post = first(self.hook_embed(values))
        elif self.hook_embed.has_hooks:  # a hook may read or edit the codes: build them
            codes = F.one_hot(inputs, self.n_symbols).to(first.W_in.dtype)
            post = first(self.hook_embed(codes).flatten(-2))
        else:
            # Row t * s + v of W_in.T is token t's code for value v times W_in.
            columns = first.W_in.T  # [T s, d_mlp]
            offsets = torch.arange(inputs.shape[-1], device=inputs.device) * self.n_symbols
            rows = F.embedding(inputs + offsets, columns)  # [B, T, d_mlp]
            post = first.finish(rows[..., 0, :] + rows[..., 1, :] if inputs.shape[-1] == 2 else rows.sum(-2))
        for layer in self.layers[1:]:
            post = layer(post)
        return self.unembed(post)

    def forward_operands(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[B, n]`` logits for a table's operands ``a, b`` (``[B]`` each)."""
        return self(torch.stack([a, b], -1))


def mlp_logits(model: MLP, tokens: torch.Tensor) -> torch.Tensor:
    """The MLP's logits function (the engine's ``logits_fn(model, tokens)``): ``[B, n]`` or ``[B, L, n]``."""
    return model(tokens)


# --- Gromov's closed form ------------------------------------------------------------------------------
def gromov_config(n: int, width: int, **changes: Any) -> Config:
    """The config of Gromov's network for addition mod ``n``: one-hot inputs, one hidden layer of
    ``width`` quadratic neurons, no biases, ``n`` outputs."""
    return Config().replace(**{"op": "add", "p": n, "model": "mlp", "mlp_input": "onehot",
                               "mlp_act": "quadratic", "mlp_layers": 1, "d_mlp": width, **changes})


def gromov_weights(n: int, width: int, seed: int = 0, random_phases: bool = False) -> dict[str, torch.Tensor]:
    """Weights that compute ``(a + b) mod n`` exactly, for the MLP of :func:`gromov_config`
    (a ``load_state_dict`` of it): ``{"layers.0.W_in": [width, 2n], "unembed.W_U": [width, n]}``.

    Gromov's construction: neuron k has a frequency ``f_k`` (``w_k = 2 pi f_k / n``) and phases
    ``phi_k, psi_k``; its input weights are ``cos(w_k a + phi_k)`` on a's code and
    ``cos(w_k b + psi_k)`` on b's, its output weights ``cos(w_k c + phi_k + psi_k)``.

    Why it works. With one-hot inputs neuron k's pre-activation is
    ``h = cos(w a + phi) + cos(w b + psi)``, and
    ``h^2 = 1 + cos(2wa + 2phi)/2 + cos(2wb + 2psi)/2 + cos(w(a+b) + phi+psi) + cos(w(a-b) + phi-psi)``.
    Times the output weight ``cos(wc + phi + psi)``, each term splits (product to sum) into two
    cosines whose phases are integer combinations ``u phi + v psi``. One of them has phase 0:
    ``cos(w(a+b) + phi+psi) cos(wc + phi+psi)`` gives ``cos(w(a + b - c)) / 2``, the same sign
    convention on both sides (``phi + psi`` in the output weight cancels the input phases).
    Every other one has ``(u, v)`` among ``(1, 1), (1, -1), (-1, 1), (3, 1), (1, 3), (2, 2),
    (0, -2), (2, 0)``. Over neurons whose phases cancel all of those, logit c is
    ``(1/2) sum_k cos(w_k (a + b - c))``, and for n prime every such cosine is 1 exactly when
    ``c = (a + b) mod n`` and below 1 otherwise (``f_k m`` is not a multiple of n for
    ``0 < m < n``): the right answer has the largest logit.

    Gromov draws the phases at random, so the other terms cancel on average and the argmax is
    right with high probability once the width is large: ``random_phases=True`` (frequencies
    and phases uniform, from ``seed``). The default makes the cancellation exact: neurons come
    in groups of 9 sharing a frequency and a random offset ``(phi_0, psi_0)`` (from ``seed``),
    with ``phi = phi_0 + 2 pi i / 3``, ``psi = psi_0 + 2 pi j / 3`` for i, j in 0..2. A sum over
    the group of ``exp(i (u phi + v psi))`` factors into two sums of cube roots of unity and
    vanishes unless 3 divides both u and v, which none of the combinations above does; so a
    group adds exactly ``(9/2) cos(w (a + b - c))`` to logit c, and the right answer wins each
    group's term by at least ``(9/2)(1 - cos(2 pi / n))`` (0.009 at n = 97; float32 round-off of
    the sums is below 1e-4 at the widths tested). The groups take the frequencies
    ``1 .. (n - 1) / 2`` in turn; when each is taken equally often and n is odd, the logits are
    a delta, ``(9/4) (groups per frequency) (n [c = a + b] - 1)``, for any odd n (prime or not).
    The ``width % 9`` neurons left over get zero output weights.
    """
    if n < 3:
        raise ConfigError("p", f"Gromov's construction needs n >= 3 residues; got {n}")
    rng = np.random.default_rng(seed)
    n_freqs = (n - 1) // 2
    if random_phases:
        freq = rng.integers(1, n_freqs + 1, size=width)
        phi, psi = rng.uniform(0, 2 * np.pi, size=(2, width))
        live = np.ones(width)
    else:
        if width < 9:
            raise ConfigError("d_mlp", f"the exact construction uses groups of 9 neurons; got width {width}")
        groups = width // 9
        offsets = rng.uniform(0, 2 * np.pi, size=(2, groups))
        i, j = np.divmod(np.arange(9), 3)  # the 3 x 3 phase grid of a group
        k = np.arange(width)
        group = np.minimum(k // 9, groups - 1)
        freq = 1 + group % n_freqs
        phi = offsets[0, group] + 2 * np.pi * i[k % 9] / 3
        psi = offsets[1, group] + 2 * np.pi * j[k % 9] / 3
        live = (k < 9 * groups).astype(np.float64)
    w = 2 * np.pi * freq / n
    x = np.arange(n)
    W_a = np.cos(w[:, None] * x + phi[:, None])  # [width, n]
    W_b = np.cos(w[:, None] * x + psi[:, None])
    W_U = np.cos(w[:, None] * x + (phi + psi)[:, None]) * live[:, None]  # [width, n]
    return {"layers.0.W_in": torch.from_numpy(np.concatenate([W_a, W_b], 1)).float(),
            "unembed.W_U": torch.from_numpy(W_U).float()}


def gromov_model(n: int, width: int, seed: int = 0, random_phases: bool = False) -> MLP:
    """Gromov's network for addition mod ``n`` with its closed-form weights (:func:`gromov_weights`)."""
    model = MLP(gromov_config(n, width, seed=seed))
    model.load_state_dict(gromov_weights(n, width, seed, random_phases), strict=True)
    return model.eval()


__all__ = ["MLP", "MLP_SHAPE_FIELDS", "gromov_config", "gromov_model", "gromov_weights", "has_biases",
           "input_width", "mlp_activation", "mlp_logits"]
