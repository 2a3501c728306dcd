"""The basis each task is read in: the group its answers form, and that group's Fourier basis.

A model that groks a group operation represents the elements by the group's irreducible
representations (Nanda et al. 2023 for Z_p; Chughtai, Chan & Nanda 2023 for any finite group),
so each task is analysed in the Fourier basis of *its* group:

- ``add``, ``subtract``: the cyclic group Z_p, tokens as residues; the real Fourier basis
  (const, cos k, sin k, ...): :func:`fourier_basis`. The answer is ``a + b`` or ``a - b``.
- ``multiply``, ``divide`` (p prime): the multiplicative group (Z/p)^x = {1, .., p - 1},
  cyclic of order p - 1. Token ``u != 0`` is indexed by its discrete logarithm
  ``log u`` to the base ``g``, the smallest primitive root of p (:func:`discrete_log`), and
  functions of ``u`` are expanded in the Fourier basis of Z_{p-1} over ``log u``: frequency
  k means ``cos(2 pi k log u / (p - 1))``. Products become sums, ``log(ab) = log a + log b``
  (``log a - log b`` for ``a / b``). Token 0 is no group element: it is absorbing for multiply
  (``0 * b = 0``) and ``0 / b = 0`` for divide (``b != 0`` always), so the basis over the tokens
  gives it a row of its own (``e_0``, component :data:`APART`) and the pairs with a 0 are
  analysed apart from the group.
- ``perm_xy``, ``perm_xyx1``, ``perm_xyx``: the symmetric group S5 (120 permutations). Its
  seven irreducible representations (dimensions 1, 1, 4, 4, 5, 5, 6), built here in Young's
  orthogonal form (:func:`s5_irreps`: real orthogonal matrices), give an orthonormal basis of
  functions on S5: ``sqrt(d / 120) rho_ij(g)`` for every irrep ``rho`` of dimension ``d`` and
  every matrix element ``(i, j)`` (Peter-Weyl; 1 + 1 + 16 + 16 + 25 + 25 + 36 = 120 rows).
  A "component" is an irrep, as a frequency is for Z_p.
- every other operation (``x2y2``, ``x3xy``, ``rand``, ``oddsub``, ...): its answers form no
  group under the inputs, so there is no basis in which a circuit would be sparse;
  :func:`task_basis` returns the additive Fourier basis of Z_p with ``kind = "none"``, used
  only to *describe* the model (a 2D DFT), never to claim a circuit.

Everything here is numbers (numpy float64), computed once per (op, p) and cached.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .data import OPERATIONS, PERMUTATIONS, group_size, is_prime

CIRCUIT_MIN_CONCENTRATION = 0.5  # see key_components_of_norms: how much sparser than chance a circuit must be
NULL_DRAWS = 512  # random spectra drawn for the null (seeded: the verdict is deterministic)
APART = -1  # the component of a token that is not a group element (0 for multiply/divide)
ADDITIVE_OPS = ("add", "subtract")
MULTIPLICATIVE_OPS = ("multiply", "divide")
S5_OPS = ("perm_xy", "perm_xyx1", "perm_xyx")


# --- Z_p ----------------------------------------------------------------------------------------
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


# --- (Z/p)^x ------------------------------------------------------------------------------------
def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group mod the prime ``p``."""
    if not is_prime(p):
        raise ValueError(f"primitive roots need a prime modulus, got {p}")
    if p == 2:
        return 1
    order = p - 1
    factors = [q for q in range(2, order + 1) if order % q == 0 and is_prime(q)]
    return next(g for g in range(2, p) if all(pow(g, order // q, p) != 1 for q in factors))


def discrete_log(p: int) -> np.ndarray:
    """``[p]``: ``log[u]`` with ``g ** log[u] == u (mod p)`` for ``u = 1 .. p - 1``, ``g`` =
    :func:`primitive_root`; ``log[0] = -1`` (0 has no logarithm)."""
    g = primitive_root(p)
    log = np.full(p, -1, dtype=np.int64)
    value = 1
    for k in range(p - 1):
        log[value] = k
        value = value * g % p
    return log


# --- S5 ------------------------------------------------------------------------------------------
# The partitions of 5 in the order the analysis numbers the irreps, with the names it prints.
S5_PARTITIONS: tuple[tuple[int, ...], ...] = ((5,), (1, 1, 1, 1, 1), (4, 1), (2, 1, 1, 1), (3, 2), (2, 2, 1),
                                              (3, 1, 1))
S5_IRREP_NAMES: tuple[str, ...] = ("trivial [5]", "sign [1^5]", "standard [4,1]", "standard x sign [2,1^3]",
                                   "5d [3,2]", "5d x sign [2,2,1]", "6d [3,1,1]")


def _standard_tableaux(shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], ...]]:
    """Standard Young tableaux of a shape (rows of entries 0 .. n - 1), in a fixed order."""
    n = sum(shape)
    out: list[tuple[tuple[int, ...], ...]] = []

    def fill(rows: list[list[int]], k: int) -> None:
        if k == n:
            out.append(tuple(tuple(r) for r in rows))
            return
        for i, length in enumerate(shape):
            if len(rows[i]) < length and (i == 0 or len(rows[i - 1]) > len(rows[i])):
                rows[i].append(k)
                fill(rows, k + 1)
                rows[i].pop()

    fill([[] for _ in shape], 0)
    return out


def _adjacent_transposition_matrices(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Young's orthogonal form: the matrices of s_i = (i i+1), i = 0 .. n - 2, for one shape.
    With ``r`` the axial distance content(i + 1) - content(i) in tableau T:
    ``s_i T = T / r + sqrt(1 - 1 / r^2) (s_i T)``, the second term only if s_i T is standard."""
    tableaux = _standard_tableaux(shape)
    index = {t: j for j, t in enumerate(tableaux)}
    n = sum(shape)
    where = [{v: (r, c) for r, row in enumerate(t) for c, v in enumerate(row)} for t in tableaux]
    mats = []
    for i in range(n - 1):
        m = np.zeros((len(tableaux), len(tableaux)))
        for j, t in enumerate(tableaux):
            (r1, c1), (r2, c2) = where[j][i], where[j][i + 1]
            axial = (c2 - r2) - (c1 - r1)
            m[j, j] = 1.0 / axial
            swapped = tuple(tuple(i + 1 if v == i else i if v == i + 1 else v for v in row) for row in t)
            if swapped in index:
                m[index[swapped], j] = math.sqrt(1.0 - 1.0 / axial**2)
        mats.append(m)
    return mats


def _reduced_word(perm: tuple[int, ...]) -> list[int]:
    """Indices i with ``perm = s_{i_k} o ... o s_{i_1}`` (composition as data.py: (x*y)(k) = x(y(k)))."""
    h, word = list(perm), []
    while True:
        descent = next((i for i in range(len(h) - 1) if h[i] > h[i + 1]), None)
        if descent is None:
            return word
        h[descent], h[descent + 1] = h[descent + 1], h[descent]  # h <- h o s_i
        word.append(descent)


@functools.lru_cache(maxsize=1)
def s5_irreps() -> tuple[np.ndarray, ...]:
    """The seven irreducible representations of S5, in the order of :data:`S5_PARTITIONS`:
    ``rho[i]`` is ``[120, d, d]``, ``rho[i][g]`` the real orthogonal matrix of permutation
    ``PERMUTATIONS[g]``, with ``rho(x * y) = rho(x) @ rho(y)`` for the composition of
    :mod:`grokking.data` (``(x*y)(k) = x(y(k))``)."""
    out = []
    for shape in S5_PARTITIONS:
        gens = _adjacent_transposition_matrices(shape)
        d = gens[0].shape[0] if gens else 1
        mats = np.zeros((len(PERMUTATIONS), d, d))
        for g, perm in enumerate(PERMUTATIONS):
            m = np.eye(d)
            for i in _reduced_word(perm):  # perm = s_{i_k} ... s_{i_1}: apply s_{i_1} first
                m = gens[i] @ m
            mats[g] = m
        out.append(mats)
    return tuple(out)


# --- one basis per task ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Basis:
    """The Fourier basis a task is read in.

    ``group_tokens [m]``: the token of each group element (element ``j`` is token
    ``group_tokens[j]``; for (Z/p)^x element ``j`` is ``g ** j``). ``group_basis [m, m]``: an
    orthonormal basis of functions on the group (rows), over the elements in that order;
    ``group_component [m]``: the component (frequency or irrep) of each row, 0 for the
    trivial one (the constant). ``token_basis [n, n]`` and ``token_component [n]``: the same
    over the tokens ``0 .. n - 1``, plus a row ``e_t`` of component :data:`APART` for each token
    outside the group. ``labels[k]``: the name of component ``k``; ``dims[k]`` its number of
    rows. ``kind``: 'additive', 'multiplicative', 's5' or 'none' (no group: a description only).
    """

    kind: str
    name: str
    group_tokens: np.ndarray
    group_basis: np.ndarray
    group_component: np.ndarray
    labels: tuple[str, ...]
    unit: str  # what a component is called: 'frequency' or 'irrep'
    token_basis: np.ndarray = field(repr=False)
    token_component: np.ndarray = field(repr=False)

    @property
    def n_components(self) -> int:
        """Components including the trivial one (index 0)."""
        return len(self.labels)

    @property
    def dims(self) -> np.ndarray:
        return np.bincount(self.group_component, minlength=self.n_components)

    @property
    def units(self) -> str:
        """The plural of ``unit``."""
        return {"frequency": "frequencies", "irrep": "irreps"}.get(self.unit, self.unit + "s")

    @property
    def has_circuit_structure(self) -> bool:
        return self.kind != "none"

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "unit": self.unit, "labels": list(self.labels),
                "dims": self.dims.tolist()}


def _token_rows(n: int, group_tokens: np.ndarray, group_basis: np.ndarray,
                group_component: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The group basis lifted to the tokens, plus e_t for each token outside the group."""
    outside = np.setdiff1d(np.arange(n), group_tokens)
    rows = np.zeros((len(outside) + len(group_tokens), n))
    for i, t in enumerate(outside):
        rows[i, t] = 1.0
    rows[len(outside):, group_tokens] = group_basis
    component = np.concatenate([np.full(len(outside), APART), group_component]).astype(np.int64)
    return rows, component


def _basis(kind: str, name: str, n: int, tokens: np.ndarray, basis: np.ndarray, component: np.ndarray,
           labels: tuple[str, ...], unit: str) -> Basis:
    token_basis, token_component = _token_rows(n, tokens, basis, component)
    return Basis(kind, name, tokens.astype(np.int64), basis, component.astype(np.int64), labels, unit,
                 token_basis, token_component)


@functools.lru_cache(maxsize=32)
def task_basis(op: str, p: int) -> Basis:
    """The basis of a task (see the module docstring for the choice per operation)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}")
    n = group_size(op, p)
    if op in S5_OPS:
        rows, component = [], []
        for c, rho in enumerate(s5_irreps()):
            d = rho.shape[1]
            rows.append(math.sqrt(d / len(PERMUTATIONS)) * rho.reshape(len(PERMUTATIONS), d * d).T)
            component += [c] * (d * d)
        return _basis("s5", "irreducible representations of S5 (Young's orthogonal form), tokens as permutations",
                      n, np.arange(n), np.concatenate(rows), np.asarray(component), S5_IRREP_NAMES, "irrep")
    if op in MULTIPLICATIVE_OPS and is_prime(p) and p > 2:
        g, m = primitive_root(p), p - 1
        tokens = np.array([pow(g, j, p) for j in range(m)])
        basis, _ = fourier_basis(m, torch.float64)
        labels = ("const",) + tuple(f"{k}" for k in range(1, m // 2 + 1))
        return _basis("multiplicative", f"Fourier basis of (Z/{p})^x by discrete log base {g} "
                      f"(order {m}; token 0 apart)", n, tokens, basis.numpy(), basis_frequency(m), labels,
                      "frequency")
    basis, _ = fourier_basis(p, torch.float64)
    labels = ("const",) + tuple(f"{k}" for k in range(1, p // 2 + 1))
    if op in ADDITIVE_OPS:
        return _basis("additive", f"additive Fourier basis of Z_{p}", n, np.arange(n), basis.numpy(),
                      basis_frequency(p), labels, "frequency")
    return _basis("none", f"additive Fourier basis of Z_{p} as a plain 2D DFT: {op} "
                  f"({OPERATIONS[op].formula}) has no group structure to read a circuit in", n, np.arange(n),
                  basis.numpy(), basis_frequency(p), labels, "frequency")


def answer_group_index(basis: Basis, n: int) -> np.ndarray:
    """``[n]``: the group element of each token, -1 for a token outside the group."""
    index = np.full(n, -1, dtype=np.int64)
    index[basis.group_tokens] = np.arange(len(basis.group_tokens))
    return index


# --- key components of a spectrum, and whether there is a circuit at all ---------------------------------------------
@dataclass
class KeyFrequencies:
    """The key components (frequencies or irreps) of one weight matrix, and the verdict.

    ``share[k]``: the fraction of the non-trivial squared norm in component ``k`` (index 0 is
    unused and 0); ``explained``: the keys' share together. ``null_share``: what the same number
    of largest components would hold in a random spectrum of the same size; ``concentration``:
    ``(explained - null_share) / (1 - null_share)``; ``circuit``: concentration >=
    :data:`CIRCUIT_MIN_CONCENTRATION`, else ``freqs`` is empty and ``reason`` says why.
    """

    freqs: list[int]
    share: np.ndarray
    explained: float
    source: str = ""
    circuit: bool = True
    null_share: float = 0.0
    concentration: float = 1.0
    reason: str = ""
    labels: list[str] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # what the gap rule picked, circuit or not

    def to_json(self) -> dict[str, Any]:
        return {"freqs": self.freqs, "labels": self.labels, "explained": self.explained, "source": self.source,
                "circuit": self.circuit, "null_share": self.null_share, "concentration": self.concentration,
                "reason": self.reason, "candidates": self.candidates, "share": [float(s) for s in self.share]}


def select_key_frequencies(norms: np.ndarray, threshold: float | None = None, max_keys: int | None = None,
                           dims: np.ndarray | None = None) -> list[int]:
    """Pick the key components from per-component norms (indexed by component, 0 = trivial).

    Default rule (the "largest gap"): sort the components by their squared norm per
    dimension (``dims``, rows per component; default all equal) and cut the list where the
    ratio between consecutive values is largest (on a log scale, shares floored at 1e-9). A
    trained model's key components carry orders of magnitude more weight than the rest, so
    the cut lands between keys and noise whatever their number and however unevenly they share
    the weight. At most ``max_keys`` (default: half of the components) are kept. This rule always
    picks something: :func:`key_frequencies` decides whether it is a circuit.

    With ``threshold``, instead every component whose share is at least ``threshold``.
    Returns the components sorted ascending; empty if the norms are all zero.
    """
    squared = np.asarray(norms, dtype=np.float64)[1:] ** 2
    total = squared.sum()
    if squared.size == 0 or total <= 0:
        return []
    share = squared / total
    if threshold is not None:
        return [int(k) + 1 for k in np.flatnonzero(share >= threshold)]
    density = share / (np.ones_like(share) if dims is None else np.maximum(np.asarray(dims, float)[1:], 1))
    order = np.argsort(-density, kind="stable")
    cap = max(1, squared.size // 2) if max_keys is None else max(1, min(max_keys, squared.size))
    if squared.size == 1:
        return [1]
    log_density = np.log(np.maximum(density[order], 1e-9))
    gaps = log_density[:-1] - log_density[1:]  # gaps[m - 1]: between the m-th and (m+1)-th largest
    n_keys = int(np.argmax(gaps[:cap])) + 1
    return sorted(int(k) + 1 for k in order[:n_keys])


def null_share(dims: np.ndarray, n_keys: int, columns: float, draws: int = NULL_DRAWS, seed: int = 0) -> float:
    """Mean share of the ``n_keys`` densest non-trivial components in a random spectrum: each
    component's squared norm chi-squared with ``dims[k] * columns`` degrees of freedom (an
    isotropic Gaussian matrix with ``columns`` independent columns, in an orthonormal basis)."""
    dims = np.maximum(np.asarray(dims, dtype=np.float64)[1:], 1)
    if n_keys <= 0 or dims.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    energy = rng.chisquare(dims * max(columns, 1.0), size=(draws, dims.size))
    top = np.argsort(-energy / dims, axis=1, kind="stable")[:, :n_keys]
    return float((np.take_along_axis(energy, top, axis=1).sum(1) / energy.sum(1)).mean())


def effective_columns(coefficients: np.ndarray, basis: Basis) -> float:
    """Independent columns of a coefficient matrix for the null: the participation ratio
    ``(sum s^2)^2 / sum s^4`` of the singular values of its non-trivial rows."""
    rows = coefficients[basis.token_component > 0] if coefficients.shape[0] == len(basis.token_component) \
        else coefficients[basis.group_component > 0]
    gram = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
    s2 = np.clip(np.linalg.eigvalsh(gram), 0, None)  # squared singular values
    return float(s2.sum() ** 2 / (s2**2).sum()) if (s2**2).sum() > 0 else 1.0


def key_components_of_norms(norms: np.ndarray, basis: Basis, source: str, columns: float,
                            threshold: float | None = None, max_keys: int | None = None) -> KeyFrequencies:
    """:func:`key_frequencies` on per-component norms already computed in ``basis``."""
    norms = np.asarray(norms, dtype=np.float64)
    dims = basis.dims if len(basis.dims) == len(norms) else np.full(len(norms), 2)
    candidates = select_key_frequencies(norms, threshold, max_keys, dims)
    squared = norms**2
    squared[0] = 0.0
    share = squared / squared.sum() if squared.sum() > 0 else squared
    explained = float(share[candidates].sum()) if candidates else 0.0
    null = null_share(dims, len(candidates), columns)
    concentration = (explained - null) / (1 - null) if null < 1 else 0.0
    labels = [basis.labels[k] if k < len(basis.labels) else str(k) for k in candidates]
    reason = ""
    if not basis.has_circuit_structure:
        reason = f"no group structure: {basis.name}"
    elif not candidates:
        reason = "the spectrum is zero"
    elif concentration < CIRCUIT_MIN_CONCENTRATION:
        reason = (f"no sparse set of {basis.units} explains the spectrum: the {len(candidates)} largest "
                  f"({', '.join(labels)}) hold {explained:.1%} of the norm, a random spectrum's {len(candidates)} "
                  f"largest {null:.1%} (concentration {concentration:.2f} < {CIRCUIT_MIN_CONCENTRATION})")
    circuit = not reason
    return KeyFrequencies(candidates if circuit else [], share, explained if circuit else 0.0, source, circuit,
                          null, float(concentration), reason, labels if circuit else [], candidates)


def key_frequency_share(norms: np.ndarray, freqs: Sequence[int]) -> float:
    """Fraction of the non-trivial squared norm at the given components."""
    squared = np.asarray(norms, dtype=np.float64)[1:] ** 2
    total = squared.sum()
    return float(sum(squared[k - 1] for k in freqs) / total) if total > 0 else 0.0


__all__ = [
    "APART", "ADDITIVE_OPS", "MULTIPLICATIVE_OPS", "S5_OPS", "fourier_basis", "n_frequencies", "basis_frequency",
    "primitive_root", "discrete_log", "S5_PARTITIONS", "S5_IRREP_NAMES", "s5_irreps", "Basis", "task_basis",
    "answer_group_index", "CIRCUIT_MIN_CONCENTRATION", "NULL_DRAWS", "KeyFrequencies", "select_key_frequencies",
    "null_share", "effective_columns", "key_components_of_norms", "key_frequency_share",
]
