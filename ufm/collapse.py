"""Deep neural collapse metrics NC1–NC4, layer by layer (``docs/theory.md`` §2).

Everything here takes plain arrays — features as columns (d × N) and integer labels —
so trained UFMs and real networks share one implementation. Conventions:

* class means ``μ_c = mean of the columns of class c``, ``M = [μ_1..μ_K]`` (d × K),
  global mean ``μ_G = mean of the class means`` (balanced data: the sample mean).
* ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``,
  ``Σ_B = (1/K) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ`` (rank ≤ K − 1) and the uncentred
  ``Σ_B⁰ = (1/K) Σ_c μ_c μ_cᵀ`` (rank ≤ K), the right frame for MSE without bias.
* NC1 = ``tr(Σ_W Σ_B^†)/K``; the pseudo-inverse keeps an explicit rank (K − 1 or K)
  and drops eigenvalues below ``rcond · λ_max`` — a plain ``pinv`` is known to
  return negative or exploding values on nearly collapsed features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .model import forward
from .results import result
from .spec import UFMSpec

__all__ = ["CollapseMetrics", "class_means", "nc_metrics", "metrics"]


def _check_finite(name, a):
    """Refuse NaN / inf input by name (else LAPACK fails later with "Eigenvalues did not converge")."""
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise ValueError(
            f"{name} holds NaN or infinite values ({bad} of {a.size} entries); collapse metrics need finite input"
        )


def class_means(H, labels, num_classes: int | None = None) -> np.ndarray:
    """Class means ``M`` (d × K) of features ``H`` (d × N) with integer ``labels`` (N,)."""
    H = np.asarray(H, dtype=np.float64)
    labels = np.asarray(labels)
    if H.ndim != 2 or labels.shape != (H.shape[1],):
        raise ValueError(f"features must be (d, N) with labels (N,), got {H.shape} and {labels.shape}")
    K = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = np.bincount(labels, minlength=K)
    if np.any(counts == 0):
        raise ValueError(f"every class needs at least one sample, counts per class are {counts.tolist()}")
    onehot = np.eye(K)[labels]  # N × K
    return (H @ onehot) / counts


def _pinv_trace(D: np.ndarray, Sigma_B: np.ndarray, rank: int, rcond: float) -> float:
    """``tr(Σ_W Σ_B^†)`` with ``Σ_W = D Dᵀ/N`` (D: deviations from the class means) and Σ_B's
    pseudo-inverse truncated to ``rank`` eigenpairs.

    Evaluated as ``Σ_k ‖Dᵀ v_k‖² / (N λ_k)``: a sum of non-negative terms, so it cannot go
    negative through cancellation.
    """
    evals, evecs = np.linalg.eigh(Sigma_B)
    evals, evecs = evals[::-1][:rank], evecs[:, ::-1][:, :rank]
    keep = evals > rcond * max(evals[0], 0.0) if evals.size else evals > 0
    if not np.any(keep):
        return float("inf")
    proj = D.T @ evecs[:, keep]  # N × r
    return float(np.sum(proj**2 / evals[keep]) / D.shape[1])


def _frame_distance(G: np.ndarray, frame: np.ndarray) -> float:
    """``‖G − c F‖_F / ‖G‖_F`` at the best scale ``c = ⟨G, F⟩ / ‖F‖²`` (0 iff G ∝ F)."""
    norm = np.linalg.norm(G)
    if norm == 0:
        return float("nan")
    c = np.vdot(G, frame) / np.vdot(frame, frame)
    return float(np.linalg.norm(G - c * frame) / norm)


_STATUS = ("converged", "messages")


@result
class CollapseMetrics:
    """NC metrics, one entry per layer (arrays of length ``num_layers``); 0 means collapse.

    Fields:
      nc1: ``tr(Σ_W Σ_B^†)/K`` with the centred Σ_B (rank K − 1).
      nc1_uncentred: the same with the uncentred Σ_B⁰ (rank K).
      of_distance: Gram ``MᵀM`` against the nearest orthogonal frame ``c I_K``.
      etf_distance: centred Gram against the nearest simplex ETF ``c (I − 11ᵀ/K)``.
      equinorm: coefficient of variation of the centred class-mean norms.
      equiangularity: std over c ≠ c' of the cosines between centred class means.
      nc3: ``‖W (I − P_M)‖_F / ‖W‖_F``: rows of the weight reading this layer outside
        span(M) (NaN where no weight is given).
      duality: ``‖W/‖W‖ − Mᵀ/‖M‖‖_F`` (uncentred M; centred for the ETF geometry), the
        self-duality of a classifier ``W`` reading this layer (NaN where no weight).
      nc4: fraction of samples whose nearest class mean disagrees with ``predictions``.
    """

    nc1: np.ndarray
    nc1_uncentred: np.ndarray
    of_distance: np.ndarray
    etf_distance: np.ndarray
    equinorm: np.ndarray
    equiangularity: np.ndarray
    nc3: np.ndarray
    duality: np.ndarray
    nc4: np.ndarray
    converged: bool = True  # closed-form metrics: nothing iterative to miss (`ufm.results`)
    messages: tuple[str, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.nc1)

    def metrics(self) -> dict:
        """The per-layer metric arrays by name (the status fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _STATUS}


