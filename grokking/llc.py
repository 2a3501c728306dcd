"""The local learning coefficient (LLC) of a model, estimated with devinterp's SGLD sampler.

The LLC ``lambda-hat`` (Lau et al. 2023) measures how much of the parameter space around a
trained weight ``w*`` the loss depends on: SGLD chains sample the localised tempered posterior
``exp(-n beta L_n(w) - gamma / 2 |w - w*|^2)`` and ``lambda-hat = n beta (E[L_n(w)] - L_n(w*))``.
Over a grokking run it rises while the network memorises and falls as the memorising weights
are cleaned up (developmental-interpretability studies of modular arithmetic; see
docs/analysis.md). Here it is one more progress measure, computed by ``devinterp`` (the
optional extra ``llc``: ``pip install 'devinterp>=2.0'``) on the run's training pairs with the
run's loss (float64 cross-entropy over every logit at the ``=`` position).

devinterp 2.x samples sequences: a training pair is the sequence ``[a * n + b, c]`` (one next-
token prediction), and :func:`_pair_loss` turns it back into the model's input ``a b =``.
Everything is seeded (``LLCSettings.seed``: chain ``i`` uses ``seed + i``): the same settings
give the same numbers, and the caller's torch, numpy and ``random`` generators are left as
they were. The default settings (:data:`DEFAULT_SETTINGS`) were chosen with devinterp's
diagnostics on the canonical run; docs/analysis.md has the calibration.
"""
from __future__ import annotations

import contextlib
import importlib.util
import random
import tempfile
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch

from .data import Dataset
from .factory import Model
from .fast import exact_logits_fn
from .methods import cross_entropy_float64, float64_cross_entropy_per_example


@dataclass(frozen=True)
class LLCSettings:
    """SGLD settings: step size ``lr`` (epsilon), inverse temperature ``n_beta`` (None:
    ``n / log n`` for ``n`` training pairs, the choice of Lau et al.: beta = 1 / log n),
    ``localization`` (gamma), chains, draws per chain (one SGLD step each, after the burn-in
    steps), mini-batch size, seed."""

    lr: float = 3e-5
    n_beta: float | None = None
    localization: float = 1000.0
    num_chains: int = 2
    num_draws: int = 100
    num_burnin_steps: int = 100
    batch_size: int = 256
    seed: int = 0

    def with_changes(self, **changes: Any) -> "LLCSettings":
        return replace(self, **changes)

    def resolved_n_beta(self, n: int) -> float:
        return float(self.n_beta) if self.n_beta is not None else float(n / np.log(n))

    def to_json(self, n: int) -> dict[str, Any]:
        return {**asdict(self), "n_beta": self.resolved_n_beta(n), "n_beta_rule": "n / log n" if self.n_beta is None
                else "given"}


DEFAULT_SETTINGS = LLCSettings()


def unavailable_reason() -> str | None:
    """None if devinterp can be imported; else a one-line note saying how to get it."""
    if importlib.util.find_spec("devinterp") is None:
        return "LLC skipped: devinterp is not installed (pip install 'devinterp>=2.0', the 'llc' extra)"
    return None


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """devinterp seeds torch, numpy and random globally; give the caller its generators back."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextlib.contextmanager
def _quiet_chains() -> Iterator[None]:
    """Two of devinterp's per-chain habits, switched off while it samples: a tqdm bar per chain
    (an analysis of 16 snapshots should not print 32), and ``gc.collect()`` before and after each
    chain to free GPU memory (on CPU it frees nothing, and in a large process each call took
    0.6 s here: 4 of 8 seconds per snapshot of a tiny model)."""
    from devinterp.slt import sampler  # optional extra

    originals = {name: getattr(sampler, name) for name in ("trange", "_gc_and_empty_cache") if hasattr(sampler, name)}

    def silent(*args: Any, **kwargs: Any) -> Any:
        return originals["trange"](*args, **{**kwargs, "disable": True})

    if "trange" in originals:
        sampler.trange = silent
    if "_gc_and_empty_cache" in originals and not torch.cuda.is_available():
        sampler._gc_and_empty_cache = lambda: None
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(sampler, name, value)


def pair_sequences(dataset: Dataset, split: str = "train") -> list[dict[str, torch.Tensor]]:
    """The split's pairs as devinterp's sampler reads a data set (a sequence of
    ``{"input_ids": tensor}``, as a HuggingFace ``Dataset`` in torch format gives them), with
    ``input_ids = [a * n + b, c]``."""
    tokens, labels = dataset.split(split)
    ids = torch.stack([tokens[:, 0] * dataset.n + tokens[:, 1], labels], dim=1).cpu()
    return [{"input_ids": row} for row in ids]


class _Plain(torch.nn.Module):
    """The model under a name devinterp does not mistake for TransformerLens (it checks ``cfg.n_heads``)."""

    def __init__(self, model: Model):
        super().__init__()
        self.inner = model
        self.logits_fn = exact_logits_fn(model.cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-position logits of ``a b =`` (the exact fast path where the model allows it; an
        MLP's own logits)."""
        return self.logits_fn(self.inner, tokens)


