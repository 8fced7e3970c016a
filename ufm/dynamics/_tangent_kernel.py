"""The tangent kernel K = J Jᵀ of any model ``f(params, X)``: matrix-free, dense, per batch.

Conventions (``docs/catapults.md`` §1; ``docs/dynamics.md`` §D4):

* ``f(params, X)`` returns ``(n,)`` (scalar outputs, c = 1) or ``(n, c)``; outputs are
  flattened row-major, so row ``i·c + o`` of ``J = ∂ vec f / ∂θ`` is output ``o`` of sample
  ``i``. ``K = J Jᵀ`` is ``nc × nc``, symmetric positive semi-definite.
* ``K v = J (Jᵀ v)``: one VJP (``Jᵀ v``, the pullback of ``jax.linearize``'s linear map) then
  one JVP, from one linearisation per solve — J is never formed.
* MSE ``L = (1/2n) ‖f(X) − y‖²`` (``normalization="half"``, the default): the Gauss–Newton
  Hessian is ``(1/n) JᵀJ``, whose non-zero spectrum is that of ``K/n``, so gradient descent
  on the linearised model is stable iff ``η < η_crit = 2n / λ_max(K)``. With
  ``normalization="mean"`` (``L = (1/n)‖f − y‖²``) the Hessian doubles and
  ``η_crit = n / λ_max(K)``. n counts samples, not the nc outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..curvature import DEFAULT_DENSE_MAX, Operator, spectrum
from ..spectrum import Spectrum

__all__ = [
    "tangent_kernel_operator",
    "tangent_kernel",
    "batch_tangent_kernels",
    "kernel_spectrum",
    "critical_learning_rate",
    "NORMALIZATIONS",
]

#: MSE normalisations: name -> c in ``L = (c/n) ‖f − y‖²``.
NORMALIZATIONS = {"half": 0.5, "mean": 1.0}


def _positive_int(name, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_normalization(normalization: str) -> float:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}")
    return NORMALIZATIONS[normalization]


def _output_shape(f, params, X) -> tuple[int, ...]:
    shape = jax.eval_shape(f, params, X).shape
    if len(shape) not in (1, 2):
        raise ValueError(f"f(params, X) must return (n,) or (n, c), got shape {shape}")
    return shape


@dataclasses.dataclass(frozen=True)
class _KernelMake:
    """Builder of ``v ↦ J Jᵀ v`` at ``args = (params, X)`` (hashable: a static argument)."""

    f: Callable

    def __call__(self, args):
        params, X = args
        out, jvp = jax.linearize(lambda p: self.f(p, X), params)
        vjp = jax.linear_transpose(jvp, params)
        return lambda v: jvp(vjp(v.reshape(out.shape).astype(out.dtype))[0]).reshape(-1)


def tangent_kernel_operator(f: Callable, params, X) -> Operator:
    """``K = J Jᵀ`` of ``f(·, X)`` at ``params`` as a matrix-free `ufm.curvature.Operator`.

    Args:
      f: ``f(params, X) -> (n,)`` or ``(n, c)``; hashable (a function, or a frozen dataclass
        such as `NTKMLP`), since the solvers take the builder as a static argument.
      params: pytree of parameters.
      X: inputs, leading axis n.

    Returns:
      An `Operator` on ``R^{nc}`` (row-major over (sample, output)); pass it to
      ``ufm.curvature.top_eigenpairs(op, None, k)``.
    """
    shape = _output_shape(f, params, X)
    dtype = jax.eval_shape(f, params, X).dtype
    return Operator(_KernelMake(f), (params, jnp.asarray(X)), int(np.prod(shape)), dtype)


def _flat_jacobian(f, params, X, independent=False):
    """``J`` (nc × P): row-major outputs, parameters flattened by ``ravel_pytree``."""
    flat, unravel = ravel_pytree(params)
    if independent:  # one sample at a time: O(ncP) work instead of the batch's O(n²cP)
        rows = jax.vmap(lambda x: jax.jacrev(lambda w: f(unravel(w), x[None]).reshape(-1))(flat))(X)
        return rows.reshape(-1, flat.size)
    return jax.jacrev(lambda w: f(unravel(w), X).reshape(-1))(flat)


def tangent_kernel(f: Callable, params, X, *, independent: bool = False) -> jax.Array:
    """The dense ``nc × nc`` kernel ``J Jᵀ`` (forms J: for small n·c·P). Jit-able.

    ``independent=True`` builds J sample by sample (vmapped), valid when ``f`` treats the rows
    of X independently (no batch statistics): O(ncP) work for J instead of O(n²cP).
    """
    J = _flat_jacobian(f, params, jnp.asarray(X), independent)
    return J @ J.T


def batch_tangent_kernels(f: Callable, params, X, batch_size: int) -> jax.Array:
    """Dense kernels of consecutive batches: ``(n // batch_size, bc, bc)``, ``K(X_b)`` each.

    ``X`` is cut into ``n // batch_size`` batches of ``batch_size`` samples in order (a
    remainder is dropped); vmapped, so one compiled program serves every batch.
    """
    batch_size = _positive_int("batch_size", batch_size)
    X = jnp.asarray(X)
    num = X.shape[0] // int(batch_size)
    if num < 1:
        raise ValueError(f"batch_size must be <= the number of samples {X.shape[0]}, got {batch_size}")
    batches = X[: num * batch_size].reshape(num, batch_size, *X.shape[1:])
    return jax.vmap(lambda Xb: tangent_kernel(f, params, Xb))(batches)


def kernel_spectrum(
    f: Callable, params, X, k: int, *, method: str = "auto", dense_max: int = DEFAULT_DENSE_MAX, **krylov_kw
) -> Spectrum:
    """The top ``k`` eigenpairs of ``K = J Jᵀ`` (eigenvectors in ``R^{nc}``) as a `Spectrum`.

    Args:
      method: ``"dense"`` (form K, ``eigh``), ``"krylov"`` (matrix-free
        `tangent_kernel_operator` through the Krylov solver), or ``"auto"``: dense when
        ``nc <= dense_max`` (`ufm.curvature.DEFAULT_DENSE_MAX`, the package's one threshold);
        both through ``ufm.curvature.spectrum``.
      krylov_kw: passed to ``spectrum`` (``tol``, ``seed``, ``block_size`` …).
    """
    if method not in ("auto", "dense", "krylov"):
        raise ValueError(f"method must be 'auto', 'dense' or 'krylov', got {method!r}")
    dim = int(np.prod(_output_shape(f, params, X)))
    if _positive_int("k", k) > dim:
        raise ValueError(f"k must be <= nc={dim}, got {k!r}")
    if method == "krylov" or (method == "auto" and dim > dense_max):
        # the status travels in the Spectrum (converged / messages) unless the caller asks to raise
        kw = {"throw": False, **krylov_kw}
        return spectrum(tangent_kernel_operator(f, params, X), k=int(k), method="krylov", **kw)
    return spectrum(np.asarray(tangent_kernel(f, params, X)), k=int(k), method="dense")


def critical_learning_rate(lambda_max, num_samples: int, normalization: str = "half"):
    """``η_crit = 2n/λ_max(K)`` for ``L = (1/2n)‖f − y‖²``; ``n/λ_max(K)`` for ``(1/n)‖f − y‖²``.

    ``docs/catapults.md`` §1: the loss Hessian's Gauss–Newton part is ``(2c/n) JᵀJ`` for
    ``L = (c/n)‖f − y‖²``, and GD on a quadratic is stable iff ``η < 2/λ_max(H)``. For SGD pass
    the batch size and the batch kernel's ``λ_max(K(X_b))``.
    """
    c = _check_normalization(normalization)
    return num_samples / (c * lambda_max)
