"""Self-contained HTML reports of a run or a sweep: ``grokking report RUN_OR_SWEEP``.

One file, ``report.html``, in the directory it describes. Everything is inline (data as
JSON, figures as base64 PNG, a small hand-written SVG chart in plain JavaScript), so it
opens from disk with no network and can be mailed or archived on its own.

A run report shows the headline figures (epochs to 99% train and test accuracy, the
grokking delay), interactive loss / accuracy / weight-norm curves from ``metrics.jsonl``
(log-scale loss, hover values, the 99% epochs and the analysis's phase boundaries marked,
series toggled from the legend, a log epoch axis on demand), ``summary.json``, the config,
and, where ``grokking analyze`` has run, its key numbers and figures. A sweep report shows
``results.csv`` as a table sorted by clicking a header (or by ``report.html#sort=COLUMN:desc``),
the swept fields first and the shared ones folded away, each run's name linking to its own
report (``--runs`` writes those first), and the sweep's figures.

The page marks its own health for tests and tools: ``#report-status`` carries
``data-charts-rendered``, ``data-errors`` and ``data-images-loaded`` attributes.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .checkpoint import atomic_write_text
from .config import FIELDS, Config

REPORT_NAME = "report.html"
MAX_POINTS = 2000  # metrics points per chart; longer runs are downsampled (spikes kept)
ACC_THRESHOLD = 0.99
MAX_RAW_FILE = 64 * 1024  # sweep config files shown verbatim up to this size

COLORS = {"train": "#1f77b4", "test": "#ff7f0e", "all": "#2ca02c", "weight_norm": "#9467bd"}
PHASE_COLOR = "#7f7f7f"

# Captions of the figures ``grokking.analysis.analyze`` writes (others are shown under their file name).
ANALYSIS_CAPTIONS = {
    "fourier_spectra.png": "Fourier spectra: norm of the embedding and of the neuron-logit map per frequency",
    "neuron_clusters.png": "MLP neurons clustered by their dominant frequency",
    "logits_fourier.png": "Logits in the 2-D Fourier basis",
    "attention.png": "Attention from '=' to the inputs",
    "progress.png": "Progress measures over the run's snapshots, with the phase boundaries",
}


class ReportError(ValueError):
    """The path is not something a report can be written for (one-line message)."""


# --- reading a directory -----------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "config.json").is_file()


def is_sweep_dir(path: Path) -> bool:
    return (path / "results.csv").is_file()


def _finite(value: Any) -> Any:
    """JSON-safe number: NaN and infinities become null (the chart draws a gap)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def downsample_indices(records: Sequence[dict[str, Any]], max_points: int = MAX_POINTS,
                       keep: Iterable[int] = ()) -> list[int]:
    """Indices of at most ``max_points`` records that draw the same curves: the first and
    last, those in ``keep`` (the 99% epochs), and per bucket its first record and the
    extremes of the train and test loss, so loss spikes survive."""
    n = len(records)
    if n <= max_points:
        return list(range(n))
    chosen = {0, 1, n - 1, *(i for i in keep if 0 <= i < n)}  # 1: where a log epoch axis starts
    per_bucket = 5  # first + (min, max) of two series
    n_buckets = max((max_points - len(chosen)) // per_bucket, 1)
    edges = np.linspace(0, n, n_buckets + 1).astype(int)
    losses = {key: np.array([_finite(r.get(key)) if r.get(key) is not None else np.nan for r in records], dtype=float)
              for key in ("train_loss", "test_loss")}
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        chosen.add(int(lo))
        for values in losses.values():
            window = values[lo:hi]
            if np.isfinite(window).any():
                chosen.add(int(lo + np.nanargmin(window)))
                chosen.add(int(lo + np.nanargmax(window)))
    return sorted(chosen)


def first_index_at(records: Sequence[dict[str, Any]], key: str, threshold: float = ACC_THRESHOLD) -> int | None:
    return next((i for i, r in enumerate(records) if (r.get(key) is not None and r[key] >= threshold)), None)


# --- formatting --------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, key: str = "") -> str:
    """A number as a person reads it: accuracies in %, small or large floats in e-notation."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key.endswith(("_acc", "_share")) or key in ("in_key_freqs", "explained"):
            return f"{value:.2%}"
        if key == "seconds":
            return f"{value:.1f} s ({datetime.timedelta(seconds=round(value))})"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v, k)}" for k, v in value.items()) if value else "—"
    return str(value)


def _config_value(value: Any) -> str:
    """A config value exactly as it is set (repr of floats: 1e-08, 0.98)."""
    if isinstance(value, float):
        return repr(value)
    return fmt(value)


def _compact(value: float, key: str) -> str:
    """A results-table number: accuracies in %, otherwise 4 significant digits."""
    return f"{value:.2%}" if key.endswith("_acc") else f"{value:.4g}"


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside <script>: no '<' can end the element or open a comment."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _key_value_table(rows: Iterable[tuple[str, str]], css_class: str = "kv") -> str:
    """Rows of (label, already-escaped HTML)."""
    body = "".join(f"<tr><th scope='row'>{_esc(label)}</th><td>{value}</td></tr>" for label, value in rows)
    return f"<table class='{css_class}'><tbody>{body}</tbody></table>"


def _png_figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt='{_esc(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _abbreviate(obj: Any, max_items: int = 12) -> Any:
    """For the raw-JSON view: long lists shortened (the per-neuron and per-frequency arrays)."""
    if isinstance(obj, dict):
        return {k: _abbreviate(v, max_items) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > max_items:
            return [_abbreviate(v, max_items) for v in obj[:max_items]] + [f"... {len(obj) - max_items} more"]
        return [_abbreviate(v, max_items) for v in obj]
    return obj


# --- run report ----------------------------------------------------------------------------------------
def _headline(summary: dict[str, Any], records: list[dict[str, Any]], train99: int | None,
              test99: int | None) -> str:
    # The newest evaluation: metrics.jsonl runs ahead of summary.json while a resumed run trains.
    final = records[-1] if records else (summary.get("final") or {})
    delay = test99 - train99 if train99 is not None and test99 is not None else summary.get("grokking_delay")
    status = summary.get("status", "running, or stopped before it wrote summary.json")
    if _summary_is_stale(summary, records):
        status = f"running? (summary.json: {summary.get('status')} at epoch {summary['final']['epoch']})"
    cards = [
        ("train acc ≥ 99%", f"epoch {train99}" if train99 is not None else "not reached"),
        ("test acc ≥ 99%", f"epoch {test99}" if test99 is not None else "not reached"),
        ("grokking delay", f"{delay} epochs" if delay is not None else "—"),
        ("final test accuracy", fmt(final.get("test_acc"), "test_acc")),
        ("final test loss", fmt(final.get("test_loss"), "test_loss")),
        ("latest evaluation", f"epoch {final.get('epoch')}" if final.get("epoch") is not None else "—"),
        ("status", _esc(status)),
    ]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='card-label'>{_esc(label)}</div><div class='card-value'>{value}</div></div>"
        for label, value in cards) + "</div>"


def _summary_is_stale(summary: dict[str, Any] | None, records: list[dict[str, Any]]) -> bool:
    """True when metrics.jsonl has evaluations after the one summary.json reports (a resumed run)."""
    epoch = ((summary or {}).get("final") or {}).get("epoch")
    return bool(records) and isinstance(epoch, (int, float)) and records[-1]["epoch"] > epoch


def _summary_section(summary: dict[str, Any] | None, records: list[dict[str, Any]]) -> str:
    if not summary:
        return "<p class='note'>No summary.json yet: the run is in progress or was killed before it wrote one.</p>"
    note = ""
    if _summary_is_stale(summary, records):
        note = (f"<p class='note'>summary.json was written at epoch {_esc(summary['final']['epoch'])}; "
                f"metrics.jsonl goes on to epoch {_esc(records[-1]['epoch'])} (the run was resumed and has not "
                f"finished yet). The overview and curves use metrics.jsonl.</p>")
    rows = [(key, _esc(fmt(value, key))) for key, value in summary.items() if key != "final"]
    final = summary.get("final") or {}
    final_rows = [(key, _esc(fmt(value, key))) for key, value in final.items()]
    return (note + "<div class='two-col'><div><h3>Run</h3>" + _key_value_table(rows) + "</div><div><h3>Final evaluation</h3>"
            + _key_value_table(final_rows) + "</div></div>")


def _config_section(config_file: dict[str, Any] | None) -> str:
    if not config_file:
        return "<p class='note'>No config.json.</p>"
    cfg = config_file.get("config", {})
    defaults = Config().to_dict()
    groups: dict[str, list[str]] = {}
    for name, value in cfg.items():
        meta = FIELDS[name].metadata if name in FIELDS else {"group": "other", "help": ""}
        changed = name in defaults and value != defaults[name]
        default_note = (f" <span class='default'>(default {_esc(_config_value(defaults[name]))})</span>"
                        if changed else "")
        groups.setdefault(meta["group"], []).append(
            f"<tr class='{'changed' if changed else ''}'><th scope='row' title='{_esc(meta['help'])}'>{_esc(name)}</th>"
            f"<td>{_esc(_config_value(value))}{default_note}</td></tr>")
    tables = "".join(f"<div><h3>{_esc(group)}</h3><table class='kv'><tbody>{''.join(rows)}</tbody></table></div>"
                     for group, rows in groups.items())
    extra = [(key, _esc(fmt(value))) for key, value in config_file.items() if key != "config"]
    return (f"<p class='note'>Values that differ from the defaults are highlighted; hover a name for its meaning.</p>"
            f"<div class='config-grid'>{tables}</div><h3>Environment</h3>{_key_value_table(extra)}")


def _analysis_section(run_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """The analysis's key numbers and figures, and analysis.json (for the phase markers)."""
    analysis_dir = run_dir / "analysis"
    analysis = _read_json(analysis_dir / "analysis.json") if analysis_dir.is_dir() else None
    pngs = sorted(analysis_dir.glob("*.png")) if analysis_dir.is_dir() else []
    if not analysis and not pngs:
        note = ("<p class='note'>No analysis yet: <code>grokking.analysis.analyze(RUN)</code> writes "
                "<code>RUN/analysis/</code>; then run <code>grokking report RUN</code> again.</p>")
        return note, None
    parts = []
    if isinstance(analysis, dict):
        rows: list[tuple[str, str]] = []
        if analysis.get("epoch") is not None:
            rows.append(("analysed epoch", _esc(analysis["epoch"])))
        keys = analysis.get("key_frequencies") or {}
        if keys.get("used") is not None:
            rows.append(("key frequencies (used)", _esc(fmt(keys["used"]))))
        for source in ("embedding", "neuron_logit"):
            entry = keys.get(source)
            if isinstance(entry, dict):
                rows.append((f"key frequencies of the {source.replace('_', '-')} map",
                             _esc(f"{fmt(entry.get('freqs'))} ({fmt(entry.get('explained'), 'explained')} "
                                  f"of the norm)")))
        neurons = analysis.get("neurons") or {}
        for key, label, kind in (("n_neurons", "MLP neurons", ""), ("n_dead", "dead neurons", ""),
                                 ("in_key_freqs", "live neurons at a key frequency", "_share"),
                                 ("mean_frac_explained", "mean variance explained by a neuron's frequency", "_share")):
            if neurons.get(key) is not None:
                rows.append((label, _esc(fmt(neurons[key], kind))))
        if neurons.get("clusters"):
            rows.append(("neuron clusters (frequency: neurons)", _esc(fmt(neurons["clusters"]))))
        if analysis.get("logits_key_share") is not None:
            rows.append(("logit norm in key directions", _esc(fmt(analysis["logits_key_share"], "key_share"))))
        for key, value in (analysis.get("measures") or {}).items():
            rows.append((key.replace("_", " "), _esc(fmt(value, key))))
        for key, value in (analysis.get("phases") or {}).items():
            rows.append((f"phase: {key.replace('_', ' ')}", _esc(f"epoch {value}" if value is not None else "—")))
        parts.append(_key_value_table(rows))
        raw = json.dumps(_abbreviate({k: v for k, v in analysis.items() if k != "config"}), indent=1)
        parts.append(f"<details><summary>analysis.json (long lists shortened)</summary><pre>{_esc(raw)}</pre></details>")
    order = [name for name in (analysis or {}).get("figures", []) if (analysis_dir / name).is_file()]
    order += [p.name for p in pngs if p.name not in order]
    parts.append("<div class='figures'>" + "".join(
        _png_figure(analysis_dir / name, ANALYSIS_CAPTIONS.get(name, name)) for name in order) + "</div>")
    return "".join(parts), analysis if isinstance(analysis, dict) else None


def _chart_data(records: list[dict[str, Any]], markers: list[dict[str, Any]], max_points: int) -> dict[str, Any]:
    keep = [i for i in (first_index_at(records, "train_acc"), first_index_at(records, "test_acc")) if i is not None]
    indices = downsample_indices(records, max_points, keep)
    keys = [k for k in ("epoch", "train_loss", "test_loss", "all_loss", "train_acc", "test_acc", "all_acc",
                        "weight_norm", "lr") if any(k in r for r in records)]
    series = {k: [_finite(records[i].get(k)) for i in indices] for k in keys}
    return {
        "metrics": series,
        "n_records": len(records),
        "n_points": len(indices),
        "markers": markers,
        "charts": [
            {"id": "loss", "title": "Loss (cross-entropy, log scale)", "yLog": True, "format": "exp",
             "series": [{"key": "train_loss", "label": "train", "color": COLORS["train"]},
                        {"key": "test_loss", "label": "test", "color": COLORS["test"]},
                        {"key": "all_loss", "label": "all pairs", "color": COLORS["all"], "hidden": True}]},
            {"id": "accuracy", "title": "Accuracy", "yMin": 0, "yMax": 1, "format": "percent",
             "series": [{"key": "train_acc", "label": "train", "color": COLORS["train"]},
                        {"key": "test_acc", "label": "test", "color": COLORS["test"]},
                        {"key": "all_acc", "label": "all pairs", "color": COLORS["all"], "hidden": True}]},
            {"id": "weight_norm", "title": "Weight norm (L2 norm of all parameters)", "format": "number",
             "series": [{"key": "weight_norm", "label": "weight norm", "color": COLORS["weight_norm"]}]},
        ],
    }


def render_run_report(run_dir: Path, max_points: int = MAX_POINTS) -> str:
    from .train import read_metrics

    config_file, summary = _read_json(run_dir / "config.json"), _read_json(run_dir / "summary.json")
    config_file = config_file if isinstance(config_file, dict) else None
    summary = summary if isinstance(summary, dict) else None
    records = [r for r in read_metrics(run_dir) if isinstance(r, dict) and "epoch" in r]
    i_train, i_test = first_index_at(records, "train_acc"), first_index_at(records, "test_acc")
    train99 = records[i_train]["epoch"] if i_train is not None else None
    test99 = records[i_test]["epoch"] if i_test is not None else None
    analysis_html, analysis = _analysis_section(run_dir)

    markers = []
    if train99 is not None:
        markers.append({"epoch": train99, "label": f"train 99% @ {train99}", "color": COLORS["train"]})
    if test99 is not None:
        markers.append({"epoch": test99, "label": f"test 99% @ {test99}", "color": COLORS["test"]})
    for phase, epoch in ((analysis or {}).get("phases") or {}).items():
        if isinstance(epoch, (int, float)):
            markers.append({"epoch": epoch, "label": phase.replace("_", " "), "color": PHASE_COLOR, "phase": True})

    cfg = (config_file or {}).get("config", {})
    task = (f"{cfg.get('op', '?')} mod {cfg.get('p', '?')}, {fmt(cfg.get('frac'))} train fraction, seed "
            f"{cfg.get('seed', '?')}" if cfg else "run")
    if records:
        data = _chart_data(records, markers, max_points)
        sampled = (f" ({data['n_points']} of {data['n_records']} evaluations drawn; spikes and the 99% epochs kept)"
                   if data["n_points"] < data["n_records"] else "")
        charts_html = (
            "<div class='chart-controls'><label><input type='checkbox' id='log-x'> log epoch axis</label> "
            f"<span class='note'>Hover for values; click a legend entry to show or hide it.{_esc(sampled)}</span></div>"
            + "".join(f"<div class='chart' id='chart-{c['id']}' data-chart='{c['id']}'><h3>{_esc(c['title'])}</h3></div>"
                      for c in data["charts"]))
    else:
        data = {"metrics": {}, "charts": [], "markers": []}
        charts_html = "<p class='note'>No metrics.jsonl records yet.</p>"

    sections = [
        ("Overview", _headline(summary or {}, records, train99, test99)),
        ("Curves", charts_html),
        ("Summary", _summary_section(summary, records)),
        ("Config", _config_section(config_file)),
        ("Analysis", analysis_html),
    ]
    return _page(f"{task}", run_dir, sections, data)


# --- sweep report ---------------------------------------------------------------------------------------
def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _run_link(row: dict[str, str], run_names: set[str], sweep_dir: Path) -> str | None:
    """The relative link to the report of the run a results row describes, if it has one."""
    for value in row.values():
        name = Path(value.strip()).name if value else ""
        if name in run_names and (sweep_dir / "runs" / name / REPORT_NAME).is_file():
            return f"runs/{name}/{REPORT_NAME}"
    return None


def render_sweep_report(sweep_dir: Path, run_reports: bool = False, max_points: int = MAX_POINTS) -> str:
    """The sweep's page; with ``run_reports``, first (re)write the report of every run in
    ``runs/`` so that each row links to one (a sweep's runs write none by default)."""
    try:
        with open(sweep_dir / "results.csv", newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReportError(f"report: cannot read {sweep_dir / 'results.csv'} ({type(err).__name__})") from None
    run_dirs = sorted(p for p in (sweep_dir / "runs").iterdir() if p.is_dir()) if (sweep_dir / "runs").is_dir() else []
    if run_reports:
        for run_dir in run_dirs:
            if (run_dir / "metrics.jsonl").is_file():
                write_report(run_dir, max_points)
    run_names = {p.name for p in run_dirs}
    links = [_run_link(row, run_names, sweep_dir) for row in rows]
    # results.csv carries every config field; those the sweep did not vary go in a side table
    # (as do columns empty in every row), so the table shows what differs between runs.
    shared = [c for c in columns if len(rows) > 1 and (c in FIELDS or not any((r.get(c) or "").strip() for r in rows))
              and len({(r.get(c) or "").strip() for r in rows}) == 1]
    columns = [c for c in columns if c not in shared]
    # What the sweep varied comes first, right after the run's name; its paths and keys last.
    varied = [c for c in columns[1:] if c in FIELDS]
    trailing = [c for c in ("run_dir", "config_key") if c in columns]
    columns = columns[:1] + varied + [c for c in columns[1:] if c not in varied and c not in trailing] + trailing
    head = "".join(f"<th scope='col' data-column='{_esc(c)}' tabindex='0' aria-sort='none'>{_esc(c)}</th>"
                   for c in columns)
    body = []
    for row, link in zip(rows, links):
        cells = []
        for index, column in enumerate(columns):
            text = (row.get(column) or "").strip()
            number = _number(text)
            if number is not None:  # sorts by the exact value; integers are shown as written
                sort_key, shown = repr(number), text if text.lstrip("-").isdigit() else _compact(number, column)
            else:  # text, or a blank / nan / inf (sorted last)
                sort_key, shown = ("" if _parses_as_float(text) else text), text
            content = f"<a href='{_esc(link)}'>{_esc(shown)}</a>" if index == 0 and link else _esc(shown)
            cells.append(f"<td data-value='{_esc(sort_key)}' title='{_esc(text)}'"
                         f"{' class=num' if number is not None else ''}>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    linked = " A run's name links to its own report." if any(links) else (
        " Run <code>grokking report SWEEP --runs</code> to write the runs' own reports and link them here."
        if run_dirs else "")
    table = (f"<p class='note'>{len(rows)} runs.{linked} Click a column header to sort (again to reverse); "
             f"link a sorted view as <code>report.html#sort=COLUMN:desc</code>.</p>"
             f"<div class='table-scroll'><table class='results sortable' id='results'><thead><tr>{head}</tr></thead>"
             f"<tbody>{''.join(body)}</tbody></table></div>")
    if shared:
        table += ("<details><summary>Settings shared by every run, and empty columns "
                  f"({len(shared)})</summary>"
                  + _key_value_table((c, _esc(rows[0].get(c) or "—")) for c in shared) + "</details>")
    pngs = sorted(sweep_dir.glob("*.png"))
    figures = ("<div class='figures'>" + "".join(_png_figure(p, p.name) for p in pngs) + "</div>" if pngs
               else "<p class='note'>No sweep figures (*.png) in this directory.</p>")
    sections = [("Results", table), ("Figures", figures)]
    raw_files = [p for p in sorted([*sweep_dir.glob("*.toml"), *sweep_dir.glob("*.json")])
                 if p.stat().st_size <= MAX_RAW_FILE]
    if raw_files:
        sections.append(("Sweep files", "".join(
            f"<details><summary>{_esc(p.name)}</summary><pre>{_esc(p.read_text(errors='replace'))}</pre></details>"
            for p in raw_files)))
    return _page(f"sweep {sweep_dir.resolve().name}", sweep_dir, sections, {"metrics": {}, "charts": [], "markers": []})


# --- the page ---------------------------------------------------------------------------------------------
def _page(title: str, directory: Path, sections: list[tuple[str, str]], data: dict[str, Any]) -> str:
    nav = " · ".join(f"<a href='#{name.lower()}'>{_esc(name)}</a>" for name, _ in sections)
    body = "".join(f"<section id='{name.lower()}'><h2>{_esc(name)}</h2>{content}</section>" for name, content in sections)
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    n_images = sum(content.count("<img ") for _, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>grokking report: {_esc(title)}</title>
<style>{CSS}</style>
<script>{ERROR_TRAP_JS}</script>
</head>
<body>
<header><h1>{_esc(title)}</h1><p class="path">{_esc(directory.resolve())}</p><nav>{nav}</nav></header>
<div id="report-status" data-charts-expected="{len(data['charts'])}" data-charts-rendered="0" data-errors="0"
     data-images-total="{n_images}" data-images-loaded="0"></div>
<main>{body}</main>
<footer>grokking {_esc(__version__)} · generated {_esc(generated)}</footer>
<script type="application/json" id="report-data">{_json_for_script(data)}</script>
<script>{REPORT_JS}</script>
</body>
</html>
"""


# --- public API -----------------------------------------------------------------------------------------
def write_report(path: str | Path, max_points: int = MAX_POINTS, run_reports: bool = False) -> Path:
    """Write ``report.html`` into a run directory or a sweep directory; return its path.
    ``run_reports`` (sweeps): also write each run's own report, which the table links to."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"report: {path} does not exist")
    if not path.is_dir():
        raise ReportError(f"report: {path} is not a directory (give a run or a sweep directory)")
    # metrics.jsonl marks a run even if it shares its directory with other files; a sweep
    # directory's own results.csv comes next; a run that has not evaluated yet has its config.
    if (path / "metrics.jsonl").is_file():
        page = render_run_report(path, max_points)
    elif is_sweep_dir(path):
        page = render_sweep_report(path, run_reports, max_points)
    elif is_run_dir(path):
        page = render_run_report(path, max_points)
    else:
        raise ReportError(f"report: {path} is neither a run directory (metrics.jsonl, config.json) "
                          f"nor a sweep directory (results.csv)")
    out = path / REPORT_NAME
    atomic_write_text(out, page)
    return out


def add_cli(subparsers: Any) -> None:
    """The ``grokking report`` subcommand."""
    parser = subparsers.add_parser(
        "report", help="write a self-contained report.html for a run or a sweep",
        description="Write RUN_OR_SWEEP/report.html: one self-contained page (no network needed) with the "
                    "curves, summary, config and analysis of a run, or the results table and figures of a sweep.")
    parser.add_argument("path", metavar="RUN_OR_SWEEP", help="a run directory or a sweep directory")
    parser.add_argument("--max-points", type=int, default=MAX_POINTS,
                        help=f"most metrics points per chart; longer runs are downsampled (default {MAX_POINTS})")
    parser.add_argument("--runs", action="store_true",
                        help="for a sweep: also write every run's own report.html, linked from the table")
    parser.set_defaults(func=_cmd_report)


def _cmd_report(args: Any) -> int:
    from .cli import UsageError

    if args.max_points < 10:
        raise UsageError(f"report: --max-points must be >= 10; got {args.max_points}")
    try:
        out = write_report(args.path, args.max_points, run_reports=args.runs)
    except ReportError as err:
        raise UsageError(str(err)) from None
    print(out)
    return 0


# --- inline assets -----------------------------------------------------------------------------------------
CSS = """
:root { --fg: #1b1f24; --muted: #5b6570; --line: #d8dde3; --bg-alt: #f5f7f9; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); margin: 0; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; border-bottom: 1px solid var(--line); }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 26px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 12px 0 6px; color: var(--muted); }
.path { color: var(--muted); margin: 0 0 6px; font-family: ui-monospace, monospace; font-size: 12px; }
nav { margin-bottom: 10px; } nav a { color: var(--accent); text-decoration: none; }
footer { color: var(--muted); font-size: 12px; padding: 24px 20px; }
.note { color: var(--muted); font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 150px; background: var(--bg-alt); }
.card-label { color: var(--muted); font-size: 12px; } .card-value { font-size: 18px; font-weight: 600; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
table.kv th { font-weight: 500; color: var(--muted); white-space: nowrap; }
tr.changed td { background: #fff5d6; font-weight: 600; } .default { color: var(--muted); font-weight: 400; }
.two-col { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 20px; }
.config-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; }
.chart { position: relative; margin: 6px 0 18px; }
.chart svg { width: 100%; height: auto; display: block; }
.chart .axis text { font-size: 12px; fill: var(--muted); }
.chart .grid line { stroke: #eceff2; }
.chart .legend { display: flex; gap: 14px; font-size: 13px; margin: 2px 0 0 64px; }
.chart .legend button { border: none; background: none; cursor: pointer; padding: 0; font: inherit; color: var(--fg); }
.chart .legend button.off { opacity: 0.4; text-decoration: line-through; }
.chart .swatch { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 5px; }
.tooltip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.96); border: 1px solid var(--line);
  border-radius: 4px; padding: 5px 8px; font-size: 12px; box-shadow: 0 1px 4px rgba(0,0,0,0.12); white-space: nowrap; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
.table-scroll { overflow-x: auto; }
table.sortable th:not(.nosort) { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.results tbody tr:nth-child(even) { background: var(--bg-alt); }
pre { background: var(--bg-alt); padding: 8px; overflow-x: auto; font-size: 12px; }
#report-status.error { max-width: 1180px; margin: 8px auto; padding: 8px 12px; background: #fde8e8; color: #9b1c1c; }
"""

# Runs before the page's own script, so that even a syntax error there is recorded in the DOM.
ERROR_TRAP_JS = """
window.reportErrors = [];
window.addEventListener("error", function (event) {
  window.reportErrors.push(String(event.message || event));
  var status = document.getElementById("report-status");
  if (status) {
    status.setAttribute("data-errors", String(window.reportErrors.length));
    status.className = "error";
    status.textContent = "Report script error: " + window.reportErrors.join("; ");
  }
});
"""

REPORT_JS = r"""
"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const status = document.getElementById("report-status");
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const W = 900, H = 290, M = { left: 64, right: 14, top: 12, bottom: 38 };

  const el = (tag, attrs = {}, parent = null) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  };

  // --- number formatting ---
  const fmtValue = (v, kind) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    if (kind === "percent") return (100 * v).toFixed(2) + "%";
    if (kind === "exp") return v.toExponential(3);
    return Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toPrecision(5));
  };
  const fmtTick = (v) => {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e5 || a < 1e-3 ? v.toExponential(0).replace("e+", "e") : String(+v.toPrecision(6));
  };

  // --- scales: map data values to pixels (log scales work on log10 of the value) ---
  const niceStep = (span, count) => {
    const raw = span / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  };
  function makeScale(log, lo, hi, pxLo, pxHi, snap) {
    let a = log ? Math.log10(lo) : lo, b = log ? Math.log10(hi) : hi;
    if (log && snap) { a = Math.floor(a); b = Math.ceil(b); }
    if (!(b > a)) { a -= log ? 1 : (Math.abs(a) || 1) * 0.5; b += log ? 1 : (Math.abs(b) || 1) * 0.5; }
    const t = (v) => (log ? Math.log10(v) : v);
    const scale = {
      log, toPx: (v) => pxLo + ((t(v) - a) / (b - a)) * (pxHi - pxLo),
      fromPx: (px) => { const u = a + ((px - pxLo) / (pxHi - pxLo)) * (b - a); return log ? Math.pow(10, u) : u; },
      valid: (v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0),
      ticks: [],
    };
    if (log) {
      // powers of ten (every other one and so on past 8 decades); 2x and 5x too when under 3 decades show
      const every = Math.max(1, Math.ceil((b - a) / 8)), few = b - a < 3;
      const inside = (v) => Math.log10(v) >= a - 1e-9 && Math.log10(v) <= b + 1e-9;
      for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
        for (const m of few ? [1, 2, 5] : [1]) {
          const v = m * Math.pow(10, e);
          if (inside(v) && (m > 1 || ((e % every) + every) % every === 0)) scale.ticks.push({ v, label: fmtTick(v) });
        }
      }
    } else {
      const step = niceStep(b - a, 6);
      for (let v = Math.ceil(a / step - 1e-9) * step; v <= b + step * 1e-9; v += step) {
        const r = +v.toPrecision(12);
        scale.ticks.push({ v: r, label: fmtTick(r) });
      }
    }
    return scale;
  }

  let logX = false;

  function renderChart(container, spec) {
    for (const old of container.querySelectorAll("svg, .legend, .tooltip")) old.remove();
    const metrics = data.metrics, epochs = metrics.epoch || [];
    const xValid = (x) => Number.isFinite(x) && (!logX || x > 0);
    const points = epochs.map((x, i) => i).filter((i) => xValid(epochs[i]));
    const shown = spec.series.filter((s) => !s.hidden && Array.isArray(metrics[s.key]));
    const yLog = !!spec.yLog;
    // y extent over the shown series
    let lo = Infinity, hi = -Infinity;
    for (const s of shown) for (const i of points) {
      const v = metrics[s.key][i];
      if (v !== null && Number.isFinite(v) && (!yLog || v > 0)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    if (spec.yMin !== undefined) lo = Math.min(spec.yMin, lo === Infinity ? spec.yMin : lo);
    if (spec.yMax !== undefined) hi = Math.max(spec.yMax, hi === -Infinity ? spec.yMax : hi);
    if (lo === Infinity) { lo = yLog ? 1e-3 : 0; hi = yLog ? 10 : 1; }
    else if (!yLog && spec.yMin === undefined) { const pad = 0.05 * (hi - lo); lo -= pad; hi += pad; }  // headroom
    const xs = points.map((i) => epochs[i]);
    const xLo = xs.length ? xs[0] : 0, xHi = xs.length ? xs[xs.length - 1] : 1;
    const x = makeScale(logX, xLo, xHi, M.left, W - M.right, false);
    const y = makeScale(yLog, lo, hi, H - M.bottom, M.top, true);

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title });
    const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
    for (const t of y.ticks) {
      const py = y.toPx(t.v);
      el("line", { x1: M.left, x2: W - M.right, y1: py, y2: py }, grid);
      el("text", { x: M.left - 6, y: py + 4, "text-anchor": "end" }, axis).textContent = t.label;
    }
    for (const t of x.ticks) {
      if (t.v < xLo - 1e-9 || t.v > xHi + 1e-9) continue;
      const px = x.toPx(t.v);
      el("line", { x1: px, x2: px, y1: M.top, y2: H - M.bottom }, grid);
      el("text", { x: px, y: H - M.bottom + 16, "text-anchor": "middle" }, axis).textContent = t.label;
    }
    el("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, axis).textContent =
      logX ? "epoch (log scale)" : "epoch";
    el("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom,
                 fill: "none", stroke: "#c9d0d7" }, svg);

    // the 99% epochs and phase boundaries
    data.markers.forEach((m, k) => {
      if (!xValid(m.epoch) || m.epoch < xLo || m.epoch > xHi) return;
      const px = x.toPx(m.epoch);
      el("line", { x1: px, x2: px, y1: M.top, y2: H - M.bottom, stroke: m.color, "stroke-width": 1.2,
                   "stroke-dasharray": m.phase ? "2 3" : "6 4" }, svg);
      const flip = px > W - M.right - 8 * m.label.length;  // near the right edge: label on the line's left
      el("text", { x: flip ? px - 4 : px + 4, y: M.top + 14 + 14 * k, fill: m.color, "font-size": 12,
                   "text-anchor": flip ? "end" : "start" }, svg).textContent = m.label;
    });

    // the curves, with gaps where a value is missing or cannot be drawn on a log axis
    for (const s of shown) {
      let d = "", pen = false;
      for (const i of points) {
        const v = metrics[s.key][i];
        if (!y.valid(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + x.toPx(epochs[i]).toFixed(1) + " " + y.toPx(v).toFixed(1);
        pen = true;
      }
      el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-linejoin": "round",
                   "data-series": s.key }, svg);
    }

    // hover: nearest evaluation to the pointer, its values in a tooltip
    const cursor = el("line", { y1: M.top, y2: H - M.bottom, stroke: "#888", "stroke-width": 1, visibility: "hidden" }, svg);
    const dots = shown.map((s) => el("circle", { r: 3.5, fill: s.color, visibility: "hidden" }, svg));
    const overlay = el("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom,
                                 fill: "transparent" }, svg);
    const tooltip = document.createElement("div");
    tooltip.className = "tooltip";
    tooltip.style.display = "none";
    const nearest = (epoch) => {
      let a = 0, b = xs.length - 1;
      while (b - a > 1) { const mid = (a + b) >> 1; if (xs[mid] < epoch) a = mid; else b = mid; }
      return Math.abs(xs[a] - epoch) <= Math.abs(xs[b] - epoch) ? points[a] : points[b];
    };
    overlay.addEventListener("mousemove", (event) => {
      if (!xs.length) return;
      const box = svg.getBoundingClientRect();
      const epoch = x.fromPx(((event.clientX - box.left) / box.width) * W);
      const i = nearest(epoch), px = x.toPx(epochs[i]);
      cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
      const lines = [`<b>epoch ${epochs[i]}</b>`];
      shown.forEach((s, k) => {
        const v = metrics[s.key][i];
        if (y.valid(v)) {
          dots[k].setAttribute("cx", px); dots[k].setAttribute("cy", y.toPx(v)); dots[k].setAttribute("visibility", "visible");
        } else dots[k].setAttribute("visibility", "hidden");
        lines.push(`<span style="color:${s.color}">●</span> ${s.label}: ${fmtValue(v, spec.format)}`);
      });
      tooltip.innerHTML = lines.join("<br>");
      tooltip.style.display = "block";
      const host = container.getBoundingClientRect();
      let left = event.clientX - host.left + 14;
      if (left + tooltip.offsetWidth > host.width) left = event.clientX - host.left - tooltip.offsetWidth - 14;
      tooltip.style.left = left + "px";
      tooltip.style.top = (event.clientY - host.top + 10) + "px";
    });
    overlay.addEventListener("mouseleave", () => {
      tooltip.style.display = "none";
      cursor.setAttribute("visibility", "hidden");
      for (const dot of dots) dot.setAttribute("visibility", "hidden");
    });
    container.appendChild(svg);

    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of spec.series) {
      if (!Array.isArray(metrics[s.key])) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = s.hidden ? "off" : "";
      button.innerHTML = `<span class="swatch" style="background:${s.color}"></span>${s.label}`;
      button.addEventListener("click", () => { s.hidden = !s.hidden; renderChart(container, spec); });
      legend.appendChild(button);
    }
    container.appendChild(legend);
    container.appendChild(tooltip);
  }

  function renderAll() {
    let rendered = 0;
    for (const spec of data.charts) {
      const container = document.getElementById("chart-" + spec.id);
      if (!container) continue;
      renderChart(container, spec);
      rendered++;
    }
    status.setAttribute("data-charts-rendered", String(rendered));
  }

  // --- sortable tables: click a header; #sort=COLUMN:desc in the address sorts on load ---
  function sortTable(table, th, descending) {
    const col = Array.prototype.indexOf.call(th.parentNode.children, th);
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const key = (row) => { const c = row.cells[col]; return c ? (c.dataset.value ?? c.textContent).trim() : ""; };
    const numeric = rows.every((r) => key(r) === "" || Number.isFinite(Number(key(r))));
    rows.sort((a, b) => {
      const ka = key(a), kb = key(b);
      if (ka === "" || kb === "") return (ka === "") - (kb === "");  // blanks last either way
      const order = numeric ? Number(ka) - Number(kb) : ka.localeCompare(kb, undefined, { numeric: true });
      return descending ? -order : order;
    });
    for (const row of rows) body.appendChild(row);
    for (const other of th.parentNode.children) other.setAttribute("aria-sort", "none");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  for (const table of document.querySelectorAll("table.sortable")) {
    for (const th of table.tHead.rows[0].cells) {
      if (th.classList.contains("nosort")) continue;
      const activate = () => {
        const descending = th.getAttribute("aria-sort") === "ascending";
        sortTable(table, th, descending);
        try { history.replaceState(null, "", "#sort=" + encodeURIComponent(th.dataset.column) + (descending ? ":desc" : "")); }
        catch (e) { /* some file:// contexts refuse; sorting still works */ }
      };
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); } });
    }
  }
  const wanted = /^#sort=([^:]+)(:desc)?$/.exec(location.hash);
  if (wanted) {
    const column = decodeURIComponent(wanted[1]);
    for (const table of document.querySelectorAll("table.sortable")) {
      const th = Array.from(table.tHead.rows[0].cells).find((c) => c.dataset.column === column);
      if (th) sortTable(table, th, !!wanted[2]);
    }
  }

  const logToggle = document.getElementById("log-x");
  if (logToggle) logToggle.addEventListener("change", () => { logX = logToggle.checked; renderAll(); });
  renderAll();

  const countImages = () => {
    const images = Array.from(document.images);
    status.setAttribute("data-images-loaded", String(images.filter((img) => img.complete && img.naturalWidth > 0).length));
  };
  countImages();
  window.addEventListener("load", countImages);
})();
"""

__all__ = [
    "MAX_POINTS",
    "REPORT_NAME",
    "ReportError",
    "add_cli",
    "downsample_indices",
    "render_run_report",
    "render_sweep_report",
    "write_report",
]
