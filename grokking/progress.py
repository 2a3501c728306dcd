"""Progress measures over a run's weight snapshots, its phases, and the analysis writer.

Nanda et al. (2023, section 5) follow a grokking run through measures of the Fourier
algorithm (see :mod:`grokking.fourier`) taken at every weight snapshot: restricted and
excluded loss, Gini coefficients of the Fourier norms, the sum of squared weights. From
them, or from the denser ``metrics.jsonl``, :func:`phase_boundaries` reads where
memorisation, circuit formation and clean-up end. :func:`analyze` writes all of it for a
run directory or one checkpoint: the figures (drawn by :mod:`grokking.figures`) and
``analysis.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import figures, rundir
from .checkpoint import load_model, load_snapshot_state
from .data import Dataset
from .fourier import (NEURON_CLUSTER_THRESHOLD, analysis_and_arrays, dataset_for, grid_splits, key_frequencies,
                      logits_fourier_norms, measure, torch_threads)
from .model import Transformer

# Default thresholds (see the docstrings that use them for the reasoning).
ACC_MEMORISED = 0.99  # train accuracy at which memorisation has ended
ACC_CIRCUIT = 0.5  # test accuracy at which clean-up is under way (circuit formation is over)
ACC_GENERALISED = 0.99  # test accuracy needed before clean-up can end
WEIGHT_PLATEAU_TOL = 0.05  # clean-up ends once the squared weights fall by < 5% more ...
WEIGHT_PLATEAU_SPAN = 0.1  # ... over at least 10% more epochs (a plateau must be seen, not assumed)

SERIES_KEYS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss",
               "gini_embedding", "gini_neuron_logit", "key_share_embedding", "key_share_neuron_logit",
               "sum_sq_weights")


# --- progress measures -------------------------------------------------------------------------------
def _load_into(model: Transformer, state: dict[str, torch.Tensor], where: Any) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {name for name, _ in model.named_parameters()}
    if any(name in params for name in missing) or unexpected:
        raise ValueError(f"{where}: snapshot weights do not match the model "
                         f"(missing {sorted(set(missing) & params)[:3]}, unexpected {sorted(unexpected)[:3]})")


def progress_measures(source: str | Path | Sequence[tuple[int, Transformer]], key_freqs: Sequence[int] | None = None,
                      dataset: Dataset | None = None, restricted_split: str = "all", excluded_split: str = "train",
                      subspace: str = "a+b-c", num_threads: int | None = 1) -> dict[str, np.ndarray]:
    """Progress measures over a run, one value per weight snapshot (see :func:`grokking.fourier.measure`).

    ``source`` is a run directory (its ``checkpoints/epoch_*.safetensors`` snapshots, plus
    the final checkpoint if it is later than the last snapshot) or a list of ``(epoch, model)``.
    The key frequencies default to those of the *final* model's neuron-logit map, as in the
    paper: every snapshot is measured against the algorithm the run ends up with.
    Returns ``{name: array}`` for :data:`SERIES_KEYS`, plus ``"key_freqs"`` (the frequencies
    used, an int array, not a series). ``num_threads``: see :func:`grokking.fourier.torch_threads`.
    """
    with torch_threads(num_threads):
        return _progress_measures(source, key_freqs, dataset, restricted_split, excluded_split, subspace)


def _progress_measures(source: str | Path | Sequence[tuple[int, Transformer]], key_freqs: Sequence[int] | None,
                       dataset: Dataset | None, restricted_split: str, excluded_split: str,
                       subspace: str) -> dict[str, np.ndarray]:
    # points: (epoch, a model, or weights to load into the final model: a snapshot path or a state_dict)
    points: list[tuple[int, Transformer | Path | dict[str, torch.Tensor]]]
    final_state: dict[str, torch.Tensor] | None = None
    if isinstance(source, (str, Path)):
        final = load_model(source)
        model, dataset = final.model, dataset or final.dataset
        final_state = {k: v.clone() for k, v in model.state_dict().items()}
        points = list(rundir.snapshots(source))
        final_epoch = int(final.meta.get("epoch") or 0)
        if not points or final_epoch > points[-1][0]:
            points.append((final_epoch, final_state))
    else:
        points = [(int(epoch), m) for epoch, m in source]
        if not points:
            raise ValueError("progress_measures needs at least one (epoch, model)")
        model = points[-1][1]
        dataset = dataset or dataset_for(model)
    if key_freqs is None:  # the model holds the final weights here
        key_freqs = key_frequencies(model, "neuron_logit").freqs
    series: dict[str, list[float]] = {key: [] for key in SERIES_KEYS}
    splits = grid_splits(dataset)
    for epoch, item in points:
        if isinstance(item, Transformer):
            current = item
        else:
            if isinstance(item, dict):
                state = item
            else:
                state, _ = load_snapshot_state(item)
            _load_into(model, state, item if isinstance(item, Path) else f"epoch {epoch}")
            current = model
        values = measure(current, dataset, key_freqs, restricted_split, excluded_split, subspace, splits=splits)
        series["epoch"].append(epoch)
        for key, value in values.items():
            series[key].append(value)
    if final_state is not None:
        model.load_state_dict(final_state)  # leave the loaded model as it was
    out = {key: np.asarray(values, dtype=np.int64 if key == "epoch" else np.float64)
           for key, values in series.items()}
    out["key_freqs"] = np.asarray(sorted(key_freqs), dtype=np.int64)
    return out


def metrics_series(records: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    """The series :func:`phase_boundaries` needs, from ``metrics.jsonl`` records (one per
    evaluation, denser than the snapshots); None if the records lack a needed key."""
    keys = ("epoch", "train_acc", "test_acc", "weight_norm")
    if not records or not all(all(k in r for k in keys) for r in records):
        return None
    series = {k: np.asarray([r[k] for r in records], dtype=np.float64) for k in keys}
    series["epoch"] = series["epoch"].astype(np.int64)
    series["sum_sq_weights"] = series.pop("weight_norm") ** 2  # the trainer logs the L2 norm
    return series if (series["sum_sq_weights"] > 0).all() else None


def phase_boundaries(measures: dict[str, np.ndarray], acc_memorised: float = ACC_MEMORISED,
                     acc_circuit: float = ACC_CIRCUIT, acc_generalised: float = ACC_GENERALISED,
                     weight_plateau_tol: float = WEIGHT_PLATEAU_TOL,
                     weight_plateau_span: float = WEIGHT_PLATEAU_SPAN) -> dict[str, int | None]:
    """Epochs where the three phases of Nanda et al. end, read from progress-measure series.

    - ``memorisation_end``: the first snapshot with train accuracy >= ``acc_memorised`` (0.99):
      the training set is fit, test accuracy is still near chance.
    - ``circuit_formation_end`` (clean-up starts): the first snapshot after that with test
      accuracy >= ``acc_circuit`` (0.5). The Fourier circuit has formed while the test loss
      stayed high (restricted loss falls, excluded loss rises); once it outweighs the
      memorising weights the test loss falls steeply, and crossing 50% test accuracy marks it.
    - ``cleanup_end``: the first snapshot after that with test accuracy >= ``acc_generalised``
      (0.99) from which the sum of squared weights falls by less than ``weight_plateau_tol``
      (5%) over the rest of the run, and the run goes on for at least ``weight_plateau_span``
      (10%) more epochs, so that the plateau is observed: weight decay has finished removing
      the memorisation. A run stopped at (or still in) its clean-up gets ``None``.

    ``measures`` needs ``epoch``, ``train_acc``, ``test_acc`` and ``sum_sq_weights``: the
    output of :func:`progress_measures`, or of :func:`metrics_series` (evaluation-epoch
    resolution; :func:`analyze` prefers it when the run has it). A phase that the run does
    not reach has ``None``.
    """
    epoch = np.asarray(measures["epoch"])
    train_acc, test_acc = np.asarray(measures["train_acc"]), np.asarray(measures["test_acc"])
    weights = np.asarray(measures["sum_sq_weights"])

    def first(condition: np.ndarray, start: int) -> int | None:
        hits = np.flatnonzero(condition[start:])
        return int(start + hits[0]) if hits.size else None

    out: dict[str, int | None] = {"memorisation_end": None, "circuit_formation_end": None, "cleanup_end": None}
    i_mem = first(train_acc >= acc_memorised, 0)
    if i_mem is None:
        return out
    out["memorisation_end"] = int(epoch[i_mem])
    i_circuit = first(test_acc >= acc_circuit, i_mem)
    if i_circuit is None:
        return out
    out["circuit_formation_end"] = int(epoch[i_circuit])
    later_min = np.minimum.accumulate(weights[::-1])[::-1]  # min of the weights from each snapshot on
    observed = epoch[-1] - epoch >= weight_plateau_span * np.maximum(epoch, 1)
    plateau = (weights <= (1 + weight_plateau_tol) * later_min) & observed
    i_clean = first((test_acc >= acc_generalised) & plateau, i_circuit)
    if i_clean is not None:
        out["cleanup_end"] = int(epoch[i_clean])
    return out


# --- the whole analysis ------------------------------------------------------------------------------
def _json_ready(obj: Any) -> Any:
    """Numpy to Python, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def default_out_dir(path: str | Path) -> Path:
    """``RUN/analysis/`` for a run directory; ``<stem>_analysis/`` next to a checkpoint file."""
    path = Path(path)
    return path / "analysis" if path.is_dir() else path.parent / f"{path.stem}_analysis"


