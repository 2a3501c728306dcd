"""The model against the seed reference, and the hook machinery."""
import warnings

import pytest
import torch

from grokking.config import Config
from grokking.model import HookPoint, Transformer


def all_tokens(p: int) -> torch.Tensor:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_seed_state_dict_loads_strictly_and_gives_same_logits(seed_reference, n_layers):
    torch.manual_seed(7)
    ref = seed_reference.Transformer(d_vocab=60, num_layers=n_layers)
    ours = Transformer(Config(p=59, n_layers=n_layers), seed=123)  # different init, then overwritten
    ours.load_state_dict(ref.state_dict(), strict=True)
    tokens = all_tokens(59)
    with torch.no_grad():
        assert torch.allclose(ours(tokens), ref(tokens), atol=1e-5, rtol=1e-5)


def test_initial_weights_equal_the_seeds_after_manual_seed(seed_reference):
    torch.manual_seed(0)
    ref = seed_reference.Transformer(d_vocab=114)
    ours = Transformer(Config(seed=0))
    assert list(ours.state_dict()) == list(ref.state_dict())
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert a.shape == b.shape and torch.equal(a, b), name


EXPECTED_SHAPES = {
    "hook_embed": (5, 3, 32), "hook_pos_embed": (3, 32),
    "blocks.0.hook_resid_pre": (5, 3, 32),
    "blocks.0.attn.hook_q": (5, 3, 4, 8), "blocks.0.attn.hook_k": (5, 3, 4, 8),
    "blocks.0.attn.hook_v": (5, 3, 4, 8), "blocks.0.attn.hook_z": (5, 3, 4, 8),
    "blocks.0.attn.hook_attn_scores": (5, 4, 3, 3), "blocks.0.attn.hook_attn_pre": (5, 4, 3, 3),
    "blocks.0.attn.hook_pattern": (5, 4, 3, 3), "blocks.0.attn.hook_attn": (5, 4, 3, 3),
    "blocks.0.hook_attn_out": (5, 3, 32), "blocks.0.hook_resid_mid": (5, 3, 32),
    "blocks.0.mlp.hook_pre": (5, 3, 64), "blocks.0.mlp.hook_post": (5, 3, 64),
    "blocks.0.hook_mlp_out": (5, 3, 32), "blocks.0.hook_resid_post": (5, 3, 32),
}


def small_model(**changes) -> Transformer:
    return Transformer(Config().replace(p=11, d_model=32, n_heads=4, d_mlp=64, **changes))


def no_hooks_left(model: Transformer) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_run_with_cache_caches_every_activation_with_right_shapes_and_cleans_up():
    model = small_model()
    tokens = all_tokens(11)[:5]
    logits, cache = model.run_with_cache(tokens)
    assert {k: tuple(v.shape) for k, v in cache.items()} == EXPECTED_SHAPES
    assert no_hooks_left(model)
    # The cache is the forward pass: recompute the logits from cached activations.
    resid = cache["blocks.0.hook_resid_post"]
    assert torch.allclose(resid @ model.unembed.W_U, logits, atol=1e-6)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(5, 4, 3))
    assert torch.equal(cache["blocks.0.mlp.hook_post"], torch.relu(cache["blocks.0.mlp.hook_pre"]))


def test_layernorm_model_has_ln_hooks():
    model = small_model(layernorm=True)
    _, cache = model.run_with_cache(all_tokens(11)[:5])
    assert {"blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_normalized", "ln_final.hook_scale"} <= set(cache)


def test_backward_hooks_give_activation_gradients_and_are_removed():
    model = small_model()
    tokens = all_tokens(11)[:7]
    labels = torch.arange(7)

    def loss_fn(logits):
        return torch.nn.functional.cross_entropy(logits[:, -1], labels)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated register_backward_hook warning
        _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"], incl_bwd=True,
                                        loss_fn=loss_fn)
    assert no_hooks_left(model)
    resid = cache["blocks.0.hook_resid_post"].clone().requires_grad_(True)
    expected = torch.autograd.grad(loss_fn(resid @ model.unembed.W_U), resid)[0]
    assert torch.allclose(cache["blocks.0.hook_resid_post_grad"], expected, atol=1e-7)


def test_run_with_hooks_can_ablate_and_removes_hooks_even_on_error():
    model = small_model()
    tokens = all_tokens(11)[:4]
    clean = model(tokens)
    ablated = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    assert not torch.allclose(clean, ablated)
    assert torch.allclose(model(tokens), clean)  # hook gone

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", boom)])
    assert no_hooks_left(model)
    with pytest.raises(KeyError, match="no hook point"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.nope", boom)])


def test_hook_points_are_named_like_transformer_lens():
    names = set(small_model().hook_dict)
    assert set(EXPECTED_SHAPES) == names
    assert all(isinstance(hp, HookPoint) and hp.name == n for n, hp in small_model().hook_dict.items())
