"""Every operation's table against an independent, loop-by-loop computation."""
import random

import numpy as np
import pytest
import torch

from grokking.config import Config, from_dict
from grokking.data import OPERATIONS, is_prime, make_dataset, modular_inverse, seed_gen_train_test


def egcd_inverse(b: int, p: int) -> int:
    """Modular inverse by the extended Euclidean algorithm (independent of data.py's Fermat)."""
    old_r, r, old_s, s = b, p, 1, 0
    while r:
        q = old_r // r
        old_r, r = r, old_r - q * r
        old_s, s = s, old_s - q * s
    assert old_r == 1
    return old_s % p


EXPECTED = {
    "add": lambda a, b, p: (a + b) % p,
    "subtract": lambda a, b, p: (a - b) % p,
    "multiply": lambda a, b, p: (a * b) % p,
    "divide": lambda a, b, p: (a * egcd_inverse(b, p)) % p,
    "x2xyy2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x2y2": lambda a, b, p: (a**2 + b**2) % p,
    "x3xy": lambda a, b, p: (a**3 + a * b) % p,
    "x3xy2y": lambda a, b, p: (a**3 + a * b**2 + b) % p,
    "x2xyy2x": lambda a, b, p: (a**2 + a * b + b**2 + a) % p,
    "oddsub": lambda a, b, p: (a * egcd_inverse(b, p)) % p if b % 2 == 1 else (a - b) % p,
    # openai/grok's data.py: "+*" is a + b for even a, else a * b; "+-" the same with a - b.
    "addmul": lambda a, b, p: (a + b) % p if a % 2 == 0 else (a * b) % p,
    "addsub": lambda a, b, p: (a + b) % p if a % 2 == 0 else (a - b) % p,
}


@pytest.mark.parametrize("op", sorted(EXPECTED))
@pytest.mark.parametrize("p", [7, 97])
def test_operation_table_matches_independent_formula(op, p):
    ds = make_dataset(op, p, 0.5, seed=0)
    seen = {}
    for (a, b, eq), c in zip(ds.tokens.tolist(), ds.labels.tolist()):
        assert eq == p
        seen[(a, b)] = c
    pairs = [(a, b) for a in range(p) for b in range(p) if not (op == "divide" and b == 0)]
    assert set(seen) == set(pairs)
    for a, b in pairs:
        assert seen[(a, b)] == EXPECTED[op](a, b, p), (op, a, b)


def test_every_registered_modular_operation_is_checked():
    modular = {name for name, op in OPERATIONS.items() if op.group_size is None and name != "rand"}
    assert modular == set(EXPECTED)


@pytest.mark.parametrize("p", [5, 13, 97, 113])
def test_modular_inverse(p):
    for b in range(1, p):
        assert modular_inverse(b, p) == egcd_inverse(b, p)
        assert (b * modular_inverse(b, p)) % p == 1
    with pytest.raises(ZeroDivisionError):
        modular_inverse(0, p)


def test_division_is_not_float_division():
    # The seed notebook built (a / b) % p in floating point; 3 / 2 mod 7 must be 3 * 4 = 12 = 5.
    ds = make_dataset("divide", 7, 0.5, 0)
    assert ds.table()[3, 2].item() == 5
    assert ds.table()[3, 0].item() == -1  # b = 0 does not exist


def test_rand_is_fixed_per_seed():
    t0 = make_dataset("rand", 11, 0.5, seed=0).table()
    assert torch.equal(t0, make_dataset("rand", 11, 0.5, seed=0).table())
    assert not torch.equal(t0, make_dataset("rand", 11, 0.5, seed=1).table())
    assert t0.min() >= 0 and t0.max() < 11


def literal_gen_train_test(frac_train, num, seed=0):
    # Copied statement for statement from the seed notebook (In [26]).
    pairs = [(i, j, num) for i in range(num) for j in range(num)]
    random.seed(seed)
    random.shuffle(pairs)
    div = int(frac_train * len(pairs))
    return pairs[:div], pairs[div:]


@pytest.mark.parametrize("p,frac,seed", [(113, 0.3, 0), (97, 0.5, 3), (13, 0.8, 42)])
def test_seed_split_reproduces_gen_train_test(p, frac, seed):
    train, test = literal_gen_train_test(frac, p, seed)
    assert seed_gen_train_test(frac, p, seed) == (train, test)
    ds = make_dataset("add", p, frac, seed, split="seed")
    assert ds.tokens[ds.train_idx].tolist() == [list(t) for t in train]
    assert ds.tokens[ds.test_idx].tolist() == [list(t) for t in test]


def test_seed_split_for_divide_drops_b_zero_in_order():
    train, test = literal_gen_train_test(0.3, 13, 0)
    ds = make_dataset("divide", 13, 0.3, 0, split="seed")
    assert ds.tokens[ds.train_idx].tolist() == [list(t) for t in train if t[1] != 0]
    assert ds.tokens[ds.test_idx].tolist() == [list(t) for t in test if t[1] != 0]


def test_random_split_partitions_pairs_and_depends_on_seed():
    a = make_dataset("add", 23, 0.3, seed=0, split="random")
    b = make_dataset("add", 23, 0.3, seed=1, split="random")
    assert len(a.train_idx) == int(0.3 * 23 * 23)
    both = torch.cat([a.train_idx, a.test_idx]).sort().values
    assert torch.equal(both, torch.arange(23 * 23))
    assert not torch.equal(a.train_idx, b.train_idx)


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert np.all([is_prime(n) for n in (97, 113)])


def test_openai_grok_names_of_the_mixed_operations_are_accepted():
    assert from_dict({"op": "+*", "p": 7}).op == "addmul" and from_dict({"op": "+-", "p": 7}).op == "addsub"
    assert Config(op="addmul", p=7).key() == from_dict({"op": "+*", "p": 7}).key()


# --- label noise ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_label_noise_corrupts_that_fraction_of_training_labels_only_and_always_wrongly(fraction):
    clean = make_dataset("add", 23, 0.4, seed=3)
    noisy = make_dataset("add", 23, 0.4, seed=3, label_noise=fraction)
    assert torch.equal(noisy.train_idx, clean.train_idx) and torch.equal(noisy.test_idx, clean.test_idx)
    assert torch.equal(noisy.clean_labels, clean.labels)
    rows = noisy.noisy_idx.tolist()
    assert len(rows) == len(set(rows)) == round(fraction * len(clean.train_idx))
    assert set(rows) <= set(clean.train_idx.tolist())
    changed = (noisy.labels != clean.labels).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(rows)  # every corrupted label is wrong; nothing else moved
    assert ((noisy.labels >= 0) & (noisy.labels < 23)).all()
    again = make_dataset("add", 23, 0.4, seed=3, label_noise=fraction)
    assert torch.equal(again.labels, noisy.labels) and torch.equal(again.noisy_idx, noisy.noisy_idx)
    other = make_dataset("add", 23, 0.4, seed=4, label_noise=fraction)
    assert not torch.equal(other.noisy_idx, noisy.noisy_idx[: len(other.noisy_idx)])


def test_wrong_labels_are_uniform_over_the_wrong_answers():
    noisy = make_dataset("add", 11, 0.9, seed=0, label_noise=0.999)
    rows = noisy.noisy_idx
    shift = ((noisy.labels[rows] - noisy.clean_labels[rows]) % 11).numpy()
    counts = np.bincount(shift, minlength=11)
    assert counts[0] == 0 and counts[1:].min() > 0.6 * counts[1:].mean()
