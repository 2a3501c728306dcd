"""Checkpoints: safe, atomic, verifiable files; and loading the seed's ``.pth`` files.

Our checkpoints are single safetensors files (no code runs on load). Their header
metadata holds ``{"grokking": JSON}`` with the config, epoch and step, the optimizer's
non-tensor state, and a SHA-256 over the metadata and every tensor, so a truncated or
tampered file is refused instead of loaded with garbage. Files are written to a temporary
name, fsynced and renamed into place, so a crash never leaves a file that fails to load.

Every checkpoint of a run also carries the run's id and config key (config.json holds the same
id): resuming, evaluating or analysing a run directory refuses a checkpoint of another run
(:func:`check_belongs`), and :func:`run_snapshots` leaves such snapshots out, naming them.

Seed checkpoints (the notebook's ``torch.save`` dictionaries) are read with
``torch.load(weights_only=True)``: a pickle that would run code is refused. Which kind a file
is comes from its whole structure (:func:`checkpoint_kind`), never from one byte.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import rundir
from .config import Config, ConfigError, build_dataset, from_dict
from .data import Dataset, dataset_from_pairs
from .errors import InputError
from .factory import Model, build_model
from .rundir import (  # noqa: F401 - re-exported: they were defined here
    CHECKPOINTS,
    SNAPSHOT_PATTERN,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    foreign_reason,
    os_error_text,
    run_identity,
    snapshot_path,
    snapshots,
)

FORMAT = "grokking-checkpoint-1"
# safetensors refuses headers above 100 MB; a length beyond that is not one of its files.
MAX_HEADER = 100_000_000
logger = logging.getLogger("grokking")


class CheckpointError(InputError, RuntimeError):
    """A checkpoint that is missing, unsafe, corrupt or of an unknown kind (one-line message)."""


# --- our format ------------------------------------------------------------------------------
def _digest(tensors: dict[str, torch.Tensor], meta_json: str, identity_json: str | None = None) -> str:
    h = hashlib.sha256(meta_json.encode())
    if identity_json is not None:  # absent from checkpoints written before run ids: their digests stand
        h.update(b"\0identity\0" + identity_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    identity: dict[str, Any] | None = None) -> None:
    """Atomically write tensors plus JSON-able ``meta`` as one verifiable safetensors file.

    ``identity`` (``{"run_id", "config_key"}``) says which run wrote it. It is kept beside
    ``meta``, not in it, so two runs that take the same steps have the same ``meta``; the
    SHA-256 covers both."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, **meta}
    meta_json = json.dumps(meta, sort_keys=True)
    header = {"grokking": meta_json}
    identity_json = None
    if identity is not None:
        identity_json = header["grokking_run"] = json.dumps(identity, sort_keys=True)
    header["sha256"] = _digest(tensors, meta_json, identity_json)
    rundir.atomic_write_bytes(path, st_save(tensors, metadata=header))  # looked up here: tests inject faults


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one of our checkpoints: ``(tensors, meta)`` or CheckpointError."""
    tensors, meta, _ = load_checkpoint_identity(path)
    return tensors, meta


def load_checkpoint_identity(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """:func:`load_checkpoint` plus the checkpoint's identity: ``{"run_id", "config_key"}`` of the
    run that wrote it, or ``{}`` for a checkpoint written before run ids."""
    path = Path(path)
    if checkpoint_kind(path) != "safetensors":  # from its header alone: a large foreign file is not read whole
        raise CheckpointError(f"checkpoint {path} is truncated or not a grokking checkpoint (no safetensors header)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {os_error_text(err)}") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        extra = header.get("__metadata__") or {}
        meta_json, expected = extra["grokking"], extra["sha256"]
        identity_json = extra.get("grokking_run")
        meta = json.loads(meta_json)
        identity = json.loads(identity_json) if identity_json is not None else {}
        if not isinstance(meta, dict) or not isinstance(identity, dict):
            raise TypeError("metadata is not a JSON object")
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError,
            RecursionError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a grokking checkpoint ({type(err).__name__})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has unknown format {meta.get('format')!r}")
    if _digest(tensors, meta_json, identity_json) != expected:
        raise CheckpointError(f"checkpoint {path} failed its SHA-256 check: the file was modified or corrupted")
    # safetensors' tensors are views into read-only bytes objects at arbitrary (16-byte)
    # alignment; own, writable, allocator-aligned copies make a resumed optimiser state live
    # in memory like a fresh one (BLAS kernels may pick code paths by alignment).
    return {k: v.clone() for k, v in tensors.items()}, meta, identity


def load_snapshot_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Just the model weights of a snapshot (``model.*`` tensors, prefix stripped) and its meta.
    A snapshot in a run's ``checkpoints/`` must be that run's (:func:`check_belongs`)."""
    path = Path(path)
    tensors, meta, identity = load_checkpoint_identity(path)
    if path.parent.name == CHECKPOINTS:
        check_belongs(path.parent.parent, meta, identity, path)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, meta


