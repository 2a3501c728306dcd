"""The Fourier analysis of one model (Nanda et al. 2023): numbers only, no files or figures.

A transformer that groks modular addition embeds each residue ``x`` as waves
``cos(w_k x), sin(w_k x)`` for a few *key frequencies* ``w_k = 2 pi k / p``, lets its MLP
neurons form ``cos(w_k (a + b))`` and ``sin(w_k (a + b))``, and reads off logits
``sum_k alpha_k cos(w_k (a + b - c))``, which peak at ``c = (a + b) mod p``. This module
measures that on one model, as numpy arrays and dataclasses:

- the Fourier basis of Z_p and the transforms of the embedding, the neuron activations
  over the ``(a, b)`` grid, the neuron-logit map ``W_L`` and the logits over ``(a, b, c)``;
- the key frequencies and how much of each weight matrix they explain; the dominant
  frequency of every neuron and the clusters of neurons that share one;
- restricted and excluded logits and losses, Gini coefficients of the Fourier norms, the
  sum of squared weights: :func:`measure` gives all of them for one model.

:mod:`grokking.progress` follows these over a run's snapshots; :mod:`grokking.analysis`
is the public face of both.

Conventions. Frequencies are integers ``k`` in ``1 .. p // 2`` (``w_k = 2 pi k / p``);
arrays "indexed by frequency" have length ``p // 2 + 1`` and hold the constant term at
index 0. Losses are float64 cross-entropies over the ``n`` answer classes at the ``=``
position: the ``=`` token's own logit is dropped (it is never an answer), so early in
training they differ slightly from ``metrics.jsonl``, which uses every logit (and the
run's loss function). Neurons and attention are those of block 0 (``layer`` chooses
elsewhere); the results come back on the CPU, computed under ``torch.no_grad``.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset, make_dataset
from .fast import last_position_logits as _fast_logits  # the exact last-position forward: 3x less work
from .fast import unsupported_reason as _fast_unsupported
from .model import Transformer

# Operations whose answer is c = a + sign * b: for them the restricted/excluded logits of
# Nanda et al. (directions cos(w (a + sign b - c))) are defined. Other ops get NaN.
_B_SIGN = {"add": 1, "subtract": -1}

NEURON_CLUSTER_THRESHOLD = 0.85  # fraction of a neuron's variance its frequency explains (see neuron_clusters)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: leave torch's setting), then restore it.

    The analyses are many medium-sized tensor operations; on shared cores extra threads cost
    more in contention than they gain (measured: 46 snapshots of the p = 113 model took 61 s
    with 2 threads and 17 s with 1 on a loaded 2-core machine), so the entry points default to 1.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the Fourier basis of Z_p ----------------------------------------------------------------
def fourier_basis(p: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[str]]:
    """Orthonormal real Fourier basis of functions on Z_p: ``(B [p, p], names)``.

    Row 0 is the constant ``1/sqrt(p)``; then for ``k = 1 .. (p - 1) // 2`` the rows
    ``cos(2 pi k x / p)`` and ``sin(2 pi k x / p)`` (rows ``2k - 1`` and ``2k``), each scaled to
    unit norm; for even ``p`` the last row is the alternating ``cos(pi x)`` ('cos p/2').
    ``B @ f`` gives the coefficients of a function ``f [p]``; ``B.T @ coeffs`` rebuilds it.
    """
    basis, names = _fourier_basis_cached(p)
    return basis.to(dtype=dtype, copy=True), list(names)


@functools.lru_cache(maxsize=16)
def _fourier_basis_cached(p: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * (torch.outer(k, x) % p) / p  # [(p - 1) // 2, p]; k x mod p keeps it exact
    waves = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1).reshape(-1, p)  # cos 1, sin 1, cos 2, ...
    rows = [torch.ones(1, p, dtype=torch.float64), waves]
    names = ["const"] + [f"{f} {i}" for i in range(1, (p - 1) // 2 + 1) for f in ("cos", "sin")]
    if p % 2 == 0 and p > 1:
        rows.append(torch.cos(math.pi * x)[None])
        names.append(f"cos {p // 2}")
    basis = torch.cat(rows)
    return basis / basis.norm(dim=1, keepdim=True), tuple(names)


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies of Z_p: ``p // 2``."""
    return p // 2


