"""Hessian-, Gauss–Newton- and residual-vector products over pytrees.

Conventions (``MATH.md`` §1, §4):

* ``loss_fn(params) -> scalar`` is any loss; its Hessian is ``H = ∇²L``. Products are
  forward-over-reverse: ``H v = ∂_t ∇L(θ + t v)|_{t=0}`` (``jax.jvp`` of ``jax.grad``;
  Pearlmutter 1994), exact to rounding.
* The generalised Gauss–Newton matrix of ``L(θ) = ℓ(f(θ))`` with ``f = model_fn`` and
  ``ℓ = output_loss`` is ``G = Jᵀ (∇²ℓ) J``, ``J = ∂f/∂θ`` (Schraudolph 2002; Papyan 2020
  eq. (2)); the residual ``H − G = Σ_o (∂ℓ/∂f_o) ∇²f_o`` vanishes for a model linear in
  the chosen leaves (e.g. one UFM layer, ``MATH.md`` §4). Whatever 1/N factor ``ℓ``
  carries, ``G`` carries too (ufm's MSE: ``(1/2N)‖Z − Y‖²`` gives ``∇²ℓ = I/N``).
* Flat operators act on the chosen leaves (``leaves`` indexes
  ``jax.tree_util.tree_leaves(params)``; for ``UFMParams`` 0 is H_1 and l is W_l),
  concatenated row-major in the order given; other leaves are held fixed.
  `hessian_operator` linearises the gradient once (``jax.linearize``), so repeated
  products reuse the forward and backward residuals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from ._operator import FlatView, Operator, flat_view

__all__ = [
    "hvp",
    "linearized_hvp",
    "ggn_vp",
    "residual_vp",
    "hessian_operator",
    "ggn_operator",
    "residual_operator",
    "Operator",
]


def hvp(loss_fn: Callable, params, v):
    """``H v`` for a pytree tangent ``v`` shaped like ``params`` (forward-over-reverse)."""
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def linearized_hvp(loss_fn: Callable, params) -> Callable:
    """``v ↦ H v`` with ``∇L`` linearised once at ``params`` (cheap repeated products).

    The returned function is linear, jit- and vmap-able, and reuses the residuals of one
    forward-over-reverse pass (``jax.linearize``).
    """
    return jax.linearize(jax.grad(loss_fn), params)[1]


def ggn_vp(model_fn: Callable, output_loss: Callable, params, v):
    """``G v = Jᵀ ∇²ℓ(f(θ)) J v`` for ``L = output_loss ∘ model_fn`` (pytree ``v``)."""
    z, Jv = jax.jvp(model_fn, (params,), (v,))
    HJv = jax.jvp(jax.grad(output_loss), (z,), (Jv,))[1]
    return jax.vjp(model_fn, params)[1](HJv)[0]


def residual_vp(model_fn: Callable, output_loss: Callable, params, v):
    """``(H − G) v``: the part of the Hessian of ``output_loss ∘ model_fn`` that G misses."""
    Hv = hvp(lambda p: output_loss(model_fn(p)), params, v)
    Gv = ggn_vp(model_fn, output_loss, params, v)
    return jax.tree_util.tree_map(lambda a, b: a - b, Hv, Gv)


# ---- flat operators (hashable builders; see _operator.py) -------------------------------
@dataclasses.dataclass(frozen=True)
class _HessianMake:
    loss_fn: Callable
    view: FlatView

    def __call__(self, all_leaves):
        x0 = self.view.flatten(all_leaves)
        f = lambda x: self.loss_fn(self.view.unflatten(all_leaves, x))
        return jax.linearize(jax.grad(f), x0)[1]


@dataclasses.dataclass(frozen=True)
class _GGNMake:
    model_fn: Callable
    output_loss: Callable
    view: FlatView
    residual: bool = False

    def __call__(self, all_leaves):
        x0 = self.view.flatten(all_leaves)
        f = lambda x: self.model_fn(self.view.unflatten(all_leaves, x))
        z, J = jax.linearize(f, x0)
        Jt = jax.linear_transpose(J, x0)
        H_out = jax.linearize(jax.grad(self.output_loss), z)[1]
        ggn = lambda v: Jt(H_out(J(v)))[0]
        if not self.residual:
            return ggn
        H = jax.linearize(jax.grad(lambda x: self.output_loss(f(x))), x0)[1]
        return lambda v: H(v) - ggn(v)


def hessian_operator(loss_fn: Callable, params, *, leaves=None) -> Operator:
    """The Hessian of ``loss_fn`` over the chosen ``leaves`` as a flat `Operator`."""
    view, all_leaves = flat_view(params, leaves)
    return Operator(_HessianMake(loss_fn, view), all_leaves, view.dim, all_leaves[view.indices[0]].dtype)


def ggn_operator(model_fn: Callable, output_loss: Callable, params, *, leaves=None) -> Operator:
    """The Gauss–Newton matrix ``Jᵀ∇²ℓ J`` of ``output_loss ∘ model_fn`` as a flat `Operator`."""
    view, all_leaves = flat_view(params, leaves)
    return Operator(_GGNMake(model_fn, output_loss, view), all_leaves, view.dim, all_leaves[view.indices[0]].dtype)


def residual_operator(model_fn: Callable, output_loss: Callable, params, *, leaves=None) -> Operator:
    """``H − G`` of ``output_loss ∘ model_fn`` as a flat `Operator`."""
    view, all_leaves = flat_view(params, leaves)
    make = _GGNMake(model_fn, output_loss, view, residual=True)
    return Operator(make, all_leaves, view.dim, all_leaves[view.indices[0]].dtype)
