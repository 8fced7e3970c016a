"""Real networks seen as deep UFMs: collapse, layer-wise and whole-network Hessian spectra.

The head of a trained network — the last L linear layers ``u = W_l h̃_l (+ b_l)`` with σ
between them — is the deep UFM of ``docs/theory.md`` §1 with its free features H_1 := the
backbone's output. Everything is measured in float64 on the given samples, sorted
class-major. Conventions (``docs/real_networks.md`` §1):

* "Hessian" is the *data* Hessian: of the mean loss over the N samples (MSE ``½‖z − e_y‖²``
  per sample — not PyTorch's ``MSELoss``, which also divides by K —, or cross-entropy), no
  ridge (the ridge shifts a block by λ I).
* Layer l is the block of W_l (d_{l+1} × d_l), flattened row-major (``a ⊗ b`` is the
  matrix ``a bᵀ``). It is measured on the head alone with H_1 held fixed — the same block
  as in the whole network. Every eigendecomposition goes through `_eig`.
* Predictions (``docs/real_networks.md`` §2, §3), both from class means μ_c of the layer
  input H̃_l:
  - *class-mean*: ``(1/K) Σ_c C_c^∘ ⊗ μ_c μ_cᵀ`` with the tail curvature at the class-mean
    input (ρ at the class-mean logits for CE) — the paper's object, computed by
    ``ufm.theory.layer_hessian_spectrum`` on the head described as a `ufm.UFMSpec` /
    `ufm.UFMParams` (`head_as_ufm`). A head with biases is not a deep UFM; its class-mean
    prediction is the same formula with ``C_c^∘`` from autodiff at ``W_l μ_c + b_l``.
  - *class-averaged curvature*: ``(1/K) Σ_c C̄_c ⊗ μ_c μ_cᵀ`` with ``C̄_c`` the class mean of
    the per-sample curvature ``C_i = ∇²_u ℓ_i`` (``ufm.theory.class_averaged_layer_hessian``).
    For linear MSE both coincide; for CE ``C̄_c = Aᵀ ρ̄_c A``.
  K² outliers are expected for MSE and (K−1)² for CE.
* The exact split of the measured block into class-mean and within-class parts is
  ``ufm.theory.layer_block_split`` (``docs/real_networks.md`` §4), with the per-sample
  curvatures from autodiff of the head's tail.
* Outliers are counted with ``ufm.curvature.count_outliers`` (its gap rule) over the top 2k
  measured eigenvalues (k = the expected count), so dense and Lanczos blocks count alike. A layer is
  *collapsed* when NC1 of its input (uncentred for MSE, centred for CE) is at most
  `NC1_THRESHOLD`; a prediction *holds* when its top outliers are within
  `REL_ERROR_THRESHOLD` of the measured ones.
* Whole network: the top of the data Hessian over every parameter by Lanczos and its SLQ
  density; "inheritance" is how each outlier eigenvector's squared mass splits over the
  backbone and the head layers (head biases count with their layer).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..collapse import CollapseMetrics, class_means, nc_metrics
from ..curvature._spectrum import DEFAULT_DENSE_MAX
from ..model import UFMParams, output_loss
from ..results import result
from ..spec import UFMSpec
from ..spectrum import Spectrum
from ._data import Dataset
from ._models import NetworkParams, NetworkSpec, apply_head, backbone_features, head_leaf_indices, network_loss

__all__ = [
    "NC1_THRESHOLD",
    "REL_ERROR_THRESHOLD",
    "VERDICT_STATUSES",
    "LayerComparison",
    "NetworkSpectrum",
    "RealNetworkReport",
    "head_as_ufm",
    "expected_outliers",
    "predicted_layer_spectrum",
    "measured_layer_spectrum",
    "compare_layer",
    "network_spectrum",
    "analyze",
    "analyze_features",
    "analyze_model",
]

#: A head layer counts as collapsed when NC1 of its input is at most this (``docs/real_networks.md`` §5):
#: then the within-class part of its Hessian block is small against the class-mean part.
NC1_THRESHOLD = 0.1
#: A prediction holds when the max relative error of its top outliers is at most this.
REL_ERROR_THRESHOLD = 0.1


def _curvature():
    from .. import curvature  # lazy: heavy

    return curvature


def _theory():
    from .. import theory

    return theory


def _expected(loss: str, K: int) -> int:
    return K * K if loss == "mse" else (K - 1) ** 2


def expected_outliers(spec: NetworkSpec) -> int:
    """K² for MSE, (K − 1)² for CE (``docs/theory.md`` §4, §5)."""
    return _expected(spec.loss, spec.num_classes)


def _as_f64(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _count(vals) -> int:
    return int(_curvature().count_outliers(np.asarray(vals)))


# ---- the one eigendecomposition route: ufm.curvature.spectrum ------------------------------------
def _eig(fn, params, *, leaves=None, k: int | None = None, dense_max: int = DEFAULT_DENSE_MAX, seed: int = 0):
    """Eigenpairs of the Hessian of ``fn`` over ``leaves`` through ``ufm.curvature.spectrum``:
    dense (all pairs, residuals measured) when the block has at most ``dense_max`` parameters —
    the matrix is kept for the exact class-mean / within-class split —, else the top ``k`` by
    the Krylov solver. Returns ``(Spectrum, dense matrix or None)``."""
    curv = _curvature()
    sel = jax.tree_util.tree_leaves(params)
    P = sum(sel[i].size for i in leaves) if leaves is not None else sum(x.size for x in sel)
    if P <= dense_max:
        Hm = np.asarray(curv.hessian(fn, params, leaves=leaves), np.float64)
        Hm = 0.5 * (Hm + Hm.T)
        return curv.spectrum(Hm, method="dense"), Hm
    # throw=False: a missed tolerance is reported in the table, the verdict and the JSON
    return curv.spectrum(fn, params, leaves=leaves, k=k, method="krylov", seed=seed, throw=False), None


# ---- the head as a deep UFM ---------------------------------------------------------------------
def _class_major(H1, labels):
    """Columns sorted by class (stable) and the per-class count; raises unless balanced."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    if counts.size < 2 or np.any(counts != counts[0]):
        raise ValueError(f"the collapsed-point theory needs balanced classes, class counts {counts.tolist()}")
    return np.asarray(H1, np.float64)[:, order], labels[order], int(counts[0])


