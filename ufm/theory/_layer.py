"""Layer-wise closed forms at a collapsed point: the data-Hessian blocks of W_l and H_1.

Conventions, fixed once (``docs/theory.md`` §1):

* Loss ``Φ + R`` with data term ``Φ = (1/N) Σ_i ℓ_i``: ``ℓ_i = ½‖z_i − y_i‖²`` (MSE) or
  ``−log softmax(z_i)_{y_i}`` (CE); ridge ``R = Σ_l (λ_l/2)‖W_l‖² + (λ_H/2)‖H_1‖²``,
  λ_l := λ_{W_l}. "Data Hessian" is ``∇²Φ``; ``regularized=True`` adds the ridge, i.e.
  ``+λ_l`` on the block of ``W_l`` and ``+λ_H`` on the block of ``H_1``.
* Flat vectors are row-major (``W.reshape(-1)``): the Kronecker vector ``a ⊗ b`` is the
  matrix ``a bᵀ``.
* Layer l ∈ 1..L is the block of ``W_l`` (d_{l+1} × d_l); its input is ``H̃_l`` (``H̃_1 = H_1``)
  with class means ``M = [μ_1..μ_K]`` (d_l × K).

At a collapsed point the block is ``(1/K) Σ_c C_c ⊗ μ_c μ_cᵀ`` with the tail curvature
``C_c`` of `ufm.theory._tail`; every spectrum here is a Kronecker (sum) eigenproblem
(`ufm.theory._kron`), never a P × P one. Flat eigenvectors are formed only up to
`MAX_DENSE_ENTRIES` entries (``vectors=None``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..collapse import class_means, nc_metrics
from ..model import UFMParams, check_params, forward
from ..spec import UFMSpec
from ..spectrum import Spectrum
from ._kron import MAX_DENSE_ENTRIES, _orth, kron_eigh, kron_sum_spectrum
from ._solution import dnc_solution
from ._tail import tail

__all__ = ["collapsed_layer_hessian", "feature_hessian_spectrum", "layer_hessian_spectrum"]

_RTOL = 1e-12


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
        return f" (b = {sol.b:.4g} >= bound {sol.b_bound:.4g}, docs/theory.md §3)"
    return ""


def _prediction(spec: UFMSpec, layer: int) -> dict:
    """The DNC point's closed-form outliers of this layer (`DNCSolution.layer_outliers`), for ``info``."""
    try:
        sol = dnc_solution(spec)
    except ValueError:
        return {}
    if sol.collapsed_to_zero:
        return {}
    values, mults = sol.layer_outliers[layer - 1], sol.layer_multiplicities[layer - 1]
    if spec.loss == "mse":
        return {"outlier": values[0], "multiplicity": None if mults is None else mults[0]}
    return {"outliers": list(values), "multiplicities": list(mults)}


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
    """Data Hessian of a linear layer at a collapsed point, from arrays (``docs/theory.md`` §4, §5).

    ``∇²_W Φ = (1/K) Σ_c A_cᵀ Q_c A_c ⊗ μ_c μ_cᵀ`` for the layer ``u = W h̃`` (W: d_out × d_in).

    Args:
      A: the tail Jacobian ``∂z/∂u``: (K × d_out) shared by all classes — for a linear
        tail ``A = W_L ⋯ W_{l+1}``, the identity ``I_K`` for the last layer — or
        (K, K, d_out) with ``A[c]`` the Jacobian at class c (e.g. ReLU masks).
      M: class means of the layer input ``h̃`` (d_in × K), one column per class.
      loss: ``"mse"`` (``Q_c = I``) or ``"ce"`` (``Q_c = diag(p_c) − p_c p_cᵀ``).
      probs: CE only, (K × K) softmax probabilities, column c for class c.
      shift: added to every eigenvalue (pass λ for the regularised block).
      vectors: form flat row-major eigenvectors (default: up to `MAX_DENSE_ENTRIES` entries).

    Returns:
      `Spectrum`: the nonzero eigenpairs, ``bulk_value = shift``, ``dim = d_out·d_in``; for MSE
      with a shared A also ``factors`` (``v = a ⊗ b``). The residual (second-order) term of a
      nonlinear tail is not included here; `layer_hessian_spectrum` includes it.

    Examples:
      >>> import numpy as np, ufm
      >>> s = ufm.theory.collapsed_layer_hessian(np.eye(2), 2.0 * np.eye(2))   # A = I_K, M = 2 I: I ⊗ 4I/2
      >>> s.eigenvalues.tolist(), s.dim
      ([2.0, 2.0, 2.0, 2.0], 4)
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
        vectors = d_out * d_in * m <= MAX_DENSE_ENTRIES
    vecs = None
    if vectors:
        if fa is not None:
            vecs = np.einsum("pk,qk->pqk", fa, fb).reshape(-1, m)
        else:
            Y = red.eigenvectors.reshape(P.shape[1], Q.shape[1], m)
            vecs = np.einsum("pi,ijk,qj->pqk", P, Y, Q).reshape(-1, m)
    return Spectrum(
        red.eigenvalues,
        vecs,
        dim=d_out * d_in,
        bulk_value=float(shift),
        factors=None if fa is None else (fa, fb),
        source="closed-form",
    )


def _kron_layer(C, B, shift, vectors, info) -> Spectrum:
    """Nonzero eigenpairs of ``C ⊗ B`` (both PSD) with factors, bulk = shift."""
    # count the nonzero products from the factor eigenvalues alone: asking kron_eigh for all
    # pq pairs would also materialise pq factor columns (8 GB each at d = 1000)
    prod = np.abs(np.multiply.outer(np.linalg.eigvalsh(C), np.linalg.eigvalsh(B)))
    top = prod.max(initial=0.0)
    keep = int(np.sum(prod > _RTOL * max(top, np.finfo(float).tiny) * 10))
    spec = kron_eigh(C, B, k=keep, vectors=vectors)
    return dataclasses.replace(
        spec, eigenvalues=spec.eigenvalues + shift, bulk_value=float(shift), source="closed-form", info=info
    )


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
    ``A^{(l+1)ᵀ}A^{(l+1)} ⊗ MMᵀ/K`` for linear MSE (``docs/theory.md`` §4, K² outliers
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

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> s = ufm.theory.layer_hessian_spectrum(spec, ufm.theory.construct_optimum(spec), layer=1)
      >>> s.levels()[1].tolist(), s.dim, s.bulk_value     # K² equal outliers, the rest 0 (docs/theory.md §4)
      ([9], 16, 0.0)
    """
    layer = _check_layer(spec, layer)
    M, _, nc1 = _collapsed_means(spec, params, layer, collapse_tol, allow_zero)
    K = spec.num_classes
    shift = spec.lambdas[layer - 1] if regularized else 0.0
    info = {"layer": layer, "nc1": nc1, "regularized": bool(regularized), **_prediction(spec, layer)}
    Ws = params.Ws
    U = np.asarray(Ws[layer - 1], dtype=np.float64) @ M
    Cs = tail(spec, Ws, U, np.arange(K), layer + 1).curvature
    if spec.loss == "mse" and spec.activation == "linear":
        return _kron_layer(Cs[0], M @ M.T / K, shift, vectors, info)
    return kron_sum_spectrum(list(Cs / K), list(M.T[:, :, None]), shift=shift, vectors=vectors, info=info)


