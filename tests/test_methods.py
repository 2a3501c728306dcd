"""The acceleration methods of grokking.methods do what their definitions (and their authors'
reference code) say, inside the trainer too, on both training paths, and survive a resume.

Sources: Grokfast (Lee et al. 2024, github.com/ironjr/grokfast ``gradfilter_ema``/``gradfilter_ma``),
StableMax and ⊥Grad (Prieto et al. 2025, "Grokking at the edge of numerical stability"), Muon
(Jordan et al. 2024, the quintic Newton–Schulz iteration). All tasks are tiny (p = 11..23, d_model 32).
"""
from __future__ import annotations

import json
import math
from collections import deque

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from grokking.config import Config
from grokking.methods import (
    FusedAdamW,
    GradFilter,
    MuonAdamW,
    build_optimizer,
    cross_entropy_float64,
    float64_cross_entropy_per_example,
    is_hidden_matrix,
    newton_schulz,
    orthogonalize_gradients,
    per_example_loss,
    stablemax_cross_entropy,
    stablemax_probabilities,
)
from grokking.train import Trainer, read_metrics, train

# Every method with a knob small enough to show on a few steps (MA's window 3 fills at step 2).
METHODS = {
    "adamw": dict(),
    "grokfast_ema": dict(grokfast="ema", grokfast_alpha=0.9, grokfast_lamb=2.0),
    "grokfast_ma": dict(grokfast="ma", grokfast_window=3, grokfast_lamb=5.0),
    "stablemax": dict(loss="stablemax"),
    "orthoadamw": dict(optimizer="orthoadamw"),
    "muon": dict(optimizer="muon", muon_lr=0.02, momentum=0.95),
    "cosine_decay": dict(lr_decay_steps=8),
}


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Equal within float32 round-off, relative to the larger tensor's scale."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-12)
    return (a - b).abs().max().item() <= rtol * scale


# --- Grokfast: the filter against its formula and Lee et al.'s reference semantics -------------------------
def grad_sequence(steps: int, shapes=((3, 4), (5,))) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)]


