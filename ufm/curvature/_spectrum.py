"""`spectrum`: the one entry that measures the spectrum of a curvature block.

Every measurement in ufm — `ufm.verify`, the paper figures, the benchmarks — goes through
here, so "build the block, eigendecompose it" exists once. Two routes, one result:

* ``"dense"``: the block is built column by column from Hessian-vector products
  (`ufm.curvature.materialize`), symmetrised and decomposed by ``eigh``
  (`ufm.spectrum.Spectrum.from_dense`); every eigenpair (or the top ``k``), residuals
  measured.
* ``"krylov"``: the top ``k`` eigenpairs by thick-restarted block Krylov
  (`ufm.curvature.top_eigenpairs`), residuals recomputed with fresh products.

Both return a `Spectrum` with the same fields in the same order (eigenvalues descending,
eigenvectors as flat row-major columns over the chosen ``leaves``, ``dim``, ``residuals``);
``source`` says which route ran (``"dense"`` / ``"krylov"``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..spectrum import Spectrum
from ._checks import NonFiniteError, check_count, check_finite_array, nonfinite_error
from ._operator import Operator, as_operator
from .dense import DEFAULT_MAX_BYTES, _materialize
from .eigensolver import top_eigenpairs
from .hvp import hessian_operator

__all__ = ["DEFAULT_DENSE_MAX", "spectrum"]

#: Blocks with at most this many coordinates are measured densely by ``method="auto"``
#: (a float64 4096² block is 128 MiB and one ``eigh`` of a few seconds).
DEFAULT_DENSE_MAX = 4096
_METHODS = ("auto", "dense", "krylov")
_KRYLOV_WHICH = {"largest": "LA", "magnitude": "LM"}


def spectrum(
    loss_fn,
    params=None,
    *,
    leaves=None,
    k: int | None = None,
    method: str = "auto",
    which: str = "largest",
    seed: int = 0,
    tol: float | None = None,
    dense_max: int = DEFAULT_DENSE_MAX,
    vectors: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    data=None,
    batch_size: int | None = None,
    mesh=None,
    devices=None,
    **krylov_options,
) -> Spectrum:
    """The spectrum of the Hessian of ``loss_fn`` over ``leaves`` (or of an `Operator` / a matrix).

    Args:
      loss_fn: ``params -> scalar``, or an `Operator` (then ``params=None``, ``leaves=None``;
        e.g. `ggn_operator`), or a dense symmetric (P, P) matrix the caller already has
        (dense route: `Spectrum.from_dense`; Krylov route: products with it).
      params: the pytree at which the Hessian is taken.
      leaves: indices into ``jax.tree_util.tree_leaves(params)`` (None = all), flattened
        row-major in the order given.
      k: number of eigenpairs; default all of them (dense route only).
      method: ``"dense"``, ``"krylov"`` or ``"auto"`` (dense when the block has at most
        ``dense_max`` coordinates, else Krylov, which then needs ``k``).
      which: ``"largest"`` (algebraic) or ``"magnitude"`` (largest ``|λ|``).
      seed: PRNG seed of the Krylov starting block.
      tol: Krylov relative residual tolerance (default ``√eps``; see `top_eigenpairs`).
      vectors: dense route: ``False`` computes eigenvalues only (``eigvalsh``, no residuals).
      max_bytes: dense route: refuse a block larger than this (see `materialize`).
      data, batch_size, mesh, devices: a loss ``loss_fn(params, batch)`` over a data pytree,
        streamed in batches and / or sharded over devices (see `hessian_operator`,
        ``docs/curvature.md``); the same `Spectrum` as the closed-over loss, to rounding.
      krylov_options: passed to `top_eigenpairs` (``block_size``, ``oversample``, ``throw``, ...);
        a Krylov solve that misses ``tol`` raises unless ``throw=False`` (`ufm.results.THROW`).

    Returns:
      `Spectrum`: ``eigenvalues`` (descending), ``eigenvectors`` (P × m), ``residuals``,
      ``dim = P``, ``source`` ``"dense"`` or ``"krylov"``, ``info["method"]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from ufm.curvature import spectrum
      >>> f = lambda x: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * x**2)   # Hessian diag(3, 2, 1)
      >>> s = spectrum(f, jnp.zeros(3), k=2)
      >>> s.eigenvalues.tolist(), s.dim, s.source
      ([3.0, 2.0], 3, 'dense')
    """
    matrix = None
    if not (callable(loss_fn) or isinstance(loss_fn, Operator)):
        if params is not None or leaves is not None:
            raise ValueError("pass params=None and leaves=None when the first argument is a matrix")
        matrix = check_finite_array("spectrum: the matrix source", loss_fn)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a matrix source must be square (P, P), got shape {matrix.shape}")
        op = Operator.from_matvec(matrix)
    else:
        op = as_operator(
            loss_fn, params, leaves, hessian_operator, data=data, batch_size=batch_size, mesh=mesh, devices=devices
        )
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if which not in _KRYLOV_WHICH:
        raise ValueError(f"which must be one of {tuple(_KRYLOV_WHICH)}, got {which!r}")
    if k is not None:
        k = check_count("k", k, 1, op.dim, what="the dimension P =")
    if method == "auto":
        method = "dense" if op.dim <= dense_max else "krylov"
    if method == "dense":
        if krylov_options:
            raise TypeError(f"options {sorted(krylov_options)} apply to method='krylov' only")
        if matrix is not None:
            M = matrix
        else:
            M = np.asarray(_materialize(op, None, max_bytes, "spectrum(method='dense')", leaves))
        return Spectrum.from_dense(M, k=k, which=which, vectors=vectors, info={"method": "dense eigh", "which": which})
    if k is None:
        raise ValueError(
            f"method='krylov' needs k (the block has P={op.dim} coordinates; dense_max={dense_max} decides 'auto')"
        )
    try:
        top = top_eigenpairs(op, None, k, seed=seed, tol=tol, which=_KRYLOV_WHICH[which], **krylov_options)
    except NonFiniteError as err:  # name this route and the caller's leaves, not the inner call's
        raise nonfinite_error("spectrum(method='krylov')", op, err.what, leaves, err.detail) from None
    # the result protocol (ufm.results): the solver's status is an attribute, not an info key
    return dataclasses.replace(top, source="krylov", info={**top.info, "which": which})