def head_as_ufm(weights, H1, labels, *, activation: str = "linear", loss: str = "mse") -> tuple[UFMSpec, UFMParams]:
    """The bias-free head ``W_1..W_L`` on features ``H1`` (d × N) as a deep UFM.

    Returns ``(UFMSpec, UFMParams)`` with ``H1``'s columns sorted class-major (balanced
    classes required) and ``relu_grad0 = 0`` (``jax.nn.relu``). The ridge constants of the
    spec are placeholders (1.0): only the data Hessian is taken from it.
    """
    H, y, n = _class_major(H1, labels)
    Ws = tuple(np.asarray(W, np.float64) for W in weights)
    K = Ws[-1].shape[0]
    if y.max() + 1 != K:
        raise ValueError(f"the last weight has {K} rows but the labels have {y.max() + 1} classes")
    spec = UFMSpec(
        num_classes=K,
        per_class=n,
        depth=len(Ws),
        width=tuple(W.shape[1] for W in Ws),
        activation=activation,
        loss=loss,
        lambda_H=1.0,
        lambda_W=1.0,
        relu_grad0=0.0,
    )
    return spec, UFMParams(jnp.asarray(H), tuple(jnp.asarray(W) for W in Ws))


class _Head:
    """A head ``(weights, biases, activation, loss)`` on fixed features, plus the function whose
    Hessian is measured: ``loss_fn(arrays)`` with ``arrays[w_leaves[l-1]] = W_l`` (by default ufm's
    own forward pass; `analyze_model` passes the user's)."""

    def __init__(self, weights, biases, activation, loss, H1, labels, loss_fn=None, arrays=None, w_leaves=None):
        self.weights = tuple(jnp.asarray(W, jnp.float64) for W in weights)
        self.biases = tuple(jnp.asarray(b, jnp.float64) for b in biases)
        self.activation, self.loss = activation, loss
        self.H1 = jnp.asarray(H1, jnp.float64)
        self.labels = np.asarray(labels)
        self.K = int(self.weights[-1].shape[0])
        self.L = len(self.weights)
        if loss_fn is None:
            L, y = self.L, jnp.asarray(self.labels)
            loss_fn = lambda a: output_loss(loss, apply_head(a[:L], a[L:], activation, self.H1)[-1], y)  # noqa: E731
            arrays, w_leaves = (*self.weights, *self.biases), tuple(range(self.L))
        self.loss_fn, self.arrays, self.w_leaves = loss_fn, tuple(arrays), tuple(w_leaves)
        self.features = tuple(np.asarray(f) for f in apply_head(self.weights, self.biases, activation, self.H1))

    def curvatures(self, layer: int, U, labels) -> np.ndarray:
        """``C = ∇²_u ℓ(tail(u), y)`` (m × d_out × d_out) at pre-activations ``U`` (d_out × m) of
        layer ``layer``'s output, by autodiff of the head's own tail (σ'' = 0 for ReLU)."""
        sigma = jax.nn.relu if self.activation == "relu" else (lambda x: x)
        rest_W, rest_b = self.weights[layer:], (self.biases[layer:] if self.biases else (None,) * (self.L - layer))

        def ell(u, y):
            z = u
            for W, b in zip(rest_W, rest_b, strict=True):
                z = W @ sigma(z) + (0.0 if b is None else b)
            return output_loss(self.loss, z[:, None], y[None])

        # one compiled program (eager vmap-of-hessian compiles every primitive on its own: 20x slower)
        return np.asarray(jax.jit(jax.vmap(jax.hessian(ell)))(jnp.asarray(U, jnp.float64).T, jnp.asarray(labels)))

    def preactivations(self, layer: int, H) -> np.ndarray:
        u = np.asarray(self.weights[layer - 1]) @ np.asarray(H)
        return u + np.asarray(self.biases[layer - 1])[:, None] if self.biases else u


# ---- layer-wise ------------------------------------------------------------------------------------
def _class_mean_prediction(head: _Head, layer: int) -> Spectrum:
    M = class_means(head.features[layer - 1], head.labels, head.K)
    if not head.biases:
        spec, params = head_as_ufm(head.weights, head.H1, head.labels, activation=head.activation, loss=head.loss)
        return _theory().layer_hessian_spectrum(spec, params, layer, collapse_tol=None, vectors=True)
    C0 = head.curvatures(layer, head.preactivations(layer, M), np.arange(head.K))
    return _theory().class_averaged_layer_hessian(C0, M, vectors=True)


def _class_averaged_prediction(head: _Head, layer: int, C) -> Spectrum:
    M = class_means(head.features[layer - 1], head.labels, head.K)
    Cbar = np.stack([C[head.labels == c].mean(axis=0) for c in range(head.K)])
    return _theory().class_averaged_layer_hessian(Cbar, M, vectors=True)


