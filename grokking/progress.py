"""Progress measures over a run's weight snapshots, its phases, and the analysis writer.

Nanda et al. (2023, section 5) follow a grokking run through measures of the Fourier
algorithm (see :mod:`grokking.fourier`, :mod:`grokking.restricted`) taken at every weight
snapshot: restricted and excluded loss, Gini coefficients of the Fourier norms, the sum of
squared weights; here also the local learning coefficient (:mod:`grokking.llc`, with the
``llc`` extra). From them and the denser ``metrics.jsonl``, :func:`phase_boundaries` reads
where memorisation, circuit formation and clean-up end. :func:`analyze` writes all of it for
a run directory or one checkpoint: the figures (drawn by :mod:`grokking.figures`) and
``analysis.json``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import figures, llc, rundir
from .checkpoint import load_model, load_snapshot_state, run_snapshots
from .data import Dataset
from .fourier import (CIRCUIT_MIN_CONCENTRATION, check_table_task, NEURON_CLUSTER_THRESHOLD, analysis_and_arrays, dataset_for,
                      grid_splits, key_frequencies, logits_fourier_norms, measure, torch_threads)
from .factory import MODEL_TYPES, Model

# Default thresholds (see the docstrings that use them for the reasoning).
ACC_MEMORISED = 0.99  # train accuracy at which the training set is fit (memorisation_end_acc)
TRAIN_FLAT_FACTOR = 2.0  # train loss "has stopped falling" once within 2x of its lowest before the circuit forms
EXCLUDED_RISE = 1.5  # the excluded loss must later rise 1.5x above its minimum for it to have "turned upward"
ACC_CIRCUIT = 0.5  # test accuracy at which clean-up is under way (circuit formation is over)
ACC_GENERALISED = 0.99  # test accuracy needed before clean-up can end
WEIGHT_PLATEAU_TOL = 0.05  # clean-up ends once the squared weights fall by < 5% more ...
WEIGHT_PLATEAU_SPAN = 0.1  # ... over at least 10% more epochs (a plateau must be seen, not assumed)
LLC_MAX_SNAPSHOTS = 16  # analyze estimates the LLC at this many snapshots at most (about 10 s each here)
PAPER_PHASES = {"memorisation_end": 1400, "circuit_formation_end": 9400, "cleanup_end": 14000}  # Nanda et al.

SERIES_KEYS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss",
               "restricted_loss_abc", "excluded_loss_abc", "gini_embedding", "gini_neuron_logit",
               "key_share_embedding", "key_share_neuron_logit", "sum_sq_weights")


# --- progress measures -------------------------------------------------------------------------------
def _load_into(model: Model, state: dict[str, torch.Tensor], where: Any) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {name for name, _ in model.named_parameters()}
    if any(name in params for name in missing) or unexpected:
        raise ValueError(f"{where}: snapshot weights do not match the model "
                         f"(missing {sorted(set(missing) & params)[:3]}, unexpected {sorted(unexpected)[:3]})")


def _points(source: str | Path | Sequence[tuple[int, Model]], dataset: Dataset | None,
            skipped: list[tuple[Path, str]] | None = None):
    """``(model, dataset, points, final_state)``: points are (epoch, a model, or weights to load
    into ``model``: a snapshot path or a state_dict); the model holds the final weights. A run
    directory's snapshots that another run wrote, or whose header is damaged, are left out
    (:func:`~grokking.checkpoint.run_snapshots`: into ``skipped``, else a warning)."""
    final_state: dict[str, torch.Tensor] | None = None
    if isinstance(source, (str, Path)):
        final = load_model(source)
        model, dataset = final.model, dataset or final.dataset
        final_state = {k: v.clone() for k, v in model.state_dict().items()}
        points: list[tuple[int, Any]] = list(run_snapshots(source, skipped))
        final_epoch = int(final.meta.get("epoch") or 0)
        if not points or final_epoch > points[-1][0]:
            points.append((final_epoch, final_state))
    else:
        points = [(int(epoch), m) for epoch, m in source]
        if not points:
            raise ValueError("progress measures need at least one (epoch, model)")
        model = points[-1][1]
        dataset = dataset or dataset_for(model)
    return model, dataset, points, final_state


def _each_snapshot(model: Model, points: list[tuple[int, Any]]):
    for epoch, item in points:
        if isinstance(item, MODEL_TYPES):
            yield epoch, item
            continue
        state = item if isinstance(item, dict) else load_snapshot_state(item)[0]
        _load_into(model, state, item if isinstance(item, Path) else f"epoch {epoch}")
        yield epoch, model


def progress_measures(source: str | Path | Sequence[tuple[int, Model]], key_freqs: Sequence[int] | None = None,
                      dataset: Dataset | None = None, restricted_split: str = "all", excluded_split: str = "train",
                      subspace: str = "paper", num_threads: int | None = 1,
                      skipped: list[tuple[Path, str]] | None = None) -> dict[str, np.ndarray]:
    """Progress measures over a run, one value per weight snapshot (see :func:`grokking.fourier.measure`).

    ``source`` is a run directory (its ``checkpoints/epoch_*.safetensors`` snapshots, plus
    the final checkpoint if it is later than the last snapshot) or a list of ``(epoch, model)``.
    The key components default to those of the *final* model's neuron-logit map, as in the
    paper (every snapshot is measured against the algorithm the run ends up with; none, and NaN
    restricted/excluded losses, if the final model has no circuit). Returns ``{name: array}``
    for :data:`SERIES_KEYS`, plus ``"key_freqs"`` (an int array, not a series).
    ``num_threads``: see :func:`grokking.fourier.torch_threads`. Snapshots that belong to another
    run or are damaged are left out and named in ``skipped`` (else in a warning).
    """
    with torch_threads(num_threads):
        model, dataset, points, final_state = _points(source, dataset, skipped)
        if key_freqs is None:  # the model holds the final weights here
            key_freqs = key_frequencies(model, "neuron_logit").freqs
        series: dict[str, list[float]] = {key: [] for key in SERIES_KEYS}
        splits = grid_splits(dataset)
        for epoch, current in _each_snapshot(model, points):
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


def llc_snapshot_epochs(epochs: Sequence[int], max_points: int | None = None) -> list[int]:
    """The snapshots the LLC is estimated at: all of them, or for more than ``max_points``
    the first, the last, and those nearest to ``max_points / 2`` epochs evenly spaced on a
    linear scale and as many on a log scale (so that both the short memorisation phase and the
    long clean-up get points)."""
    epochs = sorted(set(int(e) for e in epochs))
    if max_points is None or len(epochs) <= max_points:
        return epochs
    e = np.asarray(epochs, dtype=np.float64)
    half = max(1, (max_points - 2) // 2)
    targets = np.concatenate([np.linspace(e[0], e[-1], half + 2)[1:-1],
                              np.expm1(np.linspace(np.log1p(e[0]), np.log1p(e[-1]), half + 2))[1:-1]])
    chosen = {0, len(epochs) - 1} | {int(np.argmin(np.abs(e - t))) for t in targets}
    return [epochs[i] for i in sorted(chosen)]


def llc_series(source: str | Path | Sequence[tuple[int, Model]], dataset: Dataset | None = None,
               settings: llc.LLCSettings = llc.DEFAULT_SETTINGS, max_snapshots: int | None = None,
               num_threads: int | None = 1, skipped: list[tuple[Path, str]] | None = None) -> dict[str, Any]:
    """The local learning coefficient at the run's snapshots (:func:`grokking.llc.estimate_llc`,
    the same settings and seed at each; at most ``max_snapshots`` of them, see
    :func:`llc_snapshot_epochs`): ``{"epoch", "llc", "llc_std", "init_loss"}`` arrays and the
    ``settings``. Raises ImportError without devinterp (:func:`grokking.llc.unavailable_reason`)."""
    with torch_threads(num_threads):
        model, dataset, points, final_state = _points(source, dataset, skipped)
        keep = set(llc_snapshot_epochs([epoch for epoch, _ in points], max_snapshots))
        points = [(epoch, item) for epoch, item in points if epoch in keep]
        rows = [(epoch, llc.estimate_llc(current, dataset, settings)) for epoch, current in _each_snapshot(model, points)]
        if final_state is not None:
            model.load_state_dict(final_state)
    return {"epoch": np.asarray([e for e, _ in rows], dtype=np.int64),
            **{key: np.asarray([r[key] for _, r in rows], dtype=np.float64)
               for key in ("llc", "llc_std", "llc_devinterp", "init_loss")},
            "settings": rows[-1][1]["settings"] if rows else None}


def metrics_series(records: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    """The series :func:`phase_boundaries` reads from ``metrics.jsonl`` records (one per
    evaluation, denser than the snapshots); None if the records lack a needed key."""
    keys = ("epoch", "train_acc", "test_acc", "weight_norm")
    if not records or not all(all(k in r for k in keys) for r in records):
        return None
    series = {k: np.asarray([r[k] for r in records], dtype=np.float64) for k in keys}
    series["epoch"] = series["epoch"].astype(np.int64)
    series["sum_sq_weights"] = series.pop("weight_norm") ** 2  # the trainer logs the L2 norm
    return series if (series["sum_sq_weights"] > 0).all() else None


# --- phases ----------------------------------------------------------------------------------------------
def _first(condition: np.ndarray, start: int = 0) -> int | None:
    hits = np.flatnonzero(condition[start:])
    return int(start + hits[0]) if hits.size else None


def _median3(x: np.ndarray) -> np.ndarray:
    """Running median of 3 (the ends kept): one odd snapshot cannot make a turning point."""
    out = x.copy()
    if x.size >= 3:
        out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


def memorisation_end_paper(measures: dict[str, np.ndarray], until: int | None = None,
                           train_flat_factor: float = TRAIN_FLAT_FACTOR, excluded_rise: float = EXCLUDED_RISE,
                           acc_memorised: float = ACC_MEMORISED) -> int | None:
    """Where memorisation ends as Nanda et al. draw it: train loss has stopped falling and the
    excluded loss turns upward. On the snapshot series (``epoch``, ``train_loss``,
    ``excluded_loss``, ``train_acc``), each loss smoothed by a running median of 3 in log scale,
    within the window from the first snapshot with train accuracy >= ``acc_memorised`` to
    ``until`` (the end of circuit formation; default the first snapshot with test accuracy >=
    :data:`ACC_CIRCUIT`, else the run's end: clean-up lowers the train loss again):

    1. train loss has stopped falling: the first snapshot whose train loss is within
       ``train_flat_factor`` (2x) of its lowest value in the window;
    2. from there on, the snapshot where the excluded loss is lowest: where it turns upward;
    3. it must really turn: a later excluded loss in the window at least ``excluded_rise``
       (1.5x) that minimum. Otherwise (or without excluded losses) None.
    """
    needed = ("epoch", "train_loss", "excluded_loss", "train_acc")
    if not all(k in measures for k in needed):
        return None
    epoch = np.asarray(measures["epoch"])
    excluded = np.asarray(measures["excluded_loss"], dtype=np.float64)
    if not np.isfinite(excluded).all():
        return None
    start = _first(np.asarray(measures["train_acc"]) >= acc_memorised)
    if start is None:
        return None
    if until is None and "test_acc" in measures:
        i_circuit = _first(np.asarray(measures["test_acc"]) >= ACC_CIRCUIT, start)
        until = None if i_circuit is None else int(epoch[i_circuit])
    stop = len(epoch) if until is None else int(np.searchsorted(epoch, until, side="right"))
    if stop - start < 2:
        return None
    log_train = _median3(np.log(np.maximum(np.asarray(measures["train_loss"], np.float64), 1e-300)))[start:stop]
    log_excluded = _median3(np.log(np.maximum(excluded, 1e-300)))[start:stop]
    flat = _first(log_train <= log_train.min() + math.log(train_flat_factor))
    turn = flat + int(np.argmin(log_excluded[flat:]))
    if log_excluded[turn:].max() < log_excluded[turn] + math.log(excluded_rise):
        return None
    return int(epoch[start + turn])


def phase_boundaries(measures: dict[str, np.ndarray], dense: dict[str, np.ndarray] | None = None,
                     acc_memorised: float = ACC_MEMORISED, acc_circuit: float = ACC_CIRCUIT,
                     acc_generalised: float = ACC_GENERALISED, weight_plateau_tol: float = WEIGHT_PLATEAU_TOL,
                     weight_plateau_span: float = WEIGHT_PLATEAU_SPAN) -> dict[str, int | None]:
    """Epochs where the three phases of Nanda et al. end.

    ``measures``: :func:`progress_measures` (snapshots) or any series with ``epoch``,
    ``train_acc``, ``test_acc``, ``sum_sq_weights``; ``dense``: the same from ``metrics.jsonl``
    (:func:`metrics_series`, one point per evaluation), used for the accuracy and weight rules
    when given.

    - ``memorisation_end`` (the paper's): :func:`memorisation_end_paper` on the snapshots — train
      loss has stopped falling and the excluded loss turns upward — searched up to the end of
      circuit formation. Where that cannot be read (no excluded loss: no circuit, or a task
      without group structure; or no upturn), the accuracy rule below stands in.
    - ``memorisation_end_acc`` (our earlier rule, kept under its own name): the first epoch with
      train accuracy >= ``acc_memorised`` (0.99): the training set is fit.
    - ``circuit_formation_end`` (clean-up starts): the first epoch after memorisation with test
      accuracy >= ``acc_circuit`` (0.5): the circuit now outweighs the memorising weights and
      the test loss falls steeply.
    - ``cleanup_end``: the first epoch after that with test accuracy >= ``acc_generalised``
      (0.99) from which the sum of squared weights falls by less than ``weight_plateau_tol`` (5%)
      over the rest of the run, the run going on for at least ``weight_plateau_span`` (10%) more
      epochs so that the plateau is seen: weight decay has finished removing the memorisation.

    A phase the run does not reach has ``None``.
    """
    base = dense if dense is not None else measures
    epoch = np.asarray(base["epoch"])
    train_acc, test_acc = np.asarray(base["train_acc"]), np.asarray(base["test_acc"])
    weights = np.asarray(base["sum_sq_weights"])
    out: dict[str, int | None] = {"memorisation_end": None, "circuit_formation_end": None, "cleanup_end": None,
                                  "memorisation_end_acc": None}
    i_mem = _first(train_acc >= acc_memorised)
    if i_mem is None:
        return out
    out["memorisation_end_acc"] = int(epoch[i_mem])
    i_circuit = _first(test_acc >= acc_circuit, i_mem)
    if i_circuit is not None:
        out["circuit_formation_end"] = int(epoch[i_circuit])
        later_min = np.minimum.accumulate(weights[::-1])[::-1]  # min of the weights from each point on
        observed = epoch[-1] - epoch >= weight_plateau_span * np.maximum(epoch, 1)
        plateau = (weights <= (1 + weight_plateau_tol) * later_min) & observed
        i_clean = _first((test_acc >= acc_generalised) & plateau, i_circuit)
        if i_clean is not None:
            out["cleanup_end"] = int(epoch[i_clean])
    paper = memorisation_end_paper(measures, out["circuit_formation_end"], acc_memorised=acc_memorised)
    out["memorisation_end"] = paper if paper is not None else out["memorisation_end_acc"]
    return out


def phase_rules(memorisation_rule: str) -> dict[str, str]:
    """The rules :func:`phase_boundaries` applied, in words (for analysis.json)."""
    return {
        "memorisation_end": memorisation_rule,
        "memorisation_end_acc": f"first epoch with train_acc >= {ACC_MEMORISED} (our earlier rule)",
        "circuit_formation_end": f"first epoch after that with test_acc >= {ACC_CIRCUIT}",
        "cleanup_end": (f"first epoch after that with test_acc >= {ACC_GENERALISED} from which the sum of squared "
                        f"weights stays within {WEIGHT_PLATEAU_TOL:.0%} of its later minimum, observed for "
                        f"{WEIGHT_PLATEAU_SPAN:.0%} more epochs"),
        "paper": "Nanda et al. 2023 (canonical run): memorisation to 1.4k, circuit formation to 9.4k, clean-up to 14k",
    }


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


def analyze(path: str | Path, out_dir: str | Path | None = None, neuron_threshold: float = NEURON_CLUSTER_THRESHOLD,
            num_threads: int | None = 1, llc_settings: llc.LLCSettings | None = llc.DEFAULT_SETTINGS,
            llc_snapshots: int | None = LLC_MAX_SNAPSHOTS,
            log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> dict[str, Any]:
    """Analyse a run directory or one checkpoint (ours or a seed ``.pth``); write figures and
    ``analysis.json`` to ``out_dir`` (default :func:`default_out_dir`) and return the same dict.

    Everything is read in the task's basis (``analysis.json["basis"]``). Figures:
    ``fourier_spectra.png`` (embedding and neuron-logit map per component), ``neuron_clusters.png``,
    ``logits_fourier.png``, ``attention.png`` (not for an MLP, which has no attention:
    ``analysis.json["not_applicable"]``) and, for a run directory with at least two
    snapshots, ``progress.png`` (progress measures with phases, and the LLC at up to
    ``llc_snapshots`` of the snapshots, None: all). The LLC needs devinterp; without it (or with
    ``llc_settings=None``) it is skipped with a one-line note (``analysis.json["llc_note"]``, and
    ``log``: stderr). ``num_threads``: see :func:`grokking.fourier.torch_threads`.
    """
    with torch_threads(num_threads):
        return _analyze(Path(path), out_dir, neuron_threshold, llc_settings, llc_snapshots, log)


def _analyze(path: Path, out_dir: str | Path | None, neuron_threshold: float, llc_settings: llc.LLCSettings | None,
             llc_snapshots: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    out = Path(out_dir) if out_dir is not None else default_out_dir(path)
    loaded = load_model(path)  # before creating anything: a bad path leaves no empty folder
    check_table_task(loaded.cfg)
    out.mkdir(parents=True, exist_ok=True)
    model, dataset = loaded.model.eval(), loaded.dataset
    result: dict[str, Any] = {"source": str(path), "epoch": loaded.meta.get("epoch"), "config": loaded.cfg.to_dict()}
    summary, arrays = analysis_and_arrays(model, dataset, neuron_threshold)
    result.update(summary)
    basis = arrays["basis"]
    used = result["key_frequencies"]["used"]
    embed_norms = np.asarray(result["embedding_fourier_norms"])
    logit_norms = np.asarray(result["neuron_logit_fourier_norms"])
    neurons = arrays["neurons"]
    ab_norms, c_norms = logits_fourier_norms(arrays["logits"], basis)
    labels, unit, name = list(basis.labels), basis.unit, basis.name
    verdict = "" if result["circuit"] else "no circuit: " + str(result["circuit_reason"])
    written = [
        figures.save_figure(figures.plot_fourier_spectra(embed_norms, logit_norms, used, labels=labels, unit=unit,
                                                         basis=name, note=verdict), out / "fourier_spectra.png"),
        figures.save_figure(figures.plot_neuron_clusters(neurons.freq, neurons.frac_explained, arrays["clusters"],
                                                         neuron_threshold, labels=labels, unit=unit),
                            out / "neuron_clusters.png"),
        figures.save_figure(figures.plot_logits_fourier(ab_norms, c_norms, used, labels=labels, unit=unit, basis=name,
                                                        group_rows=basis.group_component), out / "logits_fourier.png"),
    ]
    if arrays["attention"] is not None:  # an MLP has none: result["not_applicable"] says so
        written.append(figures.save_figure(figures.plot_attention(arrays["attention"]), out / "attention.png"))
    result["progress"] = result["phases"] = result["phases_from"] = result["llc"] = None
    result["llc_note"] = None
    memorisation_rule = "no progress measures"
    skipped: list[tuple[Path, str]] = []
    result["snapshots_skipped"] = []
    if path.is_dir() and len(run_snapshots(path, skipped)) >= 2:
        measures = progress_measures(path, key_freqs=used, dataset=dataset, num_threads=None, skipped=[])
        metrics = rundir.read_metrics(path)
        dense = metrics_series(metrics)
        phases = phase_boundaries(measures, dense)
        paper_mem = memorisation_end_paper(measures, phases["circuit_formation_end"])
        memorisation_rule = (
            f"train loss within {TRAIN_FLAT_FACTOR:g}x of its lowest and the excluded loss at its minimum "
            f"(turning upward by >= {EXCLUDED_RISE:g}x later), snapshots, running median of 3, searched from "
            f"train_acc >= {ACC_MEMORISED} to circuit_formation_end" if paper_mem is not None else
            f"train_acc >= {ACC_MEMORISED} (the paper's rule could not be read: "
            f"{'no excluded loss' if not used else 'the excluded loss never turned upward'})")
        series = None
        if llc_settings is not None:
            result["llc_note"] = llc.unavailable_reason()
            if result["llc_note"] is None:
                series = llc_series(path, dataset, llc_settings, llc_snapshots, num_threads=None, skipped=[])
                result["llc"] = series
        cfg = loaded.cfg
        keys = ", ".join(result["key_frequencies"]["used_labels"]) or "none (no circuit)"
        title = (f"{cfg.op} ({'mod ' + str(cfg.p) if basis.kind != 's5' else 'S5'}), {cfg.frac:.0%} train, seed "
                 f"{cfg.seed}: progress measures in the {basis.name}; key {basis.units}: {keys}")
        fig = figures.plot_progress(measures, phases, metrics, title, llc=series)
        written.append(figures.save_figure(fig, out / "progress.png"))
        result["progress"] = {k: v for k, v in measures.items() if k != "key_freqs"}
        result["phases"] = phases
        result["phases_from"] = "metrics.jsonl and snapshots" if dense is not None else "snapshots"
    result["phases_paper"] = PAPER_PHASES
    result["progress_rules"] = {
        "basis": basis.name,
        "key_frequencies": (f"largest log-gap in sorted per-dimension norm shares of W_L in the task basis; a circuit "
                            f"only if concentration >= {CIRCUIT_MIN_CONCENTRATION} against a random spectrum"),
        "restricted_loss": "all pairs; per answer c, logits kept on the key directions f(t(a,b)) and their mean "
                           "(Nanda et al.)",
        "excluded_loss": "train pairs; the key directions removed per answer c (Nanda et al.)",
        "restricted_loss_abc": "ours (add/subtract only): directions cos/sin(w(a+b-c)), all pairs",
        "excluded_loss_abc": "ours (add/subtract only): those directions removed, train pairs",
        "phases": phase_rules(memorisation_rule),
    }
    for skipped_path, reason in skipped:
        result["snapshots_skipped"].append({"path": str(skipped_path), "reason": reason})
        log(f"{skipped_path}: left out of the progress measures ({reason})")
    if result["llc_note"]:
        log(result["llc_note"])
    result["figures"] = [f.name for f in written]
    result = _json_ready(result)
    rundir.atomic_write_text(out / "analysis.json", json.dumps(result, indent=1) + "\n")
    result["out_dir"] = str(out)
    return result


__all__ = [
    "ACC_MEMORISED", "TRAIN_FLAT_FACTOR", "EXCLUDED_RISE", "ACC_CIRCUIT", "ACC_GENERALISED", "WEIGHT_PLATEAU_TOL",
    "WEIGHT_PLATEAU_SPAN", "PAPER_PHASES", "LLC_MAX_SNAPSHOTS", "SERIES_KEYS", "progress_measures",
    "llc_snapshot_epochs", "llc_series", "metrics_series",
    "memorisation_end_paper", "phase_boundaries", "phase_rules", "default_out_dir", "analyze",
]
