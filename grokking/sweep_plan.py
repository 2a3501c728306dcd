"""What a sweep is: its points, the grid they come from, sweep files, and where each run stands.

Everything here is checked before anything is written: an unknown field or a bad value in any
point is one line naming the field (:class:`~grokking.config.ConfigError`, exit status 2).
"""
from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FIELDS, PRESETS, ConfigError, from_dict, load_file
from .sweep_figures import format_value
from .rundir import CHECKPOINTS, CONFIG, LAST, SUMMARY, read_json

# Statuses of summary.json that end a run for good: a restarted sweep skips these runs.
# ("failed" is a numerical fault, NaN/Inf: training it again gives the same fault.)
FINISHED_STATUSES = ("completed", "stopped_early", "failed")
# What a point's row says before its run has ended in this invocation.
PENDING = "pending"
# Another process holds the run's lock (a second sweep, or a job of an earlier one still running).
BUSY = "running"
SWEEP_FILE_KEYS = ("preset", "description", "fixed", "grid", "runs")


@dataclass(frozen=True)
class RunPoint:
    """One run of a sweep. Picklable: it travels to process, Ray and Slurm workers as is."""

    name: str                  # the point's own values, e.g. "op=add_frac=0.3"
    run_dir: str               # absolute path of its run directory, DIR/runs/<name>_<config_key>
    config: dict[str, Any]     # the full, validated Config as a dict
    overrides: dict[str, Any]  # the values this point sets on top of the fixed ones
    config_key: str            # Config.key()


@dataclass
class SweepPlan:
    """A validated sweep: where it goes, what is fixed, the axes, and every point in order."""

    out: Path
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    points: list[RunPoint]
    duplicates: int = 0  # points dropped because an earlier point has the same run directory


# --- naming points ---------------------------------------------------------------------------------
def point_name(overrides: dict[str, Any]) -> str:
    """``{"op": "add", "frac": 0.3}`` -> ``op=add_frac=0.3`` (safe as a file name, bounded length)."""
    text = "_".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "run"
    return re.sub(r"[^A-Za-z0-9._+=-]", "-", text)[:150]


# --- planning ----------------------------------------------------------------------------------------
def check_axes(grid: dict[str, Any], where: str) -> dict[str, list[Any]]:
    """The axes of ``grid`` under their field names; ConfigError for an unknown field or an empty axis."""
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in FIELDS:
            raise ConfigError(f"{where} {key!r}", "is not a config field (see grokking train --help)")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where} {name}", f"must be a non-empty list of values; got {values!r}"[:200])
        axes[name] = list(values)
    return axes


def plan_sweep(out: str | Path, fixed: dict[str, Any] | None = None, grid: dict[str, Sequence[Any]] | None = None,
               runs: Sequence[dict[str, Any]] | None = None) -> SweepPlan:
    """Validate every point of ``grid`` (a cartesian product, first axis slowest) and of
    ``runs`` (explicit points), each on top of ``fixed``; raise ConfigError before anything
    is written. ``fixed`` holds raw field values (strings from the command line are fine).
    With neither a grid nor runs the sweep is the one run ``fixed``."""
    out = Path(out).absolute()
    fixed = dict(fixed or {})
    axes = check_axes(dict(grid or {}), "grid")
    point_overrides: list[dict[str, Any]] = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if runs:
        for index, entry in enumerate(runs):
            if not isinstance(entry, dict):
                raise ConfigError(f"runs[{index}]", f"must be a table of config fields; got {entry!r}"[:200])
            point_overrides.append({k.replace("-", "_") if isinstance(k, str) else k: v for k, v in entry.items()})
        if not axes:
            point_overrides = point_overrides[1:]  # the product of no axes is one empty point: not wanted here
    points: list[RunPoint] = []
    seen: set[str] = set()
    duplicates = 0
    for overrides in point_overrides:
        cfg = from_dict({**fixed, **overrides})  # raises the one-line ConfigError naming the field
        shown = {k: getattr(cfg, k) for k in overrides}
        run_dir = out / "runs" / f"{point_name(shown)}_{cfg.key()}"
        if str(run_dir) in seen:
            duplicates += 1
            continue
        seen.add(str(run_dir))
        points.append(RunPoint(point_name(shown), str(run_dir), cfg.to_dict(), shown, cfg.key()))
    # The axes as the points hold them (coerced: "0.3" from the command line is 0.3 here).
    grid_values = {name: list(dict.fromkeys(p.overrides[name] for p in points if name in p.overrides))
                   for name in axes}
    return SweepPlan(out, fixed, grid_values, points, duplicates)


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """Read a sweep file (TOML, or JSON by suffix): optional ``preset`` and ``description``,
    ``[fixed]`` fields, ``[grid]`` lists and ``[[runs]]`` points. Only the shape is checked
    here; the values are checked with every point by :func:`plan_sweep`."""
    try:
        data = load_file(path)
    except ConfigError as err:
        raise ConfigError("sweep-file", str(err).removeprefix("config: ")) from None
    unknown = [k for k in data if k not in SWEEP_FILE_KEYS]
    if unknown:
        raise ConfigError("sweep-file", f"{path}: unknown key {unknown[0]!r} (known: {', '.join(SWEEP_FILE_KEYS)}; "
                          f"config fields go under [fixed])")
    for key, kind in (("fixed", dict), ("grid", dict), ("runs", list), ("preset", str), ("description", str)):
        if key in data and not isinstance(data[key], kind):
            raise ConfigError("sweep-file", f"{path}: {key} must be a {'table' if kind is dict else kind.__name__}")
    if "preset" in data and data["preset"] not in PRESETS:
        raise ConfigError("sweep-file", f"{path}: preset must be one of {', '.join(PRESETS)}; got {data['preset']!r}")
    return data


def parse_grid_flags(entries: Sequence[str]) -> dict[str, list[str]]:
    """``["frac=0.3,0.5", "seed=0,1"]`` -> ``{"frac": ["0.3", "0.5"], "seed": ["0", "1"]}``.

    The values stay strings: :func:`plan_sweep` checks and converts them with every point."""
    axes: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError("grid", f"--grid takes FIELD=V1,V2,...; got {entry!r}")
        if name not in FIELDS:
            raise ConfigError("grid", f"--grid {name!r} is not a config field (see grokking train --help)")
        if name in axes:
            raise ConfigError("grid", f"--grid {name} given twice; give each field once as FIELD=V1,V2,...")
        items = [v.strip() for v in values.split(",")]
        if any(not v for v in items):
            raise ConfigError("grid", f"--grid {name} has an empty value in {values!r}; use FIELD=V1,V2,...")
        axes[name] = items
    return axes


def import_modules(modules: Iterable[str]) -> None:
    """Import the user's modules (their ``register_operation`` calls add tasks) in this process."""
    for module in modules:
        importlib.import_module(module)


# --- where a run stands --------------------------------------------------------------------------------
def run_state(run_dir: str | Path) -> str:
    """``done`` (summary.json with a finished status), ``resumable`` (config.json and
    checkpoints/last.safetensors), ``partial`` (something, but nothing to continue) or ``new``."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY)
    if summary is not None and summary.get("status") in FINISHED_STATUSES:
        return "done"
    if (run_dir / CONFIG).exists() and (run_dir / CHECKPOINTS / LAST).exists():
        return "resumable"
    if run_dir.exists() and any(run_dir.iterdir()):
        return "partial"
    return "new"