def _errors(pred: Spectrum, meas: Spectrum, k: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``m`` = the prediction's outliers by the gap rule (≤ k; fewer when the means or the tail are
    numerically rank deficient) and ``|meas − pred| / pred`` over the top m."""
    if not pred.eigenvalues.size or not pred.eigenvalues[0] > 0:
        raise ValueError("the prediction is zero: the class means or the tail vanish")
    m = min(k, _count(np.concatenate([pred.eigenvalues, [0.0]])) or int(np.sum(pred.eigenvalues > 0)))
    pv, mv = pred.eigenvalues[:m], meas.eigenvalues[:m]
    return m, np.abs(mv - pv) / np.abs(pv), pv


def _padded(vals, n):
    return np.concatenate([vals, np.zeros(max(0, n - vals.size))])[:n]


def _ce_levels(vals, K) -> dict:
    """The CE level structure 1, K − 1, K² − 3K + 1 (``docs/theory.md`` §5) read off the measured
    top (K − 1)²: the two ratio gaps that separate the levels and each level's relative spread."""
    k = (K - 1) ** 2
    if vals.size <= k or K < 3:
        return {}
    top, mid, bulk = vals[0], vals[1:K], vals[K:k]
    ratio = lambda a, b: float(a / b) if b > 0 else float("inf")  # noqa: E731
    spread = lambda v: ratio(v.max() - v.min(), v.mean()) if v.size else 0.0  # noqa: E731
    gaps = [ratio(vals[0], vals[1]), ratio(vals[K - 1], vals[K])]
    return {
        "levels": [float(top), float(mid.mean()), float(bulk.mean())],
        "multiplicities": [1, K - 1, k - K],
        "gaps": gaps,
        "spreads": [0.0, spread(mid), spread(bulk)],
        "identified": bool(min(gaps) > 1 + max(spread(mid), spread(bulk))),
    }


@result(
    static=("layer", "num_params", "collapsed", "expected", "num_outliers", "predicted_outliers", "holds", "source")
)
class LayerComparison:
    """Predicted vs measured data Hessian of one head layer W_l (``docs/real_networks.md`` §5).

    Fields:
      layer: l in 1..L; num_params: size of the block.
      nc1: NC1 of the layer's input H̃_l (uncentred for MSE, centred for CE); collapsed: nc1 ≤ `NC1_THRESHOLD`.
      expected: K² (MSE) or (K−1)² (CE); num_outliers: counted on the measured spectrum.
      gap: λ_k / λ_{k+1} of the measured block at k = expected (separation from the bulk).
      predicted_outliers: m = the outliers of the class-mean prediction by the same gap rule, at
        most ``expected``; the errors, overlap and f(v) below are over the top m.
      predicted, measured, predicted_class_averaged: the top ``expected + 10`` eigenvalues, descending.
      max_rel_error, median_rel_error: ``|meas − pred| / pred`` of the class-mean prediction.
      class_averaged_max_rel_error, class_averaged_median_rel_error: the same for the
        class-averaged-curvature prediction (over its own top m).
      holds: the better prediction's max rel error ≤ `REL_ERROR_THRESHOLD` and the measured
        block has the prediction's outlier count m (= expected for a linear head at collapse; a
        ReLU head can have fewer, e.g. (K−1)² − 1, predicted exactly).
      overlap: ``Tr(P_pred P_meas) / m`` of the two top-m eigenspaces (class-mean prediction).
      alignment_min, alignment_mean: f(v) of its top-m eigenvectors under the measured block.
      gradient_fraction: ``‖P g‖² / ‖g‖²`` of the data gradient in the measured top-m space.
      split: ``‖part‖_F / ‖B‖_F`` of the four parts of `ufm.theory.LayerBlockSplit` (empty when
        the block is too large to form).
      levels: CE only, the level structure of the measured top (K − 1)² (`_ce_levels`).
      source: how the block was measured (``"dense"`` / ``"krylov"``).
      converged: the measurement reached its tolerance (always for dense; a Krylov solve that
        missed it makes ``holds`` False and is named in the verdict).
    """

    layer: int
    num_params: int
    nc1: float
    collapsed: bool
    expected: int
    num_outliers: int
    gap: float
    predicted_outliers: int
    predicted: np.ndarray
    measured: np.ndarray
    predicted_class_averaged: np.ndarray
    max_rel_error: float
    median_rel_error: float
    class_averaged_max_rel_error: float
    class_averaged_median_rel_error: float
    holds: bool
    overlap: float
    alignment_min: float
    alignment_mean: float
    gradient_fraction: float
    split: dict
    levels: dict
    source: str
    converged: bool
    messages: tuple[str, ...] = ()


