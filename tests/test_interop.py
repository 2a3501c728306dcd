"""TransformerLens export/import: same logits on every input, same activations at shared hooks."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grokking.config import Config
from grokking.model import Transformer

transformer_lens = pytest.importorskip("transformer_lens", reason="needs the 'interop' extra: pip install 'grokking[interop]'")
if not hasattr(transformer_lens, "HookedTransformer"):
    pytest.skip("transformer_lens >= 4 has no HookedTransformer", allow_module_level=True)

from grokking.interop import InteropError, from_hooked_transformer, hooked_transformer_config, to_hooked_transformer

# (name, config changes): the seed's architecture, and one with every optional part switched on.
ARCHITECTURES = [
    ("seed-relu", dict(p=13, d_model=32, n_heads=4, d_mlp=64)),
    ("ln-gelu-2layers-dhead", dict(p=7, d_model=24, n_heads=3, d_head=5, d_mlp=40, n_layers=2, act="gelu",
                                   layernorm=True)),
]
# Hooks both models have; ours are [batch, pos, head, d_head] for q/k/v/z, as TransformerLens's.
BLOCK_HOOKS = ["attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_pattern",
               "attn.hook_attn_scores", "hook_resid_pre", "hook_attn_out", "hook_resid_mid", "mlp.hook_pre",
               "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]
LN_HOOKS = ["ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized"]


def randomized_model(**changes) -> Transformer:
    """A model whose every parameter (biases and LayerNorm gains too) is random, so a weight
    mapped to the wrong place, or left out, changes the outputs."""
    model = Transformer(Config().replace(**changes))
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5 + (1.0 if param.dim() == 1 else 0.0))
    return model.eval()


def all_pairs(model: Transformer) -> torch.Tensor:
    n = model.cfg.n_classes
    a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), torch.full((n * n,), model.eq_token)], dim=1)


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=[name for name, _ in ARCHITECTURES])
def exported(request):
    model = randomized_model(**request.param[1])
    return model, to_hooked_transformer(model)


def test_config_maps_architecture(exported):
    model, tl_model = exported
    cfg, tl_cfg = model.cfg, tl_model.cfg
    assert (tl_cfg.n_layers, tl_cfg.d_model, tl_cfg.n_heads, tl_cfg.d_head, tl_cfg.d_mlp, tl_cfg.d_vocab, tl_cfg.n_ctx) \
        == (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_mlp, cfg.d_vocab, 3)
    assert tl_cfg.act_fn == cfg.act
    assert tl_cfg.normalization_type == ("LN" if cfg.layernorm else None)
    assert tl_cfg.attn_scale == pytest.approx(cfg.head_dim ** 0.5)
    assert tl_cfg.default_prepend_bos is False
    for layer in range(cfg.n_layers):
        attn = tl_model.blocks[layer].attn
        for bias in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O):
            assert torch.count_nonzero(bias) == 0


def test_logits_equal_on_every_input(exported):
    model, tl_model = exported
    tokens = all_pairs(model)
    with torch.no_grad():
        ours, theirs = model(tokens), tl_model(tokens)
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert torch.equal(theirs[:, -1].argmax(-1), ours[:, -1].argmax(-1))


def test_cached_activations_agree(exported):
    model, tl_model = exported
    tokens = all_pairs(model)
    _, ours = model.run_with_cache(tokens)
    with torch.no_grad():
        _, theirs = tl_model.run_with_cache(tokens)
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.{hook}" for layer in range(model.cfg.n_layers)
                                                for hook in BLOCK_HOOKS + (LN_HOOKS if model.cfg.layernorm else [])]
    if model.cfg.layernorm:
        names += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    for name in names:
        mine, tl = ours[name], theirs[name]
        if name == "hook_pos_embed":  # ours is [pos, d_model], broadcast over the batch
            mine = mine.expand_as(tl)
        if name.endswith("hook_attn_scores"):  # only the causal (unmasked) entries are defined alike
            causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))
            mine, tl = mine[..., causal], tl[..., causal]
        assert mine.shape == tl.shape, name
        torch.testing.assert_close(tl, mine, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_round_trip_gives_identical_weights(exported):
    model, tl_model = exported
    back = from_hooked_transformer(tl_model, base=model.cfg)
    assert back.cfg == model.cfg
    ours, returned = model.state_dict(), back.state_dict()
    assert ours.keys() == returned.keys()
    for name in ours:
        assert torch.equal(ours[name], returned[name]), name


def test_import_refuses_what_we_cannot_represent():
    model = randomized_model(p=5, d_model=8, n_heads=2, d_mlp=16)
    tl_model = to_hooked_transformer(model)
    with torch.no_grad():
        tl_model.blocks[0].attn.b_Q.fill_(0.1)
    with pytest.raises(InteropError, match="b_Q is non-zero"):
        from_hooked_transformer(tl_model)
    # The config is checked before any weight is read, so a stand-in holding just a config will do.
    for setting, value in (("n_ctx", 8), ("positional_embedding_type", "rotary"), ("act_fn", "silu"),
                           ("normalization_type", "RMS"), ("gated_mlp", True)):
        tl_cfg = hooked_transformer_config(model.cfg)
        setattr(tl_cfg, setting, value)
        with pytest.raises(InteropError, match=setting):
            from_hooked_transformer(SimpleNamespace(cfg=tl_cfg))
