"""Restricted and excluded logits and losses (Nanda et al. 2023, section 5.1), in any task's basis.

The paper's definitions (the default, ``subspace="paper"``). Take the logits ``L[a, b, c]`` and,
for each answer ``c``, see them as a function of the pair ``(a, b)`` over the grid.

- *Restricted logits*: that function kept only along ``cos(w_k (a + b))`` and ``sin(w_k (a + b))``
  for the key frequencies ``w_k``, plus its mean over ``(a, b)`` (one constant per answer).
  The *restricted loss* is their cross-entropy on all pairs: low once the Fourier circuit
  alone gives the answers.
- *Excluded logits*: those key directions removed (for each answer c, the projection onto
  ``cos(w_k (a + b))``, ``sin(w_k (a + b))`` subtracted; everything else kept). The *excluded
  loss* is their cross-entropy on the training pairs: it rises once the training fit runs
  through the circuit rather than through memorisation.

In a group's terms ``cos(w (a + b))`` is a function of the answer's group element ``t(a, b)``
(the correct answer, ``a + b mod p``): the directions are ``f(t(a, b))`` for the functions ``f``
of the key components of the group basis (:mod:`grokking.groups`), and since every answer is hit
equally often, projecting onto them is averaging the logits over the pairs with the same answer
and keeping that average's key components. So the same definitions serve every group task:

- ``subtract``: ``t = a - b``: directions in ``w (a - b)``;
- ``multiply`` / ``divide``: on the pairs of non-zero tokens, ``t = ab`` (``a / b``), so the
  directions are ``cos(w (log a + log b))`` (``log a - log b``), ``w = 2 pi k / (p - 1)``. The pairs
  with a 0 (answer 0, which is no element of the group) are their own part: their logits are
  left as they are in both the restricted and the excluded logits (they enter the losses with
  the model's own logits there; ``analysis.json`` reports their loss apart, ``pairs_apart``);
- ``perm_xy``: ``t = x y``: the matrix elements ``rho_ij(x y)`` of the key irreps, plus the mean;
  ``perm_xyx1`` / ``perm_xyx``: ``t = x y x^-1`` / ``x y x``, the same on the answer's group
  element. (This tests whether the logits are built from irreps of the answer; it does not say
  how the model composes ``rho(x) rho(y) rho(x)^-1``.)

Our variants, kept under their own names for add and subtract only:

- ``subspace="a+b-c"`` (:func:`restricted_loss_abc`, :func:`excluded_loss_abc`; the default
  before): two directions per key frequency over the whole ``(a, b, c)`` grid,
  ``cos(w (a + b - c))`` and ``sin(w (a + b - c))`` — exactly the logits of the Fourier algorithm —
  after removing each pair's mean over ``c``. Smaller than the paper's (``2`` rather than ``2p``
  dimensions per frequency, and no per-answer constants), so its restricted loss is lower and its
  excluded loss higher than the paper's on the same weights.
- ``subspace="a+b"``: the paper's directions per answer, but each pair's mean over ``c`` in
  place of the per-answer means (its excluded loss equals the paper's; its restricted loss lacks
  the per-answer constants).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset
from .groups import ADDITIVE_OPS, Basis, answer_group_index, n_frequencies, task_basis

SUBSPACES = ("paper", "a+b-c", "a+b")


def _as_double(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.detach().cpu().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, np.float64))


def group_rows(table: np.ndarray | torch.Tensor, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``(a, b)`` grid (``a * n + b``) whose inputs and answer are group elements,
    and the answer's group element for each. ``table [n, n]``: the answers, -1 where no pair."""
    table = np.asarray(table).reshape(-1)
    n = math.isqrt(table.size)
    index = answer_group_index(basis, n)
    a, b = np.divmod(np.arange(n * n), n)
    rows = np.flatnonzero((table >= 0) & (index[a] >= 0) & (index[b] >= 0) & (index[np.maximum(table, 0)] >= 0))
    return rows, index[table[rows]]


def _check_keys(key_freqs: Sequence[int], basis: Basis) -> list[int]:
    keys = sorted(set(int(k) for k in key_freqs))
    for k in keys:
        if not 1 <= k < basis.n_components:
            raise ValueError(f"key {basis.unit} {k} is outside 1..{basis.n_components - 1} for {basis.name}")
    return keys


def paper_split(logits: np.ndarray | torch.Tensor, key_freqs: Sequence[int], basis: Basis,
                table: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's restricted and excluded logits (module docstring) of ``logits [n, n, n]`` (or
    ``[n * n, n]``), for the answers ``table [n, n]`` read in ``basis``. Float64 ``[n, n, n]``;
    rows outside the group (and pairs that do not exist) are the logits themselves in both."""
    keys = _check_keys(key_freqs, basis)
    x = _as_double(logits)
    n = x.shape[-1]
    x = x.reshape(n * n, n)
    rows, s = group_rows(table, basis)
    rows_t, s_t = torch.as_tensor(rows), torch.as_tensor(s)
    m = len(basis.group_tokens)
    sums = torch.zeros(m, n, dtype=torch.float64).index_add_(0, s_t, x[rows_t])
    count = torch.as_tensor(np.bincount(s, minlength=m), dtype=torch.float64)
    component = basis.group_component

    def projection(selected: np.ndarray) -> torch.Tensor:
        """Least squares of each answer's column on the directions f(t(a, b)), f the selected rows."""
        B = torch.as_tensor(basis.group_basis[selected])  # [r, m]
        if B.shape[0] == 0:
            return torch.zeros(rows.size, n, dtype=torch.float64)
        gram = (B * count) @ B.T  # the directions' Gram matrix over the pairs: B diag(count) B^T
        coefficients = torch.linalg.pinv(gram, hermitian=True) @ (B @ sums)  # [r, n]
        return (B.T @ coefficients)[s_t]

    restricted, excluded = x.clone(), x.clone()
    restricted[rows_t] = projection(np.isin(component, keys + [0]))
    excluded[rows_t] = x[rows_t] - projection(np.isin(component, keys))
    return restricted.reshape(n, n, n), excluded.reshape(n, n, n)


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


