"""A group of runs that one program trains: one model (K = 1; a :class:`~grokking.model.Transformer`
or an :class:`~grokking.mlp.MLP`, built by :func:`~grokking.factory.build_model`) or one
:class:`~grokking.model.StackedTransformer` holding K transformer runs.

Every method of :mod:`grokking.methods` (gradient filter, orthogonalised gradient, clipping,
optimiser) is written for one run's parameter list; a stacked group applies it to each run's
parameters as views into the stacked weights, so a run steps the same way alone or in a batch,
and its state is saved in the single-run checkpoint layout (runs that share their AdamW recipe
take one step over the stacked weights instead: the same update, see ``_shared_optimizer``).
The loop that drives a group, and writes its runs' files, is :class:`grokking.engine.Engine`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from .config import Config
from .data import Dataset
from .evaluation import FIGURE_KEYS, RunData, evaluate_runs, per_run_train_loss, weight_norms
from .factory import Model, build_model
from .fast import keep_freed_memory, logits_in_any_order, select_logits_fn
from .methods import (
    FusedAdamW,
    GradFilter,
    build_optimizer,
    clip_gradients,
    loss_function,
    lr_factor,
    orthogonalize_gradients,
    set_learning_rate,
)
from .model import StackedTransformer


class RunGroup:
    """Runs that one program trains: ``len(cfgs) == 1`` and ``stacked=False`` is one ordinary
    model; ``stacked=True`` holds the runs as one :class:`StackedTransformer`. All runs of a
    group take their optimiser steps together, so one step counter serves them all."""

    def __init__(self, cfgs: Sequence[Config], datasets: Sequence[Dataset], device: torch.device, *,
                 stacked: bool = False, log: Callable[[str], None] = print):
        self.cfgs, self.device, self.stacked, self.log = list(cfgs), device, stacked, log
        if device.type == "cpu":
            keep_freed_memory()
        cfg = self.cfgs[0]
        models = [build_model(c).to(device) for c in self.cfgs]
        self.model: Model = StackedTransformer.from_models(models) if stacked else models[0]
        self.model.train()
        self.logits_fn, self.fast_reason = select_logits_fn(cfg)
        self.loss_fn = loss_function(cfg)
        self.datasets = list(datasets)
        self.data = RunData.from_datasets(self.datasets)
        self.step_count = 0
        self.params = self._run_parameters()
        # Fused Adam(W): one kernel per step (on CPU 0.14 ms against 0.6 for the default, canonical model).
        self.optimizers = [build_optimizer(c, self._named(params), fused=True) for c, params in zip(self.cfgs, self.params)]
        self.filters = [GradFilter(c, params) for c, params in zip(self.cfgs, self.params)]
        self.shared = self._shared_optimizer()
        # On the device: a host-side permutation copied to a GPU each epoch would synchronise.
        self.batch_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self._set_train_split()
        self._loss = self._compiled_loss() if cfg.compile and not stacked else self._eager_loss

    @property
    def fast(self) -> bool:
        return self.fast_reason is None

    def _run_parameters(self) -> list[list[torch.Tensor]]:
        if isinstance(self.model, StackedTransformer):
            return [self.model.run_parameters(k) for k in range(self.model.n_runs)]
        return [[p for p in self.model.parameters() if p.requires_grad]]

    #: What must be equal across a stacked group's runs for one AdamW over the stacked weights.
    SHARED_RECIPE = ("lr", "beta1", "beta2", "eps", "weight_decay", "warmup_steps", "lr_decay_steps")
    SHARED_ALIGNMENT = 16

    def _shared_optimizer(self) -> FusedAdamW | None:
        """One fused AdamW over the stacked weights, where every run has the same AdamW recipe and
        nothing acts on one run's gradient between backward and step (no gradient filter, no
        clipping), and each run's weight tensors have a multiple of 16 elements (the seed's
        shapes do). AdamW is elementwise and its scalars are the same for every run, so each run
        steps exactly as through its own optimiser, in one kernel where the per-run loop takes K
        (with 64 runs on a GPU, that loop was most of the step). The runs' own optimisers stay,
        for their learning rates and ``state_dict``: their state becomes views into this one's."""
        cfg = self.cfgs[0]
        if not (self.stacked and isinstance(self.optimizers[0], FusedAdamW)):
            return None
        if any(c.optimizer != "adamw" or c.grokfast != "none" or c.grad_clip > 0 for c in self.cfgs):
            return None
        if any(getattr(c, name) != getattr(cfg, name) for c in self.cfgs for name in self.SHARED_RECIPE):
            return None
        # The CPU kernel runs whole vectors and a scalar tail that rounds differently; a run's
        # slice of the stacked weights ends on a vector boundary only where its size is a
        # multiple of the vector: 16 floats on AVX-512 (8 on AVX2).
        if any(p.numel() % self.SHARED_ALIGNMENT for p in self.params[0]):
            return None
        shared = build_optimizer(cfg, list(self.model.named_parameters()), fused=True)
        assert isinstance(shared, FusedAdamW)  # as the runs' own, built the same way
        first = self.optimizers[0]
        if first.state:  # runs that have stepped (a group rebuilt by drop): their states, stacked
            for stacked, views in zip(shared.param_groups[0]["params"], zip(*self.params)):
                states = [opt.state[view] for opt, view in zip(self.optimizers, views)]
                shared.state[stacked] = {"step": states[0]["step"].clone(),
                                         **{key: torch.stack([st[key] for st in states])
                                            for key in ("exp_avg", "exp_avg_sq")}}
            self._link_run_states(shared)
        return shared

    def _link_run_states(self, shared: FusedAdamW) -> None:
        """Point every run's optimiser state at its slice of the shared state (in place from then on)."""
        for k, (optimizer, params) in enumerate(zip(self.optimizers, self.params)):
            optimizer.state = {view: {"step": shared.state[stacked]["step"],
                                      "exp_avg": shared.state[stacked]["exp_avg"][k],
                                      "exp_avg_sq": shared.state[stacked]["exp_avg_sq"][k]}
                               for view, stacked in zip(params, shared.param_groups[0]["params"])}

    def _named(self, params: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        return list(zip([n for n, _ in self.model.named_parameters()], params))

    def _set_train_split(self) -> None:
        self.train_tokens, self.train_labels = self.datasets[0].split("train")

    # --- one step ------------------------------------------------------------------------------
    def _eager_loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            return per_run_train_loss(self.model, self.data, self.cfgs[0], self.logits_fn).sum()
        logits, order = logits_in_any_order(self.logits_fn, self.model, tokens)
        if order is not None:  # every loss here is a mean of per-example terms
            labels = labels[order]
        if labels.dim() > 1:  # a sequence task: every answer token of every example, weighted alike
            logits, labels = logits.flatten(0, -2), labels.flatten()
        return self.loss_fn(logits, labels)

    def _compiled_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        try:
            compiled = torch.compile(self._eager_loss, dynamic=False)
            # Compile now, at the training shape, so that a failure falls back before any step.
            compiled(self.train_tokens, self.train_labels).backward()
            self.model.zero_grad(set_to_none=True)
            return compiled
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            self.log(f"torch.compile unavailable here ({type(err).__name__}); training eagerly")
            return self._eager_loss

    def step(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        """One optimiser step of every run of the group."""
        self.model.zero_grad(set_to_none=True)
        self._loss(tokens, labels).backward()
        self.update()

    def update(self) -> None:
        """Step every run from the gradients now in its parameters: its gradient filter, ⊥Grad,
        clipping and optimiser, at its warm-up's learning rate, each applied to that run alone
        (or, where the runs share their recipe, one step of the shared optimiser: the same update)."""
        if self.shared is not None:
            factor = lr_factor(self.cfgs[0], self.step_count)
            for optimizer in (self.shared, *self.optimizers):
                set_learning_rate(optimizer, factor)
            fresh = not self.shared.state
            self.shared.step()
            if fresh:
                self._link_run_states(self.shared)
            self.step_count += 1
            return
        if self.stacked:  # the stacked gradients are new tensors: point each run's views at them
            for k, params in enumerate(self.params):
                for p, stacked in zip(params, self.model.parameters()):
                    p.grad = stacked.grad[k]
        for cfg, params, grad_filter, optimizer in zip(self.cfgs, self.params, self.filters, self.optimizers):
            set_learning_rate(optimizer, lr_factor(cfg, self.step_count))
            if grad_filter.active:
                grad_filter.apply()
            if cfg.optimizer == "orthoadamw":
                orthogonalize_gradients(params)
            clip_gradients(params, cfg.grad_clip)
            optimizer.step()
        self.step_count += 1

    def train_epoch(self) -> None:
        cfg = self.cfgs[0]
        n = len(self.train_labels)
        if self.stacked or cfg.batch_size == 0 or cfg.batch_size >= n:
            self.step(self.train_tokens, self.train_labels)
            return
        order = torch.randperm(n, generator=self.batch_generator, device=self.device)
        for start in range(0, n, cfg.batch_size):
            if cfg.max_steps and self.step_count >= cfg.max_steps:
                return
            idx = order[start : start + cfg.batch_size]
            self.step(self.train_tokens[idx], self.train_labels[idx])

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> list[tuple[dict[str, float], float]]:
        """Per run of the group: its figures and its weight norm (one host synchronisation)."""
        self.model.eval()
        figures = evaluate_runs(self.model, self.data, self.cfgs[0], self.logits_fn)
        self.model.train()
        norms = weight_norms(self.params).to(torch.float64)
        rows = torch.cat([figures, norms.unsqueeze(1)], 1).tolist()
        keys = self.data.figure_keys
        # A run without label noise, batched with some that have it, records no noise figures.
        return [({k: v for k, v in zip(keys, row[:-1]) if k in FIGURE_KEYS or cfg.label_noise > 0}, row[-1])
                for cfg, row in zip(self.cfgs, rows)]

    def finite(self, slot: int) -> bool:
        return math.isfinite(weight_norms([self.params[slot]])[0].item())

    # --- state -------------------------------------------------------------------------------------
    def state_tensors(self, slot: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Run ``slot``'s full state as a single-run checkpoint: any run resumes alone."""
        model_state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        opt_state = self.optimizers[slot].state_dict()
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors.update(self.filters[slot].state_tensors())
        tensors["rng.batch"] = self.batch_generator.get_state()
        tensors["split.train_idx"] = self.datasets[slot].train_idx
        tensors["split.test_idx"] = self.datasets[slot].test_idx
        return tensors, {"optim_groups": opt_state["param_groups"], "step": self.step_count}

    def weights(self, slot: int) -> dict[str, torch.Tensor]:
        state = self.model.run_state_dict(slot) if self.stacked else self.model.state_dict()
        return {f"model.{k}": v for k, v in state.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], split: tuple | None) -> None:
        """Continue a single-run group from a checkpoint's state."""
        if split is not None:  # the stored split, in its order (the minibatch order indexes it)
            dataset = self.datasets[0]
            dataset.train_idx, dataset.test_idx = split[0].to(self.device), split[1].to(self.device)
            self.data = RunData.from_datasets(self.datasets)
            self._set_train_split()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        self.optimizers[0].load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
        self.filters[0].load_state_tensors(tensors, self.device)
        self.batch_generator.set_state(tensors["rng.batch"])
        self.step_count = int(meta["step"])

    def drop(self, slots: Sequence[int]) -> None:
        """Remove finished runs from a stacked group; the others continue with their state."""
        keep = [k for k in range(len(self.cfgs)) if k not in set(slots)]
        if not keep or not self.stacked:
            return
        old_optimizers, old_filters = [self.optimizers[k] for k in keep], [self.filters[k] for k in keep]
        self.cfgs = [self.cfgs[k] for k in keep]
        self.datasets = [self.datasets[k] for k in keep]
        self.model = self.model.select(keep)
        self.model.train()
        self.data = RunData.from_datasets(self.datasets)
        self.params = self._run_parameters()
        self.optimizers = []
        for cfg, params, old in zip(self.cfgs, self.params, old_optimizers):
            optimizer = build_optimizer(cfg, self._named(params), fused=True)
            optimizer.load_state_dict(old.state_dict())
            self.optimizers.append(optimizer)
        for grad_filter, params in zip(old_filters, self.params):
            grad_filter.params = params
        self.filters = old_filters
        self.shared = self._shared_optimizer()
