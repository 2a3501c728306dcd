"""Interoperability with TransformerLens: export a trained model as a ``HookedTransformer``
and import one back.

Our :class:`~grokking.model.Transformer` is the seed's architecture, which TransformerLens
expresses exactly: learned token and position embeddings, pre-norm blocks (LayerNorm ``LN``
with eps 1e-5, or none), causal attention scaled by ``sqrt(d_head)`` with no Q/K/V/O biases,
an MLP with biases and a ReLU or (exact, erf) GELU, and an unembedding with no bias. The
two differ only in weight layout (we keep the seed's ``[out, in]`` matrices, TransformerLens
keeps ``[in, out]``), so export is a transposition and nothing is approximated: logits and
cached activations agree to float32 round-off at the hook names both share
(``hook_embed``, ``blocks.0.attn.hook_z``, ``blocks.0.mlp.hook_post``, ...).

``transformer_lens`` is an optional extra (``pip install 'grokking[interop]'``); it is
imported only when a function here is called, as it takes seconds to import.
"""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from .config import Config, ConfigError, from_dict
from .data import group_size
from .model import Transformer

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from transformer_lens import HookedTransformer

INSTALL_HINT = "pip install 'grokking[interop]' (transformer-lens>=3.9,<4)"


class InteropError(ValueError):
    """A TransformerLens model that our Transformer cannot represent (one-line message)."""


def _transformer_lens() -> Any:
    try:
        import transformer_lens
    except ImportError as err:
        raise ImportError(f"TransformerLens interop needs the 'interop' extra: {INSTALL_HINT}") from err
    if not hasattr(transformer_lens, "HookedTransformer"):  # TransformerLens 4 removed it
        raise ImportError(f"transformer_lens {getattr(transformer_lens, '__version__', '?')} has no "
                          f"HookedTransformer; {INSTALL_HINT}")
    return transformer_lens


# --- export ------------------------------------------------------------------------------------------
def hooked_transformer_config(cfg: Config, device: str | torch.device = "cpu",
                              dtype: torch.dtype = torch.float32) -> Any:
    """The ``HookedTransformerConfig`` of the architecture ``cfg`` describes."""
    tl = _transformer_lens()
    return tl.HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_head=cfg.head_dim,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab,
        n_ctx=Transformer.n_ctx,
        act_fn=cfg.act,  # our "gelu" is torch's exact (erf) GELU, as TransformerLens's "gelu"
        normalization_type="LN" if cfg.layernorm else None,
        eps=1e-5,
        positional_embedding_type="standard",
        attention_dir="causal",
        use_attn_scale=True,  # divide scores by attn_scale, which defaults to sqrt(d_head), as ours
        default_prepend_bos=False,  # inputs are the task's own 3 tokens "a b ="; there is no BOS
        init_weights=False,  # every weight is overwritten below
        device=str(device),
        dtype=dtype,
        model_name="grokking",
    )