def _compare(
    head: _Head, layer: int, nc1: float, *, dense_max: int, predicted: Spectrum | None = None
) -> LayerComparison:
    sub = _curvature().subspace
    k = _expected(head.loss, head.K)
    pred = _class_mean_prediction(head, layer) if predicted is None else predicted
    leaf = head.w_leaves[layer - 1]
    meas, Hm = _eig(head.loss_fn, head.arrays, leaves=[leaf], k=k + 10, dense_max=dense_max)
    converged = meas.converged
    grad = np.asarray(jax.jit(jax.grad(head.loss_fn))(head.arrays)[leaf]).reshape(-1)
    H = head.features[layer - 1]
    C = head.curvatures(layer, head.preactivations(layer, H), head.labels)
    avg = _class_averaged_prediction(head, layer, C)
    m, rel, _ = _errors(pred, meas, k)
    _, rel_avg, _ = _errors(avg, meas, k)
    Up, Um = np.asarray(pred.eigenvectors)[:, :m], np.asarray(meas.eigenvectors)[:, :m]
    if Hm is not None:
        f = np.array([float(sub.alignment(Hm, Up[:, j])) for j in range(m)])
    else:
        shape = head.arrays[leaf].shape

        def matvec(v):
            def block_loss(W):
                return head.loss_fn(head.arrays[:leaf] + (W,) + head.arrays[leaf + 1 :])

            _, hv = jax.jvp(jax.grad(block_loss), (head.arrays[leaf],), (jnp.asarray(v).reshape(shape),))
            return np.asarray(hv).reshape(-1)

        f = np.array([float(sub.alignment(matvec, Up[:, j])) for j in range(m)])
    split = {}
    if Hm is not None:
        M = class_means(H, head.labels, head.K)
        C0 = head.curvatures(layer, head.preactivations(layer, M), np.arange(head.K))
        split = _theory().layer_block_split(C, H, head.labels, mean_curvatures=C0).norms()
    vals = meas.eigenvalues
    # the gap rule over the top 2k: past rank K·d_in a dense block has exact zeros, and the step
    # to them (within-class eigenvalues against rounding) would otherwise always be the largest
    n_out = _count(vals[: 2 * k])
    return LayerComparison(
        layer=layer,
        num_params=int(grad.size),
        nc1=float(nc1),
        collapsed=bool(nc1 <= NC1_THRESHOLD),
        expected=k,
        num_outliers=n_out,
        gap=float(vals[k - 1] / vals[k]) if vals.size > k and vals[k] > 0 else float("inf"),
        predicted_outliers=m,
        predicted=_padded(pred.eigenvalues, k + 10),
        measured=vals[: k + 10],
        predicted_class_averaged=_padded(avg.eigenvalues, k + 10),
        max_rel_error=float(rel.max()),
        median_rel_error=float(np.median(rel)),
        class_averaged_max_rel_error=float(rel_avg.max()),
        class_averaged_median_rel_error=float(np.median(rel_avg)),
        holds=bool(min(rel.max(), rel_avg.max()) <= REL_ERROR_THRESHOLD and n_out == m and converged),
        overlap=float(sub.projector_overlap(Up, Um)),
        alignment_min=float(f.min()),
        alignment_mean=float(f.mean()),
        gradient_fraction=float(sub.gradient_fraction(grad, Um)),
        split=split,
        levels=_ce_levels(vals, head.K) if head.loss == "ce" else {},
        source=meas.source,
        converged=converged,
        messages=meas.messages,
    )


def _builtin_head(spec: NetworkSpec, params: NetworkParams, H1, labels) -> _Head:
    params = _as_f64(params)
    return _Head(params.head, params.head_biases, spec.activation, spec.loss, H1, labels)


def _check_layer(layer, L):
    if not (isinstance(layer, int) and 1 <= layer <= L):
        raise ValueError(f"layer must be an int in 1..{L}, got {layer!r}")


def predicted_layer_spectrum(spec: NetworkSpec, params: NetworkParams, H1, labels, layer: int) -> Spectrum:
    """The class-mean prediction for the data Hessian of W_``layer`` (1..L) from the measured class
    means and weights, by ``ufm.theory`` on the head as a deep UFM (module docstring).

    Returns the nonzero eigenpairs with flat row-major eigenvectors (bulk value 0).
    """
    _check_layer(layer, spec.depth)
    with jax.enable_x64(True):
        return _class_mean_prediction(_builtin_head(spec, params, H1, labels), layer)


def measured_layer_spectrum(
    spec: NetworkSpec,
    params: NetworkParams,
    H1,
    labels,
    layer: int,
    *,
    k: int | None = None,
    dense_max: int = DEFAULT_DENSE_MAX,
) -> tuple[Spectrum, np.ndarray | None, np.ndarray]:
    """Data Hessian of W_``layer``: dense ``eigh`` when it has ≤ ``dense_max`` parameters, else
    the top ``k`` by Lanczos. Returns ``(spectrum, dense matrix or None, data gradient (flat))``."""
    _check_layer(layer, spec.depth)
    with jax.enable_x64(True):
        head = _builtin_head(spec, params, H1, labels)
        leaf = layer - 1
        k = expected_outliers(spec) + 10 if k is None else k
        meas, Hm = _eig(head.loss_fn, head.arrays, leaves=[leaf], k=k, dense_max=dense_max)
        grad = np.asarray(jax.grad(head.loss_fn)(head.arrays)[leaf]).reshape(-1)
    return dataclasses.replace(meas, info={**meas.info, "layer": layer}), Hm, grad


def _layer_nc1(head: _Head, nc: CollapseMetrics | None = None) -> np.ndarray:
    nc = _nc(head) if nc is None else nc
    return np.asarray(nc.nc1_uncentred if head.loss == "mse" else nc.nc1)


def _nc(head: _Head) -> CollapseMetrics:
    preds = head.features[-1].argmax(axis=0)
    return nc_metrics(
        list(head.features),
        head.labels,
        weights=[*head.weights, None],
        predictions=preds,
        geometry="etf" if head.loss == "ce" else "of",
    )


def compare_layer(
    spec: NetworkSpec,
    params: NetworkParams,
    H1,
    labels,
    layer: int,
    *,
    dense_max: int = DEFAULT_DENSE_MAX,
    predicted=None,
) -> LayerComparison:
    """`LayerComparison` for head layer ``layer`` (module docstring for every number);
    ``predicted`` reuses a `predicted_layer_spectrum` already computed."""
    _check_layer(layer, spec.depth)
    with jax.enable_x64(True):
        head = _builtin_head(spec, params, H1, labels)
        return _compare(head, layer, float(_layer_nc1(head)[layer - 1]), dense_max=dense_max, predicted=predicted)


