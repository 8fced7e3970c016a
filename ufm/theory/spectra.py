"""Numeric closed forms of deep-UFM spectra from class means (``MATH.md`` §4–§6).

Conventions, fixed once (``MATH.md`` §1):

* Loss ``Φ + R`` with data term ``Φ = (1/N) Σ_i ℓ_i``: ``ℓ_i = ½‖z_i − y_i‖²`` (MSE) or
  ``−log softmax(z_i)_{y_i}`` (CE); ridge ``R = Σ_l (λ_l/2)‖W_l‖² + (λ_H/2)‖H_1‖²``,
  λ_l := λ_{W_l}. "Data Hessian" is ``∇²Φ``; ``regularized=True`` adds the ridge, i.e.
  ``+λ_l`` on the block of ``W_l`` and ``+λ_H`` on the block of ``H_1``.
* Flat vectors are row-major (``W.reshape(-1)``): the Kronecker vector ``a ⊗ b`` is the
  matrix ``a bᵀ``. Full-Hessian vectors are ordered ``W_1, ..., W_L`` then ``H_1``.
* Layer l ∈ 1..L is the block of ``W_l`` (d_{l+1} × d_l); its input is ``H̃_l`` (``H̃_1 = H_1``)
  with class means ``M = [μ_1..μ_K]`` (d_l × K).

The one formula behind the layer-wise results (derived; it generalises ``MATH.md`` §4–§6):
``W_l`` enters the network only through ``u_i = W_l h̃_i``, so

    ∇²_{W_l} Φ = (1/N) Σ_i C_i ⊗ h̃_i h̃_iᵀ,     C_i = ∇²_u ℓ_i(u_i)   (d_{l+1} × d_{l+1}),

exactly, at any point and for any activation. At a collapsed point (``h̃_i = μ_c``) this is
``(1/K) Σ_c C_c ⊗ μ_c μ_cᵀ``. ``C`` is computed by the backward recursion
``C_j = D_j W_jᵀ C_{j+1} W_j D_j + diag(σ''(h_j) ⊙ W_jᵀ g_{j+1})``, ``g_j = D_j W_jᵀ g_{j+1}``
from ``C_{L+1} = ∇²_z ℓ`` (``I`` for MSE, ``ρ = diag(p) − ppᵀ`` for CE), ``D_j = diag(σ'(h_j))``.
Linear MSE gives ``C = A^{(l+1)ᵀ}A^{(l+1)}`` (``MATH.md`` §4, one Kronecker product); CE
gives ``A^{(l+1)ᵀ} ρ_c A^{(l+1)}`` (§5); ReLU uses ``σ'(0) = spec.relu_grad0`` and ``σ'' = 0``
(the autodiff convention); softplus ``softplus(βx)/β`` has ``σ' = sigmoid(βx)`` and
``σ'' = β·sigmoid(βx)(1 − sigmoid(βx))`` (§6).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..collapse import class_means, nc_metrics
from ..model import UFMParams, check_params, forward
from ..spec import UFMSpec
from ..spectrum import Spectrum
from ._kron import _orth, kron_eigh, kron_sum_spectrum
from ._solution import dnc_solution

__all__ = [
    "GNDecomposition",
    "GradientSpectrum",
    "collapsed_layer_hessian",
    "feature_hessian_spectrum",
    "full_hessian_spectrum",
    "gn_decomposition",
    "gradient_spectrum",
    "layer_hessian_spectrum",
    "weight_spectrum",
]

_RTOL = 1e-12


# ---- activation derivatives (MATH.md §6 conventions) ------------------------------------------
def _act(spec: UFMSpec, x: np.ndarray):
    """(σ(x), σ'(x), σ''(x)) with the spec's conventions at the kink."""
    if spec.activation == "linear":
        return x, np.ones_like(x), np.zeros_like(x)
    if spec.activation == "relu":
        slope = np.where(x > 0, 1.0, np.where(x == 0, spec.relu_grad0, 0.0))
        return np.maximum(x, 0.0), slope, np.zeros_like(x)
    beta = spec.softplus_beta
    sig = 0.5 * (1.0 + np.tanh(0.5 * beta * x))  # sigmoid(βx), overflow-free
    return np.logaddexp(0.0, beta * x) / beta, sig, beta * sig * (1.0 - sig)


def _tail(spec: UFMSpec, Ws, X: np.ndarray, labels: np.ndarray, start: int):
    """Per column of ``X = H_start`` (pre-activation of layer ``start`` ∈ 1..L+1):
    the Jacobian ``J`` (m × K × d) of z, the loss gradient ``g`` (m × d) and Hessian
    ``C`` (m × d × d) with respect to that column (see the module docstring)."""
    L = spec.depth
    X = np.asarray(X, dtype=np.float64)
    pres, slopes, curvs = [], [], []
    post = X
    for j in range(start, L + 1):
        if j == 1:
            d1, d2 = np.ones_like(post), np.zeros_like(post)
        else:
            post, d1, d2 = _act(spec, pres[-1] if pres else X)
        slopes.append(d1)
        curvs.append(d2)
        pres.append(np.asarray(Ws[j - 1]) @ post)
        post = pres[-1]
    Z = post if start <= L else X  # K × m
    m, K = Z.shape[1], spec.num_classes
    Y = np.eye(K)[:, labels]
    if spec.loss == "mse":
        g, C = (Z - Y).T, np.broadcast_to(np.eye(K), (m, K, K)).copy()
    else:
        P = np.exp(Z - Z.max(axis=0))
        P /= P.sum(axis=0)
        g = (P - Y).T
        C = np.einsum("ij,ik->kij", np.eye(K), P) - np.einsum("ik,jk->kij", P, P)
    J = np.broadcast_to(np.eye(K), (m, K, K)).copy()
    for j in range(L, start - 1, -1):
        W = np.asarray(Ws[j - 1], dtype=np.float64)
        D = slopes[j - start].T  # m × d_j
        WtC = W.T @ C @ W  # (m, d_j, d_j); a 3-operand einsum here built a d⁴-sized intermediate
        WtG = g @ W  # m × d_j  (rows: W_jᵀ g_{j+1})
        C = D[:, :, None] * WtC * D[:, None, :]
        C[:, np.arange(D.shape[1]), np.arange(D.shape[1])] += curvs[j - start].T * WtG
        g = D * WtG
        J = np.einsum("kab,bc->kac", J, W) * D[:, None, :]
    return J, g, C


# ---- input checks ---------------------------------------------------------------------------------
def _check_layer(spec: UFMSpec, layer) -> int:
    if not (isinstance(layer, (int, np.integer)) and not isinstance(layer, bool)):
        raise TypeError(f"layer must be an int, got {layer!r}")
    if not 1 <= layer <= spec.depth:
        raise ValueError(f"layer must be in 1..depth={spec.depth} (the block of W_layer), got {layer}")
    return int(layer)


def _collapsed_means(spec: UFMSpec, params: UFMParams, layer: int, collapse_tol, allow_zero: bool):
    """Class means M (d_l × K) of ``H̃_layer``, the features, and NC1; raises if not collapsed."""
    check_params(spec, params)
    feats = np.asarray(forward(spec, params).post[layer - 1], dtype=np.float64)
    labels = spec.class_index
    M = class_means(feats, labels, spec.num_classes)
    if not np.any(M):
        if allow_zero:
            return M, feats, 0.0
        b = _threshold_text(spec)
        raise ValueError(
            f"the class means of H̃_{layer} are all zero: the model collapsed to zero{b}; "
            "pass allow_zero=True to get the (trivial) spectrum of the zero point"
        )
    met = nc_metrics([feats], labels, geometry="etf" if spec.loss == "ce" else "of")
    nc1 = float(met.nc1[0] if spec.loss == "ce" else met.nc1_uncentred[0])
    if collapse_tol is not None and not nc1 <= collapse_tol:
        raise ValueError(
            f"the features H̃_{layer} are not collapsed: NC1 = {nc1:.3g} > collapse_tol = {collapse_tol:g}; "
            "the class-mean formulas would be wrong here (train to convergence, raise collapse_tol, "
            "or use the dense autodiff Hessian)"
        )
    return M, feats, nc1


def _threshold_text(spec: UFMSpec) -> str:
    try:
        sol = dnc_solution(spec)
    except ValueError:
        return ""
    if sol.collapsed_to_zero:
        return f" (b = {sol.b:.4g} >= bound {sol.b_bound:.4g}, MATH.md §3)"
    return ""


def _prediction(spec: UFMSpec, layer: int) -> dict:
    """Closed-form layer-wise outliers at the DNC point, where one exists (MATH.md §4, §5)."""
    try:
        sol = dnc_solution(spec)
    except ValueError:
        return {}
    lam = spec.lambdas[layer - 1]
    K = spec.num_classes
    if sol.collapsed_to_zero:
        return {}
    if spec.loss == "mse":
        out = {"outlier": lam * sol.scale / sol.one_minus_scale}
        out["multiplicity"] = K * K if (spec.activation == "linear" or spec.relu_grad0 == 1 or layer == spec.depth) else None
        return out
    a, p = sol.scale, sol.p
    if K == 2:  # (K−1)² = 1: only the top level (MATH.md §5's multiplicities assume K >= 3)
        return {"outliers": [a * lam * p], "multiplicities": [1]}
    return {"outliers": [a * lam * p, a * lam / K * (1 + (K * p - 1) * (K - 2) / (K - 1)), a * lam / K],
            "multiplicities": [1, K - 1, K * K - 3 * K + 1]}


# ---- array-level API (real networks: heads are deep UFMs) ------------------------------------------
def collapsed_layer_hessian(
    A,
    M,
    *,
    loss: str = "mse",
    probs=None,
    shift: float = 0.0,
    vectors: bool | None = None,
) -> Spectrum:
    """Data Hessian of a linear layer at a collapsed point, from arrays (``MATH.md`` §4, §5).

    ``∇²_W Φ = (1/K) Σ_c A_cᵀ Q_c A_c ⊗ μ_c μ_cᵀ`` for the layer ``u = W h̃`` (W: d_out × d_in).

    Args:
      A: the tail Jacobian ``∂z/∂u``: (K × d_out) shared by all classes — for a linear
        tail ``A = W_L ⋯ W_{l+1}``, the identity ``I_K`` for the last layer — or
        (K, K, d_out) with ``A[c]`` the Jacobian at class c (e.g. ReLU masks).
      M: class means of the layer input ``h̃`` (d_in × K), one column per class.
      loss: ``"mse"`` (``Q_c = I``) or ``"ce"`` (``Q_c = diag(p_c) − p_c p_cᵀ``).
      probs: CE only, (K × K) softmax probabilities, column c for class c.
      shift: added to every eigenvalue (pass λ for the regularised block).
      vectors: form flat row-major eigenvectors (default: when small).

    Returns:
      `Spectrum`: the nonzero eigenpairs, ``bulk_value = shift``, ``dim = d_out·d_in``; for MSE
      with a shared A also ``factors`` (``v = a ⊗ b``). The residual (second-order) term of a
      nonlinear tail is not included here; `layer_hessian_spectrum` includes it.
    """
    A = np.asarray(A, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"M must be (d_in, K) class means, got shape {M.shape}")
    K = M.shape[1]
    if A.ndim == 2:
        if A.shape[0] != K:
            raise ValueError(f"A must be (K={K}, d_out) or (K, K, d_out), got shape {A.shape}")
        As = np.broadcast_to(A, (K,) + A.shape)
    elif A.ndim == 3 and A.shape[:2] == (K, K):
        As = A
    else:
        raise ValueError(f"A must be (K={K}, d_out) or (K, K, d_out), got shape {A.shape}")
    if loss == "mse":
        if probs is not None:
            raise ValueError("probs is only used with loss='ce'")
        Qs = np.broadcast_to(np.eye(K), (K, K, K))
    elif loss == "ce":
        if probs is None:
            raise ValueError("loss='ce' needs probs, the (K × K) softmax probabilities, column c for class c")
        P = np.asarray(probs, dtype=np.float64)
        if P.shape != (K, K):
            raise ValueError(f"probs must be (K, K) = ({K}, {K}), got shape {P.shape}")
        Qs = np.stack([np.diag(P[:, c]) - np.outer(P[:, c], P[:, c]) for c in range(K)])
    else:
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    # Work in the ranges: rows of all A_c (≤ K² dims) and span(M) (≤ K dims), so a wide layer
    # (d = 512) costs two thin SVDs, never a d × d eigenproblem.
    P = _orth(As.reshape(-1, As.shape[-1]).T, 1e-13)
    Q = _orth(M, 1e-13)
    Ar, Mr = As @ P, Q.T @ M  # K × K × r, r2 × K
    d_out, d_in = As.shape[-1], M.shape[0]
    if loss == "mse" and A.ndim == 2:
        red = _kron_layer(Ar[0].T @ Ar[0], Mr @ Mr.T / K, shift, False, {})
        fa, fb = P @ red.factors[0], Q @ red.factors[1]
    else:
        Cs = np.einsum("kab,kbc,kcd->kad", Ar.transpose(0, 2, 1), Qs, Ar)
        red = kron_sum_spectrum(list(Cs / K), list(Mr.T[:, :, None]), shift=shift, vectors=True)
        fa = fb = None
    m = red.eigenvalues.size
    if vectors is None:
        vectors = d_out * d_in * m <= 1 << 24
    vecs = None
    if vectors:
        if fa is not None:
            vecs = np.einsum("pk,qk->pqk", fa, fb).reshape(-1, m)
        else:
            Y = red.eigenvectors.reshape(P.shape[1], Q.shape[1], m)
            vecs = np.einsum("pi,ijk,qj->pqk", P, Y, Q).reshape(-1, m)
    return Spectrum(red.eigenvalues, vecs, dim=d_out * d_in, bulk_value=float(shift),
                    factors=None if fa is None else (fa, fb), source="closed-form")


def _kron_layer(C, B, shift, vectors, info) -> Spectrum:
    """Nonzero eigenpairs of ``C ⊗ B`` (both PSD) with factors, bulk = shift."""
    # count the nonzero products from the factor eigenvalues alone: asking kron_eigh for all
    # pq pairs would also materialise pq factor columns (8 GB each at d = 1000)
    prod = np.abs(np.multiply.outer(np.linalg.eigvalsh(C), np.linalg.eigvalsh(B)))
    top = prod.max(initial=0.0)
    keep = int(np.sum(prod > _RTOL * max(top, np.finfo(float).tiny) * 10))
    spec = kron_eigh(C, B, k=keep, vectors=vectors)
    return dataclasses.replace(spec, eigenvalues=spec.eigenvalues + shift, bulk_value=float(shift),
                               source="closed-form", info=info)


# ---- spec-level spectra -------------------------------------------------------------------------------
def layer_hessian_spectrum(
    spec: UFMSpec,
    params: UFMParams,
    layer: int,
    *,
    regularized: bool = False,
    collapse_tol: float | None = 1e-6,
    allow_zero: bool = False,
    vectors: bool | None = None,
) -> Spectrum:
    """Spectrum of the block of ``W_layer`` of the (data or regularised) Hessian at a collapsed point.

    ``(1/K) Σ_c C_c ⊗ μ_c μ_cᵀ`` with the tail curvature ``C_c`` of the module docstring:
    ``A^{(l+1)ᵀ}A^{(l+1)} ⊗ MMᵀ/K`` for linear MSE (``MATH.md`` §4, K² outliers
    ``λ_lγ/(1−γ)`` at the optimum, Kronecker ``factors`` returned), ``ρ_c``-weighted for CE
    (§5: levels αλ_l p ×1, ... ×(K−1), αλ_l/K ×(K²−3K+1)), masks and the residual term for
    ReLU / softplus (§6). Valid for trained or real-network parameters, not only the exact
    optimum — as long as ``H̃_l`` is collapsed.

    Args:
      collapse_tol: raise a ValueError quoting NC1 of ``H̃_l`` (uncentred for MSE, centred
        for CE) when it exceeds this; ``None`` skips the check.
      allow_zero: accept parameters collapsed to zero (λ above the threshold).
      vectors: form flat row-major eigenvectors (default: when small).

    Returns:
      `Spectrum` of the nonzero eigenvalues, bulk 0 (or λ_l if ``regularized``); ``info``
      holds the layer, NC1 and the closed-form prediction where one exists.
    """
    layer = _check_layer(spec, layer)
    M, _, nc1 = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K = spec.num_classes
    shift = spec.lambdas[layer - 1] if regularized else 0.0
    info = {"layer": layer, "nc1": nc1, "regularized": bool(regularized), **_prediction(spec, layer)}
    Ws = params.Ws
    U = np.asarray(Ws[layer - 1], dtype=np.float64) @ M
    _, _, Cs = _tail(spec, Ws, U, np.arange(K), layer + 1)
    if spec.loss == "mse" and spec.activation == "linear":
        return _kron_layer(Cs[0], M @ M.T / K, shift, vectors, info)
    return kron_sum_spectrum(list(Cs / K), list(M.T[:, :, None]), shift=shift, vectors=vectors, info=info)


@dataclasses.dataclass(frozen=True)
class GNDecomposition:
    """Papyan's split ``G = G_class + G_cross + G_within`` of a layer's Gauss–Newton block (``MATH.md`` §4)."""

    G_class: Spectrum
    G_cross: Spectrum
    G_within: Spectrum
    nc1: float

    def to_dict(self) -> dict:
        return {"G_class": self.G_class.to_dict(), "G_cross": self.G_cross.to_dict(),
                "G_within": self.G_within.to_dict(), "nc1": self.nc1}


def gn_decomposition(
    spec: UFMSpec,
    params: UFMParams,
    layer: int,
    *,
    collapse_tol: float | None = 1e-6,
    allow_zero: bool = False,
    vectors: bool | None = None,
) -> GNDecomposition:
    """``G_class``, ``G_cross``, ``G_within`` of the MSE Gauss–Newton block of ``W_layer`` (``MATH.md`` §4).

    With ``v_{icc'} = a_{c,c'} ⊗ h̃_i`` (row c' of the tail Jacobian of class c, sample i of
    class c), ``v_{cc'}`` its class average and ``v_c = (1/K) Σ_{c'} v_{cc'}``:
    ``G_class = Σ_c v_c v_cᵀ = Σ_c ā_c ā_cᵀ ⊗ μ_cμ_cᵀ``,
    ``G_cross = (1/K) Σ_{cc'} (v_{cc'} − v_c)(·)ᵀ = (1/K) Σ_c (A_c − 1ā_cᵀ)ᵀ(A_c − 1ā_cᵀ) ⊗ μ_cμ_cᵀ``,
    ``G_within = (1/N) Σ_i A_cᵀA_c ⊗ (h̃_i − μ_c)(·)ᵀ`` (the class Jacobian A_c is used for
    every sample of the class: exact at collapse, where G_within = 0). MSE only: §4 defines
    the split for the unweighted output Hessian.
    """
    if spec.loss != "mse":
        raise ValueError("gn_decomposition implements the MSE split of MATH.md §4; got loss='ce'")
    layer = _check_layer(spec, layer)
    M, feats, nc1 = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K, n, N = spec.num_classes, spec.per_class, spec.num_samples
    Ws = params.Ws
    J, _, _ = _tail(spec, Ws, np.asarray(Ws[layer - 1], dtype=np.float64) @ M, np.arange(K), layer + 1)
    abar = J.mean(axis=1)  # K × d_out
    Jc = J - abar[:, None, :]
    mu = list(M.T[:, :, None])
    kw = dict(vectors=vectors, info={"layer": layer})
    G_class = kron_sum_spectrum([np.outer(a, a) for a in abar], mu, **kw)
    G_cross = kron_sum_spectrum([Jc[c].T @ Jc[c] / K for c in range(K)], mu, **kw)
    dev = feats - M[:, spec.class_index]
    ref = max(np.abs(G_class.eigenvalues).max(initial=0.0), np.abs(G_cross.eigenvalues).max(initial=0.0))
    G_within = kron_sum_spectrum([J[c].T @ J[c] / N for c in range(K)],
                                 [dev[:, c * n:(c + 1) * n] for c in range(K)], scale=ref, **kw)
    return GNDecomposition(G_class, G_cross, G_within, nc1)


@dataclasses.dataclass(frozen=True)
class GradientSpectrum:
    """The data gradient of a layer and the spectra of its per-sample gradients (``MATH.md`` §4).

    Fields:
      gradient: ``∇_{W_l} Φ`` (d_out × d_in); ``−λ_l W_l`` at a critical point.
      class_coefficients: (K × K) coefficients of the unit gradient on the unit Kronecker
        vectors ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (class means of ``H_{l+1} = W_l H̃_l`` and ``H̃_l``);
        at the MSE optimum ``1/√K`` on the diagonal, 0 off it.
      outlier_fraction: ``‖P g‖²/‖g‖²`` with P the projector on the layer Hessian's
        resolved (nonzero) eigenvectors (Gur-Ari et al. 2018).
      second_moment: spectrum of ``(1/N) Σ_i g_i g_iᵀ`` (per-sample data gradients ``g_i = ∇ℓ_i``).
      covariance: spectrum of ``(1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ``.
    """

    gradient: np.ndarray
    class_coefficients: np.ndarray
    outlier_fraction: float
    second_moment: Spectrum
    covariance: Spectrum

    def to_dict(self) -> dict:
        return {"gradient_norm": float(np.linalg.norm(self.gradient)),
                "class_coefficients": self.class_coefficients.tolist(),
                "outlier_fraction": self.outlier_fraction,
                "second_moment": self.second_moment.to_dict(), "covariance": self.covariance.to_dict()}


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
) -> GradientSpectrum:
    """Data gradient of ``W_layer`` and its per-sample second moment / covariance at a collapsed point.

    At collapse every sample of class c has the gradient ``G_c = g_c ⊗ μ_c`` (``g_c = ∇_u ℓ``),
    so the second moment is ``(1/K) Σ_c G_c G_cᵀ`` and the covariance removes ``ḠḠᵀ``.
    MSE optimum (``MATH.md`` §4): rank K at ``γ(1−γ)λ_l``; covariance rank K−1, same value.
    """
    layer = _check_layer(spec, layer)
    M, _, _ = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K = spec.num_classes
    Ws = params.Ws
    W = np.asarray(Ws[layer - 1], dtype=np.float64)
    _, g, _ = _tail(spec, Ws, W @ M, np.arange(K), layer + 1)
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
    return GradientSpectrum(grad, coeffs, frac, second, cov)


def weight_spectrum(spec: UFMSpec, params: UFMParams) -> tuple[Spectrum, ...]:
    """Singular values of W_1..W_L against the DNC prediction (``MATH.md`` §3, §5).

    One `Spectrum` per layer whose ``eigenvalues`` are the singular values (descending),
    ``factors = (left, right singular vectors)``; ``info`` holds the predicted σ_l and its
    multiplicity (K for MSE, K−1 for CE; the rest 0) and the largest relative error of the
    leading singular values against it, when a closed form exists.
    """
    check_params(spec, params)
    try:
        sol = dnc_solution(spec)
    except ValueError:
        sol = None
    out = []
    for l, W in enumerate(params.Ws, start=1):
        u, s, vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
        info = {"layer": l, "kind": "singular values"}
        if sol is not None:
            k = spec.num_classes - (spec.loss == "ce")
            pred = sol.singular_values[l - 1]
            info.update(predicted=pred, predicted_multiplicity=k)
            if pred > 0:
                info["max_rel_error"] = float(np.max(np.abs(s[:k] - pred)) / pred)
        out.append(Spectrum(s, dim=s.size, bulk_value=0.0, factors=(u, vt.T), source="svd", info=info))
    return tuple(out)


def feature_hessian_spectrum(
    spec: UFMSpec,
    params: UFMParams,
    *,
    regularized: bool = False,
    vectors: bool | None = None,
) -> Spectrum:
    """Spectrum of the ``H_1`` block of the Hessian (``MATH.md`` §4), exact at any point.

    Each column ``h_i`` of ``H_1`` enters only its own loss term, so the block is
    ``(1/N) Σ_i C_i ⊗ e_i e_iᵀ`` with ``C_i`` the tail curvature at ``h_i`` (row-major
    vec of H_1: the vector ``v ⊗ e_i`` is ``v`` in column i). Linear MSE: ``(1/N)A^{(1)ᵀ}A^{(1)} ⊗ I_N``,
    rank KN, value ``λ_Hγ/(1−γ)`` at the optimum. No collapse needed.
    """
    check_params(spec, params)
    H1 = np.asarray(params.H1, dtype=np.float64)
    d, N = H1.shape
    _, _, Cs = _tail(spec, params.Ws, H1, spec.class_index, 1)
    vals, vecs = np.linalg.eigh(Cs / N)  # N × d, N × d × d
    top = np.abs(vals).max(initial=0.0)
    keep = np.abs(vals) > _RTOL * 10 * d * max(top, np.finfo(float).tiny)
    i_idx, k_idx = np.nonzero(keep)
    shift = spec.lambda_H if regularized else 0.0
    m = i_idx.size
    if vectors is None:
        vectors = d * N * m <= 1 << 24
    V = None
    if vectors:
        V = np.zeros((d, N, m))
        V[:, i_idx, np.arange(m)] = vecs[i_idx, :, k_idx].T
        V = V.reshape(d * N, m)
    return Spectrum(vals[i_idx, k_idx] + shift, V, dim=d * N, bulk_value=float(shift), source="closed-form",
                    info={"block": "H1", "regularized": bool(regularized)})


# ---- full Hessian at the linear MSE optimum (MATH.md §4) ------------------------------------------
def _full_structure(spec: UFMSpec, sol, include_H: bool, regularized: bool):
    """The block structure of the full Hessian at the DNC point, in frame coordinates.

    Layers are indexed 0 (H_1, if included) and 1..L; ``λ_0 = λ_H``. With
    ``r_{lm} = √(λ_lλ_m)/(1−γ)`` (derived; ``MATH.md`` §4):
      * frame×frame entries: symmetric modes see ``S = (2γ−1) r + diag(λ)`` (K(K+1)/2 copies),
        antisymmetric ones ``T = r − diag(λ)`` (K(K−1)/2 copies);
      * output-complement × frame-input of layer l paired with frame-output ×
        input-complement of layer l+1: ``[[0, −√(λ_lλ_{l+1})], [−√(λ_lλ_{l+1}), 0]]``
        (K(d_{l+1} − K) copies);
      * H_1 only: frame-output × within-class columns, ``λ_Hγ/(1−γ)`` (K(N − K) copies);
      * every other coordinate: 0.
    ``regularized`` adds ``λ_l`` to every coordinate of layer l. Returns
    ``(layers, lams, S, T, pairs, extra, structural)`` with ``pairs = [(l, 2×2, count)]``,
    ``extra = (value, count)`` and ``structural = {l: count}``.
    """
    K, N, L = spec.num_classes, spec.num_samples, spec.depth
    layers = ([0] if include_H else []) + list(range(1, L + 1))
    lams = np.array(([spec.lambda_H] if include_H else []) + list(spec.lambdas))
    g, u = sol.scale, sol.one_minus_scale
    sq = np.sqrt(lams)
    r = np.outer(sq, sq) / u
    reg = np.diag(lams) if regularized else 0.0
    S = (2 * g - 1) * r + np.diag(lams) + reg
    T = r - np.diag(lams) + reg
    dims = {0: (spec.widths[0], N)}
    for l, shape in enumerate(spec.weight_shapes, start=1):
        dims[l] = shape
    pairs = []
    covered = {l: K * K for l in layers}
    for a, b in zip(layers[:-1], layers[1:]):
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
    return layers, lams, S, T, pairs, extra, structural, dims


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
    for l, (W, sig) in enumerate(zip(params.Ws, sol.singular_values)):
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
    return np.concatenate([U, q[:, U.shape[1]:]], axis=1)


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
    """Spectrum of the Hessian over W_1..W_L (and H_1) at the linear-MSE DNC optimum (``MATH.md`` §4).

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
    """
    if spec.loss != "mse" or not (spec.activation == "linear" or (spec.activation == "relu" and spec.relu_grad0 == 1.0)):
        raise ValueError(
            "full_hessian_spectrum has a closed form for MSE with a linear network (or ReLU with relu_grad0=1); "
            f"got loss={spec.loss!r}, activation={spec.activation!r}, relu_grad0={spec.relu_grad0}"
        )
    sol = dnc_solution(spec)
    if sol.collapsed_to_zero:
        if not allow_zero:
            raise ValueError(
                f"λ is above the threshold (b = {sol.b:.4g} >= {sol.b_bound:.4g}, MATH.md §3): the minimiser is 0; "
                "pass allow_zero=True for the Hessian at 0"
            )
        return _zero_full_hessian(spec, include_H, regularized)
    layers, lams, S, T, pairs, extra, structural, dims = _full_structure(spec, sol, include_H, regularized)
    K = spec.num_classes
    sv, sU = np.linalg.eigh(S)
    tv, tU = np.linalg.eigh(T)
    info = {"S": S.tolist(), "T": T.tolist(), "gamma": sol.scale, "regularized": bool(regularized),
            "include_H": bool(include_H), "structural_zeros": {str(k): v for k, v in structural.items()}}
    dim = sum(dims[l][0] * dims[l][1] for l in layers)
    if not vectors:
        vals = [np.repeat(sv, K * (K + 1) // 2), np.repeat(tv, K * (K - 1) // 2)]
        for _, P2, c in pairs:
            vals.append(np.repeat(np.linalg.eigvalsh(P2), c))
        if extra is not None:
            vals.append(np.full(extra[1], extra[0]))
        if regularized:
            vals += [np.full(c, lams[layers.index(l)]) for l, c in structural.items()]
        return Spectrum(np.concatenate(vals), dim=dim, bulk_value=None if regularized else 0.0,
                        source="closed-form", info=info)

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
    return Spectrum(np.concatenate(vals) if vals else np.zeros(0), dim=dim,
                    bulk_value=None if regularized else 0.0, source="closed-form", info={"zero_point": True})
