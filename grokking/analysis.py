"""Find the algorithm: the Fourier analysis, progress measures and phases of Nanda et al. (2023),
in each task's own group basis (Chughtai, Chan & Nanda 2023), and the local learning coefficient.

The public face of the analysis modules, so that one import reaches all of it::

    from grokking import analysis as A
    A.key_frequencies(model); pm = A.progress_measures(RUN); A.phase_boundaries(pm); A.analyze(RUN)

- :mod:`grokking.groups`: the basis of each task (additive Fourier for add/subtract, Fourier
  over the discrete logarithm for multiply/divide, the irreps of S5 for perm_*; none for the
  rest) and the rule that says whether a spectrum holds a circuit at all;
- :mod:`grokking.restricted`: restricted and excluded logits and losses, the paper's
  definitions and our variants;
- :mod:`grokking.fourier`: the numbers of one model (spectra, key components, neuron
  clusters, ``measure``, attention to the inputs, ``analyze_model``);
- :mod:`grokking.llc`: the local learning coefficient through devinterp (extra ``llc``);
- :mod:`grokking.progress`: the same over a run's snapshots (``progress_measures``,
  ``llc_series``, ``phase_boundaries``) and ``analyze``, which writes a run's or a
  checkpoint's figures and ``analysis.json``;
- :mod:`grokking.figures`: the figures, from those numbers (``plot_*``).

Each piece imports only what lies under it and none of them needs this module.
"""
from __future__ import annotations

from .figures import plot_attention, plot_fourier_spectra, plot_logits_fourier, plot_neuron_clusters, plot_progress
from .fourier import (
    CIRCUIT_MIN_CONCENTRATION,
    NEURON_CLUSTER_THRESHOLD,
    SUBSPACES,
    KeyFrequencies,
    NeuronFrequencies,
    analysis_and_arrays,
    analyze_model,
    attention_to_inputs,
    basis_frequency,
    dataset_for,
    embedding_fourier,
    embedding_fourier_norms,
    effective_columns,
    embedding_matrix,
    excluded_loss,
    excluded_loss_abc,
    fourier_2d,
    fourier_basis,
    frequency_norms,
    gini,
    grid_accuracy,
    grid_cache,
    grid_logits,
    grid_loss,
    grid_splits,
    grid_tokens,
    key_components_of_norms,
    key_frequencies,
    key_frequency_share,
    logits_fourier,
    logit_component_norms,
    logits_fourier_norms,
    measure,
    model_basis,
    n_frequencies,
    neuron_activations,
    neuron_clusters,
    neuron_frequencies,
    neuron_logit_fourier,
    neuron_logit_fourier_norms,
    neuron_logit_map,
    null_share,
    restricted_and_excluded_logits,
    restricted_loss,
    restricted_loss_abc,
    select_key_frequencies,
    sum_squared_weights,
    task_split,
    torch_threads,
)
from .groups import (
    APART,
    S5_IRREP_NAMES,
    S5_PARTITIONS,
    Basis,
    discrete_log,
    primitive_root,
    s5_irreps,
    task_basis,
)
from .llc import DEFAULT_SETTINGS as LLC_DEFAULT_SETTINGS
from .llc import LLCSettings, estimate_llc, mala_acceptance
from .progress import (
    ACC_CIRCUIT,
    ACC_GENERALISED,
    ACC_MEMORISED,
    EXCLUDED_RISE,
    LLC_MAX_SNAPSHOTS,
    PAPER_PHASES,
    SERIES_KEYS,
    TRAIN_FLAT_FACTOR,
    WEIGHT_PLATEAU_SPAN,
    WEIGHT_PLATEAU_TOL,
    analyze,
    default_out_dir,
    llc_series,
    llc_snapshot_epochs,
    memorisation_end_paper,
    metrics_series,
    phase_boundaries,
    progress_measures,
)

__all__ = [
    "fourier_basis", "n_frequencies", "basis_frequency", "frequency_norms", "embedding_matrix", "embedding_fourier",
    "embedding_fourier_norms", "neuron_logit_map", "neuron_logit_fourier", "neuron_logit_fourier_norms",
    "grid_tokens", "grid_logits", "grid_cache", "neuron_activations", "fourier_2d", "logits_fourier",
    "logits_fourier_norms", "KeyFrequencies", "select_key_frequencies", "key_frequencies", "key_frequency_share",
    "key_components_of_norms", "null_share", "effective_columns", "NeuronFrequencies", "neuron_frequencies",
    "neuron_clusters", "restricted_and_excluded_logits", "task_split", "restricted_loss", "excluded_loss",
    "restricted_loss_abc", "excluded_loss_abc", "grid_splits", "grid_loss", "grid_accuracy", "gini",
    "sum_squared_weights", "measure", "model_basis", "logit_component_norms", "dataset_for", "progress_measures",
    "llc_series", "metrics_series", "memorisation_end_paper", "phase_boundaries", "attention_to_inputs",
    "analyze_model", "analysis_and_arrays", "analyze", "default_out_dir", "torch_threads", "plot_fourier_spectra",
    "plot_neuron_clusters", "plot_logits_fourier", "plot_attention", "plot_progress", "SERIES_KEYS", "SUBSPACES",
    "NEURON_CLUSTER_THRESHOLD", "CIRCUIT_MIN_CONCENTRATION", "ACC_MEMORISED", "ACC_CIRCUIT", "ACC_GENERALISED",
    "WEIGHT_PLATEAU_TOL", "WEIGHT_PLATEAU_SPAN", "TRAIN_FLAT_FACTOR", "EXCLUDED_RISE", "PAPER_PHASES", "APART",
    "Basis", "task_basis", "primitive_root", "discrete_log", "s5_irreps", "S5_PARTITIONS", "S5_IRREP_NAMES",
    "LLCSettings", "LLC_DEFAULT_SETTINGS", "LLC_MAX_SNAPSHOTS", "estimate_llc", "mala_acceptance",
    "llc_snapshot_epochs",
]
