"""The run directory: its file names, atomic writes, and the one reader of each file.

A run directory holds::

    config.json       the full resolved config, plus versions, device and training path
    metrics.jsonl     one JSON object per evaluation (appended and flushed each time)
    checkpoints/      epoch_XXXXXXX.safetensors weight snapshots; last.safetensors: full state
    curves.png        log-scale loss and accuracy, the 99% epochs marked
    summary.json      epochs to 99% train/test accuracy, final figures, timing, status
    report.html       one self-contained page
    analysis/         after ``grokking analyze``
    metrics.damaged.jsonl  damaged lines that ``--resume`` moved out of metrics.jsonl (rare)

Beside it, ``.<name>.lock`` (and ``.<name>.lock.pid``, who holds it): the one-writer lock
(:class:`RunLock`). It lives outside the directory because ``--overwrite`` removes the directory.

Every command reads these files through this module, so that a torn or damaged file means
the same thing to all of them. Writes go to a temporary name, are fsynced and renamed into
place, so a crash never leaves half a file.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import filelock
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: filelock uses msvcrt there, and nothing here can probe it
    fcntl = None  # type: ignore[assignment]

from .config import RUNTIME_FIELDS, Config
from .errors import GrokkingError, InputError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST = "last.safetensors"
SNAPSHOT_PATTERN = "epoch_{:07d}.safetensors"
RESULTS = "results.csv"  # marks a sweep directory
DAMAGED_METRICS = "metrics.damaged.jsonl"

#: Fields that only decide when a run stops. ``--resume`` may change them (to extend a run that has
#: not grokked yet, or give a stopped one a new target) without changing any step it takes.
BUDGET_FIELDS = ("epochs", "max_steps", "stop_at_test_acc", "stop_at_test_loss", "stop_hold")

logger = logging.getLogger("grokking")

_UMASK = os.umask(0)
os.umask(_UMASK)


class RunDirError(InputError):
    """The output directory cannot be used as asked (one-line message)."""


class StorageError(GrokkingError, RuntimeError):
    """A file-system error (disk full, permission, read-only, ...) after work started: exit status 1.
    The message names the path and the error; what was saved before it is intact."""


def os_error_text(err: OSError) -> str:
    """``PATH: strerror`` (both paths of a rename), on one line, for any OSError."""
    reason = err.strerror or (errno.errorcode.get(err.errno, "") if err.errno else "") or str(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


# --- atomic writes -------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _test_slow_write()
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    _fsync_dir(path.parent)


def _naming(err: OSError, path: Path) -> OSError:
    """The error of a write as one about ``path`` (not its temporary name), of the same class
    (ENOSPC stays an OSError, EACCES a PermissionError)."""
    return err if err.errno is None else OSError(err.errno, err.strerror, str(path))


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


def load_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``, or RunDirError saying which of missing, unreadable (and why),
    torn or not an object it is: for callers that must tell these apart."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except OSError as err:
        raise RunDirError(f"cannot read {os_error_text(err)}") from None
    try:
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise RunDirError(f"{path} is damaged (not valid JSON: {type(err).__name__})") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} is damaged (not a JSON object)")
    return value


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("epoch"), int) and not isinstance(value.get("epoch"), bool)


@dataclass(frozen=True)
class DamagedLine:
    """A line of metrics.jsonl that holds no record: its 1-based number, why, and its bytes."""

    line: int
    reason: str
    raw: bytes

    def __str__(self) -> str:
        return f"line {self.line} ({self.reason})"


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except (ValueError, RecursionError):
        return None, "not JSON"
    if not _is_record(value):
        return None, "not a record with an integer epoch"
    return value, ""


def read_metrics(run_dir: str | Path, problems: list[DamagedLine] | None = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, in file order.

    A torn last line (a kill in the middle of a write: no newline after it) is dropped. A damaged
    line elsewhere is skipped and every valid record around it is kept: one bad line never hides
    the rest. Damaged lines are appended to ``problems`` when it is given, else logged as one
    warning on the ``grokking`` logger. A metrics.jsonl that exists but cannot be read is a
    RunDirError naming it."""
    path = Path(run_dir) / METRICS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise RunDirError(f"cannot read {os_error_text(err)}") from None
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    records, damaged = [], []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        record, reason = _parse_line(raw)
        if record is None:
            damaged.append(DamagedLine(number, reason, raw))
        else:
            records.append(record)
    if torn.strip():
        record, _ = _parse_line(torn)
        if record is not None:  # complete but for its newline
            records.append(record)
    if damaged:
        if problems is not None:
            problems.extend(damaged)
        else:
            logger.warning("%s: %d damaged line(s) skipped, the records around them kept: %s", path, len(damaged),
                           ", ".join(str(d) for d in damaged[:5]) + (", ..." if len(damaged) > 5 else ""))
    return records