def filtered(cfg: Config, sequence: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Feed each step's gradients through a GradFilter; return what the optimiser would see."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in sequence[0]]
    grad_filter = GradFilter(cfg, params)
    out = []
    for grads in sequence:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        grad_filter.apply()
        out.append([p.grad.clone() for p in params])
    return out


def reference_ema(sequence, alpha, lamb):
    """Lee et al.'s gradfilter_ema, restated: the running memory starts as the first gradient,
    is then mixed with every gradient (the first one included), and lamb times it is added."""
    grads, out = None, []
    for step in sequence:
        if grads is None:
            grads = [g.clone() for g in step]
        grads = [m * alpha + g * (1 - alpha) for m, g in zip(grads, step)]
        out.append([g + m * lamb for g, m in zip(step, grads)])
    return out


def reference_ma(sequence, window, lamb):
    """Lee et al.'s gradfilter_ma (mean filter, warm-up on): a deque of the raw gradients;
    nothing is added until it holds ``window`` of them."""
    queues = [deque(maxlen=window) for _ in sequence[0]]
    out = []
    for step in sequence:
        row = []
        for q, g in zip(queues, step):
            q.append(g.clone())
            row.append(g + sum(q) / len(q) * lamb if len(q) == window else g.clone())
        out.append(row)
    return out


@pytest.mark.parametrize("alpha,lamb", [(0.98, 2.0), (0.5, 0.3), (0.0, 1.0)])
def test_grokfast_ema_filter_equals_its_formula_and_the_reference(alpha, lamb):
    sequence = grad_sequence(7)
    ours = filtered(Config(grokfast="ema", grokfast_alpha=alpha, grokfast_lamb=lamb), sequence)
    ema = None
    for t, grads in enumerate(sequence):
        ema = [g.clone() for g in grads] if t == 0 else [alpha * e + (1 - alpha) * g for e, g in zip(ema, grads)]
        for o, g, e in zip(ours[t], grads, ema):
            assert torch.allclose(o, g + lamb * e, rtol=1e-12, atol=1e-12), t
    for t, (o_row, r_row) in enumerate(zip(ours, reference_ema(sequence, alpha, lamb))):
        for o, r in zip(o_row, r_row):
            assert torch.allclose(o, r, rtol=1e-12, atol=1e-12), t
    assert torch.allclose(ours[0][0], (1 + lamb) * sequence[0][0])  # ema_0 = g_0: step 0 is scaled by 1 + lamb


@pytest.mark.parametrize("window,lamb", [(3, 5.0), (1, 2.0), (4, 0.5)])
def test_grokfast_ma_filter_equals_its_formula_and_the_reference(window, lamb):
    sequence = grad_sequence(9)
    ours = filtered(Config(grokfast="ma", grokfast_window=window, grokfast_lamb=lamb), sequence)
    for t, grads in enumerate(sequence):
        for i, (o, g) in enumerate(zip(ours[t], grads)):
            if t < window - 1:
                assert torch.equal(o, g), (t, "no amplification until the window is full")
            else:
                mean = torch.stack([sequence[s][i] for s in range(t - window + 1, t + 1)]).mean(0)
                assert torch.allclose(o, g + lamb * mean, rtol=1e-12, atol=1e-12), t
    for t, (o_row, r_row) in enumerate(zip(ours, reference_ma(sequence, window, lamb))):
        for o, r in zip(o_row, r_row):
            assert torch.allclose(o, r, rtol=1e-12, atol=1e-12), t


def test_grokfast_with_zero_amplification_is_the_plain_run():
    base = tiny_config(p=11, epochs=8, eval_every=1, lr=1e-2)
    plain = Trainer(base, None, progress=False)
    plain.run()
    for kind in ("ema", "ma"):
        trainer = Trainer(base.replace(grokfast=kind, grokfast_lamb=0.0, grokfast_window=2), None, progress=False)
        trainer.run()
        assert [r["train_loss"] for r in trainer.records] == [r["train_loss"] for r in plain.records], kind


# --- StableMax ---------------------------------------------------------------------------------------------
def stablemax_by_hand(x: torch.Tensor) -> torch.Tensor:
    rows = []
    for row in x.tolist():
        s = [v + 1 if v >= 0 else 1 / (1 - v) for v in row]
        rows.append([v / sum(s) for v in s])
    return torch.tensor(rows, dtype=torch.float64)


def test_stablemax_probabilities_equal_their_formula_and_sum_to_one():
    logits = torch.cat([torch.randn(6, 7) * 3, torch.tensor([[0.0, -0.0, 1e-7, -1e-7, 50.0, -50.0, 1e4]])])
    probs = stablemax_probabilities(logits)
    assert probs.dtype == torch.float64
    assert torch.allclose(probs, stablemax_by_hand(logits.double()), rtol=1e-12, atol=0)
    assert torch.allclose(probs.sum(-1), torch.ones(len(logits), dtype=torch.float64), rtol=0, atol=1e-12)
    assert (probs > 0).all()
    # s is continuous at 0 with slope 1 on both sides, and ordering-preserving.
    assert torch.allclose(stablemax_probabilities(torch.tensor([[1e-9, -1e-9]])), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    assert (probs[:-1].argsort(-1) == logits[:-1].argsort(-1)).all()


def test_stablemax_loss_is_minus_log_of_its_probabilities():
    torch.manual_seed(0)
    logits, labels = torch.randn(9, 11) * 4, torch.randint(0, 11, (9,))
    expected = -torch.log(stablemax_by_hand(logits.double())[torch.arange(9), labels])
    assert torch.allclose(stablemax_cross_entropy(logits, labels), expected.mean(), rtol=1e-12)
    assert torch.allclose(per_example_loss(Config(loss="stablemax"), logits, labels), expected, rtol=1e-12)
    assert not torch.allclose(stablemax_cross_entropy(logits, labels), F.cross_entropy(logits.double(), labels))
    # Unlike softmax, a huge logit does not drive the loss (or its gradient) to exactly zero.
    big = torch.tensor([[1e6, 0.0, -3.0]], requires_grad=True)
    loss = stablemax_cross_entropy(big, torch.tensor([0]))
    loss.backward()
    assert loss.item() > 0 and big.grad.abs().sum().item() > 0


def test_the_float64_loss_returns_the_seed_gradient_with_subnormal_entries_flushed_to_zero():
    # Confident rows: the wrong classes' probabilities over N (e^-88 / 3 and below) are subnormal
    # in float32, or zero; one row is not confident at all.
    logits = torch.tensor([[0.0, -90.0, -95.0, -200.0], [1.0, 2.0, 3.0, 4.0], [-100.0, 0.0, -88.0, -1.0]])
    labels = torch.tensor([0, 3, 1])
    ours, seeds = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = cross_entropy_float64(ours, labels)
    loss.backward()
    F.cross_entropy(seeds.to(torch.float64), labels).backward()  # the seed's loss, as written there
    assert loss.dtype == torch.float64 and ours.grad.dtype == torch.float32
    tiny = torch.finfo(torch.float32).tiny
    subnormal = (seeds.grad != 0) & (seeds.grad.abs() < tiny)
    assert subnormal.sum().item() >= 4  # the case is real: the plain cast leaves subnormal numbers
    assert (ours.grad[subnormal] == 0).all()
    assert torch.equal(ours.grad[~subnormal], seeds.grad[~subnormal])
    # and by hand, in float64: (softmax - one-hot) / N
    by_hand = (torch.softmax(logits.double(), -1) - F.one_hot(labels, 4).double()) / 3
    assert torch.allclose(ours.grad.double(), torch.where(by_hand.abs() > tiny, by_hand, 0.0), rtol=1e-6, atol=0)
    assert torch.equal(loss, F.cross_entropy(logits.double(), labels))


def test_the_float64_cross_entropy_is_torch_s_per_example_and_through_any_upstream_gradient():
    # The stacked batch's objective weighs each example by its run's mask / n_train: the
    # gradient must be right for any upstream gradient, not only the mean's 1/N.
    torch.manual_seed(0)
    logits = torch.randn(257, 114) * 8
    logits[0] = torch.linspace(-1e4, 1e4, 114)  # a row that needs the shift by its maximum
    labels = torch.randint(0, 113, (257,))
    weights = torch.rand(257, dtype=torch.float64)
    ours, torchs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = float64_cross_entropy_per_example(ours, labels)
    expected = F.cross_entropy(torchs.to(torch.float64), labels, reduction="none")
    assert loss.dtype == torch.float64 and loss.shape == (257,)
    assert torch.allclose(loss, expected, rtol=1e-13, atol=1e-13)
    (loss * weights).sum().backward()
    (expected * weights).sum().backward()
    assert ours.grad.dtype == torch.float32
    # the same float64 gradient, rounded once to float32: equal, or one float32 step apart
    step = torch.finfo(torch.float32).eps * torchs.grad.abs()
    assert ((ours.grad - torchs.grad).abs() <= step).all()
    assert (ours.grad != 0).sum() > 257 * 100  # a real comparison, not of zeros


def test_the_float64_cross_entropy_leaves_float64_logits_alone_and_keeps_the_labels_shape():
    torch.manual_seed(1)
    logits = torch.randn(5, 3, 7, dtype=torch.float64, requires_grad=True)  # a sequence task: [N, L, C]
    before = logits.detach().clone()
    labels = torch.randint(0, 7, (5, 3))
    loss = float64_cross_entropy_per_example(logits, labels)
    assert loss.shape == (5, 3)
    assert torch.equal(logits.detach(), before)  # not shifted or exponentiated in place
    loss.sum().backward()
    by_hand = torch.softmax(before, -1) - F.one_hot(labels, 7).double()
    assert logits.grad.dtype == torch.float64
    assert torch.allclose(logits.grad, by_hand, rtol=1e-12, atol=1e-15)
    assert torch.allclose(cross_entropy_float64(logits, labels),
                          F.cross_entropy(before.flatten(0, 1), labels.flatten()), rtol=1e-14)
    # The backward reuses its saved exponentials in place: a second pass must refuse, not misread them.
    again = cross_entropy_float64(logits, labels)
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        again.backward()


# --- ⊥Grad ---------------------------------------------------------------------------------------------------
def test_orthogonalized_gradient_is_orthogonal_to_the_weight_with_the_original_norm():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in ((4, 6), (7,), (2, 3, 5))]
    raw = []
    for p in params:
        p.grad = torch.randn_like(p) + 0.7 * p.detach()  # a strong radial component to remove
        raw.append(p.grad.clone())
    none_grad = torch.nn.Parameter(torch.randn(3))  # no gradient: left alone
    orthogonalize_gradients([*params, none_grad])
    assert none_grad.grad is None
    for p, g in zip(params, raw):
        w, g_new = p.detach().flatten(), p.grad.flatten()
        assert abs(torch.dot(w, g_new).item()) < 1e-5 * w.norm().item() * g_new.norm().item()
        assert abs(g_new.norm().item() - g.norm().item()) < 1e-5 * g.norm().item()
        projected = g.flatten() - torch.dot(w, g.flatten()) / torch.dot(w, w) * w  # same direction
        assert close(g_new / g_new.norm(), projected / projected.norm())


# --- Muon ------------------------------------------------------------------------------------------------------
NS_BAND = (0.65, 1.25)  # the quintic (3.4445, -4.7750, 2.0315) after 5 steps: measured 0.68..1.21


@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 64), (128, 32)])
def test_newton_schulz_is_close_to_u_vt(shape):
    m, n = shape
    k = min(m, n)
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    S = torch.logspace(-1, 1, k)  # condition number 100: every direction reaches the band in 5 steps
    X = newton_schulz(U @ torch.diag(S) @ V.T)
    assert X.shape == shape
    M = U.T @ X @ V  # diagonal: the iteration is an odd polynomial of G, same singular vectors
    d = M.diagonal()
    assert (M - torch.diag(d)).abs().max().item() < 1e-4
    assert NS_BAND[0] <= d.min().item() and d.max().item() <= NS_BAND[1], (d.min(), d.max())
    assert torch.linalg.matrix_norm(X - U @ V.T, ord=2).item() < 0.35  # U V^T up to the band
    # Insensitive to the gradient's scale.
    assert close(newton_schulz(1e-4 * U @ torch.diag(S) @ V.T), X, rtol=1e-3)


