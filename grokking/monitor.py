"""Live monitoring: TensorBoard event files and Weights & Biases runs.

``make_callbacks(cfg, run_dir)`` returns the callbacks ``cfg.tensorboard`` and ``cfg.wandb``
ask for; the trainer calls ``on_eval(record)`` with every ``metrics.jsonl`` record and
``close()`` at the end. Each scalar of the record (everything but ``epoch``) is logged under
its ``metrics.jsonl`` name, at ``step = epoch``, so TensorBoard's curves and the run's
metrics file are the same numbers (TensorBoard stores them as float32).

- TensorBoard: ``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``).
- W&B: online when the user is logged in (``wandb login``, ``WANDB_API_KEY``) or asks for it
  (``WANDB_MODE=online``); offline when asked (``WANDB_MODE=offline``, a ``mode`` argument)
  or without credentials, upload later with ``wandb sync RUN/wandb/offline-run-*``; files
  under ``RUN/wandb/`` either way (:func:`wandb_mode`).

Both packages are the optional ``monitor`` extra. Writers open at the first evaluation, not
here: the trainer may still clear the run directory (``--overwrite``) after building its
callbacks. A resumed run appends a new event file whose first step purges the steps it
repeats, so TensorBoard shows each epoch once.
"""
from __future__ import annotations

import importlib.util
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Config, ConfigError

INSTALL_HINT = "pip install 'grokking-lab[monitor]'"
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


# --- Weights & Biases -------------------------------------------------------------------------------------
WANDB_DIR = "wandb"
WANDB_ID_FILE = "grokking_run_id"  # in RUN/wandb/: a resumed run continues the same W&B run
WANDB_MODES = ("online", "offline", "disabled", "shared")
# wandb's own spellings of its modes in WANDB_MODE ("dryrun" and "run" are its older names)
_WANDB_ALIASES = {"dryrun": "offline", "run": "online"}
_TRUE = ("1", "true", "yes", "on")


def wandb_mode(env: Mapping[str, str], has_credentials: bool, requested: str | None = None) -> str:
    """The W&B mode a run uses, as W&B itself would choose it, with one difference: without
    credentials it is ``offline`` rather than a login prompt.

    1. ``requested`` (an argument in code, as ``wandb.init(mode=...)`` beats the environment);
    2. ``WANDB_MODE`` (``online``, ``offline``, ``disabled``, ``shared``; ``dryrun``/``run`` as
       ``offline``/``online``), then the legacy ``WANDB_DISABLED=true``;
    3. ``online`` where the user is logged in (``has_credentials``), else ``offline``.

    Raises ConfigError (one line) for a mode W&B does not know."""
    for source, value in (("mode", requested), ("WANDB_MODE", env.get("WANDB_MODE"))):
        if value is None or not str(value).strip():
            continue
        mode = _WANDB_ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
        if mode not in WANDB_MODES:
            raise ConfigError("wandb", f"{source}={value!r} is not a W&B mode: one of {', '.join(WANDB_MODES)}")
        return mode
    if str(env.get("WANDB_DISABLED", "")).strip().lower() in _TRUE:
        return "disabled"
    return "online" if has_credentials else "offline"