def basis_frequency(p: int) -> np.ndarray:
    """``[p]``: the frequency of each row of :func:`fourier_basis` (0 for the constant)."""
    return np.array([0] + [(i + 1) // 2 for i in range(1, p)], dtype=np.int64)


def frequency_norms(coefficients: np.ndarray | torch.Tensor, axis: int = 0) -> np.ndarray:
    """Norm per frequency of Fourier coefficients along ``axis`` (length ``p``): the cos and sin
    rows of frequency ``k`` and every other axis combined. Indexed by frequency (0: constant)."""
    c = _numpy(coefficients)
    c = np.moveaxis(c, axis, 0).reshape(c.shape[axis], -1)
    p = c.shape[0]
    squared = np.zeros(n_frequencies(p) + 1)
    np.add.at(squared, basis_frequency(p), (c**2).sum(axis=1))
    return np.sqrt(squared)


# --- transforms of the model's weights and activations ---------------------------------------
def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _n_classes(model: Transformer) -> int:
    return model.cfg.d_vocab - 1


def embedding_fourier(model: Transformer) -> np.ndarray:
    """``[p, d_model]``: the embedding of the residues (``W_E[:, :p]``) in the Fourier basis
    over the token axis."""
    p = _n_classes(model)
    basis, _ = fourier_basis(p, torch.float64)
    return (basis @ model.embed.W_E.detach().cpu().double()[:, :p].T).numpy()


def embedding_fourier_norms(model: Transformer) -> np.ndarray:
    """Norm of the embedding per frequency (cos and sin rows combined), indexed by frequency."""
    return frequency_norms(embedding_fourier(model))


def neuron_logit_map(model: Transformer, layer: int = 0) -> torch.Tensor:
    """``W_L = W_U[:, :p].T @ W_out``, ``[p, d_mlp]``: how each neuron's activation moves each
    answer's logit (ignores a final LayerNorm, if the model has one)."""
    p = _n_classes(model)
    W_U = model.unembed.W_U.detach().cpu()[:, :p]
    W_out = model.blocks[layer].mlp.W_out.detach().cpu()
    return W_U.T @ W_out


def neuron_logit_fourier(model: Transformer, layer: int = 0) -> np.ndarray:
    """``[p, d_mlp]``: ``W_L`` in the Fourier basis over the output (answer) axis."""
    W_L = neuron_logit_map(model, layer).double()
    basis, _ = fourier_basis(W_L.shape[0], torch.float64)
    return (basis @ W_L).numpy()


def neuron_logit_fourier_norms(model: Transformer, layer: int = 0) -> np.ndarray:
    """Norm of ``W_L`` per output frequency, indexed by frequency."""
    return frequency_norms(neuron_logit_fourier(model, layer))


def grid_tokens(p: int, eq_token: int | None = None) -> torch.Tensor:
    """``[p * p, 3]`` inputs ``a b =`` for every pair, row-major in ``(a, b)``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    eq = torch.full((p * p,), p if eq_token is None else eq_token)
    return torch.stack([a.reshape(-1), b.reshape(-1), eq], dim=1)


@torch.no_grad()
def grid_logits(model: Transformer) -> torch.Tensor:
    """``[p, p, p]`` logits at the ``=`` position over every ``(a, b)`` and answer ``c``
    (the ``=`` logit dropped), float32."""
    p = _n_classes(model)
    tokens = grid_tokens(p, model.eq_token).to(model.embed.W_E.device)
    if _fast_unsupported(model.cfg) is None:
        logits = _fast_logits(model, tokens[:, 0], tokens[:, 1])
    else:
        logits = model(tokens)[:, -1]
    return logits[:, :p].reshape(p, p, p).float().cpu()


@torch.no_grad()
def grid_cache(model: Transformer, names: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass over every pair: ``([p, p, p] logits, cache of the named hooks)``."""
    p = _n_classes(model)
    tokens = grid_tokens(p, model.eq_token).to(model.embed.W_E.device)
    logits, cache = model.run_with_cache(tokens, names_filter=list(names))
    return logits[:, -1, :p].reshape(p, p, p).float().cpu(), {k: v.cpu() for k, v in cache.items()}


def neuron_activations(model: Transformer, layer: int = 0) -> torch.Tensor:
    """``[p, p, d_mlp]``: MLP activations (``hook_post``) at the ``=`` position over the grid."""
    p = _n_classes(model)
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = grid_cache(model, [name])
    return cache[name][:, -1].reshape(p, p, -1)


def fourier_2d(grid: np.ndarray | torch.Tensor) -> np.ndarray:
    """2D Fourier transform over the first two axes: ``B @ X @ B.T`` for each trailing index.
    ``grid`` is ``[p, p, ...]``; returns the same shape, as float64."""
    x = torch.as_tensor(_numpy(grid))
    basis, _ = fourier_basis(x.shape[0], torch.float64)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.einsum("ia,abn,jb->ijn", basis, flat, basis).reshape(x.shape).numpy()


def logits_fourier(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[p, p, p]`` logits over ``(a, b, c)`` in the Fourier basis over all three axes."""
    x = torch.as_tensor(_numpy(logits))
    basis, _ = fourier_basis(x.shape[0], torch.float64)
    return torch.einsum("ia,jb,kc,abc->ijk", basis, basis, basis, x).numpy()




def logits_fourier_norms(logits: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """What the logits figure draws: ``([p, p] norm over c of the 2D Fourier components over
    (a, b), [p // 2 + 1] norm per frequency along the answer c)``."""
    x = torch.as_tensor(_numpy(logits))
    p = x.shape[0]
    ab_norms = torch.as_tensor(fourier_2d(x)).pow(2).sum(-1).sqrt().numpy()
    basis, _ = fourier_basis(p, torch.float64)
    return ab_norms, frequency_norms(x.reshape(p * p, p) @ basis.T, axis=1)


# --- key frequencies ---------------------------------------------------------------------------
@dataclass
class KeyFrequencies:
    """The key frequencies of one weight matrix.

    ``share[k]`` is the fraction of the non-constant squared Fourier norm at frequency ``k``
    (index 0 is unused and 0); ``explained`` is the share of the key frequencies together.
    """

    freqs: list[int]
    share: np.ndarray
    explained: float
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"freqs": self.freqs, "explained": self.explained, "source": self.source,
                "share": [float(s) for s in self.share]}


def select_key_frequencies(norms: np.ndarray, threshold: float | None = None,
                           max_keys: int | None = None) -> list[int]:
    """Pick the key frequencies from per-frequency norms (indexed by frequency, 0 = constant).

    Default rule (the "largest gap"): sort the frequencies by their share of the squared norm
    and cut the list where the ratio between consecutive shares is largest (on a log scale,
    with shares floored at 1e-9). A trained model's key frequencies carry orders of magnitude
    more weight than the rest, so the cut lands between keys and noise whatever their number
    and however unevenly the keys share the weight, with no threshold to tune for p. At most
    ``max_keys`` (default: half of the frequencies) are kept, so "key" stays a minority.

    With ``threshold``, instead every frequency whose share is at least ``threshold``.
    Returns the frequencies sorted ascending; empty if the norms are all zero.
    """
    squared = np.asarray(norms, dtype=np.float64)[1:] ** 2
    total = squared.sum()
    if squared.size == 0 or total <= 0:
        return []
    share = squared / total
    if threshold is not None:
        return [int(k) + 1 for k in np.flatnonzero(share >= threshold)]
    order = np.argsort(-share, kind="stable")
    cap = max(1, squared.size // 2) if max_keys is None else max(1, min(max_keys, squared.size))
    if squared.size == 1:
        return [1]
    log_share = np.log(np.maximum(share[order], 1e-9))
    gaps = log_share[:-1] - log_share[1:]  # gaps[m - 1]: between the m-th and (m+1)-th largest
    n_keys = int(np.argmax(gaps[:cap])) + 1
    return sorted(int(k) + 1 for k in order[:n_keys])


def key_frequencies(source: Transformer | np.ndarray, of: str = "neuron_logit",
                    threshold: float | None = None, max_keys: int | None = None) -> KeyFrequencies:
    """Key frequencies of a model's embedding (``of="embedding"``) or neuron-logit map
    (``of="neuron_logit"``, the default: the logits are built from it), or of an array of
    per-frequency norms. See :func:`select_key_frequencies` for the rule."""
    if isinstance(source, Transformer):
        if of == "embedding":
            norms = embedding_fourier_norms(source)
        elif of == "neuron_logit":
            norms = neuron_logit_fourier_norms(source)
        else:
            raise ValueError(f"of must be 'embedding' or 'neuron_logit', got {of!r}")
    else:
        norms, of = np.asarray(source, dtype=np.float64), "norms"
    freqs = select_key_frequencies(norms, threshold, max_keys)
    squared = norms**2
    squared[0] = 0.0
    share = squared / squared.sum() if squared.sum() > 0 else squared
    return KeyFrequencies(freqs, share, float(share[freqs].sum()) if freqs else 0.0, of)


def key_frequency_share(norms: np.ndarray, freqs: Sequence[int]) -> float:
    """Fraction of the non-constant squared norm at the given frequencies."""
    squared = np.asarray(norms, dtype=np.float64)[1:] ** 2
    total = squared.sum()
    return float(sum(squared[k - 1] for k in freqs) / total) if total > 0 else 0.0


# --- neurons ---------------------------------------------------------------------------------------
@dataclass
class NeuronFrequencies:
    """Per-neuron frequency analysis over the ``(a, b)`` grid.

    ``fractions[n, k]`` is the fraction of neuron ``n``'s variance (its squared 2D Fourier
    coefficients without the constant-constant term) in the terms of frequency ``k``: the
    products of ``{const, cos k, sin k}`` along ``a`` with the same along ``b``, less
    const x const (8 terms, as in Nanda et al.). Column 0 is unused. ``freq[n]`` is the
    dominant frequency and ``frac_explained[n]`` its fraction; a neuron that is constant over
    the grid (dead, ``alive`` False) has ``freq`` 0 and fraction 0.
    """

    freq: np.ndarray  # [d_mlp] int
    frac_explained: np.ndarray  # [d_mlp]
    fractions: np.ndarray  # [d_mlp, p // 2 + 1]
    alive: np.ndarray  # [d_mlp] bool: the activation varies over the grid


def neuron_frequencies(source: Transformer | np.ndarray | torch.Tensor, layer: int = 0) -> NeuronFrequencies:
    """Dominant frequency of every MLP neuron, from a model or from activations ``[p, p, d_mlp]``."""
    acts = neuron_activations(source, layer) if isinstance(source, Transformer) else source
    acts = torch.as_tensor(_numpy(acts))
    p, n_neurons = acts.shape[0], acts.shape[-1]
    acts = acts.reshape(p, p, n_neurons)
    K = n_frequencies(p)
    row_freq = torch.as_tensor(basis_frequency(p))
    # partner[i]: the other basis row of i's frequency (cos k <-> sin k); the constant and the
    # Nyquist row (even p) have none
    index = torch.arange(p)
    partner = torch.where(index % 2 == 1, index + 1, index - 1)
    has_partner = (index > 0) & (partner < p)
    partner = partner.clamp(0, p - 1)
    variance = torch.zeros(n_neurons, dtype=torch.float64)
    in_freq = torch.zeros(K + 1, n_neurons, dtype=torch.float64)
    chunk = max(1, (1 << 24) // (p * p))  # bounds the [p, p, chunk] coefficient tensor
    for start in range(0, n_neurons, chunk):
        power = torch.as_tensor(fourier_2d(acts[..., start:start + chunk])).pow(2)  # [p, p, n]
        stop = start + power.shape[-1]
        variance[start:stop] = power.sum(dim=(0, 1)) - power[0, 0]
        # terms of frequency k: {const, cos k, sin k} x {const, cos k, sin k} without const x const
        same = power[index, index] + power[index, partner] * has_partner[:, None]  # [p, n]
        by_freq = torch.zeros(K + 1, power.shape[-1], dtype=torch.float64)
        by_freq.index_add_(0, row_freq, same + power[0, :] + power[:, 0])
        in_freq[:, start:stop] = by_freq
    in_freq[0] = 0.0
    in_freq = in_freq.T  # [d_mlp, K + 1]
    alive = variance > 1e-12 * max(float(variance.max()) if n_neurons else 0.0, 1e-30)
    fractions = torch.where(alive[:, None], in_freq / variance.clamp_min(1e-300)[:, None], torch.zeros(()))
    fractions, alive = fractions.numpy(), alive.numpy()
    best = fractions[:, 1:].argmax(axis=1) + 1 if K else np.zeros(n_neurons, dtype=np.int64)
    freq = np.where(alive, best, 0).astype(np.int64)
    frac = np.where(alive, fractions[np.arange(n_neurons), freq], 0.0)
    return NeuronFrequencies(freq, frac, fractions, alive)


def neuron_clusters(neurons: NeuronFrequencies | Transformer,
                    threshold: float = NEURON_CLUSTER_THRESHOLD) -> dict[int | str, np.ndarray]:
    """Neurons grouped by dominant frequency: ``{freq: neuron indices, ..., 'unclustered': rest}``.

    A neuron joins its frequency's cluster when that frequency explains at least
    ``threshold`` of its variance (default 0.85: after clean-up most neurons clear it at
    0.9-0.99, e.g. 449 of 512 in the canonical p = 113 run, while neurons that mix
    frequencies sit at 0.2-0.8); dead neurons and the rest are 'unclustered'. Frequencies ascending.
    """
    if isinstance(neurons, Transformer):
        neurons = neuron_frequencies(neurons)
    clustered = neurons.alive & (neurons.frac_explained >= threshold)
    out: dict[int | str, np.ndarray] = {}
    for k in np.unique(neurons.freq[clustered]):
        out[int(k)] = np.flatnonzero(clustered & (neurons.freq == k))
    out["unclustered"] = np.flatnonzero(~clustered)
    return out


# --- restricted and excluded logits ------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _key_waves(p: int, freqs: tuple[int, ...], b_sign: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Waves of the key frequencies: ``S [p * p, 2K]`` with columns ``cos(w_k s), sin(w_k s)``
    over the (a, b) grid (``s = a + sign b``), ``C [2K, p]`` with rows ``cos(w_k c), sin(w_k c)``,
    and the Gram matrix ``S.T @ S`` (cached with them: it is the same for every snapshot)."""
    grid = torch.arange(p, dtype=torch.int64)
    s = (grid[:, None] + b_sign * grid[None, :]).reshape(-1)
    columns, rows = [], []
    for k in freqs:
        if not 1 <= k <= n_frequencies(p):
            raise ValueError(f"key frequency {k} is outside 1..{n_frequencies(p)} for p={p}")
        for values, out in ((s, columns), (grid, rows)):
            angle = 2 * math.pi * ((k * values) % p).double() / p  # reduced mod p: exact phases
            out += [torch.cos(angle), torch.sin(angle)]
    if not freqs:
        return (torch.zeros(p * p, 0, dtype=torch.float64), torch.zeros(0, p, dtype=torch.float64),
                torch.zeros(0, 0, dtype=torch.float64))
    S = torch.stack(columns, dim=1)
    return S, torch.stack(rows), S.T @ S


def restricted_and_excluded_logits(logits: np.ndarray | torch.Tensor, key_freqs: Sequence[int],
                                   subspace: str = "a+b-c", b_sign: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split logits ``[p, p, p]`` (or ``[p * p, p]``) over ``(a, b, c)`` into the part the key
    frequencies explain and the rest: ``restricted + excluded == logits`` (float64).

    ``subspace="a+b-c"`` (default, the paper's description): project onto the directions
    ``cos(w_k (a + b - c))`` and ``sin(w_k (a + b - c))`` over the whole ``(a, b, c)`` grid,
    two per key frequency; these are exactly the logits of the Fourier algorithm.
    ``subspace="a+b"`` (Nanda et al.'s code for the excluded loss): for every answer ``c``,
    project the logits as a function of ``(a, b)`` onto ``cos(w_k (a + b))`` and
    ``sin(w_k (a + b))``: a larger subspace (``2p`` dimensions per frequency) that contains the
    first. Both project after removing each pair's mean over ``c`` (a shift that changes no
    softmax), and the restricted logits keep that mean. With ``b_sign=-1`` the waves are in
    ``a - b`` (modular subtraction). The directions are orthogonal, so the split is exact.
    """
    if subspace not in ("a+b-c", "a+b"):
        raise ValueError(f"subspace must be 'a+b-c' or 'a+b', got {subspace!r}")
    x = torch.as_tensor(_numpy(logits))
    p = x.shape[-1]
    x = x.reshape(p * p, p)
    pair_mean = x.mean(dim=1, keepdim=True)
    S, C, gram = _key_waves(p, tuple(sorted(set(int(f) for f in key_freqs))), b_sign)
    # Everything below lives in the 2K-dimensional span of the (a, b) waves: G = S.T @ centred
    # logits, without forming the centred [p * p, p] tensor.
    G = S.T @ x - (S.T @ pair_mean)  # [2K, p]
    norm2_s = gram.diagonal()  # [2K]
    if subspace == "a+b":
        # per answer c, least squares on the (orthogonal) waves; a vanishing wave (the sine of
        # the Nyquist frequency, even p) gets no weight
        M = torch.where(norm2_s[:, None] > 1e-9, G / norm2_s.clamp_min(1e-9)[:, None], torch.zeros(()))
    else:
        M = torch.zeros_like(G)
        for i in range(0, S.shape[1], 2):
            cs, ss, cc, sc = slice(i, i + 1), slice(i + 1, i + 2), C[i], C[i + 1]
            n_cs, n_ss, n_cc, n_sc = norm2_s[i], norm2_s[i + 1], cc.dot(cc), sc.dot(sc)
            cross = gram[i, i + 1] * cc.dot(sc)
            # D1 = cos(w(s - c)) = cs x cc + ss x sc ;  D2 = sin(w(s - c)) = ss x cc - cs x sc
            dot1 = G[cs] @ cc + G[ss] @ sc
            dot2 = G[ss] @ cc - G[cs] @ sc
            norm1, norm2 = n_cs * n_cc + 2 * cross + n_ss * n_sc, n_ss * n_cc - 2 * cross + n_cs * n_sc
            alpha = dot1 / norm1 if norm1 > 1e-9 else torch.zeros(1, dtype=torch.float64)
            beta = dot2 / norm2 if norm2 > 1e-9 else torch.zeros(1, dtype=torch.float64)
            # alpha D1 + beta D2 = cs x (alpha cc - beta sc) + ss x (alpha sc + beta cc)
            M[i] = alpha * cc - beta * sc
            M[i + 1] = alpha * sc + beta * cc
    restricted = pair_mean + S @ M
    excluded = x - restricted
    return restricted.reshape(p, p, p), excluded.reshape(p, p, p)


# --- losses -------------------------------------------------------------------------------------------
def _split_rows(dataset: Dataset, split: str) -> torch.Tensor:
    """Rows of the (a, b) grid (``a * n + b``) of a split: 'train', 'test' or 'all' valid pairs."""
    if split == "all":
        tokens = dataset.tokens
    elif split in ("train", "test"):
        tokens, _ = dataset.split(split)
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return (tokens[:, 0] * dataset.n + tokens[:, 1]).cpu()


def _split_labels(dataset: Dataset, split: str) -> torch.Tensor:
    return (dataset.labels if split == "all" else dataset.split(split)[1]).cpu()


def grid_splits(dataset: Dataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{split: (grid rows, labels)}`` for 'train', 'test' and 'all', computed once."""
    return {split: (_split_rows(dataset, split), _split_labels(dataset, split)) for split in ("train", "test", "all")}


def _loss_and_accuracy(x: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor,
                       accuracy: bool = True) -> tuple[float, float]:
    picked = x.reshape(-1, x.shape[-1])[rows].double()
    loss = float(F.cross_entropy(picked, labels))
    return loss, float((picked.argmax(-1) == labels).double().mean()) if accuracy else math.nan


def grid_loss(logits: np.ndarray | torch.Tensor, dataset: Dataset, split: str = "all") -> float:
    """Float64 cross-entropy of grid logits ``[p, p, p]`` on a split of the dataset."""
    return _loss_and_accuracy(torch.as_tensor(logits), _split_rows(dataset, split), _split_labels(dataset, split))[0]


def grid_accuracy(logits: np.ndarray | torch.Tensor, dataset: Dataset, split: str = "all") -> float:
    """Accuracy (argmax over the answers) of grid logits ``[p, p, p]`` on a split."""
    return _loss_and_accuracy(torch.as_tensor(logits), _split_rows(dataset, split), _split_labels(dataset, split))[1]


def _restricted_and_excluded_of(source: Transformer | np.ndarray | torch.Tensor, dataset: Dataset,
                                key_freqs: Sequence[int], subspace: str) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset.op not in _B_SIGN:
        raise ValueError(f"restricted/excluded losses need an answer a + b or a - b; op is {dataset.op!r}")
    logits = grid_logits(source) if isinstance(source, Transformer) else torch.as_tensor(source)
    return restricted_and_excluded_logits(logits, key_freqs, subspace, _B_SIGN[dataset.op])


def restricted_loss(source: Transformer | np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                    split: str = "all", subspace: str = "a+b-c") -> float:
    """Loss of the logits restricted to the key frequencies (Nanda et al.): low once the
    Fourier circuit works, whatever the memorisation does. Evaluated on all pairs by default,
    as in the paper (``split`` chooses). ``source`` is a model or grid logits ``[p, p, p]``.
    Defined for ``add`` (and ``subtract``, with waves in ``a - b``); other ops raise ValueError."""
    restricted, _ = _restricted_and_excluded_of(source, dataset, key_freqs, subspace)
    return grid_loss(restricted, dataset, split)


def excluded_loss(source: Transformer | np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                  split: str = "train", subspace: str = "a+b-c") -> float:
    """Loss with the key-frequency directions removed from the logits, on the training data
    (Nanda et al.): it rises as the model stops relying on memorisation."""
    _, excluded = _restricted_and_excluded_of(source, dataset, key_freqs, subspace)
    return grid_loss(excluded, dataset, split)


# --- sparsity and size -------------------------------------------------------------------------------
def gini(values: np.ndarray | torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all equal, ``(n - 1) / n`` for one-hot.
    (Mean absolute difference over twice the mean, computed on sorted values.)"""
    x = np.sort(np.abs(_numpy(values)).reshape(-1))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float(((2 * rank - n - 1) * x).sum() / (n * total))


def sum_squared_weights(model: torch.nn.Module) -> float:
    """Total sum of squared parameters (buffers such as the attention mask excluded)."""
    return float(sum(p.detach().double().pow(2).sum().cpu() for p in model.parameters()))




# --- one model, all the numbers ---------------------------------------------------------------------
@torch.no_grad()
def measure(model: Transformer, dataset: Dataset, key_freqs: Sequence[int], restricted_split: str = "all",
            excluded_split: str = "train", subspace: str = "a+b-c",
            logits: torch.Tensor | None = None,
            splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """Every progress measure of one model (one forward pass over the grid):

    train/test loss and accuracy; restricted loss (on ``restricted_split``, default all
    pairs) and excluded loss (on ``excluded_split``, default train); the Gini coefficients of
    the per-frequency Fourier norms (frequencies 1 .. p // 2) of the embedding and of the
    neuron-logit map; the share of each that the key frequencies hold; the sum of squared
    weights. Restricted/excluded losses are NaN for operations other than add/subtract.
    ``logits``: the model's grid logits ``[p, p, p]``, if already computed; ``splits``:
    ``grid_splits(dataset)``, to reuse over many snapshots.
    """
    logits = (grid_logits(model) if logits is None else torch.as_tensor(logits)).double()
    splits = splits or grid_splits(dataset)
    out: dict[str, float] = {}
    out["train_loss"], out["train_acc"] = _loss_and_accuracy(logits, *splits["train"])
    out["test_loss"], out["test_acc"] = _loss_and_accuracy(logits, *splits["test"])
    if dataset.op in _B_SIGN and key_freqs:
        restricted, excluded = restricted_and_excluded_logits(logits, key_freqs, subspace, _B_SIGN[dataset.op])
        out["restricted_loss"] = _loss_and_accuracy(restricted, *splits[restricted_split], accuracy=False)[0]
        out["excluded_loss"] = _loss_and_accuracy(excluded, *splits[excluded_split], accuracy=False)[0]
    else:
        out["restricted_loss"] = out["excluded_loss"] = float("nan")
    embed_norms, logit_norms = embedding_fourier_norms(model), neuron_logit_fourier_norms(model)
    out["gini_embedding"], out["gini_neuron_logit"] = gini(embed_norms[1:]), gini(logit_norms[1:])
    out["key_share_embedding"] = key_frequency_share(embed_norms, key_freqs)
    out["key_share_neuron_logit"] = key_frequency_share(logit_norms, key_freqs)
    out["sum_sq_weights"] = sum_squared_weights(model)
    return out


def dataset_for(model: Transformer) -> Dataset:
    """The dataset a model was configured for (its op, p, split and seed)."""
    cfg = model.cfg
    return make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, cfg.split)


def attention_to_inputs(source: Transformer | torch.Tensor, layer: int = 0) -> np.ndarray:
    """``[n_heads, 2, p, p]``: attention from the ``=`` position to ``a`` (index 0) and to
    ``b`` (index 1), for every ``(a, b)``; from a model or its grid ``hook_pattern``."""
    if isinstance(source, Transformer):
        name = f"blocks.{layer}.attn.hook_pattern"
        _, cache = grid_cache(source, [name])
        source = cache[name]
    p = math.isqrt(source.shape[0])
    pattern = source[:, :, -1, :2]  # [p * p, head, key in (a, b)]
    return pattern.permute(1, 2, 0).reshape(pattern.shape[1], 2, p, p).double().numpy()


def analyze_model(model: Transformer, dataset: Dataset | None = None,
                  neuron_threshold: float = NEURON_CLUSTER_THRESHOLD) -> dict[str, Any]:
    """The Fourier analysis of one model, as JSON-ready numbers (no files).

    Keys: ``key_frequencies`` (of the embedding, of the neuron-logit map, and ``used``: the
    latter, which the restricted/excluded losses use), the per-frequency norms, the neuron
    summary (clusters, fraction of variance explained, share of live neurons whose dominant
    frequency is a key frequency), the fraction of the centred logits' squared norm in the
    key directions, and :func:`measure`'s numbers.
    """
    return analysis_and_arrays(model, dataset, neuron_threshold)[0]


def analysis_and_arrays(model: Transformer, dataset: Dataset | None = None,
                        neuron_threshold: float = NEURON_CLUSTER_THRESHOLD,
                        layer: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`analyze_model`'s numbers, and the arrays its figures need (``logits``,
    ``neurons``, ``clusters``, ``attention``), from one forward pass over the grid."""
    dataset = dataset or dataset_for(model)
    embed_key = key_frequencies(model, "embedding")
    logit_key = key_frequencies(model, "neuron_logit")
    used = logit_key.freqs
    post, pattern = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.attn.hook_pattern"
    logits, cache = grid_cache(model, [post, pattern])
    p = logits.shape[0]
    neurons = neuron_frequencies(cache[post][:, -1].reshape(p, p, -1))
    clusters = neuron_clusters(neurons, neuron_threshold)
    alive = neurons.alive
    arrays = {"logits": logits, "neurons": neurons, "clusters": clusters,
              "attention": attention_to_inputs(cache[pattern])}
    logits = logits.double()
    logit_share = None  # fraction of the logits (centred over c) in the key directions
    if dataset.op in _B_SIGN:
        _, excluded = restricted_and_excluded_logits(logits, used, "a+b-c", _B_SIGN[dataset.op])
        centred_norm2 = (logits - logits.mean(dim=-1, keepdim=True)).pow(2).sum()
        logit_share = float(1 - excluded.pow(2).sum() / centred_norm2) if centred_norm2 > 0 else 0.0
    return {
        "p": dataset.n,
        "op": dataset.op,
        "key_frequencies": {"embedding": embed_key.to_json(), "neuron_logit": logit_key.to_json(), "used": used},
        "embedding_fourier_norms": embedding_fourier_norms(model).tolist(),
        "neuron_logit_fourier_norms": neuron_logit_fourier_norms(model).tolist(),
        "neurons": {
            "threshold": neuron_threshold,
            "n_neurons": int(len(neurons.freq)),
            "n_dead": int((~alive).sum()),
            "clusters": {str(k): int(len(v)) for k, v in clusters.items()},
            "in_key_freqs": float(np.isin(neurons.freq[alive], used).mean()) if alive.any() else 0.0,
            "mean_frac_explained": float(neurons.frac_explained[alive].mean()) if alive.any() else 0.0,
            "freq": neurons.freq.tolist(),
            "frac_explained": [round(float(f), 5) for f in neurons.frac_explained],
        },
        "logits_key_share": logit_share,
        "measures": measure(model, dataset, used, logits=logits),
    }, arrays



__all__ = [
    "NEURON_CLUSTER_THRESHOLD", "torch_threads", "fourier_basis", "n_frequencies", "basis_frequency",
    "frequency_norms", "embedding_fourier", "embedding_fourier_norms", "neuron_logit_map", "neuron_logit_fourier",
    "neuron_logit_fourier_norms", "grid_tokens", "grid_logits", "grid_cache", "neuron_activations", "fourier_2d",
    "logits_fourier", "logits_fourier_norms", "KeyFrequencies", "select_key_frequencies", "key_frequencies",
    "key_frequency_share", "NeuronFrequencies", "neuron_frequencies", "neuron_clusters",
    "restricted_and_excluded_logits", "grid_splits", "grid_loss", "grid_accuracy", "restricted_loss",
    "excluded_loss", "gini", "sum_squared_weights", "measure", "dataset_for", "attention_to_inputs",
    "analyze_model", "analysis_and_arrays",
]
