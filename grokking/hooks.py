"""Hook points and the hooked-root base class, as in TransformerLens.

A :class:`HookPoint` is an identity module that forward and backward hooks attach to by
name (``blocks.0.attn.hook_z``). :class:`HookedRootModule` gives every model of the package
``hook_dict``, ``hooks()``, ``run_with_hooks`` and ``run_with_cache``, written once; hooks are
always removed afterwards, also on error.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

# fn(activation, hook) -> replacement activation or None (TransformerLens convention)
HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]
NamedHooks = Sequence[tuple["str | Callable[[str], bool]", HookFn]]


class HookPoint(nn.Module):
    """Identity module that forward and backward hooks attach to, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add_hook(self, fn: HookFn, dir: str = "fwd") -> torch.utils.hooks.RemovableHandle:
        if dir == "fwd":
            def forward_hook(module, inputs, output):
                return fn(output, self)
            handle = self.register_forward_hook(forward_hook)
        elif dir == "bwd":
            def backward_hook(module, grad_input, grad_output):
                replaced = fn(grad_output[0], self)
                return None if replaced is None else (replaced,)
            handle = self.register_full_backward_hook(backward_hook)
        else:
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        self._handles.append(handle)
        return handle

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def has_hooks(self) -> bool:
        return bool(self._forward_hooks or self._backward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedRootModule(nn.Module):
    """A model whose :class:`HookPoint` submodules are addressed by their module names.
    Subclasses call :meth:`setup` at the end of ``__init__``."""

    def setup(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def _select(self, name: "str | Callable[[str], bool]") -> list[HookPoint]:
        points = self.hook_dict
        if callable(name):
            return [hp for n, hp in points.items() if name(n)]
        if name not in points:
            raise KeyError(f"no hook point named {name!r}; known: {', '.join(points)}")
        return [points[name]]

    def reset_hooks(self) -> None:
        for hp in self.hook_dict.values():
            hp.remove_hooks()

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: NamedHooks = (), bwd_hooks: NamedHooks = ()) -> Iterator["HookedRootModule"]:
        """Attach hooks for the duration of a ``with`` block; they are removed even on error."""
        handles = []
        try:
            for hooks, direction in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name, fn in hooks:
                    for hp in self._select(name):
                        handles.append((hp, hp.add_hook(fn, direction)))
            yield self
        finally:
            for hp, handle in handles:
                handle.remove()
                hp._handles = [h for h in hp._handles if h is not handle]

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: NamedHooks = (), bwd_hooks: NamedHooks = (),
                       loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Forward with temporary hooks. Backward hooks need ``loss_fn(logits) -> scalar``:
        the backward pass runs inside, while the hooks are still attached."""
        if bwd_hooks and loss_fn is None:
            raise ValueError("backward hooks need loss_fn: the backward pass must run before the hooks are removed")
        with self.hooks(fwd_hooks, bwd_hooks):
            logits = self(tokens)
            if loss_fn is not None:
                loss_fn(logits).backward()
        return logits

    def run_with_cache(self, tokens: torch.Tensor, names_filter: "Callable[[str], bool] | Iterable[str] | None" = None,
                       incl_bwd: bool = False, loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that returns ``(logits, cache)``, the cache mapping hook names to
        detached activations (and, with ``incl_bwd``, ``name + "_grad"`` to gradients of
        ``loss_fn(logits)``)."""
        if names_filter is None:
            keep: Callable[[str], bool] = lambda name: True  # noqa: E731
        elif callable(names_filter):
            keep = names_filter
        else:
            keep = set(names_filter).__contains__
        cache: dict[str, torch.Tensor] = {}

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = tensor.detach()

        def save_grad(tensor: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name + "_grad"] = tensor.detach()

        if incl_bwd and loss_fn is None:
            raise ValueError("incl_bwd needs loss_fn(logits) -> scalar to differentiate")
        logits = self.run_with_hooks(tokens, [(keep, save)], [(keep, save_grad)] if incl_bwd else (),
                                     loss_fn=loss_fn if incl_bwd else None)
        return logits, cache