def analyze(path: str | Path, out_dir: str | Path | None = None,
            neuron_threshold: float = NEURON_CLUSTER_THRESHOLD, num_threads: int | None = 1) -> dict[str, Any]:
    """Analyse a run directory or one checkpoint (ours or a seed ``.pth``); write figures and
    ``analysis.json`` to ``out_dir`` (default :func:`default_out_dir`) and return the same dict.

    Figures: ``fourier_spectra.png`` (embedding and neuron-logit map, per frequency),
    ``neuron_clusters.png``, ``logits_fourier.png``, ``attention.png`` and, for a run
    directory with at least two snapshots, ``progress.png`` (progress measures with phases).
    ``num_threads``: see :func:`grokking.fourier.torch_threads`.
    """
    with torch_threads(num_threads):
        return _analyze(Path(path), out_dir, neuron_threshold)


def _analyze(path: Path, out_dir: str | Path | None, neuron_threshold: float) -> dict[str, Any]:
    out = Path(out_dir) if out_dir is not None else default_out_dir(path)
    loaded = load_model(path)  # before creating anything: a bad path leaves no empty folder
    out.mkdir(parents=True, exist_ok=True)
    model, dataset = loaded.model.eval(), loaded.dataset
    result: dict[str, Any] = {"source": str(path), "epoch": loaded.meta.get("epoch"), "config": loaded.cfg.to_dict()}
    summary, arrays = analysis_and_arrays(model, dataset, neuron_threshold)
    result.update(summary)
    used = result["key_frequencies"]["used"]
    embed_norms = np.asarray(result["embedding_fourier_norms"])
    logit_norms = np.asarray(result["neuron_logit_fourier_norms"])
    neurons = arrays["neurons"]
    ab_norms, c_norms = logits_fourier_norms(arrays["logits"])
    written = [
        figures.save_figure(figures.plot_fourier_spectra(embed_norms, logit_norms, used), out / "fourier_spectra.png"),
        figures.save_figure(figures.plot_neuron_clusters(neurons.freq, neurons.frac_explained, arrays["clusters"],
                                                         neuron_threshold), out / "neuron_clusters.png"),
        figures.save_figure(figures.plot_logits_fourier(ab_norms, c_norms, used), out / "logits_fourier.png"),
        figures.save_figure(figures.plot_attention(arrays["attention"]), out / "attention.png"),
    ]
    result["progress"] = result["phases"] = result["phases_from"] = None
    if path.is_dir() and len(rundir.snapshots(path)) >= 2:
        measures = progress_measures(path, key_freqs=used, dataset=dataset, num_threads=None)
        metrics = rundir.read_metrics(path)
        dense = metrics_series(metrics)
        phases = phase_boundaries(dense if dense is not None else measures)
        cfg = loaded.cfg
        title = (f"{cfg.op} mod {cfg.p}, {cfg.frac:.0%} train, seed {cfg.seed}: progress measures, "
                 f"key frequencies {used}")
        fig = figures.plot_progress(measures, phases, metrics, title)
        written.append(figures.save_figure(fig, out / "progress.png"))
        result["progress"] = {k: v for k, v in measures.items() if k != "key_freqs"}
        result["phases"] = phases
        result["phases_from"] = "metrics.jsonl" if dense is not None else "snapshots"
    result["progress_rules"] = {"key_frequencies": "largest log-gap in sorted squared-norm shares of W_L",
                                "restricted_loss": "all pairs, directions cos/sin(w(a+b-c))",
                                "excluded_loss": "train pairs, same directions removed",
                                "phases": {"memorisation_end": f"train_acc >= {ACC_MEMORISED}",
                                           "circuit_formation_end": f"test_acc >= {ACC_CIRCUIT}",
                                           "cleanup_end": f"test_acc >= {ACC_GENERALISED} and sum of squared "
                                                          f"weights within {WEIGHT_PLATEAU_TOL:.0%} of its later min, "
                                                          f"observed for {WEIGHT_PLATEAU_SPAN:.0%} more epochs"}}
    result["figures"] = [f.name for f in written]
    result = _json_ready(result)
    rundir.atomic_write_text(out / "analysis.json", json.dumps(result, indent=1) + "\n")
    result["out_dir"] = str(out)
    return result


__all__ = [
    "ACC_MEMORISED", "ACC_CIRCUIT", "ACC_GENERALISED", "WEIGHT_PLATEAU_TOL", "WEIGHT_PLATEAU_SPAN", "SERIES_KEYS",
    "progress_measures", "metrics_series", "phase_boundaries", "default_out_dir", "analyze",
]
