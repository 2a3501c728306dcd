"""Datasets: binary operation tables, sequence tasks, sparse parity, the digits images; splits.

Four kinds of task (:func:`task_kind`), each a set of examples ``tokens [N, T]`` (the
transformer's input) with answers over ``n`` classes:

- ``table``: a binary operation on ``n`` elements, ``table[a, b] = c`` (all ints in ``[0, n)``),
  optionally with some pairs excluded (``divide`` has no ``b = 0``). Inputs are the three tokens
  ``a b =`` where ``=`` is token ``n``, so the vocabulary has ``n + 1`` entries and the answer
  is one of the first ``n``. Adding one is an entry in ``OPERATIONS``: an :class:`Operation`
  whose ``table`` maps ``(p, seed)`` to the table and a boolean mask of the pairs that exist.
- ``sequence`` (openai/grok's ``sort``, ``reverse``, ``copy``): every ordered list of ``L`` distinct
  symbols out of ``p`` (``itertools.permutations(range(p), L)``, as openai/grok's lists), answered
  by an ``L``-token list. The transformer reads ``x_1 .. x_L = y_1 .. y_{L-1}`` (``T = 2L``) and
  predicts ``y_i`` at the position before it (teacher forcing, under the causal mask), so
  ``labels`` is ``[N, L]``. An example counts as right only when all ``L`` tokens are, which under
  teacher forcing is exactly greedy decoding's exact match (both fail at the first wrong token).
- ``parity`` (Barak et al. 2022): ``n_examples`` strings of ``parity_bits`` bits drawn from the
  seed (distinct), labelled by the XOR of the first ``parity_k`` bits; tokens ``x_1 .. x_n =``
  with bits as tokens 0 and 1 and ``=`` token 2.
- ``digits`` (Omnigrok, Liu et al. 2023): scikit-learn's bundled 8 x 8 handwritten digits,
  1,797 images of 64 pixels with values 0..16, in 10 classes; ``tokens`` is the pixels
  ``[N, 64]`` (no ``=``: only an MLP reads them). Needs the ``digits`` extra (scikit-learn).

Every kind shares the splits (``frac`` of the examples train), label noise and the rest.
"""
from __future__ import annotations

import itertools
import math
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


# --- tasks that are not binary tables ------------------------------------------------------------
@dataclass(frozen=True)
class TokenTask:
    """A task of kind ``sequence``, ``parity`` or ``digits`` (see the module docstring)."""
    name: str
    kind: str
    formula: str


TOKEN_TASKS: dict[str, TokenTask] = {
    t.name: t
    for t in [
        TokenTask("sort", "sequence", "sort a list of seq_len distinct symbols out of p (openai/grok)"),
        TokenTask("reverse", "sequence", "reverse a list of seq_len distinct symbols out of p (openai/grok)"),
        TokenTask("copy", "sequence", "copy a list of seq_len distinct symbols out of p (openai/grok)"),
        TokenTask("parity", "parity", "XOR of parity_k of parity_bits random bits (Barak et al. 2022)"),
        TokenTask("digits", "digits", "scikit-learn's 8x8 handwritten digits, 10 classes (Omnigrok; model = mlp)"),
    ]
}
DIGITS_CLASSES, DIGITS_PIXELS, DIGITS_LEVELS = 10, 64, 17  # pixel values 0..16


def task_names() -> tuple[str, ...]:
    """Every task ``--op`` accepts: the binary tables, then the others."""
    return (*OPERATIONS, *TOKEN_TASKS)


def task_kind(op: str) -> str:
    """``table``, ``sequence``, ``parity`` or ``digits``."""
    return "table" if op in OPERATIONS else TOKEN_TASKS[op].kind


def sequence_count(p: int, length: int) -> int:
    """Ordered lists of ``length`` distinct symbols out of ``p``: p! / (p - length)!."""
    return math.perm(p, length) if length <= p else 0


def sequence_examples(op: str, p: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [N, 2L], labels [N, L])`` of a sequence task, lists in lexicographic order."""
    lists = np.array(list(itertools.permutations(range(p), length)), dtype=np.int64).reshape(-1, length)
    answers = {"sort": np.sort(lists, axis=1), "reverse": lists[:, ::-1], "copy": lists}[op]
    eq = np.full((len(lists), 1), p, dtype=np.int64)
    return np.concatenate([lists, eq, answers[:, :-1]], axis=1), np.ascontiguousarray(answers)


def parity_examples(bits: int, k: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [count, bits + 1], labels [count])``: distinct bit strings drawn uniformly from a
    generator of their own (seeded by ``seed``), the label the XOR of the first ``k`` bits. Which
    bits are relevant does not matter to a model that sees all positions alike (an MLP's first
    layer, or a transformer's positions, carry no order prior), so they are the first ``k``."""
    rng = np.random.default_rng([seed, bits, k, 0x9A71])
    chosen: dict[bytes, None] = {}
    while len(chosen) < count:  # distinct strings: a test string never repeats a training one
        draw = rng.integers(0, 2, size=(count - len(chosen), bits), dtype=np.int64)
        chosen.update(dict.fromkeys(row.tobytes() for row in draw))
    x = np.frombuffer(b"".join(list(chosen)[:count]), dtype=np.int64).reshape(count, bits)
    labels = x[:, :k].sum(1) % 2
    return np.concatenate([x, np.full((count, 1), 2, dtype=np.int64)], axis=1), labels


def digits_examples() -> tuple[np.ndarray, np.ndarray]:
    """``(pixels [1797, 64] in 0..16, labels [1797])``: scikit-learn's bundled digits (no download)."""
    try:
        from sklearn.datasets import load_digits  # optional: the digits extra
    except ImportError:
        raise ImportError("op: digits needs scikit-learn: pip install 'grokking-lab[digits]'") from None
    digits = load_digits()
    return digits.data.astype(np.int64), digits.target.astype(np.int64)


