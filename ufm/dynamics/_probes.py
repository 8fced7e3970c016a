"""Spectral probes along a trajectory (``docs/dynamics.md`` §D1; ``docs/alignment.md`` §1).

Small functions of (params, data) returning small results, plus `spectral_probe`, which
bundles them into a probe for `ufm.dynamics.record`:

* `top_space`: top-k eigenpairs of a dense symmetric matrix, or of the Hessian of
  ``loss_fn(params, batch)`` over a block (``leaves``); `hessian_top_space` is the latter.
* `g_top_space`: the G-matrix ``G = (1/M) Σ_i ∇ℓ_i ∇ℓ_iᵀ`` (uncentred, per sample
  ``ℓ_i = loss_fn(params, sample i)``) of a block, through the M × M Gram matrix
  ``J Jᵀ / M`` when M < P (``J``: M × P per-sample gradients), never a P × P matrix then:
  ``G u = λ u`` with ``u = Jᵀ a / √(M λ)`` for each Gram eigenpair ``(λ, a)``.
* `subspace_alignment` ``a(v, U) = ‖P_U v‖/‖v‖`` and `top_fraction` ``f_top = a²`` (not
  `ufm.curvature.alignment`, the eigenvector test of a matrix).
* `subspace_overlap`: ``Tr(P_U P_V)/k`` and the largest principal angle.
* counts (`ufm.spectrum.Spectrum.counts`): outliers / minibulk / bulk with the project's gap rule
  (`ufm.curvature.count_outliers`, applied once for the outliers and once more below them).
* `collapse_probe`: NC1–NC4 of given features (`ufm.collapse.nc_metrics`).

Every eigendecomposition goes through `ufm.curvature.spectrum` (the private helper `_spectrum`).
Flat vectors follow ``ufm.curvature``: the chosen leaves, row-major, in the order given.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import collapse, curvature
from ..curvature._operator import flat_view
from ..results import result
from ..spectrum import Spectrum

__all__ = [
    "Overlap",
    "subspace_alignment",
    "top_fraction",
    "subspace_overlap",
    "top_space",
    "hessian_top_space",
    "per_sample_grads",
    "g_top_space",
    "collapse_probe",
    "spectral_probe",
]


# ---- the one eigendecomposition --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _WithBatch:
    """``(params, batch) -> loss_fn(params, batch)`` as a function of one pytree.

    The batch travels as (non-chosen) leaves, not as a closure constant, so the curvature
    tools' compiled solvers are reused across checkpoints (same function, same shapes).
    """

    loss_fn: Callable

    def __call__(self, pair):
        return self.loss_fn(*pair)


def _spectrum(source, params=None, batch=None, *, leaves=None, k=None, method="auto", tol=None) -> Spectrum:
    """Top ``k`` eigenpairs, descending, by `ufm.curvature.spectrum`; the dense route returns
    all of them (``k`` only chooses the route: None forces dense).

    ``source`` is a dense symmetric matrix, or ``loss_fn(params, batch)`` whose Hessian over
    ``leaves`` of ``params`` is meant. ``method``: ``"dense"``, ``"krylov"`` or ``"auto"``
    (dense up to `ufm.curvature.DEFAULT_DENSE_MAX`, the package's one threshold). ``tol``: the
    Krylov residual tolerance (default that of `ufm.curvature.top_eigenpairs`; a solve that misses
    it comes back with ``converged=False``).
    """
    if method not in ("auto", "dense", "krylov"):
        raise ValueError(f"method must be 'auto', 'dense' or 'krylov', got {method!r}")
    if callable(source):
        pair = (params, batch)
        num = len(jax.tree_util.tree_leaves(params))
        chosen = list(range(num)) if leaves is None else [int(i) % num for i in leaves]
        source, dim = _WithBatch(source), flat_view(params, chosen)[0].dim
    else:
        pair = chosen = None
        dim = np.shape(source)[0]
    if k is not None and not 1 <= k <= dim:
        raise ValueError(f"k must be in [1, {dim}], got {k}")
    dense = method == "dense" or (method == "auto" and dim <= curvature.DEFAULT_DENSE_MAX) or k is None
    if dense:
        return curvature.spectrum(source, pair, leaves=chosen, method="dense")
    # throw=False: the probe reports "converged" and the Trajectory carries it
    return curvature.spectrum(source, pair, leaves=chosen, k=k, method="krylov", tol=tol, throw=False)


# ---- results ------------------------------------------------------------------------------
@result
class Overlap:
    """``overlap = Tr(P_U P_V)/min(k_U, k_V)`` ∈ [0, 1] and the largest principal angle (rad)."""

    overlap: float
    max_angle: float
    converged: bool = True  # closed form (`ufm.results`)
    messages: tuple[str, ...] = ()


# ---- vector / subspace identities ----------------------------------------------------------
def _flat(v) -> np.ndarray:
    if isinstance(v, (np.ndarray, jax.Array)):
        return np.asarray(v, dtype=np.float64).ravel()
    return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in jax.tree_util.tree_leaves(v)])


def top_fraction(v, U) -> float:
    """``f_top = ‖P_U v‖² / ‖v‖²`` (Gur-Ari et al. 2018); ``v`` flat or a pytree; U orthonormalised."""
    v = _flat(v)
    if not np.any(v):
        return float("nan")
    return float(_fraction(v, np.asarray(U, dtype=np.float64)))


def subspace_alignment(v, U) -> float:
    """``a(v, U) = ‖P_U v‖/‖v‖`` ∈ [0, 1] (``docs/dynamics.md`` §D1; NaN for v = 0)."""
    return float(np.sqrt(min(top_fraction(v, U), 1.0)))


def subspace_overlap(U, V) -> Overlap:
    """`Overlap` of span(U) and span(V) (`ufm.curvature.projector_overlap`, `principal_angles`)."""
    overlap, angle = _overlap_angle(np.asarray(U, dtype=np.float64), np.asarray(V, dtype=np.float64))
    return Overlap(float(overlap), float(angle))


# one compiled program per shape instead of one per primitive (eager dispatch compiles each op)
_fraction = jax.jit(curvature.gradient_fraction)


@jax.jit
def _overlap_angle(U, V):
    return curvature.projector_overlap(U, V), jnp.max(curvature.principal_angles(U, V))


# ---- curvature matrices ------------------------------------------------------------------------
def _num_eigs(k, dim, num_eigs):
    return min(dim, max(2 * k, k + 10) if num_eigs is None else num_eigs)


def top_space(matrix, k: int, *, num_eigs: int | None = None, method: str = "auto") -> Spectrum:
    """The top of the spectrum of a dense symmetric ``matrix``, as a `Spectrum`: its top-k
    eigenspace is ``.space(k)``, its gap-rule counts ``.counts()``. All eigenpairs on the dense
    route, ``num_eigs`` (default ``max(2k, k + 10)``) on the Krylov route."""
    return _spectrum(matrix, k=_num_eigs(k, np.shape(matrix)[0], num_eigs), method=method)


def hessian_top_space(
    loss_fn,
    params,
    batch,
    k: int,
    *,
    leaves=None,
    num_eigs: int | None = None,
    method: str = "auto",
    tol: float | None = None,
) -> Spectrum:
    """The top of the spectrum of the Hessian of ``loss_fn(params, batch)`` over ``leaves`` (as
    `top_space`: ``.space(k)``, ``.counts()``)."""
    dim = flat_view(params, leaves)[0].dim
    return _spectrum(loss_fn, params, batch, leaves=leaves, k=_num_eigs(k, dim, num_eigs), method=method, tol=tol)


def per_sample_grads(loss_fn, params, batch, *, leaves=None) -> jax.Array:
    """``J`` (M × P): row i is ``∇ loss_fn(params, sample i)`` over ``leaves`` (flat).

    Sample i is the i-th slice along the leading axis of every leaf of ``batch``, passed
    as a batch of one (so ``loss_fn``'s mean is the per-sample loss ℓ_i).
    """
    view, all_leaves = flat_view(params, leaves)
    return _jacobian(loss_fn, view, all_leaves, batch)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jacobian(loss_fn, view, all_leaves, batch):
    def one(x, sample):
        return loss_fn(view.unflatten(all_leaves, x), jax.tree_util.tree_map(lambda a: a[None], sample))

    return jax.vmap(jax.grad(one), in_axes=(None, 0))(view.flatten(all_leaves), batch)


def g_top_space(grads, k: int, *, num_eigs: int | None = None) -> Spectrum:
    """The top of the spectrum of ``G = JᵀJ/M`` from per-sample gradients ``grads`` = J (M × P),
    as a `Spectrum` (``.space(k)``, ``.counts()``).

    When M < P the eigenpairs come from the Gram matrix ``JJᵀ/M`` (``docs/alignment.md`` §1):
    ``u = Jᵀa/√(Mλ)``; only the (≤ M) eigenvalues of the Gram matrix are resolved, the rest of
    G is 0 (``bulk_value``); the eigenvector of a zero Gram eigenvalue is left 0 (no direction).
    """
    J = np.asarray(grads, dtype=np.float64)
    if J.ndim != 2:
        raise ValueError(f"grads must be (M, P) per-sample gradients, got shape {J.shape}")
    M, P = J.shape
    if M >= P:
        return top_space(J.T @ J / M, k, num_eigs=num_eigs)
    if k > M:
        raise ValueError(f"k={k} exceeds the rank bound M={M} of G (M samples)")
    spec = _spectrum(J @ J.T / M, k=_num_eigs(k, M, num_eigs))
    lam, A = np.asarray(spec.eigenvalues), np.asarray(spec.eigenvectors)
    pos = lam > 0
    U = np.zeros((P, lam.size))
    U[:, pos] = J.T @ A[:, pos] / np.sqrt(M * lam[pos])
    return Spectrum(lam, U, dim=P, bulk_value=0.0, source=spec.source, converged=spec.converged, messages=spec.messages)


def collapse_probe(features, labels, **kwargs) -> dict:
    """NC1–NC4 of ``features`` (a list of d_l × N arrays) as a flat dict of per-layer arrays
    (`ufm.collapse.nc_metrics`; keyword arguments pass through)."""
    return {k: np.asarray(v) for k, v in collapse.nc_metrics(features, labels, **kwargs).metrics().items()}


@functools.lru_cache(maxsize=64)
def _jitted_grad(loss_fn):
    return jax.jit(jax.grad(loss_fn))


# ---- a probe for `record` ----------------------------------------------------------------------
def spectral_probe(
    loss_fn,
    batch,
    k: int,
    *,
    kind: str = "hessian",
    leaves=None,
    subspaces=None,
    num_eigs: int | None = None,
    method: str = "auto",
    tol: float | None = None,
) -> Callable:
    """A `record` probe: the top-k space of the Hessian or G-matrix of a block, and alignments.

    At each checkpoint, on the fixed ``batch`` (train data, or M fresh samples drawn once):
    ``eigenvalues``, the gap-rule ``outliers`` / ``minibulk`` / ``bulk``, the alignment
    ``a(·, U)`` of the block's parameters (``align_params``), its gradient on ``batch``
    (``align_grad``, with ``f_top_grad`` = a²) and the last update (``align_update``),
    ``overlap_prev`` / ``angle_prev`` with the previous checkpoint's space, and for each
    ``subspaces[name]`` (P × r) ``overlap_<name>`` and ``angle_<name>``.

    Args:
      kind: ``"hessian"`` (of ``loss_fn(params, batch)``) or ``"g"`` (G-matrix of the
        per-sample losses).
      leaves: the block (indices into ``tree_leaves(params)``, of the array leaves for an equinox
        Module); None = the whole model.
      num_eigs, method, tol: the eigensolver's (`hessian_top_space`).
    """
    if kind not in ("hessian", "g"):
        raise ValueError(f"kind must be 'hessian' or 'g', got {kind!r}")
    subspaces = {n: np.asarray(S, dtype=np.float64) for n, S in (subspaces or {}).items()}
    grad = _jitted_grad(loss_fn)

    def block(tree):
        view, all_leaves = flat_view(tree, leaves)
        return np.asarray(view.flatten(all_leaves))

    def probe(params, ctx) -> dict:
        from ._trajectory import _Rejoin, _split_module

        params, static = _split_module(params)  # an equinox Module: its arrays (as record trains them)
        fn = loss_fn if static is None else _Rejoin(loss_fn, static)
        if kind == "hessian":
            space = hessian_top_space(fn, params, batch, k, leaves=leaves, num_eigs=num_eigs, method=method, tol=tol)
        else:
            space = g_top_space(per_sample_grads(fn, params, batch, leaves=leaves), k, num_eigs=num_eigs)
        U = space.space(k)
        g = block((grad if static is None else _jitted_grad(fn))(params, batch))
        out = {
            "eigenvalues": space.eigenvalues,
            **space.counts().as_dict(),
            "converged": space.converged,
            "align_params": subspace_alignment(block(params), U),
            "align_grad": subspace_alignment(g, U),
            "f_top_grad": top_fraction(g, U),
            "align_update": float("nan") if ctx.last_update is None else subspace_alignment(block(ctx.last_update), U),
        }
        prev = ctx.previous["_eigenvectors"] if ctx.previous else None
        ov = subspace_overlap(U, prev) if prev is not None else Overlap(float("nan"), float("nan"))
        out |= {"overlap_prev": ov.overlap, "angle_prev": ov.max_angle}
        for name, S in subspaces.items():
            ov = subspace_overlap(U, S)
            out |= {f"overlap_{name}": ov.overlap, f"angle_{name}": ov.max_angle}
        return out | {"_eigenvectors": U}

    return probe
