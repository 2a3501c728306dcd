"""Transformers whose weights are written by hand to compute a group operation through its
Fourier features, judged by the real forward pass (shared by the analysis tests).

Every model here has the same wiring: the embedding writes a feature vector ``phi(t)`` of each
token (entries in [-1, 1]); head 0 copies ``M_a phi(a)`` and head 1 ``M_b phi(b)`` to the '='
position; the MLP forms the bilinear products ``out_k = sum_ij T[k, i, j] x_i y_j`` with
``x y = ((x + y)^2 - (x - y)^2) / 4``, each square the piecewise-linear interpolant of z^2 on
knots 0, h, 2h, .. of |z| <= 2 written with ReLUs (exact at the knots, error <= h^2/4); W_U
reads ``logit_c = scale * U[c] . out`` (plus, optionally, ``flag`` dims of the copied
features read straight from the residual stream).

- :func:`build_fourier_model`: (a + b) mod p, features cos/sin(w_k t) for chosen frequencies;
- :func:`build_multiplicative_model`: a * b (or a / b) mod p through discrete-log features
  cos/sin(w_k log t), ``w_k = 2 pi k / (p - 1)``, token 0 a flag read directly for answer 0;
- :func:`build_s5_model`: x * y in S5 through one irrep: features vec(rho(t)), products
  vec(rho(x) rho(y)) = vec(rho(xy)), logits tr(rho(c)^T rho(xy)) = chi(c^-1 x y).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from grokking.config import Config
from grokking.model import Transformer


def primitive_root_and_log(p: int) -> tuple[int, dict[int, int]]:
    """By brute force (independent of grokking.groups): the smallest g of order p - 1, and log_g."""
    for g in range(2, p):
        powers = [pow(g, k, p) for k in range(p - 1)]
        if len(set(powers)) == p - 1:
            return g, {u: k for k, u in enumerate(powers)}
    raise ValueError(p)


def build_bilinear_model(op: str, p: int, features: np.ndarray, M_b: np.ndarray, T: np.ndarray, U: np.ndarray,
                         scale: float = 20.0, flag_dims: tuple[int, ...] = (), flag_answer: int = 0,
                         flag_from: str = "ab", knot_step: float = 0.25) -> Transformer:
    """``features [n, F]`` (row t: phi(t)); ``M_b [F, F]``; ``T [K, F, F]``; ``U [n, K]``.
    ``flag_dims``: feature dims whose copies (from a and/or b, ``flag_from``) add ``scale`` to
    the logit of ``flag_answer``."""
    n, n_feat = features.shape
    n_out = T.shape[0]
    eq_dim, pos_dim = n_feat, n_feat + 1
    a_dim, b_dim = n_feat + 2, 2 * n_feat + 2
    out_dim = 3 * n_feat + 2
    d_model = out_dim + n_out
    products = [(k, i, j, T[k, i, j]) for k, i, j in zip(*np.nonzero(T))]
    knots = [j * knot_step for j in range(int(round(2 / knot_step)))]
    d_mlp = len(products) * 2 * len(knots) * 2
    cfg = Config().replace(op=op, p=p, d_model=d_model, n_heads=2, d_head=n_feat, d_mlp=d_mlp)
    model = Transformer(cfg, seed=0)
    assert cfg.n_classes == n
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embed.W_E[:n_feat, :n] = torch.as_tensor(features.T, dtype=torch.float32)
        model.embed.W_E[eq_dim, n] = 1.0
        model.pos_embed.W_pos[0, pos_dim] = 10.0
        model.pos_embed.W_pos[1, pos_dim] = -10.0
        attn = model.blocks[0].attn
        for head, sign, target, mixing in ((0, 1.0, a_dim, np.eye(n_feat)), (1, -1.0, b_dim, M_b)):
            attn.W_Q[head, 0, eq_dim] = 20.0
            attn.W_K[head, 0, pos_dim] = sign
            attn.W_V[head, :, :n_feat] = torch.as_tensor(mixing, dtype=torch.float32)
            for j in range(n_feat):
                attn.W_O[target + j, head * n_feat + j] = 1.0
        model.unembed.W_U[out_dim:, :n] = torch.as_tensor(scale * U.T, dtype=torch.float32)
        for d in flag_dims:
            for side, start in (("a", a_dim), ("b", b_dim)):
                if side in flag_from:
                    model.unembed.W_U[start + d, flag_answer] = scale
        mlp, neuron = model.blocks[0].mlp, 0
        for k, i, j, weight in products:
            for y_sign, square_sign in ((1, 1), (-1, -1)):  # x y = ((x + y)^2 - (x - y)^2) / 4
                for m, knot in enumerate(knots):
                    slope_change = knot_step if m == 0 else 2 * knot_step
                    for side in (1.0, -1.0):  # ReLU(z - t) + ReLU(-z - t): the even hinge
                        mlp.W_in[neuron, a_dim + i] = side
                        mlp.W_in[neuron, b_dim + j] = side * y_sign
                        mlp.b_in[neuron] = -knot
                        mlp.W_out[out_dim + k, neuron] = float(weight) * square_sign * slope_change / 4
                        neuron += 1
    return model.eval()


def _wave_tensors(n_f: int) -> np.ndarray:
    """T for cos(u + v) = cu cv - su sv, sin(u + v) = su cv + cu sv, per frequency block."""
    T = np.zeros((2 * n_f, 2 * n_f, 2 * n_f))
    for i in range(n_f):
        c, s = 2 * i, 2 * i + 1
        T[c, c, c], T[c, s, s], T[s, s, c], T[s, c, s] = 1, -1, 1, 1
    return T


def build_fourier_model(p: int = 23, freqs: tuple[int, ...] = (3, 7, 11), scale: float = 20.0) -> Transformer:
    """(a + b) mod p: features cos/sin(2 pi k t / p); W_U reads cos(w (a + b - c))."""
    t = np.arange(p)
    cols = []
    for k in freqs:
        w = 2 * math.pi * k / p
        cols += [np.cos(w * t), np.sin(w * t)]
    features = np.stack(cols, axis=1)
    return build_bilinear_model("add", p, features, np.eye(features.shape[1]), _wave_tensors(len(freqs)), features,
                                scale)


def build_multiplicative_model(p: int = 23, freqs: tuple[int, ...] = (2, 5), op: str = "multiply",
                               scale: float = 20.0) -> Transformer:
    """a * b (a / b) mod p through cos/sin(w_k log t), w_k = 2 pi k / (p - 1); token 0: waves 0
    and a flag (the last feature) that W_U reads for answer 0 (from a and b for multiply, from a
    for divide, where b != 0)."""
    _, log = primitive_root_and_log(p)
    n_f = len(freqs)
    features = np.zeros((p, 2 * n_f + 1))
    for u in range(1, p):
        for i, k in enumerate(freqs):
            w = 2 * math.pi * k / (p - 1)
            features[u, 2 * i], features[u, 2 * i + 1] = math.cos(w * log[u]), math.sin(w * log[u])
    features[0, -1] = 1.0
    M_b = np.eye(2 * n_f + 1)
    if op == "divide":  # waves of -log b: the sines flip
        M_b[np.arange(1, 2 * n_f, 2), np.arange(1, 2 * n_f, 2)] = -1
    T = np.zeros((2 * n_f, 2 * n_f + 1, 2 * n_f + 1))
    T[:, :2 * n_f, :2 * n_f] = _wave_tensors(n_f)
    return build_bilinear_model(op, p, features, M_b, T, features[:, :2 * n_f], scale, flag_dims=(2 * n_f,),
                                flag_from="ab" if op == "multiply" else "a")


def build_s5_model(rho: np.ndarray, scale: float = 20.0) -> Transformer:
    """x * y in S5 through the representation ``rho [120, d, d]`` (orthogonal, rho(xy) = rho(x) rho(y))."""
    n, d = rho.shape[0], rho.shape[1]
    features = rho.reshape(n, d * d)  # feature (i, j) = rho_ij
    T = np.zeros((d * d, d * d, d * d))
    for i in range(d):
        for j in range(d):
            for k in range(d):
                T[i * d + j, i * d + k, k * d + j] = 1.0  # (rho(x) rho(y))_ij = sum_k rho_ik(x) rho_kj(y)
    return build_bilinear_model("perm_xy", 5, features, np.eye(d * d), T, features, scale)
