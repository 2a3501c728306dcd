"""Interoperability with TransformerLens 3.x and 4.x: export a trained model and import one back.

:func:`to_transformer_lens` returns a ``HookedTransformer`` under TransformerLens 3.x and a
``TransformerBridge`` (``TransformerBridge.boot_native``) under 4.x, which removed
``HookedTransformer``; :func:`from_transformer_lens` imports either back. Which one is chosen
is read from the installed distribution's metadata (``transformer-lens``), never by probing
the module: under 4.x, touching a removed name such as ``transformer_lens.HookedTransformer``
(``hasattr`` included) raises ImportError.

Our :class:`~grokking.model.Transformer` is the seed's architecture, which TransformerLens
expresses exactly: learned token and position embeddings, pre-norm blocks (LayerNorm ``LN``
with eps 1e-5, or none), causal attention scaled by ``sqrt(d_head)`` with no Q/K/V/O biases,
an MLP with biases and a ReLU or (exact, erf) GELU, and an unembedding with no bias. Export
relabels and transposes weights, nothing is approximated: one mapping (ours to
TransformerLens's property layout, ``blocks.0.attn.W_Q`` ``[head, d_model, d_head]``, the
layout of ``HookedTransformer.state_dict()``) serves both versions; under 4.x
TransformerLens's own ``conversion_utils.convert_tl_checkpoint`` takes it on to the bridge's
``nn.Linear`` layout. Logits agree to float32 round-off and the caches agree at the hook
names both share (``hook_embed``, ``blocks.0.attn.hook_z``, ``blocks.0.mlp.hook_post``, ...;
docs/interop.md lists them, and the one 4.x difference).

``transformer_lens`` is an optional extra (``pip install 'grokking-lab[interop]'``); it is
imported only when a function here is called, as it takes seconds to import.
"""
from __future__ import annotations

import importlib.metadata
import math
import re
import warnings
from typing import Any

import torch
from torch import nn

from .config import Config, ConfigError, from_dict
from .data import group_size
from .model import Transformer

DISTRIBUTION = "transformer-lens"
INSTALL_HINT = "pip install 'grokking-lab[interop]' (transformer-lens>=3.9,<5)"
# The first major version whose export is a TransformerBridge.
BRIDGE_MAJOR = 4


class InteropError(ValueError):
    """A TransformerLens model that our Transformer cannot represent, or a model of ours that
    TransformerLens cannot (one-line message)."""


def _check_exportable(cfg: Config) -> None:
    """Refuse an MLP (``model = mlp``): TransformerLens's models are transformers."""
    if cfg.model != "transformer":
        raise InteropError(f"cannot export model={cfg.model} to TransformerLens: only the transformer exports "
                           f"(TransformerLens has no attention-free MLP architecture)")


# --- which TransformerLens -----------------------------------------------------------------------------
def transformer_lens_version() -> tuple[int, ...]:
    """The installed TransformerLens version, from its distribution metadata (``(4, 3, 0)``).
    Raises ImportError naming the extra when it is not installed."""
    try:
        text = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"TransformerLens interop needs the 'interop' extra: {INSTALL_HINT}") from None
    numbers = re.findall(r"\d+", text)[:3]
    return tuple(int(n) for n in numbers) or (0,)


def uses_bridge() -> bool:
    """True where the installed TransformerLens exports a ``TransformerBridge`` (4.x and later)."""
    return transformer_lens_version()[0] >= BRIDGE_MAJOR


def _transformer_lens() -> Any:
    transformer_lens_version()  # the hint, before an import that would fail with a bare message
    try:
        import transformer_lens
    except ImportError as err:
        raise ImportError(f"TransformerLens interop needs the 'interop' extra ({err}): {INSTALL_HINT}") from None
    return transformer_lens


