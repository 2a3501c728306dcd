"""Algorithmic datasets: binary operation tables, token sequences and train/test splits.

Every task is a binary operation on a finite set of ``n`` elements, given as a table
``table[a, b] = c`` (all ints in ``[0, n)``), with optionally some pairs excluded
(``divide`` has no ``b = 0``). Inputs are the three tokens ``a b =`` where ``=`` is token
``n``, so the vocabulary has ``n + 1`` entries and the answer is one of the first ``n``.

Adding an operation is one entry in ``OPERATIONS``: a :class:`Operation` whose ``table``
function maps ``(p, seed)`` to the table and a boolean mask of the pairs that exist.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

TableFn = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Operation:
    name: str
    formula: str
    table: TableFn  # (p, seed) -> (table [n, n] int64, valid [n, n] bool)
    needs_prime: bool = False
    group_size: Callable[[int], int] | None = None  # n as a function of p; None: n = p


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def modular_inverse(b: int, p: int) -> int:
    """b^-1 mod p for prime p (Fermat), independent of Python's pow(b, -1, p)."""
    if b % p == 0:
        raise ZeroDivisionError(f"0 has no inverse mod {p}")
    return pow(b, p - 2, p)


def _grid(p: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(p, dtype=np.int64), np.arange(p, dtype=np.int64), indexing="ij")
    return a, b


