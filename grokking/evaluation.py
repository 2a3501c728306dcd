"""Evaluation of one run or K runs: the runs' splits as rectangular tensors, each run's mean
training loss, and train/test/all-pair loss and accuracy from one pass over every pair.

Each run's objective is its own mean loss over its own training pairs; a stacked model
minimises the sum of those means, so each run's gradient is the one it would get alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .config import Config
from .data import Dataset
from .fast import LogitsFn, last_position_logits, select_logits_fn
from .methods import per_example_loss
from .model import StackedTransformer, Transformer

EVAL_CHUNK = 65536  # examples per evaluation forward pass, bounds memory for large p
FIGURE_KEYS = ("train_loss", "test_loss", "all_loss", "train_acc", "test_acc", "all_acc")
# With label noise: accuracy on the clean training pairs, on the corrupted ones against the
# labels they were trained on (memorised), and on the corrupted ones against their true labels.
NOISE_KEYS = ("train_acc_clean", "train_acc_corrupted", "train_acc_corrupted_true")


@dataclass
class RunData:
    """The K runs' splits as rectangular tensors.

    Train sets differ in size between runs (different ``frac``) and content (different
    seeds): each run's pairs are padded to the largest set, and ``mask`` marks the real ones.
    Evaluation runs over every pair, the same for all runs (labels can differ: ``rand``).
    """

    tokens: torch.Tensor  # [K, N, T] run k's training examples, in its split order (padded)
    labels: torch.Tensor  # [K, N] (a sequence task: [K, N, L])
    mask: torch.Tensor  # [K, N] float64: 1 for a real training example, 0 for padding
    n_train: torch.Tensor  # [K] float64
    all_tokens: torch.Tensor  # [M, T] every example
    all_labels: torch.Tensor  # [K, M] (or [K, M, L])
    in_train: torch.Tensor  # [K, M] bool
    in_test: torch.Tensor  # [K, M] bool
    noisy: torch.Tensor | None = None  # [K, M] bool: a training pair whose label was corrupted (None: no noise)
    clean_labels: torch.Tensor | None = None  # [K, M] the true labels, with noise

    @property
    def figure_keys(self) -> tuple[str, ...]:
        """The names of :func:`evaluate_runs`' columns for these runs."""
        return FIGURE_KEYS + NOISE_KEYS if self.noisy is not None else FIGURE_KEYS

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> "RunData":
        device = datasets[0].tokens.device
        sizes = [len(d.train_idx) for d in datasets]
        n_runs, width = len(datasets), max(sizes)
        first = datasets[0]
        if any(not torch.equal(d.tokens, first.tokens) for d in datasets[1:]):
            raise ValueError("runs evaluated together must share their examples (parity draws them from the seed)")
        tokens = torch.zeros(n_runs, width, first.tokens.shape[1], dtype=torch.long, device=device)
        labels = torch.zeros(n_runs, width, *first.labels.shape[1:], dtype=torch.long, device=device)
        mask = torch.zeros(n_runs, width, dtype=torch.float64, device=device)
        n_all = len(datasets[0].labels)
        in_train = torch.zeros(n_runs, n_all, dtype=torch.bool, device=device)
        in_test = torch.zeros_like(in_train)
        for k, d in enumerate(datasets):
            n = sizes[k]
            tokens[k, :n] = d.tokens[d.train_idx]
            labels[k, :n] = d.labels[d.train_idx]
            mask[k, :n] = 1.0
            in_train[k, d.train_idx] = True
            in_test[k, d.test_idx] = True
        noisy = clean = None
        if any(d.noisy_idx is not None for d in datasets):
            noisy = torch.zeros_like(in_train)
            for k, d in enumerate(datasets):
                if d.noisy_idx is not None:
                    noisy[k, d.noisy_idx] = True
            clean = torch.stack([d.labels if d.clean_labels is None else d.clean_labels for d in datasets])
        return cls(tokens, labels, mask, torch.tensor(sizes, dtype=torch.float64, device=device), first.tokens,
                   torch.stack([d.labels for d in datasets]), in_train, in_test, noisy, clean)


