"""The parts of a layer's curvature at a collapsed point: Papyan's Gauss–Newton split, the
per-sample gradient moments, and the singular values of the weights (``docs/theory.md`` §3–§5).

Results are the types shared with the autodiff route (`ufm.spectrum.GaussNewtonSplit`,
`ufm.spectrum.GradientSpectra`, `ufm.spectrum.SingularValues`), so `ufm.verify` compares
them field by field. Conventions as in `ufm.theory._layer`.
"""

from __future__ import annotations

import math

import numpy as np

from ..model import UFMParams, check_params
from ..spec import UFMSpec
from ..spectrum import GaussNewtonSplit, GradientSpectra, SingularValues, Spectrum
from ._kron import kron_sum_spectrum
from ._layer import _check_layer, _collapsed_means, layer_hessian_spectrum
from ._solution import dnc_solution
from ._tail import tail

__all__ = ["gn_decomposition", "gradient_spectrum", "weight_spectrum"]


def gn_decomposition(
    spec: UFMSpec,
    params: UFMParams,
    layer: int,
    *,
    collapse_tol: float | None = 1e-6,
    allow_zero: bool = False,
    vectors: bool | None = None,
) -> GaussNewtonSplit:
    """``G_class``, ``G_cross``, ``G_within`` of the MSE Gauss–Newton block of ``W_layer`` (``docs/theory.md`` §4).

    With ``v_{icc'} = a_{c,c'} ⊗ h̃_i`` (row c' of the tail Jacobian of class c, sample i of
    class c), ``v_{cc'}`` its class average and ``v_c = (1/K) Σ_{c'} v_{cc'}``:
    ``G_class = Σ_c v_c v_cᵀ = Σ_c ā_c ā_cᵀ ⊗ μ_cμ_cᵀ``,
    ``G_cross = (1/K) Σ_{cc'} (v_{cc'} − v_c)(·)ᵀ = (1/K) Σ_c (A_c − 1ā_cᵀ)ᵀ(A_c − 1ā_cᵀ) ⊗ μ_cμ_cᵀ``,
    ``G_within = (1/N) Σ_i A_cᵀA_c ⊗ (h̃_i − μ_c)(·)ᵀ`` (the class Jacobian A_c is used for
    every sample of the class: exact at collapse, where G_within = 0). MSE only: §4 defines
    the split for the unweighted output Hessian.

    Returns:
      `GaussNewtonSplit` of three `Spectrum` s (nonzero eigenpairs, bulk 0) and the NC1 of
      ``H̃_layer`` — the type `ufm.curvature.PapyanDecomposition.spectra` returns.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> split = ufm.theory.gn_decomposition(spec, ufm.theory.construct_optimum(spec), layer=1)
      >>> # ranks K, K(K−1), 0 (docs/theory.md §4)
      >>> [part.levels()[1].tolist() for part in (split.G_class, split.G_cross, split.G_within)]
      [[3], [6], []]
    """
    if spec.loss != "mse":
        raise ValueError("gn_decomposition implements the MSE split of docs/theory.md §4; got loss='ce'")
    layer = _check_layer(spec, layer)
    M, feats, nc1 = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K, n, N = spec.num_classes, spec.per_class, spec.num_samples
    Ws = params.Ws
    J = tail(spec, Ws, np.asarray(Ws[layer - 1], dtype=np.float64) @ M, np.arange(K), layer + 1).jacobian
    abar = J.mean(axis=1)  # K × d_out
    Jc = J - abar[:, None, :]
    mu = list(M.T[:, :, None])
    kw = dict(vectors=vectors, info={"layer": layer})
    G_class = kron_sum_spectrum([np.outer(a, a) for a in abar], mu, **kw)
    G_cross = kron_sum_spectrum([Jc[c].T @ Jc[c] / K for c in range(K)], mu, **kw)
    dev = feats - M[:, spec.class_index]
    ref = max(np.abs(G_class.eigenvalues).max(initial=0.0), np.abs(G_cross.eigenvalues).max(initial=0.0))
    G_within = kron_sum_spectrum(
        [J[c].T @ J[c] / N for c in range(K)], [dev[:, c * n : (c + 1) * n] for c in range(K)], scale=ref, **kw
    )
    return GaussNewtonSplit(G_class, G_cross, G_within, nc1)


def _gram_spectrum(G: np.ndarray, info: dict, scale: float = 0.0) -> Spectrum:
    """Nonzero eigenpairs of ``G Gᵀ`` (G: P × m) from the thin SVD; ``scale``: a reference singular value."""
    u, s, _ = np.linalg.svd(G, full_matrices=False)
    keep = s > 1e-7 * max(s[0] if s.size else 0.0, scale, np.finfo(float).tiny)  # σ² below 1e-14·max: zero
    return Spectrum(s[keep] ** 2, u[:, keep], dim=G.shape[0], bulk_value=0.0, source="closed-form", info=info)


