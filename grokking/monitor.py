"""Live monitoring: TensorBoard event files and offline Weights & Biases runs.

``make_callbacks(cfg, run_dir)`` returns the callbacks ``cfg.tensorboard`` and ``cfg.wandb``
ask for; the trainer calls ``on_eval(record)`` with every ``metrics.jsonl`` record and
``close()`` at the end. Each scalar of the record (everything but ``epoch``) is logged under
its ``metrics.jsonl`` name, at ``step = epoch``, so TensorBoard's curves and the run's
metrics file are the same numbers (TensorBoard stores them as float32).

- TensorBoard: ``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``).
- W&B: always offline (never the network), under ``RUN/wandb/``; upload later, if wanted,
  with ``wandb sync RUN/wandb/offline-run-*``.

Both packages are the optional ``monitor`` extra. Writers open at the first evaluation, not
here: the trainer may still clear the run directory (``--overwrite``) after building its
callbacks. A resumed run appends a new event file whose first step purges the steps it
repeats, so TensorBoard shows each epoch once.
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from .config import Config, ConfigError

INSTALL_HINT = "pip install 'grokking[monitor]'"
TENSORBOARD_DIR = "tensorboard"


class MonitorUnavailable(ConfigError, ImportError):
    """The package a monitoring option needs is not installed. A ConfigError, so the CLI
    prints it as one line (exit 2); an ImportError, for code that checks for one."""

    def __init__(self, option: str, package: str):
        super().__init__(option, f"needs the {package!r} package, which is not installed: {INSTALL_HINT}")


def _require(option: str, module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MonitorUnavailable(option, package)


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The loggable numbers of a metrics record: every finite number except the epoch (the step)."""
    return {key: float(value) for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class TensorBoardCallback:
    """Writes every evaluation's scalars to ``RUN/tensorboard/`` at ``global_step = epoch``."""

    def __init__(self, run_dir: str | Path):
        _require("tensorboard", "tensorboard", "tensorboard")
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None

    def _open(self, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = self.log_dir.is_dir() and any(self.log_dir.glob("events.out.tfevents.*"))
        # purge_step: TensorBoard drops the older files' events from this step on (a resume
        # re-logs the epochs after its checkpoint)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=first_epoch if resumed else None,
                                    flush_secs=30)

    def on_eval(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            self._open(int(record["epoch"]))
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=int(record["epoch"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbCallback:
    """Logs every evaluation to an offline W&B run in ``RUN/wandb/`` (step = epoch)."""

    def __init__(self, cfg: Config, run_dir: str | Path):
        _require("wandb", "wandb", "wandb")
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run = None

    def _settings(self, wandb: Any) -> Any:
        wanted = dict(mode="offline", silent=True, console="off", disable_git=True, save_code=False,
                      x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True)
        known = getattr(wandb.Settings, "model_fields", None)  # private x_ fields come and go between versions
        return wandb.Settings(**{k: v for k, v in wanted.items() if known is None or k in known})

    def _open(self) -> None:
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        # WANDB_MODE too, for the service process init may start; restored after, as it is process-wide
        saved = {key: os.environ.get(key) for key in ("WANDB_MODE", "WANDB_SILENT")}
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
        try:
            self.run = wandb.init(mode="offline", dir=str(self.run_dir), project="grokking", name=self.run_dir.name,
                                  config=self.cfg.to_dict(), reinit="create_new", settings=self._settings(wandb))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def on_eval(self, record: dict[str, Any]) -> None:
        if self.run is None:
            self._open()
        self.run.log(scalars(record), step=int(record["epoch"]))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def make_callbacks(cfg: Config, run_dir: str | Path) -> list:
    """The monitoring callbacks ``cfg`` asks for (``tensorboard``, ``wandb``); raises
    :class:`MonitorUnavailable` at once, before any training, if a package is missing."""
    callbacks: list = []
    if cfg.tensorboard:
        callbacks.append(TensorBoardCallback(run_dir))
    if cfg.wandb:
        callbacks.append(WandbCallback(cfg, run_dir))
    return callbacks


__all__ = [
    "INSTALL_HINT",
    "TENSORBOARD_DIR",
    "MonitorUnavailable",
    "TensorBoardCallback",
    "WandbCallback",
    "make_callbacks",
    "scalars",
]