# --- what a file is, and whose ------------------------------------------------------------------
def _open_checkpoint(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory, not a file") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {os_error_text(err)}") from None


def _safetensors_header(f: Any, size: int) -> dict[str, Any] | None:
    """The JSON header of a safetensors file open at offset 0, or None when the file is not one:
    a little-endian u64 length that fits the file, then that many bytes of one JSON object."""
    head = f.read(8)
    if len(head) < 8:
        return None
    length = int.from_bytes(head, "little")
    if not 2 <= length <= MAX_HEADER or 8 + length > size:
        return None
    first = f.read(1)
    if first != b"{":
        return None
    try:
        header = json.loads(first + f.read(length - 1))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def checkpoint_kind(path: str | Path) -> str:
    """``"safetensors"`` (a parseable header: a u64 length within the file, then a JSON object),
    ``"zip"`` (torch.save's archive), ``"pickle"`` (a legacy torch.save or protocol >= 2 pickle)
    or ``"unknown"``. Reads the header only. A safetensors header length can begin with any byte
    (0x80 included), so the pickle signature counts only when there is no such header."""
    path = Path(path)
    with _open_checkpoint(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if _safetensors_header(f, size) is not None:
                return "safetensors"
            f.seek(0)
            magic = f.read(4)
        except OSError as err:
            raise CheckpointError(f"cannot read checkpoint {os_error_text(err)}") from None
    if magic == b"PK\x03\x04":
        return "zip"
    if magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "unknown"


def read_meta(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(meta, identity)`` of one of our checkpoints from its header alone (not verified: the
    SHA-256 needs the tensors); None when the file has no grokking metadata."""
    path = Path(path)
    with _open_checkpoint(path) as f:
        try:
            header = _safetensors_header(f, os.fstat(f.fileno()).st_size)
        except OSError as err:
            raise CheckpointError(f"cannot read checkpoint {os_error_text(err)}") from None
    extra = (header or {}).get("__metadata__")
    try:
        meta = json.loads(extra["grokking"]) if isinstance(extra, dict) else None
        identity = json.loads(extra.get("grokking_run") or "{}") if isinstance(extra, dict) else None
    except (KeyError, TypeError, ValueError, RecursionError):
        return None
    return (meta, identity) if isinstance(meta, dict) and isinstance(identity, dict) else None


def _run_id(identity: dict[str, Any]) -> str | None:
    run_id = identity.get("run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def check_belongs(run_dir: str | Path, meta: dict[str, Any], identity: dict[str, Any], path: str | Path) -> None:
    """Refuse (CheckpointError, one line) a checkpoint ``path`` (its ``meta`` and ``identity``)
    that another run wrote than the one in ``run_dir/config.json``. A checkpoint written before
    run ids is accepted unverified when its config agrees; a directory without config.json
    checks nothing."""
    reason = foreign_reason(run_identity(run_dir), meta.get("config"), _run_id(identity))
    if reason is not None:
        raise CheckpointError(f"{path} is not a checkpoint of the run in {run_dir}: {reason}")


def run_snapshots(run_dir: str | Path, skipped: list[tuple[Path, str]] | None = None) -> list[tuple[int, Path]]:
    """The weight snapshots of the run in ``run_dir`` as ``(epoch, path)`` sorted by epoch, leaving
    out any that another run wrote or whose header is damaged. Each one left out is appended to
    ``skipped`` as ``(path, reason)`` when given, else named in a warning on the ``grokking`` logger."""
    run_dir = Path(run_dir)
    identity = run_identity(run_dir)
    kept, left_out = [], []
    for epoch, path in snapshots(run_dir):
        try:
            header = read_meta(path)
        except CheckpointError as err:
            left_out.append((path, str(err)))
            continue
        if header is None:
            left_out.append((path, "no grokking metadata (damaged or not a grokking checkpoint)"))
            continue
        meta, written_by = header
        reason = foreign_reason(identity, meta.get("config"), _run_id(written_by))
        if reason is None and meta.get("epoch") not in (None, epoch):
            reason = f"its metadata says epoch {meta.get('epoch')}, its name epoch {epoch}"
        if reason is not None:
            left_out.append((path, reason))
            continue
        kept.append((epoch, path))
    if left_out:
        if skipped is not None:
            skipped.extend(left_out)
        else:
            logger.warning("%s: %d snapshot(s) left out: %s", run_dir, len(left_out),
                           "; ".join(f"{p.name} ({why})" for p, why in left_out))
    return kept


# --- seed format -------------------------------------------------------------------------------
def torch_load_safely(path: str | Path) -> Any:
    """``torch.load`` that never unpickles code; failures become one-line CheckpointErrors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error, if any, says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch's message is a paragraph of advice; keep the line that names the refused global
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else "")
        reason = reason.replace("WeightsUnpickler error: ", "").split(". Please use")[0]
        raise CheckpointError(f"refused to load {path}: unpickling it would run code, which is never allowed "
                              f"({reason[:160] or 'unsafe pickle'})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ImportError) as err:
        raise CheckpointError(f"cannot load {path}: truncated or not a PyTorch checkpoint ({type(err).__name__})") from None
    except Exception as err:  # noqa: BLE001 - weights_only ran no code; any other parse failure (IndexError
        # on a truncated legacy pickle, struct.error, ...) is a damaged file
        raise CheckpointError(f"cannot load {path}: truncated or not a PyTorch checkpoint ({type(err).__name__})") from None


def seed_config(state: dict[str, torch.Tensor], **overrides: Any) -> Config:
    """Infer the architecture of a seed ``state_dict`` from its shapes."""
    try:
        d_model, d_vocab = state["embed.W_E"].shape
        n_heads, d_head, _ = state["blocks.0.attn.W_Q"].shape
        d_mlp = state["blocks.0.mlp.W_in"].shape[0]
    except KeyError as missing:
        raise CheckpointError(f"not a seed transformer state_dict: no {missing} tensor") from None
    n_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    layernorm = "ln_final.w" in state
    fields = dict(p=d_vocab - 1, d_model=d_model, n_heads=n_heads, d_head=d_head if d_head * n_heads != d_model else 0,
                  d_mlp=d_mlp, n_layers=n_layers, layernorm=layernorm)
    return from_dict({**fields, **overrides})


# --- loading any checkpoint into a model ------------------------------------------------------
@dataclass
class Loaded:
    model: Model
    cfg: Config
    dataset: Dataset
    meta: dict[str, Any]
    path: Path
    identity: dict[str, Any] = field(default_factory=dict)  # {"run_id", "config_key"} of the run that wrote it


def last_checkpoint(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.safetensors"
    if last.exists():
        return last
    snaps = run_snapshots(run_dir)
    if not snaps:
        raise CheckpointError(f"run directory {run_dir} has no checkpoints")
    return snaps[-1][1]


def checked_split(tensors: dict[str, torch.Tensor], n_pairs: int, where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``split.train_idx``/``split.test_idx`` tensors of a checkpoint, checked to index ``n_pairs`` rows."""
    try:
        train_idx, test_idx = tensors["split.train_idx"], tensors["split.test_idx"]
    except KeyError as missing:
        raise CheckpointError(f"{where}: no {missing} tensor") from None
    for idx in (train_idx, test_idx):
        if idx.dtype != torch.int64 or idx.ndim != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= n_pairs)):
            raise CheckpointError(f"{where}: its stored train/test split does not fit the task ({n_pairs} pairs)")
    return train_idx, test_idx


def _build(cfg: Config, state: dict[str, torch.Tensor], where: Path) -> Model:
    model = build_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: weights do not match the config ({str(err).splitlines()[0][:200]})") from None
    return model.eval()


def load_model(path: str | Path, **overrides: Any) -> Loaded:
    """Load a run directory (its last checkpoint), one of our ``.safetensors`` checkpoints,
    or a seed ``.pth`` dictionary. ``overrides`` set config fields a seed file cannot tell
    (``op``, and ``frac``/``seed`` when it stores no split)."""
    path = Path(path)
    run_dir = path if path.is_dir() else None
    if run_dir is not None:
        path = last_checkpoint(run_dir)
    kind = checkpoint_kind(path)
    if kind in ("zip", "pickle"):
        return _load_seed(path, overrides)
    if kind == "unknown":
        raise CheckpointError(f"{path} is not a checkpoint: neither a safetensors file (a header length that "
                              f"fits the file, then a JSON header) nor a PyTorch archive or pickle")
    tensors, meta, identity = load_checkpoint_identity(path)
    if run_dir is not None:
        check_belongs(run_dir, meta, identity, path)
    try:
        cfg = from_dict({**meta["config"], **overrides})
    except ConfigError as err:
        raise CheckpointError(f"{path}: bad config in metadata or overrides ({err})") from None
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: no config in its metadata") from None
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    dataset = build_dataset(cfg)
    if "split.train_idx" in tensors:
        dataset.train_idx, dataset.test_idx = checked_split(tensors, len(dataset.labels), path)
    return Loaded(_build(cfg, state, path), cfg, dataset, meta, path, identity)


def _load_seed(path: Path, overrides: dict[str, Any]) -> Loaded:
    obj = torch_load_safely(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, obj = obj, {}
    else:
        raise CheckpointError(f"{path} is not a seed checkpoint (no 'model' state_dict)")
    train_pairs, test_pairs = obj.get("train_data"), obj.get("test_data")
    p_fields = {}
    try:
        if train_pairs is not None and test_pairs is not None:
            n_total = len(train_pairs) + len(test_pairs)
            p_fields["frac"] = max(min(len(train_pairs) / max(n_total, 1), 0.999999), 1e-6)
        cfg = seed_config(state, **{**p_fields, **overrides})
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as err:  # a dict of the wrong shapes/types
        raise CheckpointError(f"{path} is not a seed checkpoint ({type(err).__name__})") from None
    if train_pairs is not None and test_pairs is not None:
        try:
            dataset = dataset_from_pairs(cfg.op, cfg.p, cfg.seed, train_pairs, test_pairs)
        except (ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"{path}: bad train_data/test_data ({err})") from None
    else:
        dataset = build_dataset(cfg, "seed")
    epoch = obj.get("epoch")
    meta = {"format": "seed", "epoch": int(epoch) if isinstance(epoch, int) else None, "config": cfg.to_dict()}
    return Loaded(_build(cfg, state, path), cfg, dataset, meta, path)