def gradient_spectrum(
    spec: UFMSpec,
    params: UFMParams,
    layer: int,
    *,
    collapse_tol: float | None = 1e-6,
    allow_zero: bool = False,
) -> GradientSpectra:
    """Data gradient of ``W_layer`` and its per-sample second moment / covariance at a collapsed point.

    At collapse every sample of class c has the gradient ``G_c = g_c ⊗ μ_c`` (``g_c = ∇_u ℓ``),
    so the second moment is ``(1/K) Σ_c G_c G_cᵀ`` and the covariance removes ``ḠḠᵀ``.
    MSE optimum (``docs/theory.md`` §4): rank K at ``γ(1−γ)λ_l``; covariance rank K−1, same value.

    Returns:
      `GradientSpectra` (the type `ufm.curvature.GradientMoments.spectra` returns) with the
      flat data gradient ``∇_{W_l} Φ`` (``−λ_l vec W_l`` at a critical point), the two
      spectra, the (K × K) ``class_coefficients`` of the unit gradient on the unit Kronecker
      vectors ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (class means of ``H_{l+1} = W_l H̃_l`` and
      ``H̃_l``; ``1/√K`` on the diagonal at the MSE optimum) and the ``outlier_fraction``
      ``‖P g‖²/‖g‖²`` on the layer Hessian's resolved eigenvectors (Gur-Ari et al. 2018).

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> gs = ufm.theory.gradient_spectrum(spec, ufm.theory.construct_optimum(spec), layer=2)
      >>> gs.second_moment.levels()[1].tolist(), gs.covariance.levels()[1].tolist(), round(gs.outlier_fraction, 12)
      ([3], [2], 1.0)
    """
    layer = _check_layer(spec, layer)
    M, _, _ = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K = spec.num_classes
    Ws = params.Ws
    W = np.asarray(Ws[layer - 1], dtype=np.float64)
    g = tail(spec, Ws, W @ M, np.arange(K), layer + 1).gradient
    Gs = np.einsum("ka,bk->kab", g, M).reshape(K, -1).T  # P × K, column c = vec(g_c μ_cᵀ)
    grad = (Gs.mean(axis=1)).reshape(W.shape)
    gn = np.linalg.norm(grad)
    ghat = grad / gn if gn > 0 else grad
    M2 = W @ M

    def unit(X):
        nrm = np.linalg.norm(X, axis=0)
        return X / np.where(nrm > 0, nrm, 1.0)

    coeffs = unit(M2).T @ ghat @ unit(M)
    hess = layer_hessian_spectrum(spec, params, layer, collapse_tol=None, allow_zero=allow_zero, vectors=True)
    V = hess.eigenvectors
    frac = float(np.sum((V.T @ ghat.reshape(-1)) ** 2)) if gn > 0 else 0.0
    info = {"layer": layer}
    second = _gram_spectrum(Gs / math.sqrt(K), info)
    ref = math.sqrt(second.eigenvalues[0]) if second.eigenvalues.size else 0.0
    # (K = 2 CE: the two class gradients coincide, the covariance is exactly 0)
    cov = _gram_spectrum((Gs - Gs.mean(axis=1, keepdims=True)) / math.sqrt(K), info, ref)
    return GradientSpectra(grad.reshape(-1), second, cov, coeffs, frac)


def weight_spectrum(spec: UFMSpec, params: UFMParams) -> tuple[SingularValues, ...]:
    """Singular values of W_1..W_L against the DNC prediction (``docs/theory.md`` §3, §5).

    One `SingularValues` per layer: the singular values (descending) with the left / right
    singular vectors and, where the DNC point has a closed form, the predicted σ_l, its
    multiplicity (K for MSE, K−1 for CE; the rest 0) and the largest relative error of the
    leading singular values against it.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> w1 = ufm.theory.weight_spectrum(spec, ufm.theory.construct_optimum(spec))[0]
      >>> w1.multiplicity, w1.max_rel_error < 1e-12, bool(abs(w1.values[3]) < 1e-12)
      (3, True, True)
    """
    check_params(spec, params)
    try:
        sol = dnc_solution(spec)
    except ValueError:
        sol = None
    out = []
    for l, W in enumerate(params.Ws, start=1):
        u, s, vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
        pred = k = err = None
        if sol is not None:
            k = spec.num_classes - (spec.loss == "ce")
            pred = sol.singular_values[l - 1]
            if pred > 0:
                err = float(np.max(np.abs(s[:k] - pred)) / pred)
        out.append(SingularValues(s, u, vt.T, l, pred, k, err))
    return tuple(out)
