"""Comparing subspaces and vectors with a curvature operator (flat, row-major vectors).

* `principal_angles(U, V)`: angles between span(U) and span(V) (Björck & Golub 1973),
  sines for small angles and cosines for large ones, so both ends are accurate.
* `projector_overlap(U, V) = Tr(P_U P_V) / k = ‖Q_Uᵀ Q_V‖_F² / k`, k = min(dim U, dim V)
  (1 iff the smaller subspace lies in the larger; Gur-Ari, Roberts & Dyer 2018 use it for
  the gradient / top-Hessian overlap).
* `alignment(H, v) = (vᵀHv)² / (‖v‖² ‖Hv‖²) ∈ [0, 1]`, 1 iff v is an eigenvector of H
  (``docs/theory.md`` §4).
* `gradient_fraction(g, U) = ‖P_U g‖² / ‖g‖²` (Gur-Ari et al. 2018).
* `count_outliers(eigenvalues)`: the number of eigenvalues above the largest ratio gap.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = [
    "principal_angles",
    "projector_overlap",
    "alignment",
    "gradient_fraction",
    "count_outliers",
    "orthonormalize",
]


def _matrix(name, U):
    U = jnp.asarray(U)
    if U.ndim == 1:
        U = U[:, None]
    if U.ndim != 2 or U.shape[1] == 0:
        raise ValueError(f"{name} must be a (P,) vector or a (P, k) matrix with k >= 1, got shape {U.shape}")
    return U


def orthonormalize(U):
    """An orthonormal basis (P × k) of the columns of ``U`` (thin QR; U must have full column rank)."""
    return jnp.linalg.qr(_matrix("U", U))[0]


def principal_angles(U, V) -> jnp.ndarray:
    """Principal angles (ascending, radians) between span(U) and span(V), min(k_U, k_V) of them."""
    U, V = _matrix("U", U), _matrix("V", V)
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"U and V must have the same number of rows, got {U.shape[0]} and {V.shape[0]}")
    Qu, Qv = orthonormalize(U), orthonormalize(V)
    if Qu.shape[1] < Qv.shape[1]:
        Qu, Qv = Qv, Qu  # angles are measured from the smaller subspace
    r = Qv.shape[1]
    cos = jnp.clip(jnp.linalg.svd(Qu.T @ Qv, compute_uv=False), 0.0, 1.0)  # descending
    sin = jnp.clip(jnp.linalg.svd(Qv - Qu @ (Qu.T @ Qv), compute_uv=False)[::-1][:r], 0.0, 1.0)  # ascending
    return jnp.where(sin**2 < 0.5, jnp.arcsin(sin), jnp.arccos(cos))


def projector_overlap(U, V) -> jnp.ndarray:
    """``Tr(P_U P_V) / min(k_U, k_V)`` ∈ [0, 1] (the columns are orthonormalised first)."""
    U, V = _matrix("U", U), _matrix("V", V)
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"U and V must have the same number of rows, got {U.shape[0]} and {V.shape[0]}")
    Qu, Qv = orthonormalize(U), orthonormalize(V)
    return jnp.sum((Qu.T @ Qv) ** 2) / min(Qu.shape[1], Qv.shape[1])


def alignment(H_or_matvec, v) -> jnp.ndarray:
    """``(vᵀHv)² / (‖v‖²‖Hv‖²)`` for a dense symmetric ``H`` or a function ``v ↦ Hv``."""
    v = jnp.asarray(v)
    if v.ndim != 1:
        raise ValueError(f"v must be a flat vector, got shape {v.shape}")
    Hv = H_or_matvec(v) if callable(H_or_matvec) else jnp.asarray(H_or_matvec) @ v
    return (v @ Hv) ** 2 / ((v @ v) * (Hv @ Hv))


def gradient_fraction(g, U) -> jnp.ndarray:
    """``‖P_U g‖² / ‖g‖²``: the fraction of the gradient's squared norm in span(U)."""
    g = jnp.asarray(g)
    if g.ndim != 1:
        raise ValueError(f"g must be a flat vector, got shape {g.shape}")
    Q = orthonormalize(U)
    if Q.shape[0] != g.shape[0]:
        raise ValueError(f"U must have {g.shape[0]} rows like g, got {Q.shape[0]}")
    return jnp.sum((Q.T @ g) ** 2) / (g @ g)


def count_outliers(eigenvalues, *, min_ratio: float = 3.0, rtol: float = 1e-10) -> int:
    """Number of top outliers: the eigenvalues above the largest ratio gap.

    Rule: sort descending, keep the positive part, floor every value at
    ``rtol · λ_max`` (so exact and rounding-level zeros form one flat bulk), and find the
    largest ratio ``λ_i / λ_{i+1}``. If it is at least ``min_ratio`` the outliers are
    ``λ_1..λ_i``; otherwise there is no clear gap and the count is 0. Pass a spectrum that
    extends past the gap (e.g. ``k = expected + 5`` eigenvalues from `top_eigenpairs`).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    if lam.size < 2 or not lam[0] > 0:
        return 0
    if not min_ratio > 1:
        raise ValueError(f"min_ratio must be > 1, got {min_ratio}")
    floor = rtol * lam[0]
    lam = np.maximum(lam, floor)
    ratios = lam[:-1] / lam[1:]
    i = int(np.argmax(ratios))
    return i + 1 if ratios[i] >= min_ratio else 0