def _polynomial(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> TableFn:
    def table(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = _grid(p)
        return fn(a, b) % p, np.ones((p, p), dtype=bool)

    return table


def _inverse_table(p: int) -> np.ndarray:
    inv = np.zeros(p, dtype=np.int64)
    for b in range(1, p):
        inv[b] = pow(b, p - 2, p)
    return inv


def _divide(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _grid(p)
    valid = b != 0
    return (a * _inverse_table(p)[b]) % p, valid


def _oddsub(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Power et al.: a / b if b is odd else a - b; b odd is never 0, so every pair exists.
    a, b = _grid(p)
    quotient = (a * _inverse_table(p)[b]) % p
    return np.where(b % 2 == 1, quotient, (a - b) % p), np.ones((p, p), dtype=bool)


def _mixed(odd: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> TableFn:
    """openai/grok's "+*" and "+-": a + b when a is even, else ``odd(a, b)``, mod p. The
    operation applied depends on the first operand, so no single group structure holds."""
    def table(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = _grid(p)
        return np.where(a % 2 == 0, a + b, odd(a, b)) % p, np.ones((p, p), dtype=bool)

    return table


def _random(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # A fixed table per (p, seed): the control task with nothing to generalise.
    rng = np.random.default_rng([seed, p, 0x5EED])
    return rng.integers(0, p, size=(p, p), dtype=np.int64), np.ones((p, p), dtype=bool)


# Permutations of 5 elements, in lexicographic order; token i is PERMUTATIONS[i].
PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(5)))


def _perm_table(word: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> TableFn:
    def table(p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        perms = np.array(PERMUTATIONS, dtype=np.int64)  # [120, 5]
        index = {perm: i for i, perm in enumerate(PERMUTATIONS)}
        n = len(PERMUTATIONS)
        out = np.zeros((n, n), dtype=np.int64)
        for i in range(n):
            composed = word(np.broadcast_to(perms[i], perms.shape), perms)  # [n, 5]
            out[i] = [index[tuple(row)] for row in composed]
        return out, np.ones((n, n), dtype=bool)

    return table


def _compose(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x*y)(k) = x(y(k)), row-wise over [..., 5] arrays."""
    return np.take_along_axis(x, y, axis=-1)


def _invert(x: np.ndarray) -> np.ndarray:
    return np.argsort(x, axis=-1)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("add", "a + b", _polynomial(lambda a, b: a + b)),
        Operation("subtract", "a - b", _polynomial(lambda a, b: a - b)),
        Operation("multiply", "a * b", _polynomial(lambda a, b: a * b)),
        Operation("divide", "a / b (b != 0)", _divide, needs_prime=True),
        Operation("x2xyy2", "a^2 + ab + b^2", _polynomial(lambda a, b: a * a + a * b + b * b)),
        Operation("x2y2", "a^2 + b^2", _polynomial(lambda a, b: a * a + b * b)),
        Operation("x3xy", "a^3 + ab", _polynomial(lambda a, b: a * a * a + a * b)),
        Operation("x3xy2y", "a^3 + ab^2 + b", _polynomial(lambda a, b: a * a * a + a * b * b + b)),
        Operation("x2xyy2x", "a^2 + ab + b^2 + a", _polynomial(lambda a, b: a * a + a * b + b * b + a)),
        Operation("oddsub", "a / b if b odd else a - b", _oddsub, needs_prime=True),
        Operation("addmul", "a + b if a even else a * b (openai/grok's +*)", _mixed(lambda a, b: a * b)),
        Operation("addsub", "a + b if a even else a - b (openai/grok's +-)", _mixed(lambda a, b: a - b)),
        Operation("rand", "fixed random table (from the seed)", _random),
        Operation("perm_xy", "x * y in S5", _perm_table(_compose), group_size=lambda p: 120),
        Operation(
            "perm_xyx1",
            "x * y * x^-1 in S5",
            _perm_table(lambda x, y: _compose(_compose(x, y), _invert(x))),
            group_size=lambda p: 120,
        ),
        Operation("perm_xyx", "x * y * x in S5", _perm_table(lambda x, y: _compose(_compose(x, y), x)), group_size=lambda p: 120),
    ]
}


# Other names an operation goes by: openai/grok's operators for the mixed ones.
OPERATION_ALIASES: dict[str, str] = {"+*": "addmul", "+-": "addsub"}


def register_operation(op: Operation) -> None:
    """Add a user-defined table; afterwards ``--op NAME`` and the sweep grid accept it."""
    if op.name in OPERATIONS:
        raise ValueError(f"operation {op.name!r} already exists")
    OPERATIONS[op.name] = op


def group_size(op: str, p: int) -> int:
    """Number of elements the operation acts on (the answer classes)."""
    spec = OPERATIONS[op]
    return spec.group_size(p) if spec.group_size else p


@dataclass
class Dataset:
    """All pairs of a task, with a train/test split.

    ``tokens`` is ``[N, 3]`` (a, b, =) and ``labels`` ``[N]`` over every valid pair in
    row-major (a, b) order; ``train_idx``/``test_idx`` index into them, in split order.

    With label noise, ``labels`` holds what the model is trained on: the rows in ``noisy_idx``
    (training pairs only) carry a wrong answer, and ``clean_labels`` the true ones.
    """

    op: str
    p: int
    n: int  # number of elements (answer classes); '=' is token n
    tokens: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    noisy_idx: torch.Tensor | None = None
    clean_labels: torch.Tensor | None = None

    @property
    def d_vocab(self) -> int:
        return self.n + 1

    @property
    def eq_token(self) -> int:
        return self.n

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = {"train": self.train_idx, "test": self.test_idx}[which]
        return self.tokens[idx], self.labels[idx]

    def table(self) -> torch.Tensor:
        """[n, n] answer table with -1 where the pair does not exist."""
        out = torch.full((self.n, self.n), -1, dtype=torch.long)
        out[self.tokens[:, 0], self.tokens[:, 1]] = self.labels
        return out

    def to(self, device: torch.device | str) -> "Dataset":
        def moved(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Dataset(
            self.op, self.p, self.n, self.tokens.to(device), self.labels.to(device),
            self.train_idx.to(device), self.test_idx.to(device), moved(self.noisy_idx), moved(self.clean_labels),
        )


def seed_gen_train_test(frac_train: float, num: int, seed: int = 0) -> tuple[list, list]:
    """The seed notebook's split, statement for statement: Python's ``random`` shuffle."""
    pairs = [(i, j, num) for i in range(num) for j in range(num)]
    random.seed(seed)
    random.shuffle(pairs)
    div = int(frac_train * len(pairs))
    return pairs[:div], pairs[div:]


def corrupt_labels(labels: torch.Tensor, train_idx: torch.Tensor, n: int, fraction: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy labels, noisy rows)``: ``round(fraction * len(train_idx))`` training rows, drawn
    without replacement, each given an answer drawn uniformly from the ``n - 1`` wrong ones,
    from a generator of its own seeded by ``seed`` (the split's and the weights' draws are
    untouched, so a run with and without noise sees the same pairs in the same order)."""
    generator = torch.Generator().manual_seed(seed + 0x4E015E)
    count = round(fraction * len(train_idx))
    rows = train_idx[torch.randperm(len(train_idx), generator=generator)[:count]]
    shift = torch.randint(1, n, (count,), generator=generator)  # never 0: never the true answer
    noisy = labels.clone()
    noisy[rows] = (labels[rows] + shift) % n
    return noisy, rows


def make_dataset(op: str, p: int, frac: float, seed: int, split: str = "seed", label_noise: float = 0.0) -> Dataset:
    """Build the task table and split it.

    ``split="seed"`` reproduces the seed's ``gen_train_test(frac, p, seed)``: the same pairs
    in the same order (pairs that the operation excludes, such as ``b = 0`` for divide, are
    then dropped from both halves). ``split="random"`` draws a permutation of the valid
    pairs from a torch generator seeded with ``seed``; the train half is ``int(frac * N)``.
    ``label_noise``: the fraction of training pairs given a wrong label (:func:`corrupt_labels`).
    """
    spec = OPERATIONS[op]
    n = group_size(op, p)
    table, valid = spec.table(p, seed)
    a, b = np.nonzero(valid)  # row-major order
    tokens = torch.from_numpy(np.stack([a, b, np.full_like(a, n)], axis=1).astype(np.int64))
    labels = torch.from_numpy(table[a, b].astype(np.int64))
    row_of = -np.ones((n, n), dtype=np.int64)
    row_of[a, b] = np.arange(len(a))
    if split == "seed":
        train_pairs, test_pairs = seed_gen_train_test(frac, n, seed)
        train_rows = [row_of[i, j] for i, j, _ in train_pairs]
        test_rows = [row_of[i, j] for i, j, _ in test_pairs]
        train_idx = torch.tensor([r for r in train_rows if r >= 0], dtype=torch.long)
        test_idx = torch.tensor([r for r in test_rows if r >= 0], dtype=torch.long)
    elif split == "random":
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(a), generator=generator)
        cut = int(frac * len(a))
        train_idx, test_idx = perm[:cut], perm[cut:]
    else:
        raise ValueError(f"split must be 'seed' or 'random', got {split!r}")
    if label_noise > 0:
        noisy, rows = corrupt_labels(labels, train_idx, n, label_noise, seed)
        return Dataset(op, p, n, tokens, noisy, train_idx, test_idx, rows, labels)
    return Dataset(op, p, n, tokens, labels, train_idx, test_idx)


def dataset_from_pairs(op: str, p: int, seed: int, train_pairs, test_pairs) -> Dataset:
    """A dataset whose split is given as lists of (a, b[, =]) pairs, as seed checkpoints store it."""
    base = make_dataset(op, p, 0.5, seed, split="random")
    row_of = {(int(x), int(y)): i for i, (x, y, _) in enumerate(base.tokens.tolist())}

    def rows(pairs) -> torch.Tensor:
        try:
            return torch.tensor([row_of[(int(t[0]), int(t[1]))] for t in pairs], dtype=torch.long)
        except KeyError as missing:
            raise ValueError(f"pair {missing} is not part of {op} mod {p}") from None

    return Dataset(op, p, base.n, base.tokens, base.labels, rows(train_pairs), rows(test_pairs))
