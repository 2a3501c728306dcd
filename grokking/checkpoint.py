"""Checkpoints: safe, atomic, verifiable files; and loading the seed's ``.pth`` files.

Our checkpoints are single safetensors files (no code runs on load). Their header
metadata holds ``{"grokking": JSON}`` with the config, epoch and step, the optimizer's
non-tensor state, and a SHA-256 over the metadata and every tensor, so a truncated or
tampered file is refused instead of loaded with garbage. Files are written to a temporary
name, fsynced and renamed into place, so a crash never leaves a file that fails to load.

Seed checkpoints (the notebook's ``torch.save`` dictionaries) are read with
``torch.load(weights_only=True)``: a pickle that would run code is refused.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import Config, ConfigError, from_dict
from .data import Dataset, dataset_from_pairs, make_dataset
from .errors import InputError
from .model import Transformer
from .rundir import (  # noqa: F401 - re-exported: they were defined here
    SNAPSHOT_PATTERN,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    snapshot_path,
    snapshots,
)

FORMAT = "grokking-checkpoint-1"


class CheckpointError(InputError, RuntimeError):
    """A checkpoint that is missing, unsafe, corrupt or of an unknown kind (one-line message)."""


# --- our format ------------------------------------------------------------------------------
def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write tensors plus JSON-able ``meta`` as one verifiable safetensors file."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, **meta}
    meta_json = json.dumps(meta, sort_keys=True)
    header = {"grokking": meta_json, "sha256": _digest(tensors, meta_json)}
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one of our checkpoints: ``(tensors, meta)`` or CheckpointError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        extra = header.get("__metadata__") or {}
        meta_json, expected = extra["grokking"], extra["sha256"]
        meta = json.loads(meta_json)
        if not isinstance(meta, dict):
            raise TypeError("metadata is not a JSON object")
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError,
            RecursionError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a grokking checkpoint ({type(err).__name__})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has unknown format {meta.get('format')!r}")
    if _digest(tensors, meta_json) != expected:
        raise CheckpointError(f"checkpoint {path} failed its SHA-256 check: the file was modified or corrupted")
    # safetensors' tensors are views into read-only bytes objects at arbitrary (16-byte)
    # alignment; own, writable, allocator-aligned copies make a resumed optimiser state live
    # in memory like a fresh one (BLAS kernels may pick code paths by alignment).
    return {k: v.clone() for k, v in tensors.items()}, meta


def load_snapshot_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Just the model weights of a snapshot (``model.*`` tensors, prefix stripped) and its meta."""
    tensors, meta = load_checkpoint(path)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, meta


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
    model: Transformer
    cfg: Config
    dataset: Dataset
    meta: dict[str, Any]
    path: Path


def last_checkpoint(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.safetensors"
    if last.exists():
        return last
    snaps = snapshots(run_dir)
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


def _build(cfg: Config, state: dict[str, torch.Tensor], where: Path) -> Transformer:
    model = Transformer(cfg)
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
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:2] == b"PK" or magic[:1] == b"\x80":  # torch zip archive or legacy pickle
        return _load_seed(path, overrides)
    tensors, meta = load_checkpoint(path)
    try:
        cfg = from_dict({**meta["config"], **overrides})
    except ConfigError as err:
        raise CheckpointError(f"{path}: bad config in metadata or overrides ({err})") from None
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: no config in its metadata") from None
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    dataset = make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, cfg.split)
    if "split.train_idx" in tensors:
        dataset.train_idx, dataset.test_idx = checked_split(tensors, len(dataset.labels), path)
    return Loaded(_build(cfg, state, path), cfg, dataset, meta, path)


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
        dataset = make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed, "seed")
    epoch = obj.get("epoch")
    meta = {"format": "seed", "epoch": int(epoch) if isinstance(epoch, int) else None, "config": cfg.to_dict()}
    return Loaded(_build(cfg, state, path), cfg, dataset, meta, path)