def move_damaged_lines(run_dir: str | Path, damaged: Sequence[DamagedLine]) -> Path:
    """Append ``damaged`` to ``metrics.damaged.jsonl`` (one JSON object per line: its line number
    in metrics.jsonl, why it was refused, its text, when it was moved) and return that path, so
    that a rewrite of metrics.jsonl without them loses nothing."""
    path = Path(run_dir) / DAMAGED_METRICS
    try:
        before = path.read_bytes()
    except FileNotFoundError:
        before = b""
    except OSError as err:
        raise RunDirError(f"cannot read {os_error_text(err)}") from None
    if before and not before.endswith(b"\n"):
        before += b"\n"
    moved = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    entries = "".join(json.dumps({"line": d.line, "reason": d.reason, "text": d.raw.decode("utf-8", "backslashreplace"),
                                  "moved": moved}) + "\n" for d in damaged)
    atomic_write_bytes(path, before + entries.encode())
    return path


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
def check_writable_parent(out: Path, what: str = "out") -> None:
    """Refuse a path whose directory cannot be created or written (a file in the way, no
    permission, a read-only file system): the lock, the directory and its files go there."""
    out = Path(out).absolute()
    for ancestor in out.parents:
        if not os.path.lexists(ancestor):
            continue
        if not ancestor.is_dir():
            raise RunDirError(f"{what}: cannot create {out}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            reason = "is on a read-only file system" if _read_only(ancestor) else "is not writable"
            raise RunDirError(f"{what}: cannot create {out} there: {ancestor} {reason}")
        return


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, an output path that cannot become a new run directory."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise RunDirError(f"out: {out} exists and is not a directory")
        non_empty = out.exists() and any(out.iterdir())
    except OSError as err:
        raise RunDirError(f"out: cannot use {os_error_text(err)}") from None
    if non_empty and not overwrite:
        raise RunDirError(f"out: {out} is not empty; pass --resume to continue it or --overwrite to replace it")
    check_writable_parent(out)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"out: {out} is not writable" + (" (a read-only file system)" if _read_only(out) else ""))
    check_not_busy(out)


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    check_out_dir(out, overwrite)
    try:
        if out.exists() and any(out.iterdir()):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"out: cannot create the run directory: {os_error_text(err)}") from None


# --- which run a directory holds ------------------------------------------------------------------
def new_run_id() -> str:
    """A run's identity, made once when it is created (config.json and every checkpoint carry it)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunIdentity:
    """What config.json says a run is: its run id (None for a run written before run ids) and config."""

    run_id: str | None
    config: dict[str, Any]


def run_identity(run_dir: str | Path) -> RunIdentity | None:
    """The identity in ``run_dir/config.json``; None when there is none to check against."""
    info = read_json(Path(run_dir) / CONFIG)
    if info is None or not isinstance(info.get("config"), dict):
        return None
    run_id = info.get("run_id")
    return RunIdentity(run_id if isinstance(run_id, str) and run_id else None, info["config"])


def foreign_reason(identity: RunIdentity | None, config: dict[str, Any] | None, run_id: str | None) -> str | None:
    """Why a checkpoint with this ``config`` and ``run_id`` is not the run's that ``identity``
    (its config.json) describes; None when it is, or when nothing tells. A checkpoint written
    before run ids is accepted, unverified, when its config agrees.

    Budget and runtime fields are not compared: ``--resume --epochs N`` changes them."""
    if identity is None:
        return None
    if identity.run_id and run_id:
        return None if run_id == identity.run_id else f"it was written by run {run_id}, not by this run ({identity.run_id})"
    if not isinstance(config, dict):
        return None
    for name, ours in identity.config.items():
        if name in BUDGET_FIELDS or name in RUNTIME_FIELDS or name not in config:
            continue
        if config[name] != ours:
            return f"it was written by another run ({name}={config[name]!r} there, {ours!r} in config.json)"
    return None


# --- one writer per run directory ---------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """Who holds a lock, from the note its holder wrote."""

    pid: int | None
    host: str | None = None
    since: str | None = None
    command: str | None = None

    def __str__(self) -> str:
        if self.pid is None:
            return "another process"
        where = f" on {self.host}" if self.host else ""
        return f"process {self.pid}{where}" + (f" ({self.command} since {self.since})" if self.command and self.since else "")


def lock_path(run_dir: str | Path) -> Path:
    """The lock of a run directory: beside it, not in it, since ``--overwrite`` removes the directory."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / f".{run_dir.name}.lock"


def _note_path(lock: Path) -> Path:
    # Beside the lock, not in it: a contender opening the lock file must not touch what it says.
    return lock.with_name(lock.name + ".pid")


@dataclass
class _Hold:
    lock: filelock.BaseFileLock
    count: int
    thread: int


_HOLDS: dict[str, _Hold] = {}
_HOLDS_GUARD = threading.Lock()
# A contender waits this long: a reader's probe (lock_holder) takes the lock for a moment.
_ACQUIRE_WAIT = 0.5