def wandb_has_credentials(env: Mapping[str, str] | None = None) -> bool:
    """Whether W&B would find credentials: an API key or identity token in the environment, a
    ``wandb.login()`` earlier in this process, the netrc file (``wandb login`` writes it) or
    W&B's settings. The same lookup as ``wandb.api.api_key``, without its deprecation notice
    (wandb 0.2x); the older wandb that lacks these pieces answers through ``wandb.api``."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import wandb

    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # an older wandb: its own lookup, not deprecated there
        return bool(wandb.api.api_key)
    settings = wandb_setup.singleton().settings  # does not start W&B's service process
    try:
        if wbauth.session_credentials(host=settings.base_url) is not None:
            return True
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except Exception:  # noqa: BLE001 - a malformed key is still the user's choice: going online, W&B says what is wrong
        return True


class WandbCallback:
    """Logs every evaluation to a W&B run (step = epoch) whose files go to ``RUN/wandb/``.

    The mode is :func:`wandb_mode`'s: online when logged in or ``WANDB_MODE=online``, offline
    when asked (``WANDB_MODE=offline``, ``mode="offline"``) or when there are no credentials
    (upload later with ``wandb sync RUN/wandb/offline-run-*``), nothing with ``disabled``. It is
    settled here, before any training, so that ``online`` without credentials is refused at
    once rather than at the first evaluation. Project ``WANDB_PROJECT`` (default ``grokking``),
    entity ``WANDB_ENTITY`` (W&B's default), run name the run directory's, group the sweep's
    for a run of a sweep (``SWEEP/runs/NAME``). A resumed run continues the same W&B run.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, mode: str | None = None):
        _require("wandb", "wandb", "wandb")
        self.cfg, self.run_dir = cfg, Path(run_dir)
        credentials = wandb_has_credentials()
        self.mode = wandb_mode(os.environ, credentials, mode)
        if self.mode in ("online", "shared") and not credentials:
            raise ConfigError("wandb", f"W&B mode {self.mode!r} needs credentials: run `wandb login` or set "
                                       "WANDB_API_KEY (or WANDB_MODE=offline to log locally)")
        self.run = None
        self._first_step = 0

    def _run_id(self) -> str:
        """The W&B run id of this run directory, kept in ``RUN/wandb/`` (cleared with the run by
        ``--overwrite``, so a fresh run gets a fresh id)."""
        path = self.run_dir / WANDB_DIR / WANDB_ID_FILE
        try:
            existing = path.read_text().strip()
        except OSError:
            existing = ""
        if existing:
            return existing
        run_id = secrets.token_hex(6)  # W&B's ids are short [a-z0-9] strings; wandb's generator is private
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
        return run_id

    def _open(self) -> None:
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        in_sweep = self.run_dir.parent.name == "runs" and self.run_dir.parent.parent.name
        extra: dict[str, Any] = {}
        if self.mode != "disabled":
            extra.update(id=self._run_id(), resume="allow")
        self.run = wandb.init(
            mode=self.mode, dir=str(self.run_dir), project=os.environ.get("WANDB_PROJECT") or "grokking",
            name=self.run_dir.name, group=self.run_dir.parent.parent.name if in_sweep else None,
            reinit="create_new",  # never finish a run the user has open in this process
            # console "off": W&B would otherwise wrap this process's stdout and stderr, which are the user's
            settings=wandb.Settings(console="off"), **extra)
        self.run.config.update(self.cfg.to_dict(), allow_val_change=True)  # a resume may extend the budget
        # An online resume continues after the steps W&B already holds; the epochs it repeats
        # carry the same numbers (resumed metrics continue bit for bit), so they are not re-sent.
        self._first_step = int(getattr(self.run, "step", 0) or 0)

    def on_eval(self, record: dict[str, Any]) -> None:
        if self.run is None:
            self._open()
        epoch = int(record["epoch"])
        if epoch >= self._first_step:
            self.run.log(scalars(record), step=epoch)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def make_callbacks(cfg: Config, run_dir: str | Path, wandb_mode: str | None = None) -> list:
    """The monitoring callbacks ``cfg`` asks for (``tensorboard``, ``wandb``); raises
    :class:`MonitorUnavailable` at once, before any training, if a package is missing, and
    ConfigError for a W&B mode that cannot work. ``wandb_mode``: see :func:`wandb_mode`."""
    callbacks: list = []
    if cfg.tensorboard:
        callbacks.append(TensorBoardCallback(run_dir))
    if cfg.wandb:
        callbacks.append(WandbCallback(cfg, run_dir, wandb_mode))
    return callbacks


__all__ = [
    "INSTALL_HINT",
    "TENSORBOARD_DIR",
    "MonitorUnavailable",
    "TensorBoardCallback",
    "WANDB_DIR",
    "WANDB_ID_FILE",
    "WANDB_MODES",
    "WandbCallback",
    "make_callbacks",
    "scalars",
    "wandb_has_credentials",
    "wandb_mode",
]
