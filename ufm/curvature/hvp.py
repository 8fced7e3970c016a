"""Hessian-, Gauss–Newton- and residual-vector products over pytrees.

Conventions (``docs/theory.md`` §1, §4):

* ``loss_fn(params) -> scalar`` is any loss; its Hessian is ``H = ∇²L``. Products are
  forward-over-reverse: ``H v = ∂_t ∇L(θ + t v)|_{t=0}`` (``jax.jvp`` of ``jax.grad``;
  Pearlmutter 1994), exact to rounding.
* The generalised Gauss–Newton matrix of ``L(θ) = ℓ(f(θ))`` with ``f = model_fn`` and
  ``ℓ = output_loss`` is ``G = Jᵀ (∇²ℓ) J``, ``J = ∂f/∂θ`` (Schraudolph 2002; Papyan 2020
  eq. (2)); the residual ``H − G = Σ_o (∂ℓ/∂f_o) ∇²f_o`` vanishes for a model linear in
  the chosen leaves (e.g. one UFM layer, ``docs/theory.md`` §4). Whatever 1/N factor ``ℓ``
  carries, ``G`` carries too (ufm's MSE: ``(1/2N)‖Z − Y‖²`` gives ``∇²ℓ = I/N``).
* Flat operators act on the chosen leaves (``leaves`` indexes
  ``jax.tree_util.tree_leaves(params)``; for ``UFMParams`` 0 is H_1 and l is W_l),
  concatenated row-major in the order given; other leaves are held fixed.
  `hessian_operator` linearises the gradient once (``jax.linearize``), so repeated
  products reuse the forward and backward residuals.
* With ``data=`` the loss takes its data (``loss_fn(params, batch)``, a batch mean) and
  every product is the exact mean over all samples, streamed in batches and sharded over
  a mesh (``_data.py``, ``docs/curvature.md`` §3); each batch is re-linearised inside the
  product, so memory is set by the batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
from jax.sharding import NamedSharding, PartitionSpec

from ._data import DataSpec, data_mean, data_spec, place_data
from ._operator import FlatView, Operator, check_x64, flat_view

__all__ = [
    "hvp",
    "linearized_hvp",
    "ggn_vp",
    "residual_vp",
    "hessian_operator",
    "ggn_operator",
    "residual_operator",
    "gradient",
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
class _DataMake:
    """Products over a data set (``_data.py``): the exact mean of per-batch products.

    ``kind`` is ``"hessian"`` (``loss_fn(params, batch)``), ``"ggn"`` or ``"residual"``
    (``model_fn(params, batch)``, ``output_loss(outputs, batch)``); each per-batch term is
    re-linearised inside the product (forward-over-reverse), so nothing of size N is kept.
    """

    kind: str
    fns: tuple
    view: FlatView
    spec: DataSpec

    def batch_product(self, batch, ops):
        leaves, x, v = ops
        if self.kind == "hessian":

            def f(y):
                return self.fns[0](self.view.unflatten(leaves, y), batch)

            return jax.jvp(jax.grad(f), (x,), (v,))[1]
        model_fn, output_loss = self.fns

        def f(y):
            return model_fn(self.view.unflatten(leaves, y), batch)

        z, Jv = jax.jvp(f, (x,), (v,))
        HJv = jax.jvp(jax.grad(lambda u: output_loss(u, batch)), (z,), (Jv,))[1]
        Gv = jax.vjp(f, x)[1](HJv)[0]
        if self.kind == "ggn":
            return Gv
        return jax.jvp(jax.grad(lambda y: output_loss(f(y), batch)), (x,), (v,))[1] - Gv

    def __call__(self, args):
        all_leaves, data = args
        x0 = self.view.flatten(all_leaves)
        return lambda v: data_mean(self.batch_product, data, self.spec, (all_leaves, x0, v))


def _data_operator(kind, fns, params, leaves, data, batch_size, mesh, devices) -> Operator:
    view, all_leaves = flat_view(params, leaves)
    for leaf in jax.tree_util.tree_leaves(data):
        check_x64(leaf, "data")
    spec = data_spec(data, batch_size, mesh, devices)
    if spec.mesh is not None:  # parameters replicated on every device of the mesh
        all_leaves = list(jax.device_put(all_leaves, NamedSharding(spec.mesh, PartitionSpec())))
    args = (all_leaves, place_data(data, spec))
    return Operator(_DataMake(kind, tuple(fns), view, spec), args, view.dim, all_leaves[view.indices[0]].dtype)


def _no_data(data, batch_size, mesh, devices):
    if data is None and (batch_size is not None or mesh is not None or devices is not None):
        raise ValueError("batch_size=, mesh= and devices= need data= (the loss then takes (params, batch))")
    return data is None


@dataclasses.dataclass(frozen=True)
class _GradMake:
    loss_fn: Callable
    view: FlatView
    spec: DataSpec | None

    def __call__(self, args):
        all_leaves, data = args
        x0 = self.view.flatten(all_leaves)
        if self.spec is None:
            return jax.grad(lambda y: self.loss_fn(self.view.unflatten(all_leaves, y)))(x0)

        def batch_grad(batch, ops):
            leaves, x = ops
            return jax.grad(lambda y: self.loss_fn(self.view.unflatten(leaves, y), batch))(x)

        return data_mean(batch_grad, data, self.spec, (all_leaves, x0))


@functools.partial(jax.jit, static_argnums=0)
def _run(make, args):
    return make(args)


def gradient(
    loss_fn: Callable, params, *, leaves=None, data=None, batch_size=None, mesh=None, devices=None
) -> jax.Array:
    """The flat gradient ``∇L`` over the chosen ``leaves`` (row-major, in the order given).

    With ``data=`` the loss is ``loss_fn(params, batch)`` (the mean over the batch) and the
    gradient is the exact mean over all samples, streamed in batches of ``batch_size`` and
    split over ``mesh`` (``_data.py``).
    """
    view, all_leaves = flat_view(params, leaves)
    if _no_data(data, batch_size, mesh, devices):
        return _run(_GradMake(loss_fn, view, None), (all_leaves, None))
    op = _data_operator("hessian", (loss_fn,), params, leaves, data, batch_size, mesh, devices)
    return _run(_GradMake(loss_fn, view, op.make.spec), op.args)


@dataclasses.dataclass(frozen=True)
class _HessianMake:
    loss_fn: Callable
    view: FlatView

    def __call__(self, all_leaves):
        x0 = self.view.flatten(all_leaves)

        def f(x):
            return self.loss_fn(self.view.unflatten(all_leaves, x))

        return jax.linearize(jax.grad(f), x0)[1]


@dataclasses.dataclass(frozen=True)
class _GGNMake:
    model_fn: Callable
    output_loss: Callable
    view: FlatView
    residual: bool = False

    def __call__(self, all_leaves):
        x0 = self.view.flatten(all_leaves)

        def f(x):
            return self.model_fn(self.view.unflatten(all_leaves, x))

        z, J = jax.linearize(f, x0)
        Jt = jax.linear_transpose(J, x0)
        H_out = jax.linearize(jax.grad(self.output_loss), z)[1]

        def ggn(v):
            return Jt(H_out(J(v)))[0]

        if not self.residual:
            return ggn
        H = jax.linearize(jax.grad(lambda x: self.output_loss(f(x))), x0)[1]
        return lambda v: H(v) - ggn(v)


_DATA_DOC = """
    With ``data=`` (a pytree, leading axis = samples) the functions take the data as last
    argument (``loss_fn(params, batch)``; ``model_fn(params, batch)``,
    ``output_loss(outputs, batch)``), each returning the *mean* over its batch; products are
    the exact means over all samples, streamed in batches of ``batch_size`` (``lax.scan``,
    a last partial batch weighted by its size) and split over the first axis of ``mesh``
    (a `jax.sharding.Mesh`; or ``devices=``) with one all-reduce per product. See
    ``ufm/curvature/_data.py`` and ``docs/curvature.md`` §3.