def _acquire(lock: Path, command: str) -> bool:
    """Take ``lock`` (reentrant within one thread of this process); False when another holds it.
    OSError when the lock cannot be created (a read-only or missing parent)."""
    key = str(lock.absolute())
    with _HOLDS_GUARD:
        hold = _HOLDS.get(key)
        if hold is not None:
            if hold.thread != threading.get_ident():
                return False
            hold.count += 1
            return True
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = filelock.FileLock(lock, timeout=_ACQUIRE_WAIT)
    deadline = time.monotonic() + _ACQUIRE_WAIT
    while True:
        try:
            handle.acquire(timeout=max(deadline - time.monotonic(), 0.0), poll_interval=0.02)
        except filelock.Timeout:
            return False
        if _holds_path(handle, lock) is not False:
            break
        # The holder before us removed the file while we waited for it: lock the one at the path now.
        handle.release()
    try:
        # Rewritten by every holder: a note left by a killed one (the kernel freed its flock) goes.
        atomic_write_json(_note_path(lock), {
            "pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
    except BaseException:
        handle.release()
        raise
    with _HOLDS_GUARD:
        _HOLDS[key] = _Hold(handle, 1, threading.get_ident())
    return True


def _release(lock: Path) -> None:
    key = str(lock.absolute())
    with _HOLDS_GUARD:
        hold = _HOLDS.get(key)
        if hold is None:
            return
        hold.count -= 1
        if hold.count > 0:
            return
        del _HOLDS[key]
    try:
        # Removed before the release, so they never delete the next holder's: the note, and the lock
        # file itself (a directory of runs holds only runs; a contender that opened it meanwhile
        # sees it gone and locks the new one, see _acquire).
        _note_path(lock).unlink(missing_ok=True)
        if _holds_path(hold.lock, lock):
            lock.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        hold.lock.release()


def _holds_path(handle: filelock.BaseFileLock, lock: Path) -> bool | None:
    """Whether the file ``handle`` has locked is the one at ``lock`` now; None when filelock does not
    say which file it locked (then the file is never removed)."""
    context = getattr(handle, "_context", None)
    fd = getattr(context, "lock_file_fd", None)
    if not isinstance(fd, int) or getattr(context, "soft_fallback", False):
        return None
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        return False
    except OSError:
        return None


@contextlib.contextmanager
def exclusive(lock: str | Path, command: str = "") -> Iterator[bool]:
    """Hold ``lock`` while the block runs; yields False (and holds nothing) when another process
    holds it. flock underneath: the kernel drops it when its holder dies, even by SIGKILL, so a
    killed holder's lock is free at once and its next holder rewrites the note."""
    lock = Path(lock)
    mine = _acquire(lock, command or "lock")
    try:
        yield mine
    finally:
        if mine:
            _release(lock)


def _held(lock: Path) -> bool | None:
    """Whether some process (this one included) holds ``lock`` now; None when flock cannot tell."""
    if str(lock.absolute()) in _HOLDS:
        return True
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def lock_note(lock: str | Path) -> Holder | None:
    """Who holds ``lock`` now (pid, host, command, since); None when nobody does. A note left by a
    killed holder is not believed: the lock itself is asked."""
    lock = Path(lock)
    held = _held(lock)
    if held is False:
        return None
    note = read_json(_note_path(lock)) or {}
    pid = note.get("pid") if isinstance(note.get("pid"), int) else None
    holder = Holder(pid, note.get("host"), note.get("since"), note.get("command"))
    unknown = held is None  # no flock here (a network file system): trust a note of a live local process
    if unknown and (pid is None or (holder.host == socket.gethostname() and not _alive(pid))):
        return None
    return holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def lock_holder(lock: str | Path) -> int | None:
    """The PID of the process holding ``lock`` (None when nobody holds it or it is unknown)."""
    holder = lock_note(lock)
    return holder.pid if holder is not None else None


def run_holder(run_dir: str | Path) -> Holder | None:
    """Who is writing ``run_dir`` now; None when nobody is."""
    return lock_note(lock_path(run_dir))


class RunLock:
    """The one-writer lock of a run directory: train, ``--resume``, ``--overwrite``, batches and
    sweep points hold it for the run's whole life. A second writer is refused in one line naming
    the holder (:class:`RunDirError`). Reentrant within one thread (a sweep point holds it, then
    the trainer it starts takes it again)."""

    def __init__(self, run_dir: str | Path, command: str = "train"):
        self.run_dir, self.path, self.command = Path(run_dir), lock_path(run_dir), command
        self.held = False

    def acquire(self) -> "RunLock":
        try:
            mine = _acquire(self.path, self.command)
        except OSError as err:
            raise RunDirError(f"cannot lock {self.run_dir}: {os_error_text(err)}") from None
        if not mine:
            raise RunDirError(busy_message(self.run_dir))
        self.held = True
        return self

    def release(self) -> None:
        if self.held:
            self.held = False
            _release(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a Trainer.resume() that was never run
        with contextlib.suppress(Exception):
            self.release()


def busy_message(run_dir: str | Path) -> str:
    holder = run_holder(run_dir)
    return (f"{run_dir} is in use: {holder or 'another process'} is writing it (lock {lock_path(run_dir)}); "
            f"wait for it to end or stop it first")


def check_not_busy(run_dir: str | Path) -> None:
    """Refuse, before any work, a run directory that another process is writing."""
    if run_holder(run_dir) is not None and str(lock_path(run_dir).absolute()) not in _HOLDS:
        raise RunDirError(busy_message(run_dir))


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