# --- each method inside the trainer: record what the optimiser is given ----------------------------------------
class StepRecorder:
    """Per optimiser step: the raw gradients (after backward), the gradients the optimiser
    steps on, and the weights before and after the step."""

    def __init__(self, trainer: Trainer):
        self.params = trainer.params
        self.raw, self.stepped, self.before, self.after = [], [], [], []
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._on_grad)
        self._pending: dict[int, torch.Tensor] = {}
        trainer.optimizer.register_step_pre_hook(self._pre)
        trainer.optimizer.register_step_post_hook(self._post)

    def _on_grad(self, p):
        self._pending[id(p)] = p.grad.detach().clone()

    def _pre(self, opt, args, kwargs):
        self.raw.append([self._pending[id(p)] for p in self.params])
        self.stepped.append([p.grad.detach().clone() for p in self.params])
        self.before.append([p.detach().clone() for p in self.params])

    def _post(self, opt, args, kwargs):
        self.after.append([p.detach().clone() for p in self.params])


def recorded_run(steps: int = 6, **changes) -> tuple[Trainer, StepRecorder]:
    cfg = tiny_config(p=17, epochs=steps, eval_every=1, warmup_steps=0, lr=1e-2, **changes)
    trainer = Trainer(cfg, None, progress=False)
    recorder = StepRecorder(trainer)
    trainer.run()
    assert len(recorder.raw) == steps
    return trainer, recorder


