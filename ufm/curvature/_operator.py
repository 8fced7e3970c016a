"""Flat views of a pytree problem and the `Operator` every solver consumes.

A curvature object is a symmetric linear map on the *flat* vector of the chosen leaves
(``leaves`` indexes ``jax.tree_util.tree_leaves(params)``; the flat vector concatenates
those leaves row-major, in the order given; all other leaves are held fixed).

Flattening order is JAX's: ``tree_leaves`` visits a dict in *sorted key order*, so a layer
``{"w": W, "b": b}`` flattens as ``b`` then ``W`` (a bias before its weight), a list or
tuple in position order, a NamedTuple / dataclass pytree in field order. Pass ``leaves=``
to choose another order; `FlatView.unflatten` inverts the map.

An `Operator` does not hold a matvec closure: it holds a hashable *builder* ``make`` and
its array arguments ``args``. Solvers call ``make(args)`` once inside their jitted body,
so a linearisation (``jax.linearize``) is traced once and its residuals are computed once
per solve, not once per product; and a second solve with the same builder does not
recompile.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def leaf_indices(leaves, num_leaves: int) -> tuple[int, ...]:
    """Validate ``leaves`` (None or a sequence of distinct ints) into a tuple of indices."""
    if leaves is None:
        return tuple(range(num_leaves))
    if isinstance(leaves, (int, np.integer)) or not isinstance(leaves, Sequence):
        raise TypeError(f"leaves must be None or a sequence of ints, got {leaves!r}")
    out = []
    for i in leaves:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"leaves must hold ints (indices into tree_leaves(params)), got {i!r}")
        if not -num_leaves <= i < num_leaves:
            raise ValueError(f"leaves index {i} is out of range for params with {num_leaves} leaves")
        out.append(int(i) % num_leaves)
    if not out:
        raise ValueError("leaves must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"leaves must be distinct, got {tuple(leaves)}")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class FlatView:
    """How the chosen leaves of a pytree map to and from one flat vector (hashable)."""

    treedef: Any
    indices: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def dim(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, all_leaves) -> jax.Array:
        return jnp.concatenate([jnp.ravel(all_leaves[i]) for i in self.indices])

    def fill(self, all_leaves, x) -> list:
        """All leaves, with the chosen ones replaced by the pieces of flat ``x``."""
        out, start = list(all_leaves), 0
        for i, shape in zip(self.indices, self.shapes, strict=True):
            size = int(np.prod(shape))
            out[i] = x[start : start + size].reshape(shape).astype(all_leaves[i].dtype)
            start += size
        return out

    def unflatten(self, all_leaves, x):
        return jax.tree_util.tree_unflatten(self.treedef, self.fill(all_leaves, x))


def flat_view(params, leaves) -> tuple[FlatView, list]:
    """``(view, all_leaves)`` for ``params``; checks the chosen leaves share one float dtype."""
    all_leaves, treedef = jax.tree_util.tree_flatten(params)
    if not all_leaves:
        raise ValueError("params has no leaves")
    idx = leaf_indices(leaves, len(all_leaves))
    for i in idx:
        check_x64(all_leaves[i], "params")
    all_leaves = [jnp.asarray(a) for a in all_leaves]
    dtypes = {all_leaves[i].dtype for i in idx}
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise TypeError(f"the chosen leaves must share one floating dtype, got {sorted(map(str, dtypes))}")
    return FlatView(treedef, idx, tuple(tuple(all_leaves[i].shape) for i in idx)), all_leaves


@dataclasses.dataclass(frozen=True)
class Operator:
    """A symmetric linear map on R^dim: ``make(args)`` returns ``v ↦ A v`` for (dim,) arrays.

    ``make`` must be hashable (it is a static argument of the jitted solvers); ``args`` is
    a pytree of arrays. Build one with `hessian_operator` / `ggn_operator` /
    `residual_operator`, or from any function with `Operator.from_matvec`.
    """

    make: Callable
    args: Any
    dim: int
    dtype: Any

    def matvec(self, v) -> jax.Array:
        """``A v`` for a (dim,) vector: one compiled product (compiled once per builder)."""
        v = jnp.asarray(v, self.dtype)
        if v.shape != (self.dim,):
            raise ValueError(f"v must have shape ({self.dim},), got {v.shape}")
        return _matvec(self.make, self.args, v)

    def matmat(self, V) -> jax.Array:
        """``A V`` for a (dim, n) matrix: n products, vmapped and compiled."""
        V = jnp.asarray(V, self.dtype)
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"V must have shape ({self.dim}, n), got {V.shape}")
        return _matmat(self.make, self.args, V)

    def to_scipy(self):
        """A `scipy.sparse.linalg.LinearOperator` of this operator (symmetric; NumPy in and out).

        Each call runs the compiled product, e.g. ``scipy.sparse.linalg.eigsh(op.to_scipy(), k=5)``.
        """
        from scipy.sparse.linalg import LinearOperator

        dtype = np.dtype(self.dtype)

        def mv(v):
            return np.asarray(self.matvec(np.asarray(v, dtype).reshape(-1)))

        def mm(V):
            return np.asarray(self.matmat(np.asarray(V, dtype)))

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, matmat=mm, rmatmat=mm, dtype=dtype)

    @staticmethod
    def from_matvec(matvec, dim: int | None = None, dtype=None) -> Operator:
        """Wrap a plain ``(dim,) -> (dim,)`` function (or a dense symmetric matrix).

        ``dtype`` defaults to float64 when ``jax_enable_x64`` is on, else float32.
        """
        if not callable(matvec):
            check_x64(matvec, "matvec")
            A = jnp.asarray(matvec)
            if A.ndim != 2 or A.shape[0] != A.shape[1]:
                raise ValueError(f"matvec must be callable or a square matrix, got shape {A.shape}")
            return Operator(_dense_make, A, int(A.shape[0]), A.dtype)
        if dim is None:
            raise ValueError("dim is required when matvec is a function")
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
        return Operator(_FixedMake(matvec), (), int(dim), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=0)
def _matvec(make, args, v):
    return make(args)(v)


@functools.partial(jax.jit, static_argnums=0)
def _matmat(make, args, V):
    return jax.vmap(make(args), in_axes=1, out_axes=1)(V)


def check_x64(x, name):
    """Warn when a float64 input would silently become float32 (``jax_enable_x64`` off)."""
    if getattr(x, "dtype", None) == np.float64 and not jax.config.jax_enable_x64:
        warnings.warn(
            f"{name} is float64 but jax_enable_x64 is off: it is computed in float32 (and results may come back "
            "as float64 all the same). Enable float64 first with jax.config.update('jax_enable_x64', True), or "
            "pass float32 arrays",
            UserWarning,
            stacklevel=3,
        )


def _dense_make(A):
    return lambda v: A @ v


@dataclasses.dataclass(frozen=True)
class _FixedMake:
    matvec: Callable

    def __call__(self, args):
        return self.matvec


def as_operator(loss_fn, params, leaves, builder, **data_kw) -> Operator:
    """``loss_fn`` if it is already an `Operator` (then ``params`` must be None), else ``builder``.

    ``data_kw`` (``data``, ``batch_size``, ``mesh``, ``devices``; None = not given) go to the
    builder; an `Operator` already carries its data.
    """
    data_kw = {key: val for key, val in data_kw.items() if val is not None}
    if isinstance(loss_fn, Operator):
        if params is not None or leaves is not None:
            raise ValueError("pass params=None and leaves=None when the first argument is an Operator")
        if data_kw:
            raise ValueError(f"{', '.join(sorted(data_kw))} cannot be given with an Operator (build it with them)")
        return loss_fn
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable params -> scalar or an Operator, got {type(loss_fn).__name__}")
    return builder(loss_fn, params, leaves=leaves, **data_kw)