# ---- whole network ------------------------------------------------------------------------------------
@result(static=("num_outliers", "num_params", "expected", "resolved"))
class NetworkSpectrum:
    """Top of the whole-network data Hessian.

    Fields:
      eigenvalues: the top k (Lanczos), descending; residuals: ‖Hv − λv‖ of each.
      num_outliers: by the gap rule; num_params: P.
      expected: the outliers one head layer carries (K² or (K − 1)²); resolved: whether k
        exceeds it, so that a gap after the expected count could be seen at all (a count of
        0 with ``resolved = False`` means k was too small, not that there is no gap).
      inheritance: (k × (1 + L)) squared mass of each top eigenvector on
        [backbone, W_1, ..., W_L] (rows sum to 1); the first ``num_outliers`` rows are the outliers.
      in_layer_space: (k × L) fraction of each eigenvector's W_l part lying in layer l's
        predicted outlier space (NaN where the part is ~0 or no space was given).
      density_grid, density: SLQ estimate of the spectral density (empty if not asked).
      converged: the Lanczos solve reached its tolerance (else the table says so).
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_outliers: int
    num_params: int
    expected: int
    resolved: bool
    inheritance: np.ndarray
    in_layer_space: np.ndarray
    density_grid: np.ndarray
    density: np.ndarray
    converged: bool
    messages: tuple[str, ...] = ()


def _network_spectrum(
    fn, params, groups, L: int, expected: int, *, k, layer_spaces, density, density_matvecs, density_samples, seed
) -> NetworkSpectrum:
    """``groups[i]`` = 0 (backbone) or l (head layer l) for leaf i of ``params``; ``layer_spaces[l]``
    pairs the leaf index of W_l with an orthonormal basis of its outlier space."""
    curv = _curvature()
    top, _ = _eig(fn, params, k=k, dense_max=0, seed=seed)
    vals = np.asarray(top.eigenvalues)
    leaves = jax.tree_util.tree_leaves(params)
    sizes = np.array([x.size for x in leaves])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    V = np.asarray(top.eigenvectors)
    mass = np.zeros((V.shape[1], L + 1))
    in_space = np.full((V.shape[1], L), np.nan)
    for i, g in enumerate(groups):
        mass[:, g] += np.sum(V[bounds[i] : bounds[i + 1]] ** 2, axis=0)
    for l, (i, basis) in (layer_spaces or {}).items():
        part = V[bounds[i] : bounds[i + 1]]
        norm2 = np.sum(part**2, axis=0)
        proj = np.sum((np.asarray(basis).T @ part) ** 2, axis=0)
        in_space[:, l - 1] = np.where(norm2 > 1e-12, proj / np.maximum(norm2, 1e-300), np.nan)
    grid = dens = np.zeros(0)
    if density:
        sd = curv.spectral_density(fn, params, num_matvecs=density_matvecs, num_samples=density_samples, seed=seed)
        grid, dens = np.asarray(sd.grid), np.asarray(sd.density)
    return NetworkSpectrum(
        eigenvalues=vals,
        residuals=np.asarray(top.residuals) if top.residuals is not None else np.full(vals.size, np.nan),
        num_outliers=_count(vals),
        num_params=int(sizes.sum()),
        expected=int(expected),
        resolved=bool(vals.size > expected),
        inheritance=mass / mass.sum(axis=1, keepdims=True),
        in_layer_space=in_space,
        density_grid=grid,
        density=dens,
        converged=top.converged,
        messages=top.messages,
    )


def network_spectrum(
    spec: NetworkSpec,
    params: NetworkParams,
    data: Dataset,
    *,
    k: int | None = None,
    layer_spaces: dict | None = None,
    density: bool = True,
    density_matvecs: int = 40,
    density_samples: int = 4,
    seed: int = 0,
) -> NetworkSpectrum:
    """Top-``k`` eigenpairs (default expected + 20) of the whole-network data Hessian, the outlier
    count, inheritance over layers and (optionally) the SLQ density.

    ``layer_spaces`` maps l to an orthonormal (d_{l+1} d_l × m) basis of layer l's outlier space.
    """
    X, y = jnp.asarray(data.X, jnp.float64), jnp.asarray(data.labels)
    fn = lambda p: network_loss(spec, p, X, y, regularized=False)  # noqa: E731
    head_idx = head_leaf_indices(spec)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    groups = [0] * n_leaves
    for l, i in enumerate(head_idx, start=1):
        groups[i] = l
    for l in range(1, n_leaves - head_idx[-1]):  # head biases follow W_1..W_L
        groups[head_idx[-1] + l] = l
    spaces = {l: (head_idx[l - 1], b) for l, b in (layer_spaces or {}).items()}
    return _network_spectrum(
        fn,
        params,
        groups,
        spec.depth,
        expected_outliers(spec),
        k=expected_outliers(spec) + 20 if k is None else k,
        layer_spaces=spaces,
        density=density,
        density_matvecs=density_matvecs,
        density_samples=density_samples,
        seed=seed,
    )


# ---- the report ------------------------------------------------------------------------------------
@result(static=("config", "verdict", "seconds"))
class RealNetworkReport:
    """Everything measured on one trained network (``to_dict`` for JSON).

    Fields:
      config: dataset, spec and training settings; train_accuracy / test_accuracy.
      nc: NC1–NC4 at H̃_1..H̃_L and the output Z (``ufm.collapse.nc_metrics``).
      layers: one `LayerComparison` per head layer.
      network: the whole-network `NetworkSpectrum` (or ``None`` if skipped).
      verdict: ``status`` / ``passed``, ``collapsed`` (within class: NC1) / ``holds`` per layer, the
        thresholds, NC2 / NC3 of the head layers as facts (not judged), and a one-line ``summary``.
      seconds: wall-clock time of each stage.
      converged, messages: the result protocol (`ufm.results`): every Krylov measurement (per
        layer and of the whole network) reached its tolerance; the solvers' messages.
    """

    config: dict
    train_accuracy: float
    test_accuracy: float | None
    nc: CollapseMetrics
    layers: tuple[LayerComparison, ...]
    network: NetworkSpectrum | None
    verdict: dict
    seconds: dict
    converged: bool | None = None  # None: from the layers and the network spectrum
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        parts = [*self.layers, *([] if self.network is None else [self.network])]
        if self.converged is None:
            object.__setattr__(self, "converged", all(bool(p.converged) for p in parts))
        if not self.messages:
            object.__setattr__(self, "messages", tuple(m for p in parts for m in p.messages))


#: What the verdict of `ufm real` / `ufm analyze` found, the first that applies; only "holds" is a pass (exit 0).
VERDICT_STATUSES = ("not collapsed", "not converged", "predictions miss", "holds")


def _facts(nc: CollapseMetrics | None, loss: str, L: int) -> tuple[dict, str]:
    """NC2 / NC3 of the head layers H~1..H~L, reported beside the verdict and not judged by it:
    the class-mean predictions need only within-class collapse (NC1), so a head whose means are
    far from a frame is still judged, and "collapsed" means collapsed within class."""
    if nc is None:
        return {}, ""
    frame = "orthogonal frame" if loss == "mse" else "simplex ETF"
    dist = np.asarray(nc.of_distance if loss == "mse" else nc.etf_distance, dtype=float)[:L]
    nc3 = np.asarray(nc.nc3, dtype=float)[:L]
    duality = float(np.asarray(nc.duality, dtype=float)[L - 1])
    facts = {
        "nc2_frame": frame,
        "nc2_frame_distance": [float(x) for x in dist],
        "nc3_outside_means": [float(x) for x in nc3],
        "nc3_self_duality": duality,
    }
    worst = int(np.nanargmax(dist)) if np.isfinite(dist).any() else 0
    text = (
        f"; not judged (reported as facts): NC2 distance to the {frame} up to {dist[worst]:.2g} (H~{worst + 1}), "
        f"NC3 ‖W_l(I − P_M)‖/‖W_l‖ up to {np.nanmax(nc3) if np.isfinite(nc3).any() else float('nan'):.2g}, "
        f"classifier self-duality distance {duality:.2g}"
    )
    return facts, text


def _verdict(layers, loss: str, network=None, nc: CollapseMetrics | None = None) -> dict:
    """The verdict of a report: ``status`` (one of `VERDICT_STATUSES`, the first that applies),
    ``passed`` (status ``"holds"``: the exit status 0 of ``ufm real`` / ``ufm analyze``) and a
    one-line ``summary`` that says which. It judges within-class collapse (NC1, what the
    predictions need) only; NC2 / NC3 of ``nc`` are reported beside it (`_facts`)."""
    collapsed = [c.collapsed for c in layers]
    holds = [c.holds for c in layers]
    which = "uncentred" if loss == "mse" else "centred"
    network_converged = network is None or bool(network.converged)
    facts, text = _facts(nc, loss, len(layers))
    if not all(collapsed):
        status = "not collapsed"
        bad = ", ".join(f"H~{c.layer} (NC1 {c.nc1:.2g})" for c in layers if not c.collapsed)
        summary = (
            f"NOT COLLAPSED within class at {bad} > {NC1_THRESHOLD:g}: the class-mean predictions, which "
            "need within-class collapse, are not meaningful for those layers"
        )
    elif not all(c.converged for c in layers) or not network_converged:
        status = "not converged"
        bad = [f"W_{c.layer}" for c in layers if not c.converged] + ([] if network_converged else ["the whole network"])
        summary = (
            f"collapsed within class, but the Krylov measurement of {', '.join(bad)} did NOT CONVERGE: "
            "its eigenvalues are not trustworthy (raise dense_max to measure a block densely)"
        )
    elif not all(holds):
        status = "predictions miss"
        bad = ", ".join(f"W_{c.layer}" for c in layers if not c.holds)
        summary = (
            f"collapsed within class (NC1 ≤ {NC1_THRESHOLD:g} at every head layer), but the predictions MISS at {bad} "
            f"(max rel. error > {REL_ERROR_THRESHOLD:g} or not the predicted outlier count)"
        )
    else:
        status = "holds"
        summary = (
            f"collapsed within class (NC1 ≤ {NC1_THRESHOLD:g} at every head layer, what the predictions need) "
            "and the predictions hold "
            f"(max rel. error ≤ {REL_ERROR_THRESHOLD:g}, the predicted outlier count at every layer)"
        )
    return {
        "status": status,
        "passed": status == "holds",
        "collapsed": collapsed,
        "holds": holds,
        "nc1": [c.nc1 for c in layers],
        "nc1_kind": which,
        "nc1_threshold": NC1_THRESHOLD,
        "rel_error_threshold": REL_ERROR_THRESHOLD,
        "converged": [c.converged for c in layers],
        "network_converged": network_converged,
        "all_collapsed": all(collapsed),
        "all_hold": all(holds),
        "judged": "NC1 (within-class collapse, what the predictions need); NC2 / NC3 are reported, not judged",
        **facts,
        "summary": summary + text,
    }


def _layers(head: _Head, nc: CollapseMetrics, dense_max: int):
    """Every head layer's `LayerComparison` and the predicted outlier spaces ``{l: (leaf, basis)}``."""
    nc1 = _layer_nc1(head, nc)
    layers, spaces = [], {}
    for l in range(1, head.L + 1):
        pred = _class_mean_prediction(head, l)
        layers.append(_compare(head, l, float(nc1[l - 1]), dense_max=dense_max, predicted=pred))
        spaces[l] = (head.w_leaves[l - 1], np.asarray(pred.eigenvectors)[:, : layers[-1].predicted_outliers])
    return tuple(layers), spaces