def test_learning_rate_follows_the_warm_up_times_the_cosine_decay_then_stays_at_zero():
    lr, warmup, decay, steps = 1e-2, 3, 7, 10

    def expected(t: int) -> float:  # written out here, not through grokking.methods.lr_factor
        return lr * min(t / warmup, 1) * (1 + math.cos(math.pi * min(t, decay) / decay)) / 2

    cfg = tiny_config(p=17, epochs=steps, eval_every=1, warmup_steps=warmup, lr=lr, lr_decay_steps=decay)
    trainer = Trainer(cfg, None, progress=False)
    rec = StepRecorder(trainer)
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    trainer.run()
    assert seen == pytest.approx([expected(t) for t in range(steps)], rel=1e-12, abs=0.0)
    assert expected(1) < lr and 0 < expected(decay - 1) < expected(warmup) and expected(decay) == 0.0
    # The records carry the rate of the next step, and at lr 0 AdamW's decoupled weight decay stops too.
    assert [r["lr"] for r in trainer.records[1:]] == pytest.approx(
        [expected(t) for t in range(1, steps + 1)], rel=1e-12, abs=0.0)
    for before, after in zip(rec.before[decay:], rec.after[decay:]):
        assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not all(torch.equal(a, b) for a, b in zip(rec.before[decay - 1], rec.after[decay - 1]))


