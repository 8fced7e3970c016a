"""A layer block from per-sample tail curvatures: the class-averaged prediction and the exact
split of the block into its class-mean and within-class parts (``docs/real_networks.md`` §2–§4).

Conventions (those of ``ufm.theory``): a linear layer ``u = W h̃`` (W: d_out × d_in,
flattened row-major, so ``a ⊗ b`` is the matrix ``a bᵀ``); its data-Hessian block is
exactly

    B = (1/N) Σ_i C_i ⊗ h̃_i h̃_iᵀ,      C_i = ∇²_u ℓ_i(u_i)  (d_out × d_out),

no ridge (``docs/real_networks.md`` §1). Classes are weighted by their sample share
π_c = n_c / N (1/K for balanced data); μ_c is the class mean of h̃, C̄_c the class mean
of C_i and C_c^∘ the curvature at the class-mean input (``C(W μ_c)``, the paper's object).
"""

from __future__ import annotations

import numpy as np

from ..collapse import class_means
from ..results import result
from ..spectrum import Spectrum
from ._kron import kron_sum_spectrum

__all__ = ["LayerBlockSplit", "class_averaged_layer_hessian", "layer_block_split", "softmax_curvature"]


def softmax_curvature(Z) -> np.ndarray:
    """``ρ_i = diag(p_i) − p_i p_iᵀ`` (N × K × K) of the logits ``Z`` (K × N), ``p_i = softmax(z_i)``.

    The Hessian of the cross-entropy ``−log softmax(z)_y`` in z (it does not depend on y).
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"Z must be (K, N) logits, got shape {Z.shape}")
    P = np.exp(Z - Z.max(axis=0))
    P = (P / P.sum(axis=0)).T  # N × K
    return P[:, :, None] * np.eye(P.shape[1]) - P[:, :, None] * P[:, None, :]


def _check_curvatures(name, C, d_out=None) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 3 or C.shape[1] != C.shape[2] or (d_out is not None and C.shape[1] != d_out):
        raise ValueError(f"{name} must be (m, d_out, d_out) symmetric matrices, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError(f"{name} has non-finite entries")
    return 0.5 * (C + C.transpose(0, 2, 1))


def class_averaged_layer_hessian(
    curvatures, M, *, weights=None, shift: float = 0.0, vectors: bool | None = None
) -> Spectrum:
    """Eigenpairs of ``Σ_c π_c C̄_c ⊗ μ_c μ_cᵀ`` (``docs/real_networks.md`` §3).

    With ``C̄_c`` the class average of the per-sample tail curvature (for a linear CE tail
    ``Aᵀ ρ̄_c A``, ``ρ̄_c`` the class mean of ``diag(p_i) − p_i p_iᵀ``) it is the
    *class-averaged-curvature* prediction of the block; with the curvature at the class-mean input
    it is the class-mean prediction (``ufm.theory.collapsed_layer_hessian``).
    Exact when the inputs of the layer are collapsed (``h̃_i = μ_{y_i}``), however the
    curvature varies within a class.

    Args:
      curvatures: (K, d_out, d_out), one symmetric matrix per class.
      M: (d_in, K) class means of the layer input, column c for class c.
      weights: (K,) class weights π_c (default 1/K: balanced data).
      shift: added to every eigenvalue (λ for the regularised block).
      vectors: form flat row-major eigenvectors (default: when small).

    Returns:
      `Spectrum` of the nonzero eigenpairs, ``bulk_value = shift``, ``dim = d_out·d_in``.

    Examples:
      >>> import numpy as np
      >>> C = np.stack([np.diag([2.0, 0.0]), np.diag([0.0, 1.0])])
      >>> class_averaged_layer_hessian(C, np.eye(2)).eigenvalues  # (1/2)(2 e1e1ᵀ ⊗ e1e1ᵀ + e2e2ᵀ ⊗ e2e2ᵀ)
      array([1. , 0.5])
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"M must be (d_in, K) class means, got shape {M.shape}")
    K = M.shape[1]
    C = _check_curvatures("curvatures", curvatures)
    if C.shape[0] != K:
        raise ValueError(f"curvatures must hold one matrix per class (K={K}), got {C.shape[0]}")
    pi = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, dtype=np.float64)
    if pi.shape != (K,) or np.any(pi < 0):
        raise ValueError(f"weights must be (K={K},) non-negative class weights, got {pi}")
    return kron_sum_spectrum(
        list(pi[:, None, None] * C),
        list(M.T[:, :, None]),
        shift=shift,
        vectors=vectors,
        source="closed-form",
        info={"prediction": "class-averaged"},
    )


_SPLIT_PARTS = ("class_mean", "curvature_spread", "feature_covariance", "joint")