def feature_hessian_spectrum(
    spec: UFMSpec,
    params: UFMParams,
    *,
    regularized: bool = False,
    vectors: bool | None = None,
) -> Spectrum:
    """Spectrum of the ``H_1`` block of the Hessian (``docs/theory.md`` §4), exact at any point.

    Each column ``h_i`` of ``H_1`` enters only its own loss term, so the block is
    ``(1/N) Σ_i C_i ⊗ e_i e_iᵀ`` with ``C_i`` the tail curvature at ``h_i`` (row-major
    vec of H_1: the vector ``v ⊗ e_i`` is ``v`` in column i). Linear MSE: ``(1/N)A^{(1)ᵀ}A^{(1)} ⊗ I_N``,
    rank KN, value ``λ_Hγ/(1−γ)`` at the optimum. No collapse needed.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> s = ufm.theory.feature_hessian_spectrum(spec, ufm.theory.construct_optimum(spec))
      >>> s.levels()[1].tolist(), s.dim                   # rank K·N, one value (docs/theory.md §4)
      ([18], 24)
    """
    check_params(spec, params)
    H1 = np.asarray(params.H1, dtype=np.float64)
    d, N = H1.shape
    Cs = tail(spec, params.Ws, H1, spec.class_index, 1).curvature
    vals, vecs = np.linalg.eigh(Cs / N)  # N × d, N × d × d
    top = np.abs(vals).max(initial=0.0)
    keep = np.abs(vals) > _RTOL * 10 * d * max(top, np.finfo(float).tiny)
    i_idx, k_idx = np.nonzero(keep)
    shift = spec.lambda_H if regularized else 0.0
    m = i_idx.size
    if vectors is None:
        vectors = d * N * m <= MAX_DENSE_ENTRIES
    V = None
    if vectors:
        V = np.zeros((d, N, m))
        V[:, i_idx, np.arange(m)] = vecs[i_idx, :, k_idx].T
        V = V.reshape(d * N, m)
    return Spectrum(
        vals[i_idx, k_idx] + shift,
        V,
        dim=d * N,
        bulk_value=float(shift),
        source="closed-form",
        info={"block": "H1", "regularized": bool(regularized)},
    )