# --- export ------------------------------------------------------------------------------------------
def transformer_lens_config(cfg: Config, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32) -> Any:
    """The TransformerLens config of the architecture ``cfg`` describes: a
    ``HookedTransformerConfig`` under 3.x, a ``TransformerBridgeConfig`` under 4.x."""
    _check_exportable(cfg)
    tl = _transformer_lens()
    common = dict(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_head=cfg.head_dim,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        act_fn=cfg.act,  # our "gelu" is torch's exact (erf) GELU, as TransformerLens's "gelu" (3.x and 4.x)
        normalization_type="LN" if cfg.layernorm else None,
        eps=1e-5,
        positional_embedding_type="standard",
        attention_dir="causal",
        use_attn_scale=True,  # attn_scale stays at its sentinel -1: sqrt(d_head), as ours
        default_prepend_bos=False,  # inputs are the task's own 3 tokens "a b ="; there is no BOS
        init_weights=False,  # every weight is overwritten on export
        device=str(device),
        dtype=dtype,
        model_name="grokking",
    )
    if uses_bridge():
        return tl.TransformerBridgeConfig(**common, tokenizer_prepends_bos=False)
    return tl.HookedTransformerConfig(**common)


def tl_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights in TransformerLens's property layout (``HookedTransformer.state_dict()``'s
    names and shapes; the biases we lack are zero)."""
    cfg = model.cfg
    _check_exportable(cfg)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    n_heads, d_head, d_model = cfg.n_heads, cfg.head_dim, cfg.d_model
    out: dict[str, torch.Tensor] = {
        "embed.W_E": state["embed.W_E"].T,                       # [d_vocab, d_model]
        "pos_embed.W_pos": state["pos_embed.W_pos"],             # [n_ctx, d_model]
        "unembed.W_U": state["unembed.W_U"],                     # [d_model, d_vocab]
        "unembed.b_U": state["unembed.W_U"].new_zeros(cfg.d_vocab),
    }
    for layer in range(cfg.n_layers):
        prefix = f"blocks.{layer}."  # the same block names on both sides
        for name in ("W_Q", "W_K", "W_V"):  # ours [head, d_head, d_model] -> [head, d_model, d_head]
            out[prefix + f"attn.{name}"] = state[prefix + f"attn.{name}"].transpose(1, 2)
        for name in ("b_Q", "b_K", "b_V"):
            out[prefix + f"attn.{name}"] = state[prefix + "attn.W_Q"].new_zeros(n_heads, d_head)
        # ours [d_model, head * d_head] (z flattened head-major) -> [head, d_head, d_model]
        out[prefix + "attn.W_O"] = state[prefix + "attn.W_O"].T.reshape(n_heads, d_head, d_model)
        out[prefix + "attn.b_O"] = state[prefix + "attn.W_O"].new_zeros(d_model)
        out[prefix + "mlp.W_in"] = state[prefix + "mlp.W_in"].T    # [d_model, d_mlp]
        out[prefix + "mlp.b_in"] = state[prefix + "mlp.b_in"]
        out[prefix + "mlp.W_out"] = state[prefix + "mlp.W_out"].T  # [d_mlp, d_model]
        out[prefix + "mlp.b_out"] = state[prefix + "mlp.b_out"]
        if cfg.layernorm:
            for ln in ("ln1", "ln2"):
                out[prefix + f"{ln}.w"] = state[prefix + f"{ln}.w"]
                out[prefix + f"{ln}.b"] = state[prefix + f"{ln}.b"]
    if cfg.layernorm:
        out["ln_final.w"], out["ln_final.b"] = state["ln_final.w"], state["ln_final.b"]
    return {k: v.contiguous().clone() for k, v in out.items()}


_TL_BUFFERS = (".mask", ".IGNORE")


def _load_exported(tl_model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = tl_model.load_state_dict(state, strict=False)
    # HookedTransformer's buffers (the causal mask, IGNORE) are its own; every other entry must be
    # ours. (Parameter names do not tell: the bridge's are its wrapped modules', not its state_dict's.)
    missing = [key for key in result.missing_keys if not key.endswith(_TL_BUFFERS)]
    if missing or result.unexpected_keys:
        raise InteropError(f"export mapping out of date for TransformerLens "
                           f"{'.'.join(map(str, transformer_lens_version()))}: missing "
                           f"{sorted(missing)[:4]}, unexpected {sorted(result.unexpected_keys)[:4]}")


def to_transformer_lens(model: Transformer) -> nn.Module:
    """Export ``model`` to TransformerLens with the same weights, device and dtype: a
    ``HookedTransformer`` under TransformerLens 3.x, a ``TransformerBridge`` under 4.x, in
    eval mode. ``tl_model(tokens)`` gives our ``model(tokens)`` logits (float32 round-off),
    ``tl_model.run_with_cache(tokens)`` an ``ActivationCache`` with our activations at the
    shared hook names, on which TransformerLens's own analyses run
    (``cache.decompose_resid``, ``cache.logit_attrs``, ...). An MLP is refused (InteropError)."""
    _check_exportable(model.cfg)
    tl = _transformer_lens()
    first = next(model.parameters())
    tl_cfg = transformer_lens_config(model.cfg, first.device, first.dtype)
    state = tl_state_dict(model)
    if uses_bridge():
        # boot_native builds TransformerLens's own native model (no Hub, no transformers model);
        # convert_tl_checkpoint is TransformerLens's converter from the property layout.
        from transformer_lens.conversion_utils import convert_tl_checkpoint

        tl_model = tl.TransformerBridge.boot_native(tl_cfg, device=first.device, dtype=first.dtype,
                                                    model_name="grokking")
        try:
            state = convert_tl_checkpoint(state, tl_model.cfg)
        except ValueError as err:
            raise InteropError(f"export mapping out of date: {str(err).splitlines()[0][:200]}") from None
    else:
        with warnings.catch_warnings():  # 3.x deprecates HookedTransformer for 4.0; 4.x goes the bridge's way
            warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
            tl_model = tl.HookedTransformer(tl_cfg)
    _load_exported(tl_model, state)
    return tl_model.eval()


# --- import ------------------------------------------------------------------------------------------
def _is_bridge_config(tl_cfg: Any) -> bool:
    # TransformerBridgeConfig has an `architecture` field; HookedTransformerConfig only `original_architecture`.
    return hasattr(tl_cfg, "architecture")


def _attn_scale(tl_cfg: Any) -> float:
    """What the model divides attention scores by. HookedTransformer: ``attn_scale`` (sqrt(d_head)
    after its config's post-init) when ``use_attn_scale``, else 1. The native bridge: ``attn_scale``
    when positive and ``use_attn_scale``, else sqrt(d_head) (its NativeAttention)."""
    scale, use = float(getattr(tl_cfg, "attn_scale", -1.0)), bool(getattr(tl_cfg, "use_attn_scale", True))
    if _is_bridge_config(tl_cfg):
        return scale if use and scale > 0 else math.sqrt(tl_cfg.d_head)
    if not use:
        return 1.0
    return scale if scale > 0 else math.sqrt(tl_cfg.d_head)


def _check_representable(tl_cfg: Any, n_ctx: int) -> None:
    """Raise InteropError naming the first TransformerLens setting our Transformer lacks."""
    def want(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise InteropError(f"cannot import this TransformerLens model: {name}={getattr(tl_cfg, name, None)!r} "
                               f"(our Transformer needs {allowed})")

    get = lambda name, default=None: getattr(tl_cfg, name, default)  # noqa: E731
    if _is_bridge_config(tl_cfg):  # a bridge around a Hugging Face model keeps that model's own layout
        want("architecture", get("architecture") in (None, "TransformerLensNative"),
             "a TransformerBridge.boot_native model ('TransformerLensNative')")
    want("n_ctx", get("n_ctx") == n_ctx, f"n_ctx={n_ctx}: the task's tokens per example")
    want("positional_embedding_type", get("positional_embedding_type", "standard") == "standard", "'standard'")
    want("act_fn", get("act_fn") in ("relu", "gelu"), "'relu' or 'gelu'")
    want("normalization_type", get("normalization_type") in (None, "LN"), "None or 'LN'")
    want("eps", get("normalization_type") is None or math.isclose(get("eps", 1e-5), 1e-5), "1e-5")
    want("attention_dir", get("attention_dir", "causal") == "causal", "'causal'")
    want("attn_scale", math.isclose(_attn_scale(tl_cfg), math.sqrt(get("d_head"))), "sqrt(d_head)")
    want("d_mlp", get("d_mlp") is not None and not get("attn_only", False), "an MLP in every block")
    want("d_vocab_out", get("d_vocab_out", get("d_vocab")) in (-1, get("d_vocab")), "d_vocab_out == d_vocab")
    for flag in ("attn_only", "gated_mlp", "parallel_attn_mlp", "use_qk_norm", "post_embedding_ln",
                 "scale_attn_by_inverse_layer_idx", "use_local_attn", "final_rms", "uses_rms_norm",
                 "use_normalization_before_and_after", "tie_word_embeddings", "use_attention_sinks"):
        want(flag, not get(flag, False), "False")
    want("n_key_value_heads", get("n_key_value_heads") in (None, get("n_heads")), "None (no grouped-query attention)")
    want("attn_scores_soft_cap", get("attn_scores_soft_cap", -1.0) <= 0, "no soft cap")
    want("output_logits_soft_cap", get("output_logits_soft_cap", -1.0) <= 0, "no soft cap")


def config_from_transformer_lens(tl_cfg: Any, base: Config | None = None) -> Config:
    """Our Config for a TransformerLens config (``HookedTransformerConfig`` or
    ``TransformerBridgeConfig``): the architecture fields from ``tl_cfg``, the task and
    training fields from ``base`` (default :class:`Config`'s). ``p`` is ``d_vocab - 1`` (the
    last token is ``=``); for operations whose class count does not depend on p (S5),
    ``base.p`` is kept and d_vocab must match the operation."""
    base = base or Config()
    _check_representable(tl_cfg, base.n_ctx)
    d_vocab, d_model, n_heads, d_head = tl_cfg.d_vocab, tl_cfg.d_model, tl_cfg.n_heads, tl_cfg.d_head
    p = d_vocab - 1 if group_size(base.op, d_vocab - 1) == d_vocab - 1 else base.p
    architecture = dict(p=p, model="transformer", n_layers=tl_cfg.n_layers, d_model=d_model, n_heads=n_heads,
                        d_head=0 if d_head * n_heads == d_model else d_head, d_mlp=tl_cfg.d_mlp,
                        act=tl_cfg.act_fn, layernorm=tl_cfg.normalization_type == "LN")
    try:
        cfg = from_dict({**base.to_dict(), **architecture})
    except ConfigError as err:
        raise InteropError(f"cannot import this TransformerLens model: {err}") from None
    if cfg.d_vocab != d_vocab:
        raise InteropError(f"cannot import this TransformerLens model: d_vocab={d_vocab}, but operation {cfg.op!r} "
                           f"needs {cfg.d_vocab} tokens ({cfg.n_classes} residues and '=')")
    return cfg


# The bridge's nn.Linear layout -> the property layout: the inverse of TransformerLens 4's
# convert_tl_checkpoint for the weights our architecture has. (suffix, property suffix, how)
_FROM_BRIDGE: list[tuple[str, str, str]] = [
    ("attn.q.weight", "attn.W_Q", "heads_in"), ("attn.k.weight", "attn.W_K", "heads_in"),
    ("attn.v.weight", "attn.W_V", "heads_in"), ("attn.o.weight", "attn.W_O", "heads_out"),
    ("attn.q.bias", "attn.b_Q", "heads"), ("attn.k.bias", "attn.b_K", "heads"), ("attn.v.bias", "attn.b_V", "heads"),
    ("attn.o.bias", "attn.b_O", "same"),
    ("mlp.in.weight", "mlp.W_in", "T"), ("mlp.in.bias", "mlp.b_in", "same"),
    ("mlp.out.weight", "mlp.W_out", "T"), ("mlp.out.bias", "mlp.b_out", "same"),
    ("unembed.weight", "unembed.W_U", "T"), ("unembed.bias", "unembed.b_U", "same"),
    ("embed.weight", "embed.W_E", "same"), ("pos_embed.weight", "pos_embed.W_pos", "same"),
    ("ln1.weight", "ln1.w", "same"), ("ln1.bias", "ln1.b", "same"), ("ln2.weight", "ln2.w", "same"),
    ("ln2.bias", "ln2.b", "same"), ("ln_final.weight", "ln_final.w", "same"), ("ln_final.bias", "ln_final.b", "same"),
]


def bridge_to_tl_state(state: dict[str, torch.Tensor], n_heads: int, d_head: int) -> dict[str, torch.Tensor]:
    """A native ``TransformerBridge``'s state dict in the property layout (per-head shapes)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for suffix, new_suffix, how in _FROM_BRIDGE:
            if key == suffix or key.endswith("." + suffix):
                if how == "heads_in":  # [(head d_head), d_model] -> [head, d_model, d_head]
                    tensor = tensor.reshape(n_heads, d_head, -1).transpose(1, 2)
                elif how == "heads_out":  # [d_model, (head d_head)] -> [head, d_head, d_model]
                    tensor = tensor.T.reshape(n_heads, d_head, -1)
                elif how == "heads":
                    tensor = tensor.reshape(n_heads, d_head)
                elif how == "T":
                    tensor = tensor.T
                out[key[: len(key) - len(suffix)] + new_suffix] = tensor
                break
        else:
            raise InteropError(f"cannot import this TransformerBridge: no counterpart for its weight {key!r}")
    return out


def from_transformer_lens(tl_model: nn.Module, base: Config | None = None) -> Transformer:
    """Import a TransformerLens model of our architecture (a ``HookedTransformer``, or a
    ``TransformerBridge`` made by ``boot_native`` / :func:`to_transformer_lens`) as a
    :class:`Transformer` (CPU, float32, eval mode). ``base`` supplies the non-architecture
    config fields (op, seed, split, ...). Raises InteropError if the model has a setting or a
    non-zero bias that our Transformer cannot represent."""
    cfg = config_from_transformer_lens(tl_model.cfg, base)
    tl_state = {k: v.detach().to("cpu", torch.float32) for k, v in tl_model.state_dict().items()}
    n_heads, d_head, d_model = cfg.n_heads, cfg.head_dim, cfg.d_model
    if "embed.weight" in tl_state:  # the bridge's layout (4.x)
        tl_state = bridge_to_tl_state(tl_state, n_heads, d_head)
    for name, tensor in tl_state.items():  # our attention and unembedding have no biases
        if name.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_U") and tensor.abs().max() > 0:
            raise InteropError(f"cannot import this TransformerLens model: {name} is non-zero "
                               f"(our Transformer has no attention or unembedding biases)")
    model = Transformer(cfg)
    state = dict(model.state_dict())  # keeps our own buffers (the causal mask)
    try:
        state["embed.W_E"] = tl_state["embed.W_E"].T
        state["pos_embed.W_pos"] = tl_state["pos_embed.W_pos"]
        state["unembed.W_U"] = tl_state["unembed.W_U"]
        for layer in range(cfg.n_layers):
            prefix = f"blocks.{layer}."
            for name in ("W_Q", "W_K", "W_V"):
                state[prefix + f"attn.{name}"] = tl_state[prefix + f"attn.{name}"].transpose(1, 2)
            state[prefix + "attn.W_O"] = tl_state[prefix + "attn.W_O"].reshape(n_heads * d_head, d_model).T
            state[prefix + "mlp.W_in"] = tl_state[prefix + "mlp.W_in"].T
            state[prefix + "mlp.b_in"] = tl_state[prefix + "mlp.b_in"]
            state[prefix + "mlp.W_out"] = tl_state[prefix + "mlp.W_out"].T
            state[prefix + "mlp.b_out"] = tl_state[prefix + "mlp.b_out"]
            if cfg.layernorm:
                for ln in ("ln1", "ln2"):
                    state[prefix + f"{ln}.w"] = tl_state[prefix + f"{ln}.w"]
                    state[prefix + f"{ln}.b"] = tl_state[prefix + f"{ln}.b"]
        if cfg.layernorm:
            state["ln_final.w"], state["ln_final.b"] = tl_state["ln_final.w"], tl_state["ln_final.b"]
        model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    except (KeyError, RuntimeError) as err:
        raise InteropError(f"cannot import this TransformerLens model: weights do not match its config "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    return model.eval()


# The names of the 3.x-only API, kept for code written against it: they follow the installed version.
to_hooked_transformer = to_transformer_lens
from_hooked_transformer = from_transformer_lens
hooked_transformer_config = transformer_lens_config
config_from_hooked_transformer = config_from_transformer_lens

__all__ = [
    "BRIDGE_MAJOR",
    "DISTRIBUTION",
    "INSTALL_HINT",
    "InteropError",
    "bridge_to_tl_state",
    "config_from_hooked_transformer",
    "config_from_transformer_lens",
    "from_hooked_transformer",
    "from_transformer_lens",
    "hooked_transformer_config",
    "tl_state_dict",
    "to_hooked_transformer",
    "to_transformer_lens",
    "transformer_lens_config",
    "transformer_lens_version",
    "uses_bridge",
]
