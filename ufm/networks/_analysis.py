"""Real networks seen as deep UFMs: collapse, layer-wise and whole-network Hessian spectra.

The head of a trained network is the deep UFM of ``MATH.md`` §1 with H_1 := backbone
features (``_models``). Everything is measured on the balanced, class-major training set
at the trained parameters, in float64. Conventions:

* "Hessian" means the *data* Hessian (mean loss over the N training samples, no ridge);
  the ridge only shifts a block by λ_W I (``MATH.md`` §1).
* Layer l is the block of the head weight W_l (d_{l+1} × d_l), flattened row-major, so
  ``a ⊗ b`` is the matrix ``a bᵀ`` (``MATH.md`` §1). Its Hessian involves the head only,
  so it is measured on the head with H_1 held fixed (the same block as in the whole
  network, at a fraction of the cost).
* Prediction (``MATH.md`` §4, §5): at a collapsed point the data Hessian of a linear head
  layer is ``A^{(l+1)ᵀ} A^{(l+1)} ⊗ M_l M_lᵀ / K`` (MSE) or
  ``(1/K) Σ_c A^{(l+1)ᵀ} ρ_c A^{(l+1)} ⊗ μ_c μ_cᵀ`` with ``ρ_c = diag(p_c) − p_c p_cᵀ`` (CE),
  with A^{(l+1)} = W_L ⋯ W_{l+1} and M_l the class means of H̃_l, both *measured*. It is
  evaluated by ``ufm.theory.collapsed_layer_hessian``. For a ReLU head the tail becomes
  class dependent, ``A_c = W_L D_c ⋯ W_{l+1} D_c`` with D_c the ReLU masks at the class
  mean (``collapsed_layer_hessian`` takes one tail per class).
  K² outliers are expected for MSE and (K−1)² for CE.
* Outliers are counted with ``ufm.curvature.subspace.count_outliers`` (its gap rule);
  the subspace overlap is ``Tr(P_pred P_meas)/k`` over the top k = expected count,
  ``f(v) = (vᵀHv)²/(‖v‖²‖Hv‖²)`` of each predicted eigenvector under the measured block,
  and the gradient fraction is ``‖P g‖²/‖g‖²`` of the layer's data gradient in the
  measured outlier space (Gur-Ari et al. 2018, ``MATH.md`` §7).
* Whole network: the top of the data Hessian over every parameter by Lanczos
  (``ufm.curvature.top_eigenpairs``) and its SLQ density; "inheritance" is how each
  outlier eigenvector's squared mass splits over the backbone and the head layers (head
  biases count with their layer), and how much of its W_l part lies in layer l's own
  outlier space.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..collapse import CollapseMetrics, nc_metrics
from ..model import output_loss
from ..spectrum import Spectrum
from ._data import Dataset
from ._models import NetworkParams, NetworkSpec, backbone_features, head_features, head_leaf_indices, network_loss

__all__ = [
    "LayerComparison",
    "NetworkSpectrum",
    "RealNetworkReport",
    "expected_outliers",
    "predicted_layer_spectrum",
    "measured_layer_spectrum",
    "compare_layer",
    "network_spectrum",
    "analyze",
]


def _curvature():
    from .. import curvature  # lazy: built in parallel, heavy

    return curvature


def _theory():
    from .. import theory

    return theory


def expected_outliers(spec: NetworkSpec) -> int:
    """K² for MSE, (K − 1)² for CE (``MATH.md`` §4, §5)."""
    K = spec.num_classes
    return K * K if spec.loss == "mse" else (K - 1) ** 2


def _as_f64(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _head_loss_fn(spec: NetworkSpec, H1, labels):
    """``(head, head_biases) -> data loss`` with the backbone features H1 held fixed."""
    labels = jnp.asarray(labels)

    def fn(head_params):
        head, biases = head_params
        params = NetworkParams((), head, biases)
        return output_loss(spec.loss, head_features(spec, params, H1)[-1], labels)

    return fn


def _class_means(H, labels, K):
    onehot = np.eye(K)[np.asarray(labels)]
    return np.asarray(H, np.float64) @ onehot / onehot.sum(axis=0)


# ---- layer-wise ----------------------------------------------------------------------
def predicted_layer_spectrum(spec: NetworkSpec, params: NetworkParams, H1, labels, layer: int) -> Spectrum:
    """The collapsed-point prediction for the data Hessian of W_``layer`` (1..L) from measured
    class means and weights, via ``ufm.theory.collapsed_layer_hessian`` (module docstring).

    Returns the nonzero eigenpairs with flat row-major eigenvectors (bulk value 0).
    """
    L, K = spec.depth, spec.num_classes
    if not (isinstance(layer, int) and 1 <= layer <= L):
        raise ValueError(f"layer must be an int in 1..{L}, got {layer!r}")
    head = [np.asarray(W, np.float64) for W in params.head]
    feats = head_features(spec, params, jnp.asarray(H1))
    means = [_class_means(f, labels, K) for f in feats]  # means of H̃_1..H̃_L and of Z
    probs = None
    if spec.loss == "ce":
        probs = np.asarray(jax.nn.softmax(means[-1], axis=0))  # collapsed logits; column c = p_c
    if spec.activation == "linear":
        A = np.eye(K)
        for W in head[layer:][::-1]:
            A = A @ W
    else:
        # A_c = W_L D_L W_{L-1} ⋯ W_{l+1} D_{l+1}, D_j the ReLU mask of H_j = W_{j-1} H̃_{j-1}
        # at the class mean (exact when the class is collapsed).
        A = np.stack([np.eye(K)] * K)
        for j in range(L, layer, -1):
            active = (head[j - 2] @ means[j - 2] > 0).T  # (K classes × d_j)
            A = (A @ head[j - 1]) * active[:, None, :]
    return _theory().collapsed_layer_hessian(A, means[layer - 1], loss=spec.loss, probs=probs, vectors=True)


def measured_layer_spectrum(
    spec: NetworkSpec, params: NetworkParams, H1, labels, layer: int, *, k: int | None = None, dense_max: int = 4096
) -> tuple[Spectrum, np.ndarray | None, np.ndarray]:
    """Data Hessian of W_``layer``: dense ``eigh`` when it has ≤ ``dense_max`` parameters, else
    the top ``k`` by Lanczos. Returns ``(spectrum, dense matrix or None, data gradient (flat))``."""
    fn = _head_loss_fn(spec, jnp.asarray(H1), labels)
    head_params = (tuple(params.head), tuple(params.head_biases))
    leaf = [layer - 1]
    grad = np.asarray(jax.grad(fn)(head_params)[0][layer - 1]).reshape(-1)
    P = grad.size
    curv = _curvature()
    if P <= dense_max:
        Hm = np.asarray(curv.hessian(fn, head_params, leaves=leaf), np.float64)
        Hm = 0.5 * (Hm + Hm.T)
        vals, vecs = np.linalg.eigh(Hm)
        res = np.linalg.norm(Hm @ vecs - vecs * vals, axis=0)
        return Spectrum(vals[::-1], vecs[:, ::-1], residuals=res[::-1], source="dense", info={"layer": layer}), Hm, grad
    k = expected_outliers(spec) + 10 if k is None else k
    spec_top = curv.top_eigenpairs(fn, head_params, k, leaves=leaf)
    return dataclasses.replace(spec_top, info={**spec_top.info, "layer": layer}), None, grad


@dataclasses.dataclass(frozen=True)
class LayerComparison:
    """Predicted vs measured data Hessian of one head layer W_l.

    Fields:
      layer: l in 1..L; num_params: size of the block.
      expected: K² (MSE) or (K−1)² (CE); num_outliers: counted on the measured spectrum.
      gap: λ_k / λ_{k+1} of the measured block at k = expected (separation from the bulk).
      predicted_outliers: m = the outliers of the predicted spectrum by the same gap rule, at
        most ``expected`` (fewer when the measured means / tail are numerically rank
        deficient); the errors, overlap and f(v) below are over the top m.
      predicted, measured: the top ``expected + 10`` eigenvalues, descending.
      max_rel_error, median_rel_error: ``|meas − pred| / pred`` over the top m.
      overlap: ``Tr(P_pred P_meas) / m`` of the two top-m eigenspaces.
      alignment_min, alignment_mean: f(v) of the top-m predicted eigenvectors under the measured block.
      gradient_fraction: ``‖P g‖² / ‖g‖²`` of the data gradient in the measured top-m space.
      source: how the block was measured (``"dense"`` / ``"lanczos"``).
    """

    layer: int
    num_params: int
    expected: int
    num_outliers: int
    gap: float
    predicted_outliers: int
    predicted: np.ndarray
    measured: np.ndarray
    max_rel_error: float
    median_rel_error: float
    overlap: float
    alignment_min: float
    alignment_mean: float
    gradient_fraction: float
    source: str

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}


def _count(vals) -> int:
    return int(_curvature().subspace.count_outliers(np.asarray(vals)))


def compare_layer(
    spec: NetworkSpec, params: NetworkParams, H1, labels, layer: int, *, dense_max: int = 4096, predicted=None
) -> LayerComparison:
    """`LayerComparison` for head layer ``layer`` (module docstring for every number);
    ``predicted`` reuses a `predicted_layer_spectrum` already computed."""
    sub = _curvature().subspace
    k = expected_outliers(spec)
    pred = predicted_layer_spectrum(spec, params, H1, labels, layer) if predicted is None else predicted
    meas, Hm, grad = measured_layer_spectrum(spec, params, H1, labels, layer, k=k + 10, dense_max=dense_max)
    # The prediction may have fewer than k outliers when the measured class means or tail
    # are (numerically) rank deficient, e.g. a low-rank CE solution: count them with the
    # same gap rule (the bulk is 0) and compare over those m.
    if not pred.eigenvalues.size or not pred.eigenvalues[0] > 0:
        raise ValueError(f"the prediction for layer {layer} is zero: the class means or the tail vanish")
    m = min(k, _count(np.concatenate([pred.eigenvalues, [0.0]])) or int(np.sum(pred.eigenvalues > 0)))
    pv, mv = pred.eigenvalues[:m], meas.eigenvalues[:m]
    rel = np.abs(mv - pv) / np.abs(pv)
    Up, Um = np.asarray(pred.eigenvectors)[:, :m], np.asarray(meas.eigenvectors)[:, :m]
    if Hm is not None:
        f = np.array([float(sub.alignment(Hm, Up[:, j])) for j in range(m)])
    else:
        fn = _head_loss_fn(spec, jnp.asarray(H1), labels)
        head_params = (tuple(params.head), tuple(params.head_biases))
        shape = params.head[layer - 1].shape

        def matvec(v):
            def block_loss(W):
                head = list(head_params[0])
                head[layer - 1] = W
                return fn((tuple(head), head_params[1]))

            _, hv = jax.jvp(jax.grad(block_loss), (head_params[0][layer - 1],), (jnp.asarray(v).reshape(shape),))
            return np.asarray(hv).reshape(-1)

        f = np.array([float(sub.alignment(matvec, Up[:, j])) for j in range(m)])
    all_meas = meas.eigenvalues
    return LayerComparison(
        layer=layer,
        num_params=int(grad.size),
        expected=k,
        num_outliers=_count(all_meas),
        gap=float(all_meas[k - 1] / all_meas[k]) if all_meas.size > k and all_meas[k] > 0 else float("inf"),
        predicted_outliers=m,
        predicted=np.concatenate([pred.eigenvalues, np.zeros(max(0, k + 10 - pred.eigenvalues.size))])[: k + 10],
        measured=meas.eigenvalues[: k + 10],
        max_rel_error=float(rel.max()),
        median_rel_error=float(np.median(rel)),
        overlap=float(sub.projector_overlap(Up, Um)),
        alignment_min=float(f.min()),
        alignment_mean=float(f.mean()),
        gradient_fraction=float(sub.gradient_fraction(grad, Um)),
        source=meas.source,
    )


# ---- whole network ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NetworkSpectrum:
    """Top of the whole-network data Hessian.

    Fields:
      eigenvalues: the top k (Lanczos), descending; residuals: ‖Hv − λv‖ of each.
      num_outliers: by the gap rule; num_params: P.
      inheritance: (k × (1 + L)) squared mass of each top eigenvector on
        [backbone, W_1, ..., W_L] (rows sum to 1); the first ``num_outliers`` rows are the outliers.
      in_layer_space: (k × L) fraction of each eigenvector's W_l part lying in layer l's
        predicted outlier space (NaN where the part is ~0 or no space was given).
      density_grid, density: SLQ estimate of the spectral density (empty if not asked).
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_outliers: int
    num_params: int
    inheritance: np.ndarray
    in_layer_space: np.ndarray
    density_grid: np.ndarray
    density: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}


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
    curv = _curvature()
    X, y = jnp.asarray(data.X, jnp.float64), jnp.asarray(data.labels)
    fn = lambda p: network_loss(spec, p, X, y, regularized=False)  # noqa: E731
    k = expected_outliers(spec) + 20 if k is None else k
    top = curv.top_eigenpairs(fn, params, k, seed=seed)
    vals = np.asarray(top.eigenvalues)
    n_out = _count(vals)
    leaves = jax.tree_util.tree_leaves(params)
    sizes = np.array([x.size for x in leaves])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    head_idx = head_leaf_indices(spec)
    group = np.zeros(len(leaves), int)  # 0 = backbone, l = head layer l (W_l and b_l)
    for l, i in enumerate(head_idx, start=1):
        group[i] = l
    for l in range(1, len(leaves) - head_idx[-1]):  # head biases follow W_1..W_L
        group[head_idx[-1] + l] = l
    V = np.asarray(top.eigenvectors)
    mass = np.zeros((V.shape[1], spec.depth + 1))
    in_space = np.full((V.shape[1], spec.depth), np.nan)
    for i, g in enumerate(group):
        mass[:, g] += np.sum(V[bounds[i] : bounds[i + 1]] ** 2, axis=0)
    for l, i in enumerate(head_idx, start=1):
        if layer_spaces and l in layer_spaces:
            part = V[bounds[i] : bounds[i + 1]]
            norm2 = np.sum(part**2, axis=0)
            proj = np.sum((np.asarray(layer_spaces[l]).T @ part) ** 2, axis=0)
            in_space[:, l - 1] = np.where(norm2 > 1e-12, proj / np.maximum(norm2, 1e-300), np.nan)
    grid = dens = np.zeros(0)
    if density:
        sd = curv.spectral_density(fn, params, num_matvecs=density_matvecs, num_samples=density_samples, seed=seed)
        grid, dens = np.asarray(sd.grid), np.asarray(sd.density)
    return NetworkSpectrum(
        eigenvalues=vals,
        residuals=np.asarray(top.residuals) if top.residuals is not None else np.full(vals.size, np.nan),
        num_outliers=n_out,
        num_params=int(sizes.sum()),
        inheritance=mass / mass.sum(axis=1, keepdims=True),
        in_layer_space=in_space,
        density_grid=grid,
        density=dens,
    )


