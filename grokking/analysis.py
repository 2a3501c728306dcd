"""Find the algorithm: Fourier analysis and progress measures (Nanda et al. 2023).

The public face of three modules, so that one import reaches all of it::

    from grokking import analysis as A
    A.key_frequencies(model); pm = A.progress_measures(RUN); A.phase_boundaries(pm); A.analyze(RUN)

- :mod:`grokking.fourier`: the numbers of one model (Fourier basis, spectra, key
  frequencies, neuron frequencies and clusters, restricted and excluded loss, ``measure``,
  attention to the inputs, ``analyze_model``);
- :mod:`grokking.progress`: the same over a run's snapshots (``progress_measures``,
  ``metrics_series``, ``phase_boundaries``) and ``analyze``, which writes a run's or a
  checkpoint's figures and ``analysis.json``;
- :mod:`grokking.figures`: the figures, from those numbers (``plot_*``).

The split runs one way (figures below fourier below progress, this module above all three),
so each piece imports only what lies under it and none of them needs this module.
"""
from __future__ import annotations

from .figures import plot_attention, plot_fourier_spectra, plot_logits_fourier, plot_neuron_clusters, plot_progress
from .fourier import (
    NEURON_CLUSTER_THRESHOLD,
    KeyFrequencies,
    NeuronFrequencies,
    analysis_and_arrays,
    analyze_model,
    attention_to_inputs,
    basis_frequency,
    dataset_for,
    embedding_fourier,
    embedding_fourier_norms,
    excluded_loss,
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
    key_frequencies,
    key_frequency_share,
    logits_fourier,
    logits_fourier_norms,
    measure,
    n_frequencies,
    neuron_activations,
    neuron_clusters,
    neuron_frequencies,
    neuron_logit_fourier,
    neuron_logit_fourier_norms,
    neuron_logit_map,
    restricted_and_excluded_logits,
    restricted_loss,
    select_key_frequencies,
    sum_squared_weights,
    torch_threads,
)
from .progress import (
    ACC_CIRCUIT,
    ACC_GENERALISED,
    ACC_MEMORISED,
    SERIES_KEYS,
    WEIGHT_PLATEAU_SPAN,
    WEIGHT_PLATEAU_TOL,
    analyze,
    default_out_dir,
    metrics_series,
    phase_boundaries,
    progress_measures,
)

__all__ = [
    "fourier_basis", "n_frequencies", "basis_frequency", "frequency_norms", "embedding_fourier",
    "embedding_fourier_norms", "neuron_logit_map", "neuron_logit_fourier", "neuron_logit_fourier_norms",
    "grid_tokens", "grid_logits", "grid_cache", "neuron_activations", "fourier_2d", "logits_fourier",
    "logits_fourier_norms", "KeyFrequencies", "select_key_frequencies", "key_frequencies", "key_frequency_share",
    "NeuronFrequencies", "neuron_frequencies", "neuron_clusters", "restricted_and_excluded_logits",
    "restricted_loss", "excluded_loss", "grid_splits", "grid_loss", "grid_accuracy", "gini", "sum_squared_weights",
    "measure", "dataset_for", "progress_measures", "metrics_series", "phase_boundaries", "attention_to_inputs",
    "analyze_model", "analysis_and_arrays", "analyze", "default_out_dir", "torch_threads", "plot_fourier_spectra",
    "plot_neuron_clusters", "plot_logits_fourier", "plot_attention", "plot_progress", "SERIES_KEYS",
    "NEURON_CLUSTER_THRESHOLD", "ACC_MEMORISED", "ACC_CIRCUIT", "ACC_GENERALISED", "WEIGHT_PLATEAU_TOL",
    "WEIGHT_PLATEAU_SPAN",
]