def analyze(
    spec: NetworkSpec,
    params: NetworkParams,
    train: Dataset,
    test: Dataset | None = None,
    *,
    whole_network: bool = True,
    network_k: int | None = None,
    density: bool = True,
    dense_max: int = DEFAULT_DENSE_MAX,
    seed: int = 0,
    config: dict | None = None,
) -> RealNetworkReport:
    """Collapse per head layer, predicted vs measured layer-wise Hessians, whole-network spectrum.

    ``train`` must be balanced (the collapsed formulas weight classes equally); all of it
    is used, in float64 (inside a local ``jax.enable_x64`` context).
    """
    if train.per_class is None:
        raise ValueError(
            f"train must be balanced for the collapsed-point theory, class counts {train.class_counts.tolist()}"
        )
    with jax.enable_x64(True):
        t = time.perf_counter()
        params = _as_f64(params)
        H1 = backbone_features(spec, params, jnp.asarray(train.X, jnp.float64))
        head = _builtin_head(spec, params, H1, train.labels)
        nc = _nc(head)
        test_acc = None
        if test is not None:
            Zt = apply_head(
                params.head,
                params.head_biases,
                spec.activation,
                backbone_features(spec, params, jnp.asarray(test.X, jnp.float64)),
            )[-1]
            test_acc = float(np.mean(np.asarray(Zt).argmax(axis=0) == test.labels))
        seconds = {"collapse": time.perf_counter() - t}
        t = time.perf_counter()
        layers, spaces = _layers(head, nc, dense_max)
        seconds["layers"] = time.perf_counter() - t
        network = None
        if whole_network:
            t = time.perf_counter()
            network = network_spectrum(
                spec,
                params,
                train,
                k=network_k,
                density=density,
                seed=seed,
                layer_spaces={l: b for l, (_, b) in spaces.items()},
            )
            seconds["network"] = time.perf_counter() - t
    return RealNetworkReport(
        config={"spec": spec.to_dict(), "train": train.to_dict(), **(config or {})},
        train_accuracy=float(np.mean(head.features[-1].argmax(axis=0) == head.labels)),
        test_accuracy=test_acc,
        nc=nc,
        layers=layers,
        network=network,
        verdict=_verdict(layers, spec.loss, network, nc),
        seconds=seconds,
    )


