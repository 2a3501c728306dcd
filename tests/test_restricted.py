"""Restricted and excluded losses (grokking.restricted) against independent float64 computations
written from Nanda et al.'s definitions: for each answer c, least squares in numpy on explicitly
built directions over the (a, b) grid, and the cross-entropy by hand. Nothing here calls the
package's projections; the discrete logarithm is found by brute force and S5's irreps enter
only through the character table (the isotypic projection (d / |G|) sum_h chi(h^-1 g) f(h)).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokking import analysis
from grokking.data import PERMUTATIONS, make_dataset
from handbuilt import primitive_root_and_log
from test_groups import CHARACTERS, CYCLE_TYPES, cycle_type


def cross_entropy(logits: np.ndarray, pairs: list[tuple[int, int]], table: np.ndarray) -> float:
    total = 0.0
    for a, b in pairs:
        row = logits[a, b]
        total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[table[a, b]]
    return total / len(pairs)


def project(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Least-squares fit of ``values [rows]`` on the columns of ``design [rows, k]``."""
    if design.shape[1] == 0:
        return np.zeros_like(values)
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=1e-10)
    return design @ coefficients


def paper_split_by_hand(logits: np.ndarray, rows: list[tuple[int, int]],
                        directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each answer c, over the pairs ``rows``: restricted = fit on [1, directions];
    excluded = logits - fit on the directions alone. Other pairs keep their logits."""
    restricted, excluded = logits.copy(), logits.copy()
    a, b = np.array(rows).T
    ones = np.ones((len(rows), 1))
    for c in range(logits.shape[-1]):
        column = logits[a, b, c]
        restricted[a, b, c] = project(column, np.hstack([ones, directions]))
        excluded[a, b, c] = column - project(column, directions)
    return restricted, excluded


def waves(angle_of_pair, rows, freqs, order):
    cols = []
    for k in freqs:
        angle = np.array([2 * np.pi * k * angle_of_pair(a, b) / order for a, b in rows])
        cols += [np.cos(angle), np.sin(angle)]
    return np.stack(cols, axis=1)


def random_logits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, n, n)) * 3


def check(op: str, p: int, logits: np.ndarray, keys, restricted: np.ndarray, excluded: np.ndarray) -> None:
    dataset = make_dataset(op, p, 0.4, 1)
    ours_r, ours_e = analysis.task_split(torch.as_tensor(logits), dataset, keys)
    np.testing.assert_allclose(ours_r.numpy(), restricted, atol=1e-9)
    np.testing.assert_allclose(ours_e.numpy(), excluded, atol=1e-9)
    table = dataset.table().numpy()
    pairs_all = [(int(a), int(b)) for a, b in dataset.tokens[:, :2].tolist()]
    pairs_train = [(int(a), int(b)) for a, b in dataset.split("train")[0][:, :2].tolist()]
    assert analysis.restricted_loss(logits, dataset, keys) == pytest.approx(
        cross_entropy(restricted, pairs_all, table), rel=1e-10)
    assert analysis.excluded_loss(logits, dataset, keys) == pytest.approx(
        cross_entropy(excluded, pairs_train, table), rel=1e-10)


@pytest.mark.parametrize("op, sign", [("add", 1), ("subtract", -1)])
def test_additive_paper_definitions(op, sign):
    p, keys = 13, [2, 5]
    logits = random_logits(p, 0)
    rows = [(a, b) for a in range(p) for b in range(p)]
    restricted, excluded = paper_split_by_hand(logits, rows, waves(lambda a, b: a + sign * b, rows, keys, p))
    check(op, p, logits, keys, restricted, excluded)


@pytest.mark.parametrize("op, sign", [("multiply", 1), ("divide", -1)])
def test_multiplicative_paper_definitions(op, sign):
    p = 13
    keys = [1, 4, 6]  # 6 = (p - 1) / 2: the Nyquist frequency, whose sine vanishes
    _, log = primitive_root_and_log(p)
    logits = random_logits(p, 1)
    rows = [(a, b) for a in range(1, p) for b in range(1, p)]  # the unit pairs; those with a 0 stand apart
    restricted, excluded = paper_split_by_hand(logits, rows, waves(lambda a, b: log[a] + sign * log[b], rows, keys,
                                                                   p - 1))
    check(op, p, logits, keys, restricted, excluded)
    # the pairs with a 0 are left as they are, in both
    np.testing.assert_array_equal(restricted[0], logits[0])


def character(partition, g: int) -> float:
    return CHARACTERS[partition][CYCLE_TYPES.index(cycle_type(PERMUTATIONS[g]))]


@pytest.mark.parametrize("op", ["perm_xy", "perm_xyx1"])
def test_s5_paper_definitions(op):
    """Directions: every function of the answer's group element t(x, y) in the key irreps'
    isotypic subspace. By hand: fit each answer's column on the 120 indicators of t(x, y) = g
    (any function of t), then project that function of g onto the key irreps with characters."""
    dataset = make_dataset(op, 5, 0.4, 1)
    table = dataset.table().numpy()
    logits = random_logits(120, 2)
    keys = [2, 6]  # the standard irrep [4,1] and the 6-dimensional [3,1,1]
    inverse = np.array([PERMUTATIONS.index(tuple(np.argsort(perm))) for perm in PERMUTATIONS])
    compose = make_dataset("perm_xy", 5, 0.4, 1).table().numpy()
    partitions = [(5,), (1, 1, 1, 1, 1), (4, 1), (2, 1, 1, 1), (3, 2), (2, 2, 1), (3, 1, 1)]
    kernel = {}
    for k in keys + [0]:
        chi = np.array([character(partitions[k], g) for g in range(120)])
        # P f(g) = d / 120 sum_h chi(h^-1 g) f(h): the kernel K[g, h]
        kernel[k] = CHARACTERS[partitions[k]][0] / 120 * chi[compose[inverse[None, :], np.arange(120)[:, None]]]
    indicator = np.zeros((120 * 120, 120))
    indicator[np.arange(120 * 120), table.reshape(-1)] = 1.0  # any function of t(x, y)
    f = np.linalg.pinv(indicator) @ logits.reshape(120 * 120, 120)  # least squares, every answer c at once
    kept = sum(kernel[k] for k in keys + [0]) @ f  # [g, c]
    removed = sum(kernel[k] for k in keys) @ f
    restricted = kept[table]  # [x, y, c]
    excluded = logits - removed[table]
    check(op, 5, logits, keys, restricted, excluded)


def test_our_variants_and_how_they_relate_to_the_paper():
    p, keys = 11, [3]
    logits = random_logits(p, 3)
    dataset = make_dataset("add", p, 0.4, 1)
    # 'a+b' removes the same directions as the paper (plus per-pair constants, which no softmax sees)
    assert analysis.excluded_loss(logits, dataset, keys, subspace="a+b") == pytest.approx(
        analysis.excluded_loss(logits, dataset, keys), rel=1e-10)
    # 'a+b-c' keeps a subspace of the paper's: two directions per frequency, no per-answer constants
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    w = 2 * np.pi * keys[0] / p
    design = np.stack([np.cos(w * (a + b - c)).reshape(-1), np.sin(w * (a + b - c)).reshape(-1)], axis=1)
    centred = logits - logits.mean(axis=2, keepdims=True)
    fit = (design @ np.linalg.lstsq(design, centred.reshape(-1), rcond=None)[0]).reshape(p, p, p)
    ours, _ = analysis.restricted_and_excluded_logits(logits, keys, "a+b-c")
    np.testing.assert_allclose(ours.numpy(), logits.mean(axis=2, keepdims=True) + fit, atol=1e-10)
    assert analysis.restricted_loss_abc(logits, dataset, keys) == pytest.approx(
        analysis.restricted_loss(logits, dataset, keys, subspace="a+b-c"))


def test_tasks_without_group_structure_have_no_restricted_loss():
    dataset = make_dataset("x2y2", 11, 0.5, 0)
    with pytest.raises(ValueError, match="group"):
        analysis.restricted_loss(random_logits(11, 0), dataset, [1])
    with pytest.raises(ValueError, match="ours"):
        analysis.restricted_loss(random_logits(11, 0), make_dataset("multiply", 11, 0.5, 0), [1], subspace="a+b-c")
    with pytest.raises(ValueError, match="outside"):
        analysis.restricted_loss(random_logits(11, 0), make_dataset("add", 11, 0.5, 0), [6])


def test_an_ideal_circuit_is_its_own_restriction():
    """Logits that are exactly alpha cos(w (log a + log b - log c)) on the unit pairs."""
    p, k = 11, 3
    _, log = primitive_root_and_log(p)
    lg = np.array([0] + [log[u] for u in range(1, p)])
    a, b, c = np.meshgrid(lg, lg, lg, indexing="ij")
    logits = 7 * np.cos(2 * np.pi * k * (a + b - c) / (p - 1))
    logits[0, :, :] = logits[:, 0, :] = 0.0
    logits[0, :, 0] = logits[:, 0, 0] = 9.0
    dataset = make_dataset("multiply", p, 0.5, 0)
    restricted, excluded = analysis.task_split(torch.as_tensor(logits), dataset, [k])
    np.testing.assert_allclose(restricted.numpy(), logits, atol=1e-10)
    unit = np.ix_(range(1, p), range(1, p), range(p))
    per_answer_mean = logits[unit].mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(excluded.numpy()[unit], np.broadcast_to(per_answer_mean, (p - 1, p - 1, p)), atol=1e-10)
    assert math.isclose(analysis.restricted_loss(logits, dataset, [k]), analysis.grid_loss(logits, dataset),
                        rel_tol=1e-9)