# ---- the report ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RealNetworkReport:
    """Everything measured on one trained network (``to_dict`` for JSON).

    Fields:
      config: dataset, spec and training settings; train_accuracy / test_accuracy.
      nc: NC1–NC4 at H̃_1..H̃_L and the output Z (``ufm.collapse.nc_metrics``).
      layers: one `LayerComparison` per head layer.
      network: the whole-network `NetworkSpectrum` (or ``None`` if skipped).
      seconds: wall-clock time of each stage.
    """

    config: dict
    train_accuracy: float
    test_accuracy: float | None
    nc: CollapseMetrics
    layers: tuple[LayerComparison, ...]
    network: NetworkSpectrum | None
    seconds: dict

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "nc": self.nc.to_dict(),
            "layers": [c.to_dict() for c in self.layers],
            "network": None if self.network is None else self.network.to_dict(),
            "seconds": self.seconds,
        }


def analyze(
    spec: NetworkSpec,
    params: NetworkParams,
    train: Dataset,
    test: Dataset | None = None,
    *,
    whole_network: bool = True,
    network_k: int | None = None,
    density: bool = True,
    dense_max: int = 4096,
    seed: int = 0,
    config: dict | None = None,
) -> RealNetworkReport:
    """Collapse per head layer, predicted vs measured layer-wise Hessians, whole-network spectrum.

    ``train`` must be balanced (the collapsed formulas weight classes equally); all of it
    is used, in float64 (inside a local ``jax.enable_x64`` context).
    """
    with jax.enable_x64(True):
        return _analyze(spec, params, train, test, whole_network=whole_network, network_k=network_k, density=density,
                        dense_max=dense_max, seed=seed, config=config)