def _report(
    head: _Head, *, dense_max: int, config: dict, network=None, network_k=None, density=False, seed=0
) -> RealNetworkReport:
    """The report of a head on its features (`analyze_features` / `analyze_model`); ``network`` is
    ``(fn, params, groups)`` of the whole model when its spectrum is wanted."""
    t = time.perf_counter()
    nc = _nc(head)
    seconds = {"collapse": time.perf_counter() - t}
    t = time.perf_counter()
    layers, spaces = _layers(head, nc, dense_max)
    seconds["layers"] = time.perf_counter() - t
    net = None
    if network is not None:
        t = time.perf_counter()
        fn, params, groups, offset = network
        k = _expected(head.loss, head.K) + 20 if network_k is None else network_k
        net = _network_spectrum(
            fn,
            params,
            groups,
            head.L,
            _expected(head.loss, head.K),
            k=k,
            layer_spaces={l: (offset + i, b) for l, (i, b) in spaces.items()},
            density=density,
            density_matvecs=40,
            density_samples=4,
            seed=seed,
        )
        seconds["network"] = time.perf_counter() - t
    N, counts = head.labels.size, np.bincount(head.labels, minlength=head.K)
    cfg = {
        "num_samples": int(N),
        "num_classes": head.K,
        "per_class": int(counts[0]),
        "depth": head.L,
        "widths": [int(W.shape[1]) for W in head.weights],
        "activation": head.activation,
        "loss": head.loss,
        "head_bias": bool(head.biases),
        "expected_outliers": _expected(head.loss, head.K),
        "hessian": "data Hessian of the mean loss over the samples (MSE ½‖z − e_y‖², no 1/K; or mean "
        "cross-entropy), no ridge",
        **config,
    }
    return RealNetworkReport(
        config=cfg,
        train_accuracy=float(np.mean(head.features[-1].argmax(axis=0) == head.labels)),
        test_accuracy=None,
        nc=nc,
        layers=layers,
        network=net,
        verdict=_verdict(layers, head.loss, net, nc),
        seconds=seconds,
    )