def _pair_loss(n: int, eq_token: int) -> Any:
    """devinterp's per-token loss ``(model, input_ids [B, 2]) -> [B, 1]``: the model's float64
    cross-entropy of the answer ``c`` given ``a b =``."""
    def loss(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        pair, answer = input_ids[:, 0], input_ids[:, 1]
        tokens = torch.stack([pair // n, pair % n, torch.full_like(pair, eq_token)], dim=1)
        logits = model(tokens)
        if not torch.isfinite(logits).all():
            from devinterp.slt.lm_loss import NonFiniteLogitsError  # optional extra

            raise NonFiniteLogitsError("non-finite logits")
        return float64_cross_entropy_per_example(logits, answer)[:, None]

    return loss


def estimate_llc(model: Model, dataset: Dataset, settings: LLCSettings = DEFAULT_SETTINGS,
                 save_metrics: bool = False) -> dict[str, Any]:
    """The LLC of ``model`` on the training pairs of ``dataset``, from devinterp's ``sample``:
    per chain ``n_beta * (mean mini-batch loss over the draws - init loss)``, the burn-in steps
    left out as in Lau et al. (devinterp 2's own ``compute_llc`` averages every step, burn-in
    included: ``llc_devinterp``, kept for comparison).

    Returns ``llc`` (mean over chains), ``llc_std`` (over chains), ``llc_per_chain``,
    ``llc_devinterp``, ``init_loss``, ``loss_trace`` (``[chain][step]`` mean mini-batch loss,
    burn-in included: the trace to check), the settings, and with ``save_metrics`` devinterp's
    per-step SGLD norms (``metrics``: gradient, noise, localisation and distance from the start,
    ``[chain][step]``).
    Raises ImportError without devinterp (see :func:`unavailable_reason`).
    """
    from devinterp.slt.llc import compute_llc  # optional extra
    from devinterp.slt.sampling import sample

    train = pair_sequences(dataset)
    with _rng_preserved(), _quiet_chains(), tempfile.TemporaryDirectory(prefix="grokking_llc_") as tmp:
        n_beta = settings.resolved_n_beta(len(train))
        tree = sample(_Plain(model), train, {}, lr=settings.lr, n_beta=n_beta,
                      localization=settings.localization, num_chains=settings.num_chains,
                      num_draws=settings.num_draws, num_burnin_steps=settings.num_burnin_steps,
                      batch_size=min(settings.batch_size, len(train)), init_seed=settings.seed,
                      num_init_loss_batches=max(1, len(train) // settings.batch_size), device="cpu",
                      save_metrics=save_metrics, output_path=f"{tmp}/samples.zarr",
                      loss_fn=_pair_loss(dataset.n, dataset.eq_token))
        result = compute_llc(tree)
        trace = result["loss_trace"].values.astype(float)  # [chain, step], burn-in first
        init = float(result["init_loss"])
        per_chain = n_beta * (trace[:, settings.num_burnin_steps:].mean(axis=1) - init)
        out: dict[str, Any] = {
            "llc": float(per_chain.mean()), "llc_std": float(per_chain.std()),
            "llc_per_chain": per_chain.tolist(), "llc_devinterp": float(result["llc_mean"]), "init_loss": init,
            "loss_trace": trace.tolist(), "settings": settings.to_json(len(train)),
        }
        if save_metrics:
            ds = tree.dataset
            out["metrics"] = {name[len("metrics_"):]: ds[name].values.astype(float).tolist()
                              for name in ds.data_vars if name.startswith("metrics_")}
        tree.close()
    return out


def mala_acceptance(model: Model, dataset: Dataset, settings: LLCSettings = DEFAULT_SETTINGS,
                    steps: int = 20, burn_in: int | None = None) -> dict[str, float]:
    """The Metropolis-adjusted Langevin acceptance probability of the SGLD proposal (devinterp
    1.x's ``MalaAcceptanceRate`` diagnostic, which 2.x dropped): ``steps`` proposals of the
    same update devinterp's SGLD makes, ``w' = w - eps/2 grad U(w) + sqrt(eps) xi`` with
    ``U = n_beta L_n(w) + gamma/2 |w - w*|^2`` and ``L_n`` the full-batch training loss, each
    accepted (the chain moves on, as SGLD does) and scored by
    ``min(1, exp(U(w) - U(w') + log q(w | w') - log q(w' | w)))``, after ``burn_in`` unscored
    steps (default the settings' burn-in, at least 100: from the start ``w*`` the chain first
    crosses to the typical set, where, in 10^5 dimensions, the acceptance says nothing about
    the step size). devinterp's guidance: aim for about 0.9; 0 or 1 mean an unhealthy chain.
    Returns mean, min and max over the scored steps."""
    tokens, labels = dataset.split("train")
    eps, n_beta, gamma = settings.lr, settings.resolved_n_beta(len(labels)), settings.localization
    plain = _Plain(model)
    params = [p for p in model.parameters()]
    start = [p.detach().clone() for p in params]
    current = [p.detach().clone() for p in params]

    def potential_and_grad(weights: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        model.zero_grad(set_to_none=True)
        loss = cross_entropy_float64(plain(tokens), labels)
        local = float(sum(((w - s).double() ** 2).sum() for w, s in zip(weights, start)))
        (n_beta * loss).backward()
        grads = [p.grad.detach().clone() + gamma * (w - s) for p, w, s in zip(params, weights, start)]
        return float(n_beta * loss.detach()) + gamma / 2 * local, grads

    def log_q(to: list[torch.Tensor], frm: list[torch.Tensor], grad: list[torch.Tensor]) -> float:
        return -float(sum(((t - f + eps / 2 * g).double() ** 2).sum() for t, f, g in zip(to, frm, grad))) / (2 * eps)

    probabilities = []
    generator = torch.Generator().manual_seed(settings.seed)
    try:
        u, g = potential_and_grad(current)
        burn = max(100, settings.num_burnin_steps) if burn_in is None else burn_in
        for step in range(burn + steps):
            proposal = [w - eps / 2 * gw + eps**0.5 * torch.randn(w.shape, generator=generator)
                        for w, gw in zip(current, g)]
            u_new, g_new = potential_and_grad(proposal)
            log_ratio = u - u_new + log_q(current, proposal, g_new) - log_q(proposal, current, g)
            if step >= burn:  # a non-finite ratio (a diverged chain) is a rejection
                probabilities.append(float(np.exp(min(0.0, log_ratio))) if np.isfinite(log_ratio) else 0.0)
            current, u, g = proposal, u_new, g_new
    finally:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        model.zero_grad(set_to_none=True)
    return {"mean": float(np.mean(probabilities)), "min": float(np.min(probabilities)),
            "max": float(np.max(probabilities))}


__all__ = ["LLCSettings", "DEFAULT_SETTINGS", "unavailable_reason", "pair_sequences", "estimate_llc",
           "mala_acceptance"]
