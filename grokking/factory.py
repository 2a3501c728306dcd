"""The one place that builds a model from a config: the seed's transformer or an MLP (``cfg.model``).

Training (:mod:`grokking.rungroup`) and loading (:mod:`grokking.checkpoint`) both build through
:func:`build_model`, so a run's checkpoint loads back as the model that wrote it.
"""
from __future__ import annotations

from typing import Union

from .config import Config
from .mlp import MLP
from .model import Transformer

Model = Union[Transformer, MLP]
#: Every value of ``cfg.model``, with what it builds (``grokking ops`` lists them).
MODELS: dict[str, str] = {
    "transformer": "the seed's transformer (Nanda et al. 2023): n_layers, d_model, n_heads, d_mlp, act, layernorm",
    "mlp": "an MLP over the task's input tokens as embeddings, one-hot codes or values: mlp_input, mlp_act, "
           "mlp_layers, d_mlp; Gromov 2023's network is --mlp-input onehot --mlp-act quadratic",
}
#: For ``isinstance``: any single model of the package (a StackedTransformer is a Transformer).
MODEL_TYPES = (Transformer, MLP)


def build_model(cfg: Config, seed: int | None = None) -> Model:
    """The model ``cfg`` asks for, with its initial weights (from ``cfg.seed``, or ``seed``)."""
    return MLP(cfg, seed) if cfg.model == "mlp" else Transformer(cfg, seed)


__all__ = ["MODELS", "MODEL_TYPES", "Model", "build_model"]