def _ours_split(x: torch.Tensor, key_freqs: Sequence[int], subspace: str, b_sign: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our variants 'a+b-c' and 'a+b' for add (``b_sign`` 1) and subtract (-1)."""
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


def restricted_and_excluded_logits(logits: np.ndarray | torch.Tensor, key_freqs: Sequence[int],
                                   subspace: str = "paper", b_sign: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the logits ``[p, p, p]`` (or ``[p * p, p]``) of modular addition (``b_sign=-1``:
    subtraction) into the part the key frequencies explain and the rest, float64. With
    ``subspace="paper"`` (default) as Nanda et al. define them (module docstring): restricted
    logits keep the key directions and each answer's mean, excluded logits lose the key
    directions. With our variants ``"a+b-c"`` and ``"a+b"`` the split is exact:
    ``restricted + excluded == logits``. Other tasks: :func:`task_split`."""
    x = _as_double(logits)
    p = x.shape[-1]
    if subspace == "paper":
        a = np.arange(p)
        return paper_split(x, key_freqs, task_basis("add", p), (a[:, None] + b_sign * a[None, :]) % p)
    if subspace not in SUBSPACES:
        raise ValueError(f"subspace must be one of {', '.join(SUBSPACES)}; got {subspace!r}")
    return _ours_split(x, key_freqs, subspace, b_sign)


def task_split(logits: np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
               subspace: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """Restricted and excluded logits of any task with group structure, in its basis. Our
    variants (``"a+b-c"``, ``"a+b"``) exist for add and subtract only; ValueError otherwise, and
    for a task without group structure."""
    basis = task_basis(dataset.op, dataset.p)
    if not basis.has_circuit_structure:
        raise ValueError(f"restricted/excluded losses need a group task; {dataset.op!r} has {basis.name}")
    if subspace == "paper":
        return paper_split(logits, key_freqs, basis, dataset.table().numpy())
    if dataset.op not in ADDITIVE_OPS:
        raise ValueError(f"subspace {subspace!r} (ours) is defined for add and subtract; op is {dataset.op!r}")
    return restricted_and_excluded_logits(logits, key_freqs, subspace, 1 if dataset.op == "add" else -1)


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


def loss_and_accuracy(x: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor,
                      accuracy: bool = True) -> tuple[float, float]:
    """Float64 cross-entropy (and accuracy) of grid logits ``[n, n, n]`` at the given grid rows."""
    picked = x.reshape(-1, x.shape[-1])[rows].double()
    loss = float(F.cross_entropy(picked, labels))
    return loss, float((picked.argmax(-1) == labels).double().mean()) if accuracy else math.nan


def grid_loss(logits: np.ndarray | torch.Tensor, dataset: Dataset, split: str = "all") -> float:
    """Float64 cross-entropy of grid logits ``[n, n, n]`` on a split of the dataset."""
    return loss_and_accuracy(_as_double(logits), _split_rows(dataset, split), _split_labels(dataset, split))[0]


def grid_accuracy(logits: np.ndarray | torch.Tensor, dataset: Dataset, split: str = "all") -> float:
    """Accuracy (argmax over the answers) of grid logits ``[n, n, n]`` on a split."""
    return loss_and_accuracy(_as_double(logits), _split_rows(dataset, split), _split_labels(dataset, split))[1]


def _logits_of(source: torch.nn.Module | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(source, torch.nn.Module):
        raise TypeError("pass grid logits here; grokking.fourier.restricted_loss takes a model")
    return _as_double(source)


def restricted_loss(source: np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                    split: str = "all", subspace: str = "paper") -> float:
    """Cross-entropy of the restricted logits (module docstring) on ``split`` (default all
    pairs, as in the paper). ``source``: grid logits ``[n, n, n]``. ValueError for a task
    without group structure."""
    restricted, _ = task_split(_logits_of(source), dataset, key_freqs, subspace)
    return grid_loss(restricted, dataset, split)


def excluded_loss(source: np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                  split: str = "train", subspace: str = "paper") -> float:
    """Cross-entropy of the excluded logits on ``split`` (default the training pairs, as in the paper)."""
    _, excluded = task_split(_logits_of(source), dataset, key_freqs, subspace)
    return grid_loss(excluded, dataset, split)


def restricted_loss_abc(source: np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                        split: str = "all") -> float:
    """Ours, not the paper's: restricted loss on the directions cos/sin(w (a + b - c)) (add, subtract)."""
    return restricted_loss(source, dataset, key_freqs, split, "a+b-c")


def excluded_loss_abc(source: np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                      split: str = "train") -> float:
    """Ours, not the paper's: excluded loss with cos/sin(w (a + b - c)) removed (add, subtract)."""
    return excluded_loss(source, dataset, key_freqs, split, "a+b-c")


__all__ = [
    "SUBSPACES", "group_rows", "paper_split", "restricted_and_excluded_logits", "task_split", "grid_splits",
    "loss_and_accuracy", "grid_loss", "grid_accuracy", "restricted_loss", "excluded_loss", "restricted_loss_abc",
    "excluded_loss_abc",
]