def _analyze(spec, params, train, test, *, whole_network, network_k, density, dense_max, seed, config) -> RealNetworkReport:
    if train.per_class is None:
        raise ValueError(f"train must be balanced for the collapsed-point theory, class counts {train.class_counts.tolist()}")
    seconds = {}
    t = time.perf_counter()
    params = _as_f64(params)
    X = jnp.asarray(train.X, jnp.float64)
    H1 = backbone_features(spec, params, X)
    feats = head_features(spec, params, H1)
    preds = np.asarray(feats[-1]).argmax(axis=0)
    nc = nc_metrics(
        [np.asarray(f) for f in feats],
        train.labels,
        weights=[*params.head, None],
        predictions=preds,
        geometry="etf" if spec.loss == "ce" else "of",
    )
    train_acc = float(np.mean(preds == train.labels))
    test_acc = None
    if test is not None:
        Zt = head_features(spec, params, backbone_features(spec, params, jnp.asarray(test.X, jnp.float64)))[-1]
        test_acc = float(np.mean(np.asarray(Zt).argmax(axis=0) == test.labels))
    seconds["collapse"] = time.perf_counter() - t

    t = time.perf_counter()
    layers, layer_spaces = [], {}
    for l in range(1, spec.depth + 1):
        pred = predicted_layer_spectrum(spec, params, H1, train.labels, l)
        layers.append(compare_layer(spec, params, H1, train.labels, l, dense_max=dense_max, predicted=pred))
        layer_spaces[l] = np.asarray(pred.eigenvectors)[:, : layers[-1].predicted_outliers]
    seconds["layers"] = time.perf_counter() - t

    network = None
    if whole_network:
        t = time.perf_counter()
        network = network_spectrum(spec, params, train, k=network_k, layer_spaces=layer_spaces, density=density,
                                   seed=seed)
        seconds["network"] = time.perf_counter() - t
    return RealNetworkReport(
        config={"spec": spec.to_dict(), "train": train.to_dict(), **(config or {})},
        train_accuracy=train_acc,
        test_accuracy=test_acc,
        nc=nc,
        layers=tuple(layers),
        network=network,
        seconds=seconds,
    )
