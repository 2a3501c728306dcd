"""grokking: reproduce and study grokking on algorithmic tasks.

The pieces, one module each: ``config`` (every default), ``data`` (operation tables and
splits), ``model`` (the seed's hooked transformer), ``fast`` (the exact last-position
training path), ``methods`` (optimisers, losses, gradient filters), ``train`` (the loop
and run directories), ``checkpoint`` (safe files, seed checkpoints), ``plots`` and ``cli``.
"""
from .version import __version__  # noqa: E402
from .config import Config, ConfigError  # noqa: E402
from .data import OPERATIONS, Operation, make_dataset, register_operation  # noqa: E402
from .model import HookPoint, Transformer  # noqa: E402

__all__ = ["Config", "ConfigError", "OPERATIONS", "Operation", "make_dataset", "register_operation",
           "HookPoint", "Transformer", "__version__"]
