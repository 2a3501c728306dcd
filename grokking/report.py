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
import importlib.resources
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .version import __version__
from .config import FIELDS, Config
from .errors import InputError
from .rundir import (CONFIG, METRICS, RESULTS, SUMMARY, RunDirError, atomic_write_text, first_at, is_run_dir,
                     is_sweep_dir, load_json, read_json, read_metrics, run_holder)

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


# The page's stylesheet and scripts: package data, inlined into every page so that it opens offline.
# The error trap runs before the page's own script, so that even a syntax error there is recorded in the DOM.
ASSETS = ("report.css", "report_error_trap.js", "report.js")


class ReportError(InputError):
    """The path is not something a report can be written for (one-line message)."""


def asset(name: str) -> str:
    """The text of one of :data:`ASSETS`, read from the installed package."""
    return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


# --- reading a directory -----------------------------------------------------------------------------
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


def _summary_section(summary: dict[str, Any] | None, records: list[dict[str, Any]], holder: str | None) -> str:
    if holder:
        held = (f"<p class='note'>The run is being written now, by {_esc(holder)}: this page shows it up to "
                f"epoch {_esc(records[-1]['epoch'] if records else 0)}.</p>")
    else:
        held = ""
    if not summary:
        return held or "<p class='note'>No summary.json yet: the run was killed before it wrote one.</p>"
    note = ""
    if _summary_is_stale(summary, records):
        note = (f"<p class='note'>summary.json was written at epoch {_esc(summary['final']['epoch'])}; "
                f"metrics.jsonl goes on to epoch {_esc(records[-1]['epoch'])} (the run was resumed and has not "
                f"finished yet). The overview and curves use metrics.jsonl.</p>")
    rows = [(key, _esc(fmt(value, key))) for key, value in summary.items() if key != "final"]
    final = summary.get("final") or {}
    final_rows = [(key, _esc(fmt(value, key))) for key, value in final.items()]
    return (held + note + "<div class='two-col'><div><h3>Run</h3>" + _key_value_table(rows) + "</div><div><h3>Final evaluation</h3>"
            + _key_value_table(final_rows) + "</div></div>")


def _config_section(config_file: dict[str, Any] | None, problem: str | None) -> str:
    if not config_file:
        return f"<p class='note'>{_esc(problem or 'No config.json.')}</p>"
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
    analysis = read_json(analysis_dir / "analysis.json") if analysis_dir.is_dir() else None
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
    keep = [i for i in (first_at(records, "train_acc", ACC_THRESHOLD, field=None),
                        first_at(records, "test_acc", ACC_THRESHOLD, field=None)) if i is not None]
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
    summary, config_problem = read_json(run_dir / SUMMARY), None
    try:
        config_file: dict[str, Any] | None = load_json(run_dir / CONFIG)
    except RunDirError as err:  # say which: missing, unreadable (and why), torn or not an object
        config_file = None
        config_problem = "No config.json." if not (run_dir / CONFIG).exists() else str(err)
    holder = run_holder(run_dir)
    records = read_metrics(run_dir)
    train99 = first_at(records, "train_acc", ACC_THRESHOLD)
    test99 = first_at(records, "test_acc", ACC_THRESHOLD)
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
        ("Summary", _summary_section(summary, records, str(holder) if holder else None)),
        ("Config", _config_section(config_file, config_problem)),
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
        with open(sweep_dir / RESULTS, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReportError(f"report: cannot read {sweep_dir / RESULTS} ({type(err).__name__})") from None
    run_dirs = sorted(p for p in (sweep_dir / "runs").iterdir() if p.is_dir()) if (sweep_dir / "runs").is_dir() else []
    if run_reports:
        for run_dir in run_dirs:
            if (run_dir / METRICS).is_file():
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
<style>
{asset("report.css")}</style>
<script>
{asset("report_error_trap.js")}</script>
</head>
<body>
<header><h1>{_esc(title)}</h1><p class="path">{_esc(directory.resolve())}</p><nav>{nav}</nav></header>
<div id="report-status" data-charts-expected="{len(data['charts'])}" data-charts-rendered="0" data-errors="0"
     data-images-total="{n_images}" data-images-loaded="0"></div>
<main>{body}</main>
<footer>grokking {_esc(__version__)} · generated {_esc(generated)}</footer>
<script type="application/json" id="report-data">{_json_for_script(data)}</script>
<script>
{asset("report.js")}</script>
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
    if (path / METRICS).is_file():
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


__all__ = [
    "MAX_POINTS",
    "REPORT_NAME",
    "ReportError",
    "downsample_indices",
    "render_run_report",
    "render_sweep_report",
    "write_report",
]