@result
class LayerBlockSplit:
    """The exact split of a layer block ``B = (1/N) Σ_i C_i ⊗ h̃_i h̃_iᵀ`` (``docs/real_networks.md`` §4).

    With ``h̃_i = μ_c + δ_i`` and ``C_i = C̄_c + E_i`` (class c = y_i, Σ_{i∈c} δ_i = Σ_{i∈c} E_i = 0):

    * ``class_mean``: ``Σ_c π_c C_c^∘ ⊗ μ_c μ_cᵀ`` — the class-mean prediction;
    * ``curvature_spread``: ``Σ_c π_c (C̄_c − C_c^∘) ⊗ μ_c μ_cᵀ`` — what averaging the curvature
      over the class adds (``class_mean + curvature_spread`` is the class-averaged prediction);
    * ``feature_covariance``: ``Σ_c π_c C̄_c ⊗ Σ_c`` with ``Σ_c`` the within-class covariance of h̃;
    * ``joint``: ``(1/N) Σ_i E_i ⊗ (μ_c δ_iᵀ + δ_i μ_cᵀ + δ_i δ_iᵀ)`` — curvature and features
      varying together.

    The four dense (d_out d_in)² matrices sum to B exactly.
    """

    class_mean: np.ndarray
    curvature_spread: np.ndarray
    feature_covariance: np.ndarray
    joint: np.ndarray
    converged: bool = True  # an exact algebraic split (`ufm.results`)
    messages: tuple[str, ...] = ()

    def total(self) -> np.ndarray:
        """``B``, the sum of the four parts."""
        return self.class_mean + self.curvature_spread + self.feature_covariance + self.joint

    def norms(self) -> dict:
        """Frobenius norm of each part relative to ``‖B‖_F``, and of two sums: ``within_class``
        (``B − class_mean``) and ``beyond_class_averaged`` (``feature_covariance + joint``, what
        the class-averaged prediction misses)."""
        B = self.total()
        ref = max(float(np.linalg.norm(B)), np.finfo(float).tiny)
        out = {name: float(np.linalg.norm(getattr(self, name))) / ref for name in _SPLIT_PARTS}
        out["within_class"] = float(np.linalg.norm(B - self.class_mean)) / ref
        out["beyond_class_averaged"] = float(np.linalg.norm(self.feature_covariance + self.joint)) / ref
        return out


def _kron_sum(As, Bs) -> np.ndarray:
    """``Σ_m A_m ⊗ B_m`` (row-major) as one matrix product: entry ((a, b), (c, e)) = Σ_m A_m[a, c] B_m[b, e]."""
    m, p, _ = As.shape
    q = Bs.shape[1]
    out = As.reshape(m, p * p).T @ Bs.reshape(m, q * q)  # (a c) × (b e)
    return out.reshape(p, p, q, q).transpose(0, 2, 1, 3).reshape(p * q, p * q)


def layer_block_split(
    curvatures, features, labels, *, mean_curvatures=None, num_classes: int | None = None
) -> LayerBlockSplit:
    """Split the exact block of a linear layer into class-mean and within-class parts (`LayerBlockSplit`).

    Args:
      curvatures: (N, d_out, d_out) per-sample tail curvatures ``C_i = ∇²_u ℓ_i``.
      features: (d_in, N) inputs h̃_i of the layer, samples as columns.
      labels: (N,) integer classes, every class present.
      mean_curvatures: (K, d_out, d_out) the curvature at each class-mean input, ``C_c^∘``;
        default the class averages ``C̄_c`` (then ``curvature_spread`` is 0).
      num_classes: K (default ``max(labels) + 1``).

    Examples:
      >>> import numpy as np
      >>> C = np.ones((4, 1, 1)); H = np.array([[1.0, 3.0, -1.0, 1.0]]); y = np.array([0, 0, 1, 1])
      >>> s = layer_block_split(C, H, y)   # μ = (2, 0), within-class variance 1 in both classes
      >>> float(s.class_mean[0, 0]), float(s.feature_covariance[0, 0]), float(s.total()[0, 0])
      (2.0, 1.0, 3.0)
    """
    H = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if H.ndim != 2:
        raise ValueError(f"features must be (d_in, N), got shape {H.shape}")
    N = H.shape[1]
    C = _check_curvatures("curvatures", curvatures)
    if C.shape[0] != N:
        raise ValueError(f"curvatures must hold one matrix per sample (N={N}), got {C.shape[0]}")
    M = class_means(H, labels, num_classes)
    K = M.shape[1]
    counts = np.bincount(labels, minlength=K)
    pi = counts / N
    Cbar = np.stack([C[labels == c].mean(axis=0) for c in range(K)])
    C0 = Cbar if mean_curvatures is None else _check_curvatures("mean_curvatures", mean_curvatures, C.shape[1])
    if C0.shape[0] != K:
        raise ValueError(f"mean_curvatures must hold one matrix per class (K={K}), got {C0.shape[0]}")
    mumu = np.einsum("ak,bk->kab", M, M)
    D = H - M[:, labels]  # δ_i
    Sigma = np.stack([D[:, labels == c] @ D[:, labels == c].T / counts[c] for c in range(K)])
    E = C - Cbar[labels]
    mu = M[:, labels]
    S = np.einsum("ai,bi->iab", mu, D) + np.einsum("ai,bi->iab", D, mu) + np.einsum("ai,bi->iab", D, D)
    w = pi[:, None, None]
    return LayerBlockSplit(
        class_mean=_kron_sum(w * C0, mumu),
        curvature_spread=_kron_sum(w * (Cbar - C0), mumu),
        feature_covariance=_kron_sum(w * Cbar, Sigma),
        joint=_kron_sum(E / N, S),
    )