def _check_head(weights, biases, activation, loss, H1, labels):
    if activation not in ("linear", "relu"):
        raise ValueError(f"activation must be 'linear' or 'relu', got {activation!r}")
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    if not weights:
        raise ValueError("the head needs at least one weight W1")
    d = H1.shape[0]
    for l, W in enumerate(weights, start=1):
        if np.ndim(W) != 2 or np.shape(W)[1] != d:
            raise ValueError(f"W{l} must be (d_out, {d}) (d_out × d_in, as nn.Linear.weight), got shape {np.shape(W)}")
        d = np.shape(W)[0]
        if not np.all(np.isfinite(W)):
            raise ValueError(f"W{l} has non-finite entries")
    if biases and (
        len(biases) != len(weights)
        or any(np.shape(b) != (np.shape(W)[0],) for b, W in zip(biases, weights, strict=True))
    ):
        raise ValueError(f"biases must be one (d_out,) vector per weight, got shapes {[np.shape(b) for b in biases]}")
    K = np.shape(weights[-1])[0]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size != H1.shape[1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {H1.shape[1]} integers, got dtype {labels.dtype} shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= K or np.unique(labels).size != K:
        raise ValueError(
            f"labels must cover 0..{K - 1} (the last weight has K={K} rows), got values in "
            f"[{labels.min()}, {labels.max()}] with {np.unique(labels).size} distinct"
        )
    if not np.all(np.isfinite(H1)):
        raise ValueError("H1 has non-finite entries")


def _balanced(H1, labels):
    """The first min-count samples of each class (file order), class-major; and whether any were dropped."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    n = int(counts.min())
    keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(counts.size)])
    return H1[:, keep], labels[keep], keep.size < labels.size


def analyze_features(
    H1,
    labels,
    weights,
    biases=(),
    *,
    activation: str = "linear",
    loss: str = "mse",
    dense_max: int = DEFAULT_DENSE_MAX,
    config: dict | None = None,
) -> RealNetworkReport:
    """The analysis of `analyze` for a head given as arrays, from any framework (the ``ufm analyze`` core).

    Args:
      H1: (d × N) the head's input features, samples as columns.
      labels: (N,) integer classes 0..K−1, every class present. Unbalanced classes are cut to the
        smallest class (its first samples in the given order) — the collapsed formulas weight
        classes equally; ``config["balanced_subsample"]`` says so.
      weights: ``W_1..W_L``, each d_out × d_in (``torch.nn.Linear.weight``), W_L with K rows.
      biases: ``b_1..b_L`` or ``()``.
      activation: σ between the head layers, ``"linear"`` or ``"relu"``; loss: ``"mse"`` or ``"ce"``.
      dense_max: blocks up to this size are measured densely (and split), larger ones by Lanczos.

    Returns:
      `RealNetworkReport` (``network`` is ``None``, ``test_accuracy`` is ``None``;
      ``train_accuracy`` is the accuracy on these samples).
    """
    H1 = np.asarray(H1, np.float64)
    if H1.ndim != 2:
        raise ValueError(f"H1 must be (d, N), got shape {H1.shape}")
    _check_head(weights, biases, activation, loss, H1, labels)
    H1, labels, cut = _balanced(H1, labels)
    order = np.argsort(labels, kind="stable")
    with jax.enable_x64(True):
        head = _Head(weights, biases, activation, loss, H1[:, order], labels[order])
        return _report(head, dense_max=dense_max, config={"balanced_subsample": bool(cut), **(config or {})})


def _array_leaves(tree):
    """``(arrays, rebuild)``: the floating-point array leaves of ``tree`` and the map back (other
    leaves, e.g. an Equinox module's activation function, stay as they are)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_arr = [hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]

    def rebuild(arrays):
        it = iter(arrays)
        return jax.tree_util.tree_unflatten(
            treedef, [next(it) if a else x for x, a in zip(leaves, is_arr, strict=True)]
        )

    return tuple(jnp.asarray(x, jnp.float64) for x, a in zip(leaves, is_arr, strict=True) if a), rebuild


def analyze_model(
    features: Callable,
    backbone_params,
    head: Callable,
    head_params,
    X,
    labels,
    *,
    activation: str = "linear",
    loss: str = "mse",
    whole_network: bool = False,
    network_k: int | None = None,
    dense_max: int = DEFAULT_DENSE_MAX,
    rtol: float = 1e-8,
    seed: int = 0,
) -> RealNetworkReport:
    """`analyze` for any JAX model: a backbone ``features(backbone_params, X) -> (N × d)`` and a head
    ``head(head_params, H) -> (N × K)`` logits (rows are samples, as in Flax / Equinox / PyTorch).

    The head's linear layers are its 2-d floating-point leaves in tree order, ``W_l`` as
    d_out × d_in (Equinox ``Linear.weight``; transpose a Flax kernel), its 1-d leaves the
    biases; σ between them is ``activation``. The measured blocks differentiate the *given*
    ``head`` function; the predictions use the stack of layers, which must reproduce
    ``head``'s logits to ``rtol`` (else a ValueError says the head is not such a stack).
    ``whole_network`` adds the top of the Hessian over backbone and head together.
    """
    with jax.enable_x64(True):
        b_arrays, b_rebuild = _array_leaves(backbone_params)
        h_arrays, h_rebuild = _array_leaves(head_params)
        X = jnp.asarray(X, jnp.float64)
        H = jnp.asarray(features(b_rebuild(b_arrays), X), jnp.float64)  # N × d
        y = np.asarray(labels)
        if H.ndim != 2 or H.shape[0] != y.size:
            raise ValueError(f"features must return (N={y.size}, d) features, got shape {H.shape}")
        w_leaves = tuple(i for i, a in enumerate(h_arrays) if a.ndim == 2)
        weights = [h_arrays[i] for i in w_leaves]
        biases = [a for a in h_arrays if a.ndim == 1]
        _check_head(weights, biases, activation, loss, np.asarray(H.T), y)
        Z = np.asarray(head(h_rebuild(h_arrays), H))
        Zr = np.asarray(apply_head(weights, biases, activation, H.T)[-1]).T
        if Z.shape != Zr.shape or np.abs(Z - Zr).max() > rtol * max(np.abs(Z).max(), 1e-300):
            raise ValueError(
                "the head is not the stack of linear layers its 2-d leaves describe "
                f"(weights {[w.shape for w in weights]}, activation {activation!r}): logits differ by "
                f"{np.abs(Z - Zr).max() if Z.shape == Zr.shape else Z.shape}"
            )
        _, y_sorted, _ = _class_major(np.asarray(H.T), y)
        order = np.argsort(y, kind="stable")
        Hs, ys = H[order], jnp.asarray(y_sorted)
        loss_fn = lambda a: output_loss(loss, head(h_rebuild(a), Hs).T, ys)  # noqa: E731
        hd = _Head(
            weights, biases, activation, loss, Hs.T, y_sorted, loss_fn=loss_fn, arrays=h_arrays, w_leaves=w_leaves
        )
        network = None
        if whole_network:
            Xs, nb = X[order], len(b_arrays)

            def fn(p):
                return output_loss(loss, head(h_rebuild(p[1]), features(b_rebuild(p[0]), Xs)).T, ys)

            groups, layer = [0] * nb, 0
            for a in h_arrays:  # W_l then (optionally) b_l, in tree order
                layer += a.ndim == 2
                groups.append(layer)
            network = (fn, (b_arrays, h_arrays), groups, nb)
        return _report(
            hd, dense_max=dense_max, config={"source": "analyze_model"}, network=network, network_k=network_k, seed=seed
        )
