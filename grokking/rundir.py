"""The run directory: its file names, atomic writes, and the one reader of each file.

A run directory holds::

    config.json       the full resolved config, plus versions, device and training path
    metrics.jsonl     one JSON object per evaluation (appended and flushed each time)
    checkpoints/      epoch_XXXXXXX.safetensors weight snapshots; last.safetensors: full state
    curves.png        log-scale loss and accuracy, the 99% epochs marked
    summary.json      epochs to 99% train/test accuracy, final figures, timing, status
    report.html       one self-contained page
    analysis/         after ``grokking analyze``

Every command reads these files through this module, so that a torn or damaged file means
the same thing to all of them. Writes go to a temporary name, are fsynced and renamed into
place, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .config import Config
from .errors import InputError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST = "last.safetensors"
SNAPSHOT_PATTERN = "epoch_{:07d}.safetensors"
RESULTS = "results.csv"  # marks a sweep directory

_UMASK = os.umask(0)
os.umask(_UMASK)


class RunDirError(InputError):
    """The output directory cannot be used as asked (one-line message)."""


# --- atomic writes -------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _test_slow_write()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _test_slow_write() -> None:
    """Test hook: ``GROKKING_TEST_SLOW_WRITE=SECONDS`` sleeps between writing the temporary
    file and renaming it, so tests can kill a process in the middle of a checkpoint write."""
    delay = os.environ.get("GROKKING_TEST_SLOW_WRITE")
    if delay:
        try:
            time.sleep(max(float(delay), 0.0))
        except ValueError:
            pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a kill cut short."""
    for stale in [*run_dir.glob(".*.tmp"), *(run_dir / CHECKPOINTS).glob(".*.tmp")]:
        stale.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------------
def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable, torn or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("epoch"), int) and not isinstance(value.get("epoch"), bool)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, in file order.

    A torn last line (a kill in the middle of a write) is dropped. A damaged line elsewhere is
    skipped and every valid record around it is kept: one bad line never hides the rest."""
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if _is_record(record):
            records.append(record)
    return records


def metrics_lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def first_at(records: Sequence[dict[str, Any]], key: str, threshold: float = 0.99,
             field: str | None = "epoch") -> Any:
    """The first record whose ``key`` is at least ``threshold``: its ``field`` (its index when
    ``field`` is None), or None when no record gets there."""
    for index, record in enumerate(records):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= threshold:
            return index if field is None else record.get(field)
    return None


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / METRICS).is_file() or (path / CONFIG).is_file()


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / RESULTS).is_file()


# --- creating ----------------------------------------------------------------------------------
def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, an output path that cannot become a new run directory."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"out: {out} is not empty; pass --resume to continue it or --overwrite to replace it")


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    check_out_dir(out, overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# --- checkpoints: names and the snapshot schedule ----------------------------------------------
def last_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / LAST


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / SNAPSHOT_PATTERN.format(epoch)


def snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The weight snapshots of a run, ``(epoch, path)`` sorted by epoch."""
    found = []
    for f in (Path(run_dir) / CHECKPOINTS).glob("epoch_*.safetensors"):
        try:
            found.append((int(f.stem.split("_")[1]), f))
        except ValueError:
            continue
    return sorted(found)


@dataclass(frozen=True)
class SnapshotEpochs:
    """``epoch in snapshot_epochs(cfg)``: every ``every`` epochs (0: epoch 0 only) up to ``last``, plus
    ``extra``. Not a set of every epoch: ``epochs=10**9, checkpoint_every=1`` must not allocate 10**9 ints."""

    every: int
    last: int
    extra: frozenset[int]

    def __contains__(self, epoch: object) -> bool:
        if not isinstance(epoch, int) or not 0 <= epoch <= self.last:
            return False
        return (epoch % self.every == 0 if self.every else epoch == 0) or epoch in self.extra


def snapshot_epochs(cfg: Config) -> SnapshotEpochs:
    """Epochs at which weight snapshots are saved: every ``checkpoint_every`` and log-spaced."""
    extra: set[int] = set()
    if cfg.checkpoint_log and cfg.epochs > 1:
        extra = {int(round(e)) for e in np.logspace(0, math.log10(cfg.epochs), cfg.checkpoint_log)}
    return SnapshotEpochs(cfg.checkpoint_every, cfg.epochs, frozenset(extra))
