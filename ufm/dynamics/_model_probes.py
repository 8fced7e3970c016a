"""Instruments for any model: `record` probes from a model's own functions, and analyses of a trajectory.

The seeds' measurements, for a model given only by its functions (``docs/dynamics.md`` §D1; a
whole ``equinox.Module`` is accepted as ``params``, its non-array leaves held static):

* `nc_probe`: NC1–NC4 (`ufm.collapse.nc_metrics`, ``docs/theory.md`` §2) of the features
  ``features_fn(params, inputs)`` — an (N, d) array or a sequence of them, samples as *rows*
  as a vmapped model returns them (transposed here to the collapse module's columns);
* `kernel_probe`: the top eigenvalues of the empirical tangent kernel ``K = J Jᵀ`` of
  ``apply_fn(params, inputs)`` (``docs/catapults.md`` §1; `ufm.dynamics.kernel_spectrum`),
  with ``lambda_max``;
* the existing `ufm.dynamics.spectral_probe` (Hessian / G-matrix top-k of a block of
  ``loss_fn(params, batch)``, gap-rule counts, alignments, overlaps);

and, after recording:

* `trajectory_catapults`: catapult detection (``docs/catapults.md`` §4, `detect_catapults`) on
  the per-step loss curve with λ_max(K) from a `kernel_probe`;
* `trajectory_diffusion`: the diffusion-map analysis (``docs/diffusion_maps.md`` §5,
  `analyze_trajectory`) of the iterates kept with ``record(..., iterates_every=n)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np

from .. import collapse, curvature
from ._trajectory import Trajectory, _Rejoin, _split_module

__all__ = ["nc_probe", "kernel_probe", "trajectory_catapults", "trajectory_diffusion"]


def _arrays_and(fn, params):
    """``(fn', arrays)``: ``fn`` as a function of the array part of ``params`` (an equinox Module) or as is."""
    arrays, static = _split_module(params)
    return (fn, arrays) if static is None else (_Rejoin(fn, static), arrays)


@functools.lru_cache(maxsize=64)
def _jitted(fn):
    return jax.jit(fn)


def _as_columns(features) -> list[np.ndarray]:
    seq = list(features) if isinstance(features, (list, tuple)) else [features]
    out = []
    for i, F in enumerate(seq):
        F = np.asarray(F, dtype=np.float64)
        if F.ndim != 2:
            raise ValueError(f"features_fn must return (N, d) arrays (samples as rows); item {i} has shape {F.shape}")
        out.append(F.T)
    return out


def nc_probe(
    features_fn: Callable,
    inputs,
    labels,
    *,
    weights_fn: Callable | None = None,
    predict_fn: Callable | None = None,
    geometry: str = "of",
    rcond: float = 1e-10,
) -> Callable:
    """A `record` probe: NC1–NC4 per layer of ``features_fn(params, inputs)`` (module docstring).

    Args:
      features_fn: ``(params, inputs) -> (N, d)`` array or a sequence of them (one per layer).
      inputs: the samples the features are computed on (fixed across checkpoints).
      labels: (N,) integer classes, every class present.
      weights_fn: optional ``params -> [W or None per layer]``, the matrix reading each layer
        (``d_out × d`` in the columns convention), for NC3 and the self-duality.
      predict_fn: optional ``(params, inputs) -> (N, K)`` outputs; their argmax feeds NC4.
      geometry, rcond: as in `ufm.collapse.nc_metrics` (``"of"`` for MSE, ``"etf"`` for CE).

    Returns ``probe(params, ctx) -> {nc1, nc1_uncentred, of_distance, ..., nc4}`` (arrays, one
    entry per layer).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-d integer array, got dtype {labels.dtype} and shape {labels.shape}")
    if geometry not in ("of", "etf"):
        raise ValueError(f"geometry must be 'of' or 'etf', got {geometry!r}")
    for name, fn in (("features_fn", features_fn), ("weights_fn", weights_fn), ("predict_fn", predict_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")

    def probe(params, ctx) -> dict:
        feats_fn, arrays = _arrays_and(features_fn, params)
        feats = _as_columns(_jitted(feats_fn)(arrays, inputs))
        if feats[0].shape[1] != labels.size:
            raise ValueError(f"features_fn gave {feats[0].shape[1]} samples for {labels.size} labels")
        weights = None if weights_fn is None else list(weights_fn(params))
        preds = None
        if predict_fn is not None:
            pred_fn, arrays = _arrays_and(predict_fn, params)
            preds = np.asarray(_jitted(pred_fn)(arrays, inputs)).argmax(axis=-1)
        m = collapse.nc_metrics(feats, labels, weights=weights, predictions=preds, geometry=geometry, rcond=rcond)
        return {f.name: np.asarray(getattr(m, f.name), dtype=np.float64) for f in _numeric_fields(m)}

    return probe


def _numeric_fields(m):
    return [f for f in dataclasses.fields(m) if f.name not in ("converged", "messages")]


def _kernel(fn, params, inputs):
    from ._tangent_kernel import tangent_kernel

    return tangent_kernel(fn, params, inputs)


_dense_kernel = jax.jit(_kernel, static_argnums=0)


def kernel_probe(apply_fn: Callable, inputs, k: int = 5, *, method: str = "auto", max_dense: int = 2048) -> Callable:
    """A `record` probe: the top ``k`` eigenvalues of the tangent kernel ``K = J Jᵀ`` of
    ``apply_fn(params, inputs)`` (``J`` the Jacobian of the n·c outputs; ``docs/catapults.md`` §1).

    ``method``: ``"dense"`` (form K, jitted, ``eigh``), ``"krylov"`` (matrix-free, `kernel_spectrum`)
    or ``"auto"`` (dense up to ``max_dense`` outputs). Returns ``probe(params, ctx) ->
    {eigenvalues (k,), lambda_max}``.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if method not in ("auto", "dense", "krylov"):
        raise ValueError(f"method must be 'auto', 'dense' or 'krylov', got {method!r}")

    def probe(params, ctx) -> dict:
        from ._tangent_kernel import kernel_spectrum

        fn, arrays = _arrays_and(apply_fn, params)
        dim = int(np.prod(jax.eval_shape(fn, arrays, inputs).shape))
        if k > dim:
            raise ValueError(f"k must be <= the number of outputs n·c = {dim}, got {k}")
        if method == "dense" or (method == "auto" and dim <= max_dense):
            spec = curvature.spectrum(np.asarray(_dense_kernel(fn, arrays, inputs)), k=int(k), method="dense")
        else:
            spec = kernel_spectrum(fn, arrays, inputs, int(k), method="krylov")
        lam = np.sort(np.asarray(spec.eigenvalues, dtype=np.float64))[::-1][:k]
        return {"eigenvalues": lam, "lambda_max": lam[0]}

    return probe


def trajectory_catapults(
    traj: Trajectory,
    *,
    kernel: str = "kernel",
    loss=None,
    ratio: float = 2.0,
    window: int = 20,
    min_drop: float = 0.0,
):
    """Catapults of a recorded run (`detect_catapults`, ``docs/catapults.md`` §4).

    The loss curve is ``loss`` (one value per step) or the run's ``step_losses`` (the batch loss
    of every step: the training loss for full-batch GD); λ_max(K) is the ``lambda_max`` of the
    `kernel_probe` named ``kernel`` at the checkpoints. Returns a tuple of `Catapult`.
    """
    from ._catapult import detect_catapults

    if kernel not in traj.probes:
        raise ValueError(
            f"no probe named {kernel!r} in this trajectory (probes: {sorted(traj.probes)}); add a kernel_probe"
        )
    curve = traj.step_losses if loss is None else np.asarray(loss, dtype=np.float64)
    if curve is None or np.size(curve) < 2:
        raise ValueError("the loss curve needs at least 2 steps")
    return detect_catapults(
        curve, traj.probe(kernel, "lambda_max"), steps=traj.steps, ratio=ratio, window=window, min_drop=min_drop
    )


def trajectory_diffusion(traj: Trajectory, **kwargs):
    """The diffusion-map analysis (`analyze_trajectory`, ``docs/diffusion_maps.md`` §5) of the
    iterates kept by ``record(..., iterates_every=n)``, with their steps and mean batch losses;
    ``kwargs`` go to `analyze_trajectory` (``burn_in``, ``epsilon``, ``max_coords`` …)."""
    from ._diffusion_map import analyze_trajectory

    if traj.iterates is None:
        raise ValueError("this trajectory kept no iterates: record with iterates_every=n")
    return analyze_trajectory(traj.iterates, steps=traj.iterate_steps, losses=traj.iterate_losses, **kwargs)
