"""The bases of the tasks (grokking.groups), checked against independent facts.

S5's irreducible representations against the orthogonality relations, the homomorphism
property on every pair, and the character table of S5 as printed in the literature (by cycle
type); discrete logarithms against brute force; every basis orthonormal.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from grokking import groups
from grokking.data import OPERATIONS, PERMUTATIONS, make_dataset
from handbuilt import primitive_root_and_log

# The character table of S5 (e.g. Fulton & Harris, section 3.1), classes by cycle type.
CYCLE_TYPES = [(1, 1, 1, 1, 1), (2, 1, 1, 1), (2, 2, 1), (3, 1, 1), (3, 2), (4, 1), (5,)]
CLASS_SIZES = [1, 10, 15, 20, 20, 30, 24]
CHARACTERS = {  # partition: characters on the classes above
    (5,): [1, 1, 1, 1, 1, 1, 1],
    (1, 1, 1, 1, 1): [1, -1, 1, 1, -1, -1, 1],
    (4, 1): [4, 2, 0, 1, -1, 0, -1],
    (2, 1, 1, 1): [4, -2, 0, 1, 1, 0, -1],
    (3, 2): [5, 1, 1, -1, 1, -1, 0],
    (2, 2, 1): [5, -1, 1, -1, -1, 1, 0],
    (3, 1, 1): [6, 0, -2, 0, 0, 0, 1],
}


def cycle_type(perm: tuple[int, ...]) -> tuple[int, ...]:
    seen, lengths = set(), []
    for start in range(len(perm)):
        length, k = 0, start
        while k not in seen:
            seen.add(k)
            k = perm[k]
            length += 1
        if length:
            lengths.append(length)
    return tuple(sorted(lengths, reverse=True))


def test_the_reference_table_is_a_character_table():
    assert sum(CLASS_SIZES) == 120
    for (_, x), (_, y) in itertools.product(CHARACTERS.items(), repeat=2):
        inner = sum(s * a * b for s, a, b in zip(CLASS_SIZES, x, y)) / 120
        assert inner == (1 if x is y else 0)


@pytest.fixture(scope="module")
def irreps():
    return groups.s5_irreps()


@pytest.fixture(scope="module")
def table():
    return make_dataset("perm_xy", 5, 0.5, 0).table().numpy()


def test_s5_irreps_have_the_dimensions_and_characters_of_s5(irreps):
    assert [rho.shape[1] for rho in irreps] == [1, 1, 4, 4, 5, 5, 6]
    assert sum(rho.shape[1] ** 2 for rho in irreps) == 120
    classes = [CYCLE_TYPES.index(cycle_type(perm)) for perm in PERMUTATIONS]
    assert np.bincount(classes).tolist() == CLASS_SIZES
    for partition, rho in zip(groups.S5_PARTITIONS, irreps):
        characters = np.trace(rho, axis1=1, axis2=2)
        np.testing.assert_allclose(characters, np.array(CHARACTERS[partition])[classes], atol=1e-12)


def test_s5_irreps_are_orthogonal_homomorphisms(irreps, table):
    for rho in irreps:
        d = rho.shape[1]
        np.testing.assert_allclose(np.einsum("gij,gkj->gik", rho, rho), np.broadcast_to(np.eye(d), rho.shape),
                                   atol=1e-12)
        np.testing.assert_allclose(rho[0], np.eye(d), atol=1e-12)  # token 0 is the identity permutation
        # rho(x y) = rho(x) rho(y) for every pair, with x y as grokking.data composes them
        np.testing.assert_allclose(rho[table], np.einsum("xij,yjk->xyik", rho, rho), atol=1e-12)


def test_schur_orthogonality_of_the_matrix_elements(irreps):
    elements = np.concatenate([rho.reshape(120, -1) * np.sqrt(rho.shape[1]) for rho in irreps], axis=1)  # [120, 120]
    np.testing.assert_allclose(elements.T @ elements / 120, np.eye(120), atol=1e-12)


def test_s5_basis_groups_rows_by_irrep(irreps):
    basis = groups.task_basis("perm_xy", 5)
    assert basis.kind == "s5" and basis.dims.tolist() == [1, 1, 16, 16, 25, 25, 36]
    np.testing.assert_allclose(basis.group_basis @ basis.group_basis.T, np.eye(120), atol=1e-12)
    # each irrep's rows span exactly the functions g -> rho_ij(g)
    for c, rho in enumerate(irreps):
        rows = basis.group_basis[basis.group_component == c]
        functions = rho.reshape(120, -1).T
        np.testing.assert_allclose(rows.T @ (rows @ functions.T), functions.T, atol=1e-10)
    for op in ("perm_xyx1", "perm_xyx"):
        assert groups.task_basis(op, 97).kind == "s5"


@pytest.mark.parametrize("p", [3, 5, 7, 11, 13, 23, 59, 97, 113])
def test_discrete_log_against_brute_force(p):
    g, log = primitive_root_and_log(p)
    assert groups.primitive_root(p) == g
    expected = np.array([-1] + [log[u] for u in range(1, p)])
    np.testing.assert_array_equal(groups.discrete_log(p), expected)


@pytest.mark.parametrize("op, p", [("multiply", 23), ("divide", 13)])
def test_multiplicative_basis(op, p):
    basis = groups.task_basis(op, p)
    g, log = primitive_root_and_log(p)
    assert basis.kind == "multiplicative" and f"base {g}" in basis.name
    assert basis.group_tokens.tolist() == [pow(g, k, p) for k in range(p - 1)]
    np.testing.assert_allclose(basis.token_basis @ basis.token_basis.T, np.eye(p), atol=1e-12)
    assert (basis.token_component == groups.APART).sum() == 1 and basis.token_basis[0, 0] == 1.0
    # frequency k is cos/sin(2 pi k log u / (p - 1)) over the non-zero tokens
    k = 3
    rows = basis.token_basis[basis.token_component == k]
    wave = np.array([0.0] + [np.cos(2 * np.pi * k * log[u] / (p - 1)) for u in range(1, p)])
    np.testing.assert_allclose(rows.T @ (rows @ wave), wave, atol=1e-10)
    assert basis.dims[-1] == 1  # (p - 1) / 2: the Nyquist frequency of the even order p - 1


def test_each_operation_gets_a_basis():
    kinds = {op: groups.task_basis(op, 97).kind for op in OPERATIONS}
    assert kinds["add"] == kinds["subtract"] == "additive"
    assert kinds["multiply"] == kinds["divide"] == "multiplicative"
    assert {kinds[op] for op in ("x2y2", "x3xy", "rand", "oddsub", "x2xyy2")} == {"none"}
    assert groups.task_basis("multiply", 12).kind == "none"  # not prime: no cyclic group of units
    assert "no group structure" in groups.task_basis("x2y2", 11).name