def register_operation(op: Operation) -> None:
    """Add a user-defined table; afterwards ``--op NAME`` and the sweep grid accept it."""
    if op.name in OPERATIONS or op.name in TOKEN_TASKS:
        raise ValueError(f"operation {op.name!r} already exists")
    OPERATIONS[op.name] = op


def group_size(op: str, p: int) -> int:
    """Number of answer classes: the elements a table acts on, a sequence task's ``p`` symbols,
    parity's 2, the digits' 10."""
    kind = task_kind(op)
    if kind == "table":
        spec = OPERATIONS[op]
        return spec.group_size(p) if spec.group_size else p
    return {"sequence": p, "parity": 2, "digits": DIGITS_CLASSES}[kind]


@dataclass
class Dataset:
    """All examples of a task, with a train/test split.

    ``tokens`` is ``[N, T]`` (for a table ``[N, 3]``: a, b, =) and ``labels`` ``[N]``, or ``[N, L]``
    for a sequence task, over every example (a table's valid pairs in row-major (a, b) order);
    ``train_idx``/``test_idx`` index into them, in split order.

    With label noise, ``labels`` holds what the model is trained on: the rows in ``noisy_idx``
    (training examples only) carry a wrong answer, and ``clean_labels`` the true ones.
    """

    op: str
    p: int
    n: int  # number of answer classes; for the tasks with '=', '=' is token n
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

    @property
    def output_len(self) -> int:
        """Answer tokens per example: 1, or a sequence task's L."""
        return 1 if self.labels.dim() == 1 else self.labels.shape[1]

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = {"train": self.train_idx, "test": self.test_idx}[which]
        return self.tokens[idx], self.labels[idx]

    def table(self) -> torch.Tensor:
        """[n, n] answer table with -1 where the pair does not exist (binary tables only)."""
        if task_kind(self.op) != "table":
            raise ValueError(f"{self.op} is a {task_kind(self.op)} task, not a binary table")
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


def task_examples(op: str, p: int, seed: int, seq_len: int = 5, parity_bits: int = 40, parity_k: int = 3,
                  n_examples: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [N, T], labels [N] or [N, L])`` of every example of a task (not yet split):
    a table's valid pairs in row-major order, or the examples of the other kinds."""
    kind = task_kind(op)
    if kind == "sequence":
        return sequence_examples(op, p, seq_len)
    if kind == "parity":
        return parity_examples(parity_bits, parity_k, n_examples, seed)
    if kind == "digits":
        return digits_examples()
    n = group_size(op, p)
    table, valid = OPERATIONS[op].table(p, seed)
    a, b = np.nonzero(valid)  # row-major order
    return np.stack([a, b, np.full_like(a, n)], axis=1).astype(np.int64), table[a, b].astype(np.int64)


def make_dataset(op: str, p: int, frac: float, seed: int, split: str = "seed", label_noise: float = 0.0,
                 **sizes: int) -> Dataset:
    """Build the task's examples and split them.

    ``split="seed"`` reproduces the seed's ``gen_train_test(frac, p, seed)`` on a table: the same
    pairs in the same order (pairs that the operation excludes, such as ``b = 0`` for divide, are
    then dropped from both halves); on the other kinds, the same procedure (Python's ``random``
    seeded with ``seed``, one shuffle, the first ``int(frac * N)`` train) over the example rows.
    ``split="random"`` draws a permutation of the examples from a torch generator seeded with
    ``seed``; the train half is ``int(frac * N)``. ``label_noise``: the fraction of training
    examples given a wrong label (:func:`corrupt_labels`; not for sequence tasks). ``sizes``: the
    sizes of the other kinds (``seq_len``, ``parity_bits``, ``parity_k``, ``n_examples``; see
    :func:`task_examples`).
    """
    n = group_size(op, p)
    kind = task_kind(op)
    tokens_np, labels_np = task_examples(op, p, seed, **sizes)
    tokens, labels = torch.from_numpy(tokens_np), torch.from_numpy(labels_np)
    count = len(labels)
    if split == "seed" and kind == "table":
        row_of = -np.ones((n, n), dtype=np.int64)
        row_of[tokens_np[:, 0], tokens_np[:, 1]] = np.arange(count)
        train_pairs, test_pairs = seed_gen_train_test(frac, n, seed)
        train_rows = [row_of[i, j] for i, j, _ in train_pairs]
        test_rows = [row_of[i, j] for i, j, _ in test_pairs]
        train_idx = torch.tensor([r for r in train_rows if r >= 0], dtype=torch.long)
        test_idx = torch.tensor([r for r in test_rows if r >= 0], dtype=torch.long)
    elif split == "seed":
        rows = list(range(count))
        random.Random(seed).shuffle(rows)
        cut = int(frac * count)
        train_idx, test_idx = torch.tensor(rows[:cut], dtype=torch.long), torch.tensor(rows[cut:], dtype=torch.long)
    elif split == "random":
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(count, generator=generator)
        cut = int(frac * count)
        train_idx, test_idx = perm[:cut], perm[cut:]
    else:
        raise ValueError(f"split must be 'seed' or 'random', got {split!r}")
    if label_noise > 0:
        if labels.dim() != 1:
            raise ValueError(f"label_noise is for one-token answers; {op} answers with {labels.shape[1]} tokens")
        noisy, rows_noisy = corrupt_labels(labels, train_idx, n, label_noise, seed)
        return Dataset(op, p, n, tokens, noisy, train_idx, test_idx, rows_noisy, labels)
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