def _stacked_logits(model: Transformer, logits_fn: LogitsFn, tokens: torch.Tensor) -> torch.Tensor:
    logits = logits_fn(model, tokens)
    return logits if isinstance(model, StackedTransformer) else logits.unsqueeze(0)


def example_loss(cfg: Config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Float64 loss per example, ``labels``' shape less a sequence task's position dimension:
    one answer token's loss, or the mean over a sequence's L answer tokens."""
    per_token = per_example_loss(cfg, logits.flatten(0, labels.dim() - 1), labels.flatten()).view_as(labels)
    return per_token if cfg.output_len == 1 else per_token.mean(-1)


def example_hits(logits: torch.Tensor, labels: torch.Tensor, output_len: int) -> torch.Tensor:
    """Whether each example's answer is right: its argmax, or all L tokens of a sequence's."""
    hit = logits.argmax(-1) == labels
    return hit if output_len == 1 else hit.all(-1)


def per_run_train_loss(model: Transformer, data: RunData, cfg: Config,
                       logits_fn: LogitsFn = last_position_logits) -> torch.Tensor:
    """``[K]`` float64: run k's mean loss over its own training pairs. Their sum is the batch's
    objective, so the gradient reaching run k's weights is the one it would get alone."""
    logits = _stacked_logits(model, logits_fn, data.tokens)
    return (example_loss(cfg, logits, data.labels) * data.mask).sum(1) / data.n_train


@torch.no_grad()
def evaluate_runs(model: Transformer, data: RunData, cfg: Config, logits_fn: LogitsFn) -> torch.Tensor:
    """``[K, 6]`` float64: for each run, the train, test and all-pair loss and the train, test and
    all-pair accuracy (:data:`FIGURE_KEYS`), from one pass over every pair; with label noise
    ``[K, 9]``, then the accuracies of :data:`NOISE_KEYS` (``data.figure_keys`` names them).
    A run without noise in a batch with some gets NaN there."""
    n_runs, n_all = data.all_labels.shape[:2]
    answers = cfg.output_len
    chunk = max(1, EVAL_CHUNK // (n_runs * answers))
    losses, hits, true_hits = [], [], []
    for start in range(0, n_all, chunk):
        labels = data.all_labels[:, start : start + chunk]
        logits = _stacked_logits(model, logits_fn, data.all_tokens[start : start + chunk])
        losses.append(example_loss(cfg, logits, labels))
        hits.append(example_hits(logits, labels, answers).to(torch.float64))
        if data.clean_labels is not None:
            true_hits.append(example_hits(logits, data.clean_labels[:, start : start + chunk], answers).to(torch.float64))
    loss, hit = torch.cat(losses, 1), torch.cat(hits, 1)

    def mean_over(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        # torch.where, not a product: an infinite test loss must not turn the train mean into NaN.
        return torch.where(where, x, 0.0).sum(1) / where.sum(1)

    columns = [mean_over(loss, data.in_train), mean_over(loss, data.in_test), loss.mean(1),
               mean_over(hit, data.in_train), mean_over(hit, data.in_test), hit.mean(1)]
    if data.noisy is not None:
        true_hit = torch.cat(true_hits, 1)
        columns += [mean_over(hit, data.in_train & ~data.noisy), mean_over(hit, data.noisy),
                    mean_over(true_hit, data.noisy)]
    return torch.stack(columns, 1)


def evaluate(model: Transformer, dataset: Dataset, logits_fn: LogitsFn | None = None,
             cfg: Config | None = None) -> dict[str, float]:
    """Loss (float64) and accuracy of one model on the train split, the test split and all pairs."""
    cfg = cfg or model.cfg
    logits_fn = logits_fn or select_logits_fn(cfg)[0]
    data = RunData.from_datasets([dataset])
    row = evaluate_runs(model, data, cfg, logits_fn)[0].tolist()
    return dict(zip(data.figure_keys, row))


def weight_norms(params_by_run: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """``[K]``: each run's total weight norm."""
    return torch.stack([torch.sqrt(sum(p.detach().pow(2).sum() for p in params)) for params in params_by_run])


def weight_norm(model: torch.nn.Module) -> torch.Tensor:
    return weight_norms([list(model.parameters())])[0]