"""


def hessian_operator(
    loss_fn: Callable, params, *, leaves=None, data=None, batch_size=None, mesh=None, devices=None
) -> Operator:
    """The Hessian of ``loss_fn`` over the chosen ``leaves`` as a flat `Operator`."""
    if not _no_data(data, batch_size, mesh, devices):
        return _data_operator("hessian", (loss_fn,), params, leaves, data, batch_size, mesh, devices)
    view, all_leaves = flat_view(params, leaves)
    return Operator(_HessianMake(loss_fn, view), all_leaves, view.dim, all_leaves[view.indices[0]].dtype)


def ggn_operator(
    model_fn: Callable,
    output_loss: Callable,
    params,
    *,
    leaves=None,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> Operator:
    """The Gauss–Newton matrix ``Jᵀ∇²ℓ J`` of ``output_loss ∘ model_fn`` as a flat `Operator`."""
    if not _no_data(data, batch_size, mesh, devices):
        return _data_operator("ggn", (model_fn, output_loss), params, leaves, data, batch_size, mesh, devices)
    view, all_leaves = flat_view(params, leaves)
    return Operator(_GGNMake(model_fn, output_loss, view), all_leaves, view.dim, all_leaves[view.indices[0]].dtype)


def residual_operator(
    model_fn: Callable,
    output_loss: Callable,
    params,
    *,
    leaves=None,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> Operator:
    """``H − G`` of ``output_loss ∘ model_fn`` as a flat `Operator`."""
    if not _no_data(data, batch_size, mesh, devices):
        return _data_operator("residual", (model_fn, output_loss), params, leaves, data, batch_size, mesh, devices)
    view, all_leaves = flat_view(params, leaves)
    make = _GGNMake(model_fn, output_loss, view, residual=True)
    return Operator(make, all_leaves, view.dim, all_leaves[view.indices[0]].dtype)


for _f in (hessian_operator, ggn_operator, residual_operator):
    _f.__doc__ += _DATA_DOC