def _tl_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights, renamed and transposed to TransformerLens's layout (biases we lack are zero)."""
    cfg = model.cfg
    state = {k: v.detach() for k, v in model.state_dict().items()}
    n_heads, d_head, d_model = cfg.n_heads, cfg.head_dim, cfg.d_model
    out: dict[str, torch.Tensor] = {
        "embed.W_E": state["embed.W_E"].T,                       # [d_vocab, d_model]
        "pos_embed.W_pos": state["pos_embed.W_pos"],             # [n_ctx, d_model]
        "unembed.W_U": state["unembed.W_U"],                     # [d_model, d_vocab]
        "unembed.b_U": state["unembed.W_U"].new_zeros(cfg.d_vocab),
    }
    for layer in range(cfg.n_layers):
        ours, theirs = f"blocks.{layer}.", f"blocks.{layer}."
        for name in ("W_Q", "W_K", "W_V"):  # ours [head, d_head, d_model] -> [head, d_model, d_head]
            out[theirs + f"attn.{name}"] = state[ours + f"attn.{name}"].transpose(1, 2)
        for name in ("b_Q", "b_K", "b_V"):
            out[theirs + f"attn.{name}"] = state[ours + "attn.W_Q"].new_zeros(n_heads, d_head)
        # ours [d_model, head * d_head] (z flattened head-major) -> [head, d_head, d_model]
        out[theirs + "attn.W_O"] = state[ours + "attn.W_O"].T.reshape(n_heads, d_head, d_model)
        out[theirs + "attn.b_O"] = state[ours + "attn.W_O"].new_zeros(d_model)
        out[theirs + "mlp.W_in"] = state[ours + "mlp.W_in"].T    # [d_model, d_mlp]
        out[theirs + "mlp.b_in"] = state[ours + "mlp.b_in"]
        out[theirs + "mlp.W_out"] = state[ours + "mlp.W_out"].T  # [d_mlp, d_model]
        out[theirs + "mlp.b_out"] = state[ours + "mlp.b_out"]
        if cfg.layernorm:
            for ln in ("ln1", "ln2"):
                out[theirs + f"{ln}.w"] = state[ours + f"{ln}.w"]
                out[theirs + f"{ln}.b"] = state[ours + f"{ln}.b"]
    if cfg.layernorm:
        out["ln_final.w"], out["ln_final.b"] = state["ln_final.w"], state["ln_final.b"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def to_hooked_transformer(model: Transformer) -> HookedTransformer:
    """Export ``model`` as a TransformerLens ``HookedTransformer`` with the same weights, on the
    same device and dtype. ``tl_model(tokens)`` gives our ``model(tokens)`` logits (float32
    round-off), and ``tl_model.run_with_cache`` our activations at the shared hook names."""
    tl = _transformer_lens()
    first = next(model.parameters())
    with warnings.catch_warnings():  # 3.x deprecates HookedTransformer for 4.0; the extra pins <4
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        tl_model = tl.HookedTransformer(hooked_transformer_config(model.cfg, first.device, first.dtype))
    state = _tl_state_dict(model)
    missing, unexpected = tl_model.load_state_dict(state, strict=False)
    parameters = {name for name, _ in tl_model.named_parameters()}
    # Buffers (the causal mask, IGNORE) are TransformerLens's own; every parameter must be ours.
    if unexpected or parameters & set(missing):
        raise InteropError(f"export mapping out of date for this TransformerLens: missing "
                           f"{sorted(parameters & set(missing))[:4]}, unexpected {sorted(unexpected)[:4]}")
    return tl_model.eval()


# --- import ------------------------------------------------------------------------------------------
def _check_representable(tl_cfg: Any) -> None:
    """Raise InteropError naming the first TransformerLens setting our Transformer lacks."""
    def want(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise InteropError(f"cannot import this HookedTransformer: {name}={getattr(tl_cfg, name, None)!r} "
                               f"(our Transformer needs {allowed})")

    get = lambda name, default=None: getattr(tl_cfg, name, default)
    want("n_ctx", get("n_ctx") == Transformer.n_ctx, f"n_ctx={Transformer.n_ctx}: inputs are 'a b ='")
    want("positional_embedding_type", get("positional_embedding_type") == "standard", "'standard'")
    want("act_fn", get("act_fn") in ("relu", "gelu"), "'relu' or 'gelu'")
    want("normalization_type", get("normalization_type") in (None, "LN"), "None or 'LN'")
    want("eps", get("normalization_type") is None or math.isclose(get("eps", 1e-5), 1e-5), "1e-5")
    want("attention_dir", get("attention_dir", "causal") == "causal", "'causal'")
    want("use_attn_scale", get("use_attn_scale", True), "True")
    want("attn_scale", math.isclose(float(get("attn_scale")), math.sqrt(get("d_head"))), "sqrt(d_head)")
    want("d_mlp", get("d_mlp") is not None and not get("attn_only", False), "an MLP in every block")
    want("d_vocab_out", get("d_vocab_out", get("d_vocab")) in (-1, get("d_vocab")), "d_vocab_out == d_vocab")
    for flag in ("attn_only", "gated_mlp", "parallel_attn_mlp", "use_qk_norm", "post_embedding_ln",
                 "scale_attn_by_inverse_layer_idx", "use_local_attn", "final_rms", "uses_rms_norm",
                 "use_normalization_before_and_after", "tie_word_embeddings", "use_attention_sinks"):
        want(flag, not get(flag, False), "False")
    want("n_key_value_heads", get("n_key_value_heads") in (None, get("n_heads")), "None (no grouped-query attention)")
    want("attn_scores_soft_cap", get("attn_scores_soft_cap", -1.0) <= 0, "no soft cap")
    want("output_logits_soft_cap", get("output_logits_soft_cap", -1.0) <= 0, "no soft cap")


def config_from_hooked_transformer(tl_cfg: Any, base: Config | None = None) -> Config:
    """Our Config for a TransformerLens config: the architecture fields from ``tl_cfg``, the
    task and training fields from ``base`` (default :class:`Config`'s). ``p`` is
    ``d_vocab - 1`` (the last token is ``=``); for operations whose class count does not
    depend on p (S5), ``base.p`` is kept and d_vocab must match the operation."""
    _check_representable(tl_cfg)
    base = base or Config()
    d_vocab, d_model, n_heads, d_head = tl_cfg.d_vocab, tl_cfg.d_model, tl_cfg.n_heads, tl_cfg.d_head
    p = d_vocab - 1 if group_size(base.op, d_vocab - 1) == d_vocab - 1 else base.p
    architecture = dict(p=p, n_layers=tl_cfg.n_layers, d_model=d_model, n_heads=n_heads,
                        d_head=0 if d_head * n_heads == d_model else d_head, d_mlp=tl_cfg.d_mlp,
                        act=tl_cfg.act_fn, layernorm=tl_cfg.normalization_type == "LN")
    try:
        cfg = from_dict({**base.to_dict(), **architecture})
    except ConfigError as err:
        raise InteropError(f"cannot import this HookedTransformer: {err}") from None
    if cfg.d_vocab != d_vocab:
        raise InteropError(f"cannot import this HookedTransformer: d_vocab={d_vocab}, but operation {cfg.op!r} "
                           f"needs {cfg.d_vocab} tokens ({cfg.n_classes} residues and '=')")
    return cfg


def from_hooked_transformer(tl_model: HookedTransformer, base: Config | None = None) -> Transformer:
    """Import a ``HookedTransformer`` of our architecture as a :class:`Transformer` (CPU,
    float32, eval mode). ``base`` supplies the non-architecture config fields (op, seed,
    split, ...). Raises InteropError if the model has a setting or a non-zero bias that
    our Transformer cannot represent."""
    cfg = config_from_hooked_transformer(tl_model.cfg, base)
    tl_state = {k: v.detach().to("cpu", torch.float32) for k, v in tl_model.state_dict().items()}
    n_heads, d_head, d_model = cfg.n_heads, cfg.head_dim, cfg.d_model
    for name, tensor in tl_state.items():  # our attention and unembedding have no biases
        if name.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_U") and tensor.abs().max() > 0:
            raise InteropError(f"cannot import this HookedTransformer: {name} is non-zero "
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
        raise InteropError(f"cannot import this HookedTransformer: weights do not match its config "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    return model.eval()


__all__ = [
    "INSTALL_HINT",
    "InteropError",
    "config_from_hooked_transformer",
    "from_hooked_transformer",
    "hooked_transformer_config",
    "to_hooked_transformer",
]