def test_trainer_applies_grokfast_ema_to_every_gradient():
    alpha, lamb = 0.9, 2.0
    _, rec = recorded_run(grokfast="ema", grokfast_alpha=alpha, grokfast_lamb=lamb)
    ema = None
    for t in range(len(rec.raw)):
        ema = rec.raw[t] if ema is None else [alpha * e + (1 - alpha) * g for e, g in zip(ema, rec.raw[t])]
        for g, e, s in zip(rec.raw[t], ema, rec.stepped[t]):
            assert close(s, g + lamb * e), t


def test_trainer_applies_grokfast_ma_once_the_window_is_full():
    window, lamb = 3, 5.0
    _, rec = recorded_run(grokfast="ma", grokfast_window=window, grokfast_lamb=lamb)
    for t in range(len(rec.raw)):
        for i, (g, s) in enumerate(zip(rec.raw[t], rec.stepped[t])):
            if t < window - 1:
                assert torch.equal(s, g), t
            else:
                mean = torch.stack([rec.raw[u][i] for u in range(t - window + 1, t + 1)]).mean(0)
                assert close(s, g + lamb * mean), t


def test_trainer_steps_orthoadamw_on_orthogonalised_gradients():
    trainer, rec = recorded_run(optimizer="orthoadamw")
    for t in range(len(rec.raw)):
        for g, s, w in zip(rec.raw[t], rec.stepped[t], rec.before[t]):
            w, s, g = w.flatten(), s.flatten(), g.flatten()
            if not w.any():  # a zero weight (the biases at step 0) has no direction to remove
                assert torch.equal(s, g)
                continue
            assert abs(torch.dot(w, s).item()) < 1e-5 * w.norm().item() * s.norm().item(), t
            assert abs(s.norm().item() - g.norm().item()) < 1e-5 * g.norm().item(), t
    # ... and the step itself is plain AdamW on those gradients.
    shadow = [torch.nn.Parameter(w.clone()) for w in rec.before[0]]
    cfg = trainer.cfg
    adamw = torch.optim.AdamW(shadow, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    for t in range(len(rec.raw)):
        for p, s in zip(shadow, rec.stepped[t]):
            p.grad = s.clone()
        adamw.step()
        for p, w in zip(shadow, rec.after[t]):
            assert close(p.detach(), w), t


def test_trainer_optimises_the_stablemax_loss():
    cfg = tiny_config(p=17, epochs=1, eval_every=1, warmup_steps=0, lr=1e-2, loss="stablemax")
    trainer = Trainer(cfg, None, progress=False)
    recorder = StepRecorder(trainer)
    model0 = Trainer(cfg, None, progress=False).model  # the same initial weights
    trainer.run()
    tokens, labels = trainer.train_tokens, trainer.train_labels
    from grokking.fast import last_position_logits

    logits = last_position_logits(model0, tokens)
    by_hand = stablemax_by_hand(logits.detach().double())
    expected_loss = -torch.log(by_hand[torch.arange(len(labels)), labels]).mean()
    assert abs(trainer.records[0]["train_loss"] - expected_loss.item()) < 1e-9 * expected_loss.item()
    grads = torch.autograd.grad(stablemax_cross_entropy(logits, labels), list(model0.parameters()))
    for g, raw in zip(grads, recorder.raw[0]):
        assert close(g, raw, rtol=1e-4)
    ce = F.cross_entropy(logits.double(), labels)
    assert abs(ce.item() - expected_loss.item()) > 1e-3  # a different loss from the seed's


def test_trainer_steps_muon_on_hidden_matrices_and_adamw_on_the_rest():
    momentum, muon_lr = 0.95, 0.02
    trainer, rec = recorded_run(optimizer="muon", muon_lr=muon_lr, momentum=momentum)
    cfg, names = trainer.cfg, [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    hidden = [is_hidden_matrix(n, p) for n, p in zip(names, trainer.params)]
    assert sum(hidden) == 6 and [n for n, h in zip(names, hidden) if h] == [
        "blocks.0.attn.W_K", "blocks.0.attn.W_Q", "blocks.0.attn.W_V", "blocks.0.attn.W_O",
        "blocks.0.mlp.W_in", "blocks.0.mlp.W_out"]
    buffers = [None] * len(names)
    shadow = [torch.nn.Parameter(w.clone()) for w, h in zip(rec.before[0], hidden) if not h]
    adamw = torch.optim.AdamW(shadow, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    for t in range(len(rec.raw)):
        assert all(torch.equal(g, s) for g, s in zip(rec.raw[t], rec.stepped[t]))  # no gradient filter
        j = 0
        for i, is_hidden in enumerate(hidden):
            w0, w1, g = rec.before[t][i], rec.after[t][i], rec.raw[t][i]
            if is_hidden:
                # Nesterov momentum, then the orthogonalised update, scaled by sqrt(max(1, rows/cols)).
                buffers[i] = g.clone() if buffers[i] is None else momentum * buffers[i] + g
                update = g + momentum * buffers[i]
                matrix = update.reshape(-1, update.shape[-1]) if update.ndim == 3 else update
                expected = newton_schulz(matrix) * max(1.0, matrix.shape[0] / matrix.shape[1]) ** 0.5
                step = (w0 * (1 - muon_lr * cfg.weight_decay) - w1) / muon_lr  # = the orthogonalised update
                assert close(step.reshape(matrix.shape), expected, rtol=1e-4), (t, names[i])
                # Every direction the update has (some gradients here are of low rank: the query is the
                # constant '=' token) gets a singular value in the band.
                U, S, Vh = torch.linalg.svd(matrix.double(), full_matrices=False)
                kept = S > 1e-2 * S[0]
                scale = max(1.0, matrix.shape[0] / matrix.shape[1]) ** 0.5
                sv = (U.T @ step.reshape(matrix.shape).double() @ Vh.T).diagonal()[kept] / scale
                assert NS_BAND[0] <= sv.min().item() and sv.max().item() <= NS_BAND[1], (t, names[i], sv)
            else:
                shadow[j].grad = g.clone()
                j += 1
        adamw.step()
        for p, w in zip(shadow, [w for w, h in zip(rec.after[t], hidden) if not h]):
            assert close(p.detach(), w, rtol=1e-5), t


def test_muon_adamw_groups_use_their_own_learning_rates():
    cfg = tiny_config(optimizer="muon", lr=3e-3, muon_lr=0.05, weight_decay=0.5)
    from grokking.model import Transformer

    opt = build_optimizer(cfg, Transformer(cfg))
    assert isinstance(opt, MuonAdamW)
    muon_group, adam_group = opt.param_groups
    assert muon_group["muon"] and muon_group["lr"] == muon_group["initial_lr"] == 0.05
    assert not adam_group["muon"] and adam_group["lr"] == 3e-3
    assert muon_group["weight_decay"] == adam_group["weight_decay"] == 0.5
    assert muon_group["momentum"] == cfg.momentum


# --- fast path and hooked path agree under every method ---------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_fast_and_hooked_paths_agree_under_each_method(method):
    cfg = tiny_config(p=23, epochs=10, eval_every=1, lr=1e-2, warmup_steps=2, **METHODS[method])
    runs = {}
    for fast in (True, False):
        trainer = Trainer(cfg.replace(fast=fast), None, progress=False)
        trainer.run()
        assert (trainer.fast_reason is None) == fast
        runs[fast] = trainer.records
    assert len(runs[True]) == 11
    for fast_record, hooked_record in zip(runs[True], runs[False]):
        for key in ("train_loss", "test_loss"):
            a, b = fast_record[key], hooked_record[key]
            assert abs(a - b) <= 1e-4 * abs(b), (method, fast_record["epoch"], key, a, b)
    # Training moved: the comparison is not between two untouched initialisations.
    assert runs[True][-1]["train_loss"] < 0.97 * runs[True][0]["train_loss"]


# --- resume ------------------------------------------------------------------------------------------------------------
class CrashAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_eval(self, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt  # stands in for a kill right after an evaluation

    def close(self):
        pass


@pytest.mark.parametrize("method", [m for m in METHODS if m != "adamw"])
def test_resume_continues_each_method_exactly(tmp_path, method):
    cfg = tiny_config(p=13, epochs=12, eval_every=2, checkpoint_every=6, **METHODS[method])
    train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, run, progress=False, callbacks=[CrashAt(10)]).run()
    trainer = Trainer.resume(run, progress=False)
    assert trainer.epoch == 6
    if cfg.grokfast != "none":  # the filter's memory came back too
        assert trainer.grad_filter.buffers and trainer.grad_filter.count == (6 if cfg.grokfast == "ma" else 0)
    trainer.run()
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert strip(read_metrics(run)) == strip(read_metrics(tmp_path / "ref"))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# --- the comparison's grouped summary (grokking.sweep.write_summary) ------------------------------------------
def test_sweep_summary_groups_seeds_and_counts_unreached_runs(tmp_path):
    from grokking.sweep import RESULT_COLUMNS, read_results, summarize_groups, write_results, write_summary

    def row(seed, lr, epoch99, seconds, status="stopped_early"):
        cfg = Config(seed=seed, lr=lr)
        return {**{c: None for c in RESULT_COLUMNS}, **cfg.to_dict(), "name": f"lr={lr}_seed={seed}",
                "status": status, "epoch_test_acc_99": epoch99, "epochs_run": epoch99 or 1500,
                "seconds": seconds, "run_dir": f"runs/none_{seed}_{lr}"}

    write_results(tmp_path, [row(0, 1e-2, 600, 30.0), row(1, 1e-2, 700, 40.0), row(2, 1e-2, None, 75.0, "completed"),
                             row(0, 1e-3, None, 80.0, "completed"), row(1, 1e-3, None, None, "pending")])
    fields, groups = summarize_groups(read_results(tmp_path), tmp_path)
    assert fields == ["lr"] and [g["lr"] for g in groups] == [1e-2, 1e-3]
    tuned, seed = groups
    assert (tuned["n_runs"], tuned["n_reached"], tuned["n_unfinished"]) == (3, 2, 0)
    assert tuned["epochs_mean"] == 650 and abs(tuned["epochs_std"] - 70.71067811865476) < 1e-9
    assert (tuned["epochs_min"], tuned["epochs_max"], tuned["seconds_mean"]) == (600, 700, 35.0)
    assert tuned["budget_epochs"] == 1500 and tuned["epochs_per_seed"] == "600 700 -"
    assert (seed["n_runs"], seed["n_reached"], seed["n_unfinished"], seed["epochs_mean"]) == (2, 0, 1, None)
    written = write_summary(tmp_path)
    assert [p.name for p in written] == ["summary.csv", "summary.md", "summary.png"]
    table = (tmp_path / "summary.md").read_text()
    assert "| 0.01 | 2/3 | 650 ± 71 | 600–700 | 35.0 ± 7.1 | 30.0–40.0 |" in table
    assert "| 0.001 | 0/2 (1 unfinished) | – |" in table
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_comparison_tabulates_recipes_run_on_every_task(tmp_path):
    from grokking.sweep import RESULT_COLUMNS, write_results, write_summary

    def row(op, seed, lr, epoch99, train99, seconds):
        cfg = Config(op=op, seed=seed, lr=lr)
        return {**{c: None for c in RESULT_COLUMNS}, **cfg.to_dict(), "name": f"{op}_{lr}_{seed}",
                "status": "stopped_early" if epoch99 else "completed", "epoch_test_acc_99": epoch99,
                "epoch_train_acc_99": train99, "epochs_run": epoch99 or 1500, "seconds": seconds,
                "run_dir": f"runs/none_{op}_{seed}_{lr}"}

    write_results(tmp_path, [
        row("add", 0, 1e-2, 600, 60, 30.0), row("add", 1, 1e-2, 700, 80, 40.0),
        row("divide", 0, 1e-2, 300, 100, 20.0), row("divide", 1, 1e-2, None, 120, 90.0),
        row("add", 0, 1e-3, None, 140, 80.0), row("add", 1, 1e-3, None, 150, 80.0),
        row("divide", 0, 1e-3, None, 150, 80.0), row("divide", 1, 1e-3, None, 150, 80.0),
        row("add", 0, 5e-2, None, None, 80.0),  # a knob tried on one task only: not in the comparison
    ])
    written = write_summary(tmp_path)
    assert [p.name for p in written] == ["summary.csv", "summary.md", "summary.png", "comparison.md", "comparison.png"]
    epochs, train, seconds = (tmp_path / "comparison.md").read_text().split("\n\n")
    assert "| recipe | add | divide |" in epochs
    assert "| lr=0.01 | 650 ± 71 (2/2) | 300 (1/2) |" in epochs
    assert "| defaults | – (0/2) | – (0/2) |" in epochs and "0.05" not in epochs
    assert "| lr=0.01 | 70 ± 14 | 100 |" in train
    assert "| lr=0.01 | 35.0 ± 7.1 | 20.0 |" in seconds
    assert written[4].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _adamw_params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7)), torch.nn.Parameter(torch.randn(2))]


