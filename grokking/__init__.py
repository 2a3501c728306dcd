"""grokking: reproduce and study grokking on algorithmic tasks.

The modules form layers (docs/architecture.md): ``config`` (every default; ``build_dataset``) and
``data`` (the tasks: operation tables, sequence tasks, parity, the digits; splits) at the bottom, ``model`` (the seed's hooked transformer, one run
or K stacked) and ``mlp`` (an MLP, and Gromov's closed form), ``factory`` (which of them a config
builds), ``fast`` and ``methods``, the ``engine`` (the one epoch loop), then ``train``,
``batched``, ``analysis``, ``sweep`` and, on top, ``cli``.
"""
from .version import __version__  # noqa: E402
from .threads import settle_vector_math  # noqa: E402

# Before any parallel exp or log of this process: MKL's first vector-math call is racy across
# threads, and a fixed thread count is bit-for-bit reproducible only once it has settled.
settle_vector_math()
from .config import Config, ConfigError, build_dataset  # noqa: E402
from .data import OPERATIONS, TOKEN_TASKS, Operation, make_dataset, register_operation  # noqa: E402
from .model import HookPoint, Transformer  # noqa: E402
from .mlp import MLP  # noqa: E402
from .factory import build_model  # noqa: E402

__all__ = ["Config", "ConfigError", "OPERATIONS", "TOKEN_TASKS", "Operation", "build_dataset", "make_dataset",
           "register_operation",
           "HookPoint", "Transformer", "MLP", "build_model", "__version__"]