def _layer_metrics(H, labels, K, W, predictions, geometry, rcond) -> dict:
    H = np.asarray(H, dtype=np.float64)
    d, N = H.shape
    M = class_means(H, labels, K)
    muG = M.mean(axis=1, keepdims=True)
    Mc = M - muG
    D = H - M[:, labels]
    nc1 = _pinv_trace(D, Mc @ Mc.T / K, min(K - 1, d), rcond) / K
    nc1_u = _pinv_trace(D, M @ M.T / K, min(K, d), rcond) / K

    norms = np.linalg.norm(Mc, axis=0)
    equinorm = float(norms.std() / norms.mean()) if norms.mean() > 0 else float("nan")
    cos = (Mc.T @ Mc) / np.maximum(np.outer(norms, norms), np.finfo(float).tiny)
    equiangularity = float(cos[~np.eye(K, dtype=bool)].std())
    of = _frame_distance(M.T @ M, np.eye(K))
    etf = _frame_distance(Mc.T @ Mc, np.eye(K) - np.ones((K, K)) / K)

    nc3 = duality = float("nan")
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        if W.shape[1] != d:
            raise ValueError(f"a weight reading a layer of width {d} needs {d} columns, got shape {W.shape}")
        frame = Mc if geometry == "etf" else M
        Q, s, _ = np.linalg.svd(frame, full_matrices=False)
        Q = Q[:, s > rcond * s[0]] if s[0] > 0 else Q[:, :0]
        nc3 = float(np.linalg.norm(W - (W @ Q) @ Q.T) / np.linalg.norm(W))
        if W.shape[0] == K:
            duality = float(np.linalg.norm(W / np.linalg.norm(W) - frame.T / np.linalg.norm(frame)))

    nc4 = float("nan")
    if predictions is not None:
        dist = ((H[:, :, None] - M[:, None, :]) ** 2).sum(axis=0)  # N × K
        nc4 = float(np.mean(dist.argmin(axis=1) != np.asarray(predictions)))
    return dict(
        nc1=nc1,
        nc1_uncentred=nc1_u,
        of_distance=of,
        etf_distance=etf,
        equinorm=equinorm,
        equiangularity=equiangularity,
        nc3=nc3,
        duality=duality,
        nc4=nc4,
    )


def nc_metrics(
    features: Sequence,
    labels,
    *,
    weights: Sequence | None = None,
    predictions=None,
    geometry: str = "of",
    rcond: float = 1e-10,
) -> CollapseMetrics:
    """NC1–NC4 for each feature matrix in ``features`` (each d_l × N, samples as columns).

    Args:
      features: one (d_l × N) array per layer.
      labels: integer classes (N,), every class present.
      weights: optional, aligned with ``features``: the matrix that reads each layer
        (``W_l`` with d_l columns) or ``None``; feeds NC3 and the self-duality.
      predictions: optional network predictions (N,) for NC4.
      geometry: ``"of"`` (MSE without bias: uncentred frame) or ``"etf"`` (CE): which
        means span the NC3 / duality frame.
      rcond: relative cut-off of the pseudo-inverses and spans.
    """
    if geometry not in ("of", "etf"):
        raise ValueError(f"geometry must be 'of' or 'etf', got {geometry!r}")
    if weights is not None and len(weights) != len(features):
        raise ValueError(f"weights must align with features ({len(features)} layers), got {len(weights)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-d integer array, got dtype {labels.dtype} and shape {labels.shape}")
    for name, arrays in (("features", features), ("weights", weights or ())):
        for i, a in enumerate(arrays):
            if a is not None:
                _check_finite(f"{name}[{i}]", a)
    K = int(labels.max()) + 1
    rows = [
        _layer_metrics(H, labels, K, None if weights is None else weights[i], predictions, geometry, rcond)
        for i, H in enumerate(features)
    ]
    return CollapseMetrics(**{k: np.array([r[k] for r in rows]) for k in rows[0]})


def metrics(spec: UFMSpec, params, *, rcond: float = 1e-10) -> CollapseMetrics:
    """NC1–NC4 of a deep UFM at layers ``H̃_1..H̃_L`` and the output ``Z`` (L + 1 rows).

    Row ``l-1`` describes ``H̃_l`` read by ``W_l``; the last row is the output Z (no
    weight). NC2 geometry: orthogonal frame for MSE, simplex ETF for CE (``docs/theory.md`` §2).

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> nc = ufm.collapse.metrics(spec, ufm.theory.construct_optimum(spec))
      >>> bool(max(nc.nc1) < 1e-12 and max(nc.of_distance) < 1e-12)   # collapsed onto orthogonal frames
      True
    """
    _check_finite("params.H1", params.H1)
    for i, W in enumerate(params.Ws):
        _check_finite(f"params.Ws[{i}] (W_{i + 1})", W)
    acts = forward(spec, params)
    preds = np.asarray(acts.output).argmax(axis=0)
    return nc_metrics(
        [*acts.post, acts.output],
        spec.class_index,
        weights=[*params.Ws, None],
        predictions=preds,
        geometry="etf" if spec.loss == "ce" else "of",
        rcond=rcond,
    )
