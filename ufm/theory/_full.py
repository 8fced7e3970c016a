"""The full data Hessian over W_1..W_L (and H_1) at the linear-MSE DNC optimum (``docs/theory.md`` §4).

Conventions as in `ufm.theory._layer`; full-Hessian vectors are ordered ``W_1, ..., W_L``
then ``H_1``, each block row-major.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..collapse import class_means
from ..model import UFMParams, check_params, forward
from ..spec import UFMSpec
from ..spectrum import Spectrum
from ._solution import dnc_solution, frame_matrices

__all__ = ["full_hessian_spectrum"]


class FullStructure(NamedTuple):
    """The block structure of the full Hessian at the DNC point (see `_full_structure`)."""

    layers: list  # 0 (H_1, if included), then 1..L
    lams: np.ndarray  # λ per entry of ``layers`` (λ_0 = λ_H)
    S: np.ndarray  # symmetric frame modes, K(K+1)/2 copies
    T: np.ndarray  # antisymmetric frame modes, K(K−1)/2 copies
    pairs: list  # [(layer a, 2×2 block coupling a and the next layer, count)]
    extra: tuple | None  # H_1 only: (value, count) of the within-class columns
    structural: dict  # layer -> count of the remaining coordinates (0, or λ_l if regularised)
    dims: dict  # layer -> shape of its block


def _full_structure(spec: UFMSpec, sol, include_H: bool, regularized: bool) -> FullStructure:
    """The block structure of the full Hessian at the DNC point, in frame coordinates.

    Layers are indexed 0 (H_1, if included) and 1..L; ``λ_0 = λ_H``. With
    ``r_{lm} = √(λ_lλ_m)/(1−γ)`` (derived; ``docs/theory.md`` §4):
      * frame×frame entries: symmetric modes see ``S = (2γ−1) r + diag(λ)`` (K(K+1)/2 copies),
        antisymmetric ones ``T = r − diag(λ)`` (K(K−1)/2 copies);
      * output-complement × frame-input of layer l paired with frame-output ×
        input-complement of layer l+1: ``[[0, −√(λ_lλ_{l+1})], [−√(λ_lλ_{l+1}), 0]]``
        (K(d_{l+1} − K) copies);
      * H_1 only: frame-output × within-class columns, ``λ_Hγ/(1−γ)`` (K(N − K) copies);
      * every other coordinate: 0.
    ``regularized`` adds ``λ_l`` to every coordinate of layer l.
    """
    K, N, L = spec.num_classes, spec.num_samples, spec.depth
    layers = ([0] if include_H else []) + list(range(1, L + 1))
    lams = np.array(([spec.lambda_H] if include_H else []) + list(spec.lambdas))
    g, u = sol.scale, sol.one_minus_scale
    S, T = frame_matrices(lams, g, u, regularized)
    dims = {0: (spec.widths[0], N)}
    for l, shape in enumerate(spec.weight_shapes, start=1):
        dims[l] = shape
    pairs = []
    covered = {l: K * K for l in layers}
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        d_mid = dims[a][0]
        c = K * (d_mid - K)
        m = -math.sqrt(lams[layers.index(a)] * lams[layers.index(b)])
        P2 = np.array([[0.0, m], [m, 0.0]])
        if regularized:
            P2 = P2 + np.diag([lams[layers.index(a)], lams[layers.index(b)]])
        pairs.append((a, P2, c))
        covered[a] += c
        covered[b] += c
    extra = None
    if include_H:
        extra = (spec.lambda_H * g / u + (spec.lambda_H if regularized else 0.0), K * (N - K))
        covered[0] += K * (N - K)
    structural = {l: dims[l][0] * dims[l][1] - covered[l] for l in layers}
    return FullStructure(layers, lams, S, T, pairs, extra, structural, dims)


def _check_optimum(spec: UFMSpec, params: UFMParams, sol, tol: float):
    """Frames U_1..U_{L+1} (orthonormal, d_l × K) of a DNC optimum; raises if params are not one."""
    check_params(spec, params)
    acts = forward(spec, params)
    Z = np.asarray(acts.output, dtype=np.float64)
    Y = spec.targets
    err = np.linalg.norm(Z - sol.scale * Y) / np.linalg.norm(sol.scale * Y)
    frames = []
    for l in range(spec.depth):
        M = class_means(np.asarray(acts.post[l], dtype=np.float64), spec.class_index, spec.num_classes)
        w, _, vt = np.linalg.svd(M, full_matrices=False)
        frames.append(w @ vt)  # nearest orthonormal frame to the class means (polar factor)
    frames.append(np.eye(spec.num_classes))
    for l, (W, sig) in enumerate(zip(params.Ws, sol.singular_values, strict=True)):
        W = np.asarray(W, dtype=np.float64)
        err = max(err, np.linalg.norm(W - sig * frames[l + 1] @ frames[l].T) / np.linalg.norm(W))
    H1 = np.asarray(params.H1, dtype=np.float64)
    err = max(err, np.linalg.norm(H1 - sol.feature_scale * frames[0] @ Y) / np.linalg.norm(H1))
    if not err <= tol:
        raise ValueError(
            f"params are not the DNC optimum of this spec (relative distance {err:.3g} > optimum_tol={tol:g}); "
            "the full-Hessian closed form holds only there"
        )
    return frames


def _complete(U: np.ndarray) -> np.ndarray:
    """[U, U_⊥]: an orthonormal basis whose first columns are the orthonormal U."""
    q, _ = np.linalg.qr(U, mode="complete")
    return np.concatenate([U, q[:, U.shape[1] :]], axis=1)


def full_hessian_spectrum(
    spec: UFMSpec,
    params: UFMParams | None = None,
    *,
    include_H: bool = False,
    regularized: bool = False,
    vectors: bool = False,
    optimum_tol: float = 1e-6,
    allow_zero: bool = False,
) -> Spectrum:
    """Spectrum of the Hessian over W_1..W_L (and H_1) at the linear-MSE DNC optimum (``docs/theory.md`` §4).

    Per-layer λ; structure in `_full_structure` (S and T matrices, ±√(λ_lλ_{l+1}) pairs,
    zeros). The cross-layer blocks carry the residual term, since ``Z − Y = (γ−1)Y ≠ 0``.
    Also valid for ReLU with ``relu_grad0 = 1`` (the network is then linear at the point).

    Args:
      params: a DNC optimum (checked to ``optimum_tol``), used only for eigenvectors; by
        default `construct_optimum(spec, 0)` when ``vectors``.
      include_H: add ``H_1`` as a last block ("layer 0", λ_0 = λ_H).
      regularized: add the ridge (+λ_l on each block). Then it is PSD with exactly
        ``L·K(K−1)/2 + Σ_l K(d_l − K)`` zeros.
      vectors: return all ``dim`` orthonormal eigenvectors (dense, dim × dim: small models only),
        flat in the order W_1..W_L, H_1, each row-major.
      allow_zero: above the threshold (zero minimiser) return the Hessian at 0 instead of raising.

    Returns:
      `Spectrum`: data Hessian: the nonzero-structure eigenvalues, bulk 0; regularised: every
      eigenvalue resolved. ``info`` holds S, T and the level labels.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=2, per_class=1, depth=2, width=3)
      >>> s, sol = ufm.theory.full_hessian_spectrum(spec), ufm.theory.dnc_solution(spec)
      >>> bool(np.isclose(s.eigenvalues[0], max(sol.full_levels.antisymmetric[0], sol.full_levels.symmetric[0])))
      True
    """
    if spec.loss != "mse" or not (
        spec.activation == "linear" or (spec.activation == "relu" and spec.relu_grad0 == 1.0)
    ):
        raise ValueError(
            "full_hessian_spectrum has a closed form for MSE with a linear network (or ReLU with relu_grad0=1); "
            f"got loss={spec.loss!r}, activation={spec.activation!r}, relu_grad0={spec.relu_grad0}"
        )
    sol = dnc_solution(spec)
    if sol.collapsed_to_zero:
        if not allow_zero:
            raise ValueError(
                f"λ is above the threshold (b = {sol.b:.4g} >= {sol.b_bound:.4g}, docs/theory.md §3): "
                "the minimiser is 0; pass allow_zero=True for the Hessian at 0"
            )
        return _zero_full_hessian(spec, include_H, regularized)
    layers, lams, S, T, pairs, extra, structural, dims = _full_structure(spec, sol, include_H, regularized)
    K = spec.num_classes
    sv, sU = np.linalg.eigh(S)
    tv, tU = np.linalg.eigh(T)
    info = {
        "S": S.tolist(),
        "T": T.tolist(),
        "gamma": sol.scale,
        "regularized": bool(regularized),
        "include_H": bool(include_H),
        "structural_zeros": {str(k): v for k, v in structural.items()},
    }
    dim = sum(dims[l][0] * dims[l][1] for l in layers)
    if not vectors:
        vals = [np.repeat(sv, K * (K + 1) // 2), np.repeat(tv, K * (K - 1) // 2)]
        for _, P2, c in pairs:
            vals.append(np.repeat(np.linalg.eigvalsh(P2), c))
        if extra is not None:
            vals.append(np.full(extra[1], extra[0]))
        if regularized:
            vals += [np.full(c, lams[layers.index(l)]) for l, c in structural.items()]
        return Spectrum(
            np.concatenate(vals), dim=dim, bulk_value=None if regularized else 0.0, source="closed-form", info=info
        )

    if params is None:
        from ._solution import construct_optimum

        params = construct_optimum(spec, 0)
    frames = _check_optimum(spec, params, sol, optimum_tol)
    n, N = spec.per_class, spec.num_samples
    basis = {l: (_complete(frames[l]), _complete(frames[l - 1])) for l in range(1, spec.depth + 1)}
    if include_H:
        basis[0] = (_complete(frames[0]), _complete(spec.targets.T / math.sqrt(n)))
    offset, pos = {}, 0
    for l in list(range(1, spec.depth + 1)) + ([0] if include_H else []):
        offset[l] = pos
        pos += dims[l][0] * dims[l][1]
    idx = lambda l, i, j: offset[l] + i * dims[l][1] + j  # noqa: E731  coordinate (l, i, j)
    coords = np.zeros((dim, dim))
    values = np.zeros(dim)
    col = 0

    def add(value, entries):
        nonlocal col
        for (l, i, j), c in entries:
            coords[idx(l, i, j), col] = c
        values[col] = value
        col += 1

    h = 1 / math.sqrt(2)
    for a in range(K):
        for b in range(a, K):
            E = [((a, a), 1.0)] if a == b else [((a, b), h), ((b, a), h)]
            for k in range(len(layers)):
                add(sv[k], [((l, i, j), e * sU[t, k]) for t, l in enumerate(layers) for (i, j), e in E])
            if a != b:
                E = [((a, b), h), ((b, a), -h)]
                for k in range(len(layers)):
                    add(tv[k], [((l, i, j), e * tU[t, k]) for t, l in enumerate(layers) for (i, j), e in E])
    for a_layer, P2, _ in pairs:
        b_layer = layers[layers.index(a_layer) + 1]
        pv, pU = np.linalg.eigh(P2)
        for i in range(K, dims[a_layer][0]):
            for b in range(K):
                for k in range(2):
                    add(pv[k], [((a_layer, i, b), pU[0, k]), ((b_layer, b, i), pU[1, k])])
    if extra is not None:
        for a in range(K):
            for j in range(K, N):
                add(extra[0], [((0, a, j), 1.0)])
    used = np.abs(coords[:, :col]).sum(axis=1) > 0
    for l in layers:
        for p in range(offset[l], offset[l] + dims[l][0] * dims[l][1]):
            if not used[p]:
                coords[p, col] = 1.0
                values[col] = lams[layers.index(l)] if regularized else 0.0
                col += 1
    if col != dim:
        raise RuntimeError(f"internal error: built {col} eigenvectors for dimension {dim}")
    vecs = np.empty_like(coords)
    for l, (Bo, Bi) in basis.items():
        sl = slice(offset[l], offset[l] + dims[l][0] * dims[l][1])
        X = coords[sl].reshape(dims[l][0], dims[l][1], dim)
        vecs[sl] = np.einsum("pi,ijk,qj->pqk", Bo, X, Bi, optimize=True).reshape(-1, dim)
    return Spectrum(values, vecs, dim=dim, bulk_value=None, source="closed-form", info=info)


def _zero_full_hessian(spec: UFMSpec, include_H: bool, regularized: bool) -> Spectrum:
    """The Hessian at the zero point: 0 except the W_1–H_1 coupling when L = 1 (±1/(K√n), K·d each)."""
    K, n, L = spec.num_classes, spec.per_class, spec.depth
    blocks = [(spec.lambdas[l], a * b) for l, (a, b) in enumerate(spec.weight_shapes)]
    if include_H:
        blocks.append((spec.lambda_H, spec.widths[0] * spec.num_samples))
    dim = sum(c for _, c in blocks)
    if L == 1 and include_H:
        d = spec.widths[0]
        v = 1 / (K * math.sqrt(n))
        lw, lh = spec.lambdas[0], spec.lambda_H
        P2 = np.array([[lw if regularized else 0.0, -v], [-v, lh if regularized else 0.0]])
        vals = [np.repeat(np.linalg.eigvalsh(P2), K * d)]
        rest = [(lw, K * d - K * d), (lh, d * spec.num_samples - K * d)]
    else:
        vals, rest = [], blocks
    if regularized:
        vals += [np.full(c, lam) for lam, c in rest]
    return Spectrum(
        np.concatenate(vals) if vals else np.zeros(0),
        dim=dim,
        bulk_value=None if regularized else 0.0,
        source="closed-form",
        info={"zero_point": True},
    )