def test_fused_adamw_is_torch_fused_adamw_bit_for_bit_and_shares_its_state_dict():
    theirs, ours = _adamw_params(), _adamw_params()
    recipe = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)
    reference = torch.optim.AdamW(theirs, fused=True, **recipe)
    optimizer = FusedAdamW(ours, **recipe)
    for step in range(25):
        grads = [torch.randn_like(p, generator=torch.Generator().manual_seed(step * 3 + i)) for i, p in enumerate(theirs)]
        for params in (theirs, ours):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            params[2].grad = None  # a parameter without a gradient is skipped, its state never made
        reference.step()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    expected, got = reference.state_dict(), optimizer.state_dict()
    assert got["param_groups"] == expected["param_groups"] and sorted(got["state"]) == sorted(expected["state"]) == [0, 1]
    assert all(torch.equal(expected["state"][i][k], got["state"][i][k]) for i in (0, 1) for k in expected["state"][i])

    # torch's state, its groups through JSON as a checkpoint stores them, continues here identically, and ours there.
    resumed = FusedAdamW(_adamw_params(), lr=0.5, betas=(0.1, 0.2), eps=1.0, weight_decay=0.0)
    resumed.load_state_dict({"state": expected["state"], "param_groups": json.loads(json.dumps(expected["param_groups"]))})
    back = torch.optim.AdamW(_adamw_params(), fused=True, lr=0.5)
    back.load_state_dict(got)
    for opt, params in ((resumed, resumed.param_groups[0]["params"]), (back, back.param_groups[0]["params"])):
        with torch.no_grad():
            for p, q in zip(params, theirs):
                p.copy_(q)
        for i, p in enumerate(params):
            p.grad = torch.ones_like(p) * (i + 1)
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(resumed.param_groups[0]["params"], back.param_groups[0]["params"]))
    with pytest.raises(ValueError, match="2 parameters saved, 3 here"):
        FusedAdamW(_adamw_params(), **recipe).load_state_dict(
            {"state": {}, "param_groups": [{**expected["param_groups"][0], "params": [0, 1]}]})


def test_a_training_run_builds_no_torch_optimizer_and_so_never_imports_dynamo(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from grokking.config import Config; from grokking.train import Trainer; "
            "t = Trainer(Config(p=13, frac=0.5, epochs=2, d_model=16, d_mlp=32, n_heads=2, d_head=8), None, progress=False); "
            "t.group.train_epoch(); print(type(t.optimizer).__name__, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["FusedAdamW", "False"]
