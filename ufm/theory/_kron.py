"""Eigenpairs of Kronecker products and of short sums of Kronecker products.

Row-major convention (``docs/theory.md`` §1): the Kronecker vector ``a ⊗ b`` is the matrix
``a bᵀ`` flattened with ``reshape(-1)``, and ``(A ⊗ B) vec(X) = vec(A X Bᵀ)``.
"""

from __future__ import annotations

import numpy as np

from ..spectrum import Spectrum

__all__ = ["MAX_DENSE_ENTRIES", "kron_eigh", "kron_sum_spectrum"]

#: The one memory limit of the closed forms: flat (row-major) eigenvectors are formed
#: automatically (``vectors=None``) only while ``dim × count`` is at most this many entries
#: (2^24 float64 = 128 MiB); Kronecker ``factors`` are returned regardless.
MAX_DENSE_ENTRIES = 1 << 24


def _symmetric(name: str, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != X.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {X.shape}")
    scale = max(np.abs(X).max(initial=0.0), np.finfo(float).tiny)
    if np.abs(X - X.T).max(initial=0.0) > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric, max |{name} − {name}ᵀ| = {np.abs(X - X.T).max():.3g}")
    return 0.5 * (X + X.T)


def kron_eigh(A, B, *, k: int | None = None, vectors: bool | None = None) -> Spectrum:
    """Eigenpairs of ``A ⊗ B`` (A: p × p, B: q × q symmetric) from the two small factors.

    The eigenpairs are ``(α_i β_j, a_i ⊗ b_j)`` for eigenpairs ``(α_i, a_i)`` of A and
    ``(β_j, b_j)`` of B; the ``pq × pq`` matrix is never formed. Cost ``O(p³ + q³)`` plus
    ``O(pq log(pq))`` to sort the products.

    Args:
      A, B: symmetric (PSD in the Hessian use: then the top-k products are the largest).
      k: keep the ``k`` largest eigenvalues (default all ``pq``).
      vectors: form the flat (row-major) eigenvectors; default only when ``pq·k`` is
        at most 2^24 entries. ``factors`` (a_j, b_j) are always returned.

    Returns:
      `Spectrum` with ``factors=(A_vecs, B_vecs)`` (``v_j = a_j ⊗ b_j``), ``dim = pq``.

    Examples:
      >>> import numpy as np
      >>> s = kron_eigh(np.diag([2.0, 1.0]), np.diag([3.0, 1.0]))
      >>> s.eigenvalues.tolist(), s.dim
      ([6.0, 3.0, 2.0, 1.0], 4)
    """
    A, B = _symmetric("A", A), _symmetric("B", B)
    a, U = np.linalg.eigh(A)
    b, V = np.linalg.eigh(B)
    prod = np.multiply.outer(a, b).ravel()
    dim = prod.size
    if k is None:
        k = dim
    if not (isinstance(k, (int, np.integer)) and 0 <= k <= dim):
        raise ValueError(f"k must be an int in [0, {dim}], got {k!r}")
    order = np.argsort(-prod, kind="stable")[:k]
    i, j = np.divmod(order, b.size)
    fa, fb = U[:, i], V[:, j]
    if vectors is None:
        vectors = dim * k <= MAX_DENSE_ENTRIES
    vecs = np.einsum("pk,qk->pqk", fa, fb).reshape(dim, k) if vectors else None
    return Spectrum(prod[order], vecs, dim=dim, factors=(fa, fb), source="kron")


def _orth(X: np.ndarray, rtol: float) -> np.ndarray:
    """Orthonormal basis of the column space of X, dropping singular values below rtol·max."""
    if X.size == 0:
        return np.zeros((X.shape[0], 0))
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return np.zeros((X.shape[0], 0))
    return u[:, s > rtol * s[0]]


def kron_sum_spectrum(
    lefts,
    rights,
    *,
    shift: float = 0.0,
    rtol: float = 1e-12,
    scale: float | None = None,
    vectors: bool | None = None,
    source: str = "closed-form",
    info: dict | None = None,
) -> Spectrum:
    """Eigenpairs of ``Σ_c C_c ⊗ F_c F_cᵀ`` (+ ``shift·I``) by compression to its range.

    ``lefts[c] = C_c`` (p × p, symmetric) and ``rights[c] = F_c`` (q × m_c): the operator
    lives in ``range(∪C_c) ⊗ span(∪F_c)``; with orthonormal bases P, Q of these the small
    matrix ``Σ_c (PᵀC_cP) ⊗ (QᵀF_c)(QᵀF_c)ᵀ`` is diagonalised densely and its eigenvectors
    ``y`` map back to ``vec(P Y Qᵀ)``. Eigenvalues below ``rtol·max(max|λ|, scale)`` count as
    zero and join the bulk, whose value is ``shift`` (pass ``scale`` when the whole operator
    may be negligible against a known reference, e.g. G_within at collapse).
    """
    lefts = [np.asarray(C, dtype=np.float64) for C in lefts]
    rights = [np.asarray(F, dtype=np.float64).reshape(np.shape(F)[0], -1) for F in rights]
    p, q = lefts[0].shape[0], rights[0].shape[0]
    dim = p * q
    P = _orth(np.concatenate(lefts, axis=1), rtol)
    Q = _orth(np.concatenate(rights, axis=1), rtol)
    r1, r2 = P.shape[1], Q.shape[1]
    small = np.zeros((r1 * r2, r1 * r2))
    for C, F in zip(lefts, rights, strict=True):
        G = Q.T @ F
        small += np.kron(P.T @ C @ P, G @ G.T)
    vals, Yv = np.linalg.eigh(0.5 * (small + small.T))
    top = max(np.abs(vals).max(initial=0.0), scale or 0.0, np.finfo(float).tiny)
    keep = np.abs(vals) > rtol * top * max(1, r1 * r2)
    vals, Yv = vals[keep], Yv[:, keep]
    m = vals.size
    if vectors is None:
        vectors = dim * m <= MAX_DENSE_ENTRIES
    vecs = None
    if vectors:
        Y = Yv.reshape(r1, r2, m)
        vecs = np.einsum("pi,ijk,qj->pqk", P, Y, Q).reshape(dim, m)
    return Spectrum(vals + shift, vecs, dim=dim, bulk_value=float(shift), source=source, info=info or {})
