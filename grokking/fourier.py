"""The Fourier analysis of one model (Nanda et al. 2023; Chughtai et al. 2023): numbers only.

A transformer that groks modular addition embeds each residue ``x`` as waves
``cos(w_k x), sin(w_k x)`` for a few *key frequencies* ``w_k = 2 pi k / p``, lets its MLP
neurons form ``cos(w_k (a + b))`` and ``sin(w_k (a + b))``, and reads off logits
``sum_k alpha_k cos(w_k (a + b - c))``, which peak at ``c = (a + b) mod p``. For any group
the same algorithm runs on the group's irreducible representations. This module measures
it on one model, in the basis of the model's task (:func:`grokking.groups.task_basis`:
additive Fourier for add/subtract, Fourier over the discrete log for multiply/divide, the
irreps of S5 for the perm_* tasks, a plain 2D DFT, claiming nothing, for the rest):

- the transforms of the embedding, the neuron activations over the ``(a, b)`` grid, the
  neuron-logit map ``W_L`` and the logits; norms per *component* (a frequency or an irrep);
- the key components, with a test of whether a sparse set explains the spectrum at all
  (:func:`key_frequencies`; "no circuit" is an answer); each neuron's dominant component
  and the clusters of neurons that share one;
- restricted and excluded logits and losses as Nanda et al. define them (and two variants
  of ours), Gini coefficients, the sum of squared weights: :func:`measure` gives them all.

:mod:`grokking.progress` follows these over a run's snapshots; :mod:`grokking.analysis`
is the public face of both.

Conventions. Components are integers: 0 the trivial one (the constant), then frequencies
``k = 1 ..`` (``w_k = 2 pi k / m`` for a group of order m) or irreps in the order of
:data:`grokking.groups.S5_IRREP_NAMES`; arrays "indexed by frequency" hold one value per
component, the trivial one at index 0. Tokens outside the group (0 for multiply/divide) are
component :data:`grokking.groups.APART` and in no such array. Losses are float64 cross-entropies
over the ``n`` answer classes at the ``=`` position: the ``=`` token's own logit is dropped (it
is never an answer), so early in training they differ slightly from ``metrics.jsonl``. Neurons
and attention are those of block 0 (``layer`` chooses elsewhere); results come back on the
CPU, computed under ``torch.no_grad``.

An MLP (:mod:`grokking.mlp`) is measured the same way where the measure applies: its embedding
is ``W_E`` (``mlp_input = embed``) or, for one-hot input, the first layer's columns over ``a``
and over ``b`` side by side (they are what ``W_E`` is to the transformer); its neurons are those
of its last hidden layer (``layers.{L-1}.hook_post``), whose map to the logits is ``W_U``
itself (``W_L = W_U.T``: no residual stream in between). It has no attention:
:func:`attention_to_inputs` refuses it (:class:`~grokking.errors.NotApplicableError`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import restricted as _restricted
from .config import Config, build_dataset
from .data import Dataset
from .errors import NotApplicableError
from .factory import MODEL_TYPES, Model
from .fast import exact_logits_fn  # the exact last-position forward (3x less work than the hooked one)
from .groups import (
    ADDITIVE_OPS,
    APART,
    CIRCUIT_MIN_CONCENTRATION,
    NULL_DRAWS,
    Basis,
    KeyFrequencies,
    answer_group_index,
    basis_frequency,
    effective_columns,
    fourier_basis,
    key_components_of_norms,
    key_frequency_share,
    n_frequencies,
    null_share,
    select_key_frequencies,
    task_basis,
)
from .mlp import MLP
from .restricted import (
    SUBSPACES,
    grid_accuracy,
    grid_loss,
    grid_splits,
    group_rows,
    loss_and_accuracy,
    restricted_and_excluded_logits,
    task_split,
)

NEURON_CLUSTER_THRESHOLD = 0.85  # fraction of a neuron's variance its component explains (see neuron_clusters)
ATTENTION_NOT_APPLICABLE = "attention: model = mlp has no attention (its inputs are the two operands, concatenated)"


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


# --- transforms in the task's basis -------------------------------------------------------------------
def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def check_table_task(cfg: Config) -> None:
    """Raise NotApplicableError unless the task is a binary table: the Fourier analysis reads
    functions on the (a, b) grid, which a sequence task, parity or the digits do not have."""
    if cfg.task_kind != "table":
        raise NotApplicableError(f"op: {cfg.op} is a {cfg.task_kind} task; the Fourier analysis, progress "
                                 f"measures and circuits are for binary tables (a b =): see the run's curves "
                                 f"and report instead")


def _n_classes(model: Model) -> int:
    check_table_task(model.cfg)
    return model.cfg.d_vocab - 1


def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


def _neuron_layer(model: Model, layer: int | None) -> int:
    """The layer whose neurons are analysed: block 0 of a transformer, an MLP's last hidden layer
    (the one that reaches the logits linearly), unless ``layer`` says otherwise."""
    if isinstance(model, MLP):
        return model.cfg.mlp_layers - 1 if layer is None else layer
    return 0 if layer is None else layer


def _post_hook(model: Model, layer: int) -> str:
    return f"layers.{layer}.hook_post" if isinstance(model, MLP) else f"blocks.{layer}.mlp.hook_post"


def _at_equals(model: Model, x: torch.Tensor) -> torch.Tensor:
    """An activation or the logits at the ``=`` position (an MLP's have no position axis)."""
    return x if isinstance(model, MLP) else x[:, -1]


def model_basis(model: Model) -> Basis:
    """The basis of the model's task (its config's op and p)."""
    check_table_task(model.cfg)
    return task_basis(model.cfg.op, model.cfg.p)


def _additive(p: int) -> Basis:
    return task_basis("add", p)


def frequency_norms(coefficients: np.ndarray | torch.Tensor, axis: int = 0, basis: Basis | None = None) -> np.ndarray:
    """Norm per component of coefficients along ``axis`` (every other axis combined), indexed
    by component (0: trivial). The axis is over the rows of ``basis.token_basis`` (or of
    ``basis.group_basis``, if it has that length; tokens outside the group are left out);
    ``basis`` None: the additive Fourier basis of Z_p (cos and sin of a frequency combined)."""
    c = _numpy(coefficients)
    c = np.moveaxis(c, axis, 0).reshape(c.shape[axis], -1)
    basis = basis or _additive(c.shape[0])
    component = basis.group_component if c.shape[0] == len(basis.group_component) else basis.token_component
    keep = component != APART
    squared = np.zeros(basis.n_components)
    np.add.at(squared, component[keep], (c[keep] ** 2).sum(axis=1))
    return np.sqrt(squared)


def _apart_norm(coefficients: np.ndarray, basis: Basis) -> float:
    return float(np.sqrt((coefficients[basis.token_component == APART] ** 2).sum()))


def embedding_matrix(model: Model) -> np.ndarray:
    """``[n, width]``, one row per token: ``W_E[:, :n].T`` (``width = d_model``), or for an MLP on
    one-hot codes its first layer's columns over ``a`` and over ``b`` side by side
    (``width = 2 d_mlp``)."""
    n = _n_classes(model)
    if isinstance(model, MLP) and model.input_kind == "value":
        raise NotApplicableError("mlp_input: value feeds each operand as one number, so tokens have no embedding "
                                 "vectors to read in a Fourier basis; use embed or onehot")
    if isinstance(model, MLP) and model.input_kind == "onehot":
        W_in = _numpy(model.layers[0].W_in)  # [d_mlp, 2n]
        return np.concatenate([W_in[:, :n].T, W_in[:, n:].T], axis=1)
    return _numpy(model.embed.W_E)[:, :n].T


def embedding_fourier(model: Model, basis: Basis | None = None) -> np.ndarray:
    """``[n, width]``: the embedding of the answer tokens (:func:`embedding_matrix`: ``W_E[:, :n]``
    for a transformer) in the task's basis over the token axis (rows of ``basis.token_basis``)."""
    basis = basis or model_basis(model)
    return basis.token_basis @ embedding_matrix(model)


def embedding_fourier_norms(model: Model, basis: Basis | None = None) -> np.ndarray:
    """Norm of the embedding per component, indexed by component."""
    basis = basis or model_basis(model)
    return frequency_norms(embedding_fourier(model, basis), basis=basis)


def neuron_logit_map(model: Model, layer: int | None = None) -> torch.Tensor:
    """``W_L = W_U[:, :n].T @ W_out``, ``[n, d_mlp]``: how each neuron's activation moves each
    answer's logit (ignores a final LayerNorm, if the model has one). ``layer``: block 0 by
    default; for an MLP its last hidden layer, whose map is ``W_U.T`` (no other layer's
    neurons reach the logits linearly: NotApplicableError)."""
    n = _n_classes(model)
    W_U = model.unembed.W_U.detach().cpu()[:, :n]
    layer = _neuron_layer(model, layer)
    if isinstance(model, MLP):
        if layer != model.cfg.mlp_layers - 1:
            raise NotApplicableError(f"layer: an MLP's neurons reach the logits linearly only from its last hidden "
                                     f"layer ({model.cfg.mlp_layers - 1}); got {layer}")
        return W_U.T.clone()
    W_out = model.blocks[layer].mlp.W_out.detach().cpu()
    return W_U.T @ W_out


def neuron_logit_fourier(model: Model, layer: int | None = None, basis: Basis | None = None) -> np.ndarray:
    """``[n, d_mlp]``: ``W_L`` in the task's basis over the output (answer) axis."""
    basis = basis or model_basis(model)
    return basis.token_basis @ _numpy(neuron_logit_map(model, layer))


def neuron_logit_fourier_norms(model: Model, layer: int | None = None, basis: Basis | None = None) -> np.ndarray:
    """Norm of ``W_L`` per output component, indexed by component."""
    basis = basis or model_basis(model)
    return frequency_norms(neuron_logit_fourier(model, layer, basis), basis=basis)


def grid_tokens(p: int, eq_token: int | None = None) -> torch.Tensor:
    """``[p * p, 3]`` inputs ``a b =`` for every pair, row-major in ``(a, b)``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    eq = torch.full((p * p,), p if eq_token is None else eq_token)
    return torch.stack([a.reshape(-1), b.reshape(-1), eq], dim=1)


@torch.no_grad()
def grid_logits(model: Model) -> torch.Tensor:
    """``[n, n, n]`` logits at the ``=`` position over every ``(a, b)`` and answer ``c``
    (the ``=`` logit dropped), float32."""
    n = _n_classes(model)
    tokens = grid_tokens(n, model.eq_token).to(_device(model))
    logits = exact_logits_fn(model.cfg)(model, tokens)
    return logits[:, :n].reshape(n, n, n).float().cpu()


@torch.no_grad()
def grid_cache(model: Model, names: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass over every pair: ``([n, n, n] logits, cache of the named hooks)`` (the
    cache as the hooks give it: a transformer's with its position axis, an MLP's without)."""
    n = _n_classes(model)
    tokens = grid_tokens(n, model.eq_token).to(_device(model))
    logits, cache = model.run_with_cache(tokens, names_filter=list(names))
    return _at_equals(model, logits)[:, :n].reshape(n, n, n).float().cpu(), {k: v.cpu() for k, v in cache.items()}


def neuron_activations(model: Model, layer: int | None = None) -> torch.Tensor:
    """``[n, n, d_mlp]``: MLP activations (``hook_post``) at the ``=`` position over the grid
    (block 0 of a transformer, the last hidden layer of an MLP, by default)."""
    n = _n_classes(model)
    name = _post_hook(model, _neuron_layer(model, layer))
    _, cache = grid_cache(model, [name])
    return _at_equals(model, cache[name]).reshape(n, n, -1)


def fourier_2d(grid: np.ndarray | torch.Tensor, basis: Basis | None = None) -> np.ndarray:
    """2D transform over the first two axes of ``grid [n, n, ...]``: ``B @ X @ B.T`` for each
    trailing index, with ``B = basis.group_basis`` over the group's pairs (for multiply/divide
    the pairs of non-zero tokens, in discrete-log order); ``basis`` None: additive Z_n. Float64."""
    x = torch.as_tensor(_numpy(grid))
    basis = basis or _additive(x.shape[0])
    tokens = torch.as_tensor(basis.group_tokens)
    x = x[tokens][:, tokens]
    m = x.shape[0]
    flat = x.reshape(m, m, -1)
    B = torch.as_tensor(basis.group_basis)
    left = (B @ flat.reshape(m, -1)).reshape(m, m, -1)  # over a
    return (B @ left.transpose(0, 1).reshape(m, -1)).reshape(m, m, -1).transpose(0, 1).reshape(x.shape).numpy()


def logits_fourier(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[p, p, p]`` logits over ``(a, b, c)`` in the additive Fourier basis over all three axes."""
    x = torch.as_tensor(_numpy(logits))
    basis, _ = fourier_basis(x.shape[0], torch.float64)
    return torch.einsum("ia,jb,kc,abc->ijk", basis, basis, basis, x).numpy()


def logits_fourier_norms(logits: np.ndarray | torch.Tensor, basis: Basis | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What the logits figure draws: ``([m, m] norm over c of the 2D components over the
    group's pairs (a, b), [n_components] norm per component along the answer c)``."""
    x = torch.as_tensor(_numpy(logits))
    n = x.shape[0]
    basis = basis or _additive(n)
    ab_norms = torch.as_tensor(fourier_2d(x, basis)).pow(2).sum(-1).sqrt().numpy()
    along_c = x.reshape(n * n, n).numpy() @ basis.token_basis.T
    return ab_norms, frequency_norms(along_c, axis=1, basis=basis)


# --- key components of a model, and whether there is a circuit ---------------------------------------
def key_frequencies(source: Model | np.ndarray, of: str = "neuron_logit", threshold: float | None = None,
                    max_keys: int | None = None, basis: Basis | None = None,
                    columns: float | None = None) -> KeyFrequencies:
    """Key components of a model's embedding (``of="embedding"``) or neuron-logit map
    (``of="neuron_logit"``, the default: the logits are built from it), in the model's task
    basis; or of an array of per-component norms (``basis``: additive Z_p by default).

    The candidates come from :func:`select_key_frequencies`. They are a circuit when they are
    far sparser than chance: with ``explained`` their share of the non-trivial squared norm and
    ``null`` the mean share the same number of densest components gets in a random spectrum
    of the same shape (:func:`null_share`, 512 seeded draws; ``columns``: the matrix's
    :func:`effective_columns`, 1 for bare norms), the *concentration*
    ``(explained - null) / (1 - null)`` must reach :data:`CIRCUIT_MIN_CONCENTRATION` (0.5: the
    keys hold at least half of the norm that chance would put outside them). Otherwise
    ``freqs`` is empty, ``circuit`` False and ``reason`` says so. A task without group
    structure (basis kind 'none') never has a circuit.
    """
    if isinstance(source, MODEL_TYPES):
        basis = basis or model_basis(source)
        if of == "embedding":
            coefficients = embedding_fourier(source, basis)
        elif of == "neuron_logit":
            coefficients = neuron_logit_fourier(source, basis=basis)
        else:
            raise ValueError(f"of must be 'embedding' or 'neuron_logit', got {of!r}")
        norms = frequency_norms(coefficients, basis=basis)
        columns = effective_columns(coefficients, basis) if columns is None else columns
    else:
        norms, of = np.asarray(source, dtype=np.float64), "norms"
        basis = basis or _additive(2 * (len(norms) - 1) + 1)
    return key_components_of_norms(norms, basis, of, 1.0 if columns is None else columns, threshold, max_keys)


# --- neurons ---------------------------------------------------------------------------------------
@dataclass
class NeuronFrequencies:
    """Per-neuron component analysis over the group's pairs ``(a, b)``.

    ``fractions[n, k]`` is the fraction of neuron ``n``'s variance (its squared 2D coefficients
    without the trivial x trivial term) in the terms of component ``k``: the products of
    {trivial, k} along ``a`` with the same along ``b``, less trivial x trivial (for a frequency
    of Z_p: {const, cos k, sin k} x {const, cos k, sin k}, 8 terms, as in Nanda et al.).
    Column 0 is unused. ``freq[n]`` is the dominant component and ``frac_explained[n]`` its
    fraction; a neuron constant over the pairs (dead, ``alive`` False) has ``freq`` 0 and 0.
    """

    freq: np.ndarray  # [d_mlp] int
    frac_explained: np.ndarray  # [d_mlp]
    fractions: np.ndarray  # [d_mlp, n_components]
    alive: np.ndarray  # [d_mlp] bool: the activation varies over the grid


def neuron_frequencies(source: Model | np.ndarray | torch.Tensor, layer: int | None = None,
                       basis: Basis | None = None) -> NeuronFrequencies:
    """Dominant component of every MLP neuron, from a model or from activations ``[n, n, d_mlp]``
    (for multiply/divide over the pairs of non-zero tokens, in the discrete-log basis)."""
    if isinstance(source, MODEL_TYPES):
        basis = basis or model_basis(source)
        acts = neuron_activations(source, layer)
    else:
        acts = source
    acts = torch.as_tensor(_numpy(acts))
    n, n_neurons = acts.shape[0], acts.shape[-1]
    acts = acts.reshape(n, n, n_neurons)
    basis = basis or _additive(n)
    component = torch.as_tensor(basis.group_component)
    n_comp = basis.n_components
    variance = torch.zeros(n_neurons, dtype=torch.float64)
    in_comp = torch.zeros(n_comp, n_neurons, dtype=torch.float64)
    m = len(component)
    chunk = max(1, (1 << 24) // (m * m))  # bounds the [m, m, chunk] coefficient tensor
    for start in range(0, n_neurons, chunk):
        power = torch.as_tensor(fourier_2d(acts[..., start:start + chunk], basis)).pow(2)  # [m, m, c]
        stop = start + power.shape[-1]
        by_rows = torch.zeros(n_comp, m, power.shape[-1], dtype=torch.float64).index_add_(0, component, power)
        pair = torch.zeros(n_comp, n_comp, power.shape[-1], dtype=torch.float64).index_add_(1, component, by_rows)
        variance[start:stop] = pair.sum(dim=(0, 1)) - pair[0, 0]
        diagonal = pair[torch.arange(n_comp), torch.arange(n_comp)]  # [n_comp, c]
        in_comp[:, start:stop] = diagonal + pair[0, :] + pair[:, 0]
    in_comp[0] = 0.0
    in_comp = in_comp.T  # [d_mlp, n_comp]
    alive = variance > 1e-12 * max(float(variance.max()) if n_neurons else 0.0, 1e-30)
    fractions = torch.where(alive[:, None], in_comp / variance.clamp_min(1e-300)[:, None], torch.zeros(()))
    fractions, alive = fractions.numpy(), alive.numpy()
    best = fractions[:, 1:].argmax(axis=1) + 1 if n_comp > 1 else np.zeros(n_neurons, dtype=np.int64)
    freq = np.where(alive, best, 0).astype(np.int64)
    frac = np.where(alive, fractions[np.arange(n_neurons), freq], 0.0)
    return NeuronFrequencies(freq, frac, fractions, alive)


def neuron_clusters(neurons: NeuronFrequencies | Model,
                    threshold: float = NEURON_CLUSTER_THRESHOLD) -> dict[int | str, np.ndarray]:
    """Neurons grouped by dominant component: ``{component: neuron indices, ..., 'unclustered': rest}``.

    A neuron joins its component's cluster when that component explains at least
    ``threshold`` of its variance (default 0.85: after clean-up most neurons clear it at
    0.9-0.99, e.g. 449 of 512 in the canonical p = 113 run, while neurons that mix
    frequencies sit at 0.2-0.8); dead neurons and the rest are 'unclustered'. Components ascending.
    """
    if isinstance(neurons, MODEL_TYPES):
        neurons = neuron_frequencies(neurons)
    clustered = neurons.alive & (neurons.frac_explained >= threshold)
    out: dict[int | str, np.ndarray] = {}
    for k in np.unique(neurons.freq[clustered]):
        out[int(k)] = np.flatnonzero(clustered & (neurons.freq == k))
    out["unclustered"] = np.flatnonzero(~clustered)
    return out


# --- restricted and excluded loss of a model (definitions: grokking.restricted) ----------------------------
def _logits(source: Model | np.ndarray | torch.Tensor) -> torch.Tensor:
    return grid_logits(source) if isinstance(source, MODEL_TYPES) else torch.as_tensor(_numpy(source))


def restricted_loss(source: Model | np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                    split: str = "all", subspace: str = "paper") -> float:
    """Loss of the logits restricted to the key components, as Nanda et al. define it (see
    :mod:`grokking.restricted`; ``subspace`` picks one of our variants), in the task's basis:
    low once the circuit alone gives the answers. On all pairs by default, as in the paper.
    ``source``: a model or its grid logits. ValueError for a task without group structure."""
    return _restricted.restricted_loss(_logits(source), dataset, key_freqs, split, subspace)


def excluded_loss(source: Model | np.ndarray | torch.Tensor, dataset: Dataset, key_freqs: Sequence[int],
                  split: str = "train", subspace: str = "paper") -> float:
    """Loss with the key directions removed from the logits, on the training pairs (Nanda et
    al.): it rises as the training fit comes to run through the circuit."""
    return _restricted.excluded_loss(_logits(source), dataset, key_freqs, split, subspace)


def restricted_loss_abc(source: Model | np.ndarray | torch.Tensor, dataset: Dataset,
                        key_freqs: Sequence[int], split: str = "all") -> float:
    """Ours, not the paper's (add/subtract): :func:`restricted_loss` on cos/sin(w (a + b - c))."""
    return _restricted.restricted_loss_abc(_logits(source), dataset, key_freqs, split)


def excluded_loss_abc(source: Model | np.ndarray | torch.Tensor, dataset: Dataset,
                      key_freqs: Sequence[int], split: str = "train") -> float:
    """Ours, not the paper's (add/subtract): :func:`excluded_loss` removing cos/sin(w (a + b - c))."""
    return _restricted.excluded_loss_abc(_logits(source), dataset, key_freqs, split)


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
def measure(model: Model, dataset: Dataset, key_freqs: Sequence[int], restricted_split: str = "all",
            excluded_split: str = "train", subspace: str = "paper", logits: torch.Tensor | None = None,
            splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """Every progress measure of one model (one forward pass over the grid), in its task's basis:

    train/test loss and accuracy; restricted loss (on ``restricted_split``, default all pairs)
    and excluded loss (on ``excluded_split``, default train) with ``subspace`` (default the
    paper's, see :mod:`grokking.restricted`), and for add/subtract our variant
    ``restricted_loss_abc`` / ``excluded_loss_abc``; the Gini coefficients of the per-component
    norms (non-trivial components) of the embedding and of the neuron-logit map; the share of
    each that the key components hold; the sum of squared weights. The restricted/excluded
    losses are NaN without key components or without group structure. ``logits``: the
    model's grid logits, if already computed; ``splits``: ``grid_splits(dataset)``, to reuse.
    """
    logits = (grid_logits(model) if logits is None else torch.as_tensor(logits)).double()
    splits = splits or grid_splits(dataset)
    basis = model_basis(model)
    out: dict[str, float] = {}
    out["train_loss"], out["train_acc"] = loss_and_accuracy(logits, *splits["train"])
    out["test_loss"], out["test_acc"] = loss_and_accuracy(logits, *splits["test"])
    nan = float("nan")
    out["restricted_loss"] = out["excluded_loss"] = out["restricted_loss_abc"] = out["excluded_loss_abc"] = nan
    variants = [(subspace, "")] + ([("a+b-c", "_abc")] if dataset.op in ADDITIVE_OPS else [])
    if basis.has_circuit_structure and key_freqs:
        for name, suffix in variants:
            restricted, excluded = task_split(logits, dataset, key_freqs, name)
            out["restricted_loss" + suffix] = loss_and_accuracy(restricted, *splits[restricted_split], False)[0]
            out["excluded_loss" + suffix] = loss_and_accuracy(excluded, *splits[excluded_split], False)[0]
    embed_norms, logit_norms = embedding_fourier_norms(model, basis), neuron_logit_fourier_norms(model, basis=basis)
    out["gini_embedding"], out["gini_neuron_logit"] = gini(embed_norms[1:]), gini(logit_norms[1:])
    out["key_share_embedding"] = key_frequency_share(embed_norms, key_freqs)
    out["key_share_neuron_logit"] = key_frequency_share(logit_norms, key_freqs)
    out["sum_sq_weights"] = sum_squared_weights(model)
    return out


def dataset_for(model: Model) -> Dataset:
    """The dataset a model was configured for (its op, p, split and seed)."""
    cfg = model.cfg
    return build_dataset(cfg)


def attention_to_inputs(source: Model | torch.Tensor, layer: int = 0) -> np.ndarray:
    """``[n_heads, 2, n, n]``: attention from the ``=`` position to ``a`` (index 0) and to
    ``b`` (index 1), for every ``(a, b)``; from a transformer or its grid ``hook_pattern``
    (an MLP has none: NotApplicableError)."""
    if isinstance(source, MLP):
        raise NotApplicableError(ATTENTION_NOT_APPLICABLE)
    if isinstance(source, MODEL_TYPES):
        name = f"blocks.{layer}.attn.hook_pattern"
        _, cache = grid_cache(source, [name])
        source = cache[name]
    n = math.isqrt(source.shape[0])
    pattern = source[:, :, -1, :2]  # [n * n, head, key in (a, b)]
    return pattern.permute(1, 2, 0).reshape(pattern.shape[1], 2, n, n).double().numpy()


def logit_component_norms(logits: torch.Tensor, dataset: Dataset, basis: Basis) -> tuple[np.ndarray, float]:
    """Per component, the norm of the logits along the directions the restricted loss keeps:
    for each answer c the logits as a function of the answer's group element t(a, b) (their
    mean over the pairs with that answer), expanded in the group basis; and the effective
    columns of those coefficients (for the null of :func:`key_frequencies`)."""
    n = logits.shape[-1]
    rows, s = group_rows(dataset.table().numpy(), basis)
    m = len(basis.group_tokens)
    if rows.size == 0:
        return np.zeros(basis.n_components), 1.0
    sums = np.zeros((m, n))
    np.add.at(sums, s, _numpy(logits).reshape(n * n, n)[rows])
    coefficients = basis.group_basis @ (sums / np.maximum(np.bincount(s, minlength=m), 1)[:, None])
    return frequency_norms(coefficients, basis=basis), effective_columns(coefficients, basis)


def analyze_model(model: Model, dataset: Dataset | None = None,
                  neuron_threshold: float = NEURON_CLUSTER_THRESHOLD) -> dict[str, Any]:
    """The analysis of one model in its task's basis, as JSON-ready numbers (no files).

    Keys: ``basis`` (which basis, its components), ``circuit`` and ``circuit_reason`` (from the
    neuron-logit map's spectrum, see :func:`key_frequencies`), ``key_frequencies`` (of the
    embedding, of the neuron-logit map, of the logits, and ``used``: the neuron-logit map's if
    it has a circuit, else empty; the restricted/excluded losses use it), the per-component
    norms, the neuron summary (clusters, fraction of variance explained, share of live neurons
    whose dominant component is a key one), the fraction of the logits' non-trivial norm in the
    key directions, ``pairs_apart`` (multiply/divide: the pairs with a 0, analysed apart), and
    :func:`measure`'s numbers.
    """
    return analysis_and_arrays(model, dataset, neuron_threshold)[0]


def analysis_and_arrays(model: Model, dataset: Dataset | None = None,
                        neuron_threshold: float = NEURON_CLUSTER_THRESHOLD,
                        layer: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`analyze_model`'s numbers, and the arrays its figures need (``logits``,
    ``neurons``, ``clusters``, ``attention``, ``basis``), from one forward pass over the grid.
    For an MLP ``attention`` is None and ``not_applicable`` says why (``{"attention": reason}``)."""
    layer = _neuron_layer(model, layer)
    dataset = dataset or dataset_for(model)
    basis = model_basis(model)
    embed_coefficients, logit_coefficients = embedding_fourier(model, basis), neuron_logit_fourier(model, layer, basis)
    embed_norms, logit_norms = frequency_norms(embed_coefficients, basis=basis), frequency_norms(logit_coefficients,
                                                                                                  basis=basis)
    embed_key = key_components_of_norms(embed_norms, basis, "embedding", effective_columns(embed_coefficients, basis))
    logit_key = key_components_of_norms(logit_norms, basis, "neuron_logit", effective_columns(logit_coefficients, basis))
    used = logit_key.freqs
    has_attention = not isinstance(model, MLP)
    post, pattern = _post_hook(model, layer), f"blocks.{layer}.attn.hook_pattern"
    logits, cache = grid_cache(model, [post, pattern] if has_attention else [post])
    n = logits.shape[0]
    neurons = neuron_frequencies(_at_equals(model, cache[post]).reshape(n, n, -1), basis=basis)
    clusters = neuron_clusters(neurons, neuron_threshold)
    alive = neurons.alive
    arrays = {"logits": logits, "neurons": neurons, "clusters": clusters, "basis": basis,
              "attention": attention_to_inputs(cache[pattern]) if has_attention else None}
    logits = logits.double()
    keys: dict[str, Any] = {"embedding": embed_key.to_json(), "neuron_logit": logit_key.to_json()}
    logit_share, apart = None, None
    if basis.has_circuit_structure:
        norms, columns = logit_component_norms(logits, dataset, basis)
        keys["logits"] = key_components_of_norms(norms, basis, "logits", columns).to_json()
        keys["logits"]["norms"] = norms.tolist()
        if used:  # the fraction of the logits' non-trivial part (centred per answer c) in the key directions
            restricted, _ = task_split(logits, dataset, used, "paper")
            baseline, _ = task_split(logits, dataset, [], "paper")  # per-answer means only
            total = (logits - baseline).pow(2).sum()
            logit_share = float((restricted - baseline).pow(2).sum() / total) if total > 0 else 0.0
        in_group = answer_group_index(basis, n)
        table = dataset.table()
        outside = (table >= 0) & ((torch.as_tensor(in_group)[table.clamp_min(0)] < 0)
                                  | (torch.as_tensor(in_group)[:, None] < 0) | (torch.as_tensor(in_group)[None] < 0))
        if outside.any():
            rows = torch.nonzero(outside.reshape(-1)).reshape(-1)
            loss, acc = loss_and_accuracy(logits, rows, table.reshape(-1)[rows])
            apart = {"n_pairs": int(rows.numel()), "loss": loss, "acc": acc,
                     "embedding_norm": _apart_norm(embed_coefficients, basis)}
    keys["used"] = used
    keys["used_labels"] = [basis.labels[k] for k in used]
    return {
        "p": dataset.p,
        "n": dataset.n,
        "op": dataset.op,
        "basis": basis.to_json(),
        "circuit": logit_key.circuit,
        "circuit_reason": logit_key.reason or None,
        "key_frequencies": keys,
        "embedding_fourier_norms": embed_norms.tolist(),
        "neuron_logit_fourier_norms": logit_norms.tolist(),
        "neurons": {
            "threshold": neuron_threshold,
            "n_neurons": int(len(neurons.freq)),
            "n_dead": int((~alive).sum()),
            "clusters": {str(k): int(len(v)) for k, v in clusters.items()},
            "in_key_freqs": float(np.isin(neurons.freq[alive], used).mean()) if alive.any() else 0.0,
            "mean_frac_explained": float(neurons.frac_explained[alive].mean()) if alive.any() else 0.0,
            "gini_frac_explained": gini(neurons.frac_explained[alive]) if alive.any() else 0.0,
            "freq": neurons.freq.tolist(),
            "frac_explained": [round(float(f), 5) for f in neurons.frac_explained],
        },
        "logits_key_share": logit_share,
        "pairs_apart": apart,
        "not_applicable": {} if has_attention else {"attention": ATTENTION_NOT_APPLICABLE},
        "measures": measure(model, dataset, used, logits=logits),
    }, arrays


__all__ = [
    "NEURON_CLUSTER_THRESHOLD", "CIRCUIT_MIN_CONCENTRATION", "NULL_DRAWS", "SUBSPACES", "torch_threads",
    "fourier_basis", "n_frequencies", "basis_frequency", "model_basis", "frequency_norms", "embedding_fourier",
    "embedding_fourier_norms", "neuron_logit_map", "neuron_logit_fourier", "neuron_logit_fourier_norms",
    "embedding_matrix", "grid_tokens", "grid_logits", "grid_cache", "neuron_activations", "fourier_2d",
    "logits_fourier", "logits_fourier_norms", "KeyFrequencies", "select_key_frequencies", "null_share", "effective_columns",
    "key_frequencies", "key_components_of_norms", "key_frequency_share", "NeuronFrequencies", "neuron_frequencies",
    "neuron_clusters", "restricted_and_excluded_logits", "task_split", "grid_splits", "grid_loss", "grid_accuracy",
    "restricted_loss", "excluded_loss", "restricted_loss_abc", "excluded_loss_abc", "gini", "sum_squared_weights",
    "measure", "dataset_for", "attention_to_inputs", "logit_component_norms", "analyze_model", "analysis_and_arrays",
    "ATTENTION_NOT_APPLICABLE",
]
