"""The deep UFM as pure functions: parameters, forward pass, loss terms (``docs/theory.md`` §1).

Parameters are a `UFMParams` pytree ``(H1, Ws)``. Flattening for curvature follows
``jax.flatten_util.ravel_pytree`` order, i.e. ``H1`` first, then ``W_1..W_L``, each
row-major (``W.reshape(-1)``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .spec import UFMSpec

Array = jax.Array


class UFMParams(NamedTuple):
    """Free features ``H1`` (d_1 × N) and weights ``Ws = (W_1, ..., W_L)``."""

    H1: Array
    Ws: tuple[Array, ...]


class Activations(NamedTuple):
    """Every layer of one forward pass.

    ``pre[l-1] = H_l`` (l = 1..L), ``post[l-1] = H̃_l = σ̃(H_l)`` (``H̃_1 = H_1``) and
    ``output = Z = W_L H̃_L`` (K × N).
    """

    pre: tuple[Array, ...]
    post: tuple[Array, ...]
    output: Array


def init_params(spec: UFMSpec, seed: int = 0, *, scale: float = 1.0, dtype=None) -> UFMParams:
    """Gaussian initialisation: ``H1 ~ N(0, scale²)``, ``W_l ~ N(0, scale²/d_l)`` (fan-in).

    ``dtype`` defaults to JAX's default float (float64 only when ``jax_enable_x64``).

    Examples:
      >>> import ufm
      >>> p = ufm.init_params(ufm.UFMSpec(num_classes=2, per_class=3, depth=2, width=4), seed=0)
      >>> p.H1.shape, [W.shape for W in p.Ws]             # H_1: d_1 × N, W_l: d_{l+1} × d_l
      ((4, 6), [(4, 4), (2, 4)])
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    keys = jax.random.split(jax.random.PRNGKey(seed), spec.depth + 1)
    H1 = scale * jax.random.normal(keys[0], (spec.widths[0], spec.num_samples), dtype)
    Ws = tuple(
        scale / float(np.sqrt(shape[1])) * jax.random.normal(k, shape, dtype)
        for k, shape in zip(keys[1:], spec.weight_shapes, strict=True)
    )
    return UFMParams(H1, Ws)


def check_params(spec: UFMSpec, params: UFMParams) -> None:
    """Raise a `ValueError` naming the first array whose shape does not fit ``spec``."""
    if not isinstance(params, UFMParams):
        raise TypeError(f"params must be a UFMParams, got {type(params).__name__}")
    expected = (spec.widths[0], spec.num_samples)
    if tuple(params.H1.shape) != expected:
        raise ValueError(f"params.H1 must have shape {expected} for this spec, got {tuple(params.H1.shape)}")
    if len(params.Ws) != spec.depth:
        raise ValueError(f"params.Ws must hold depth={spec.depth} weights, got {len(params.Ws)}")
    for l, (W, shape) in enumerate(zip(params.Ws, spec.weight_shapes, strict=True), start=1):
        if tuple(W.shape) != shape:
            raise ValueError(f"params.Ws[{l - 1}] (W_{l}) must have shape {shape}, got {tuple(W.shape)}")


# ---- activations ----------------------------------------------------------------------
def relu_with_grad0(grad0: float):
    """ReLU whose derivative at exactly 0 is ``grad0`` (``docs/theory.md`` §6).

    ``jax.nn.relu`` uses 0; the collapsed optimum has exact zeros, so the Hessian there
    depends on this choice. The second derivative is 0 everywhere (as for any
    piecewise-linear function under autodiff).
    """

    @jax.custom_jvp
    def relu(x):
        return jnp.maximum(x, 0)

    @relu.defjvp
    def _jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        slope = jnp.where(x > 0, 1.0, jnp.where(x == 0, grad0, 0.0)).astype(x.dtype)
        return relu(x), slope * t

    return relu


def activation_fn(spec: UFMSpec):
    """The elementwise σ of ``spec`` as a function of an array."""
    if spec.activation == "linear":
        return lambda x: x
    if spec.activation == "relu":
        return relu_with_grad0(spec.relu_grad0)
    beta = spec.softplus_beta
    return lambda x: jax.nn.softplus(beta * x) / beta


# ---- forward pass and losses -------------------------------------------------------
def forward(spec: UFMSpec, params: UFMParams) -> Activations:
    """All layers: ``H_{l+1} = W_l σ̃(H_l)``, σ̃ = id on H_1, output ``Z = W_L H̃_L``."""
    sigma = activation_fn(spec)
    pre, post = [params.H1], [params.H1]
    for W in params.Ws[:-1]:
        H = W @ post[-1]
        pre.append(H)
        post.append(sigma(H))
    return Activations(tuple(pre), tuple(post), params.Ws[-1] @ post[-1])


def mse_loss(Z: Array, Y: Array) -> Array:
    """``(1/2N)‖Z − Y‖_F²`` with samples as columns (N = Z.shape[1])."""
    return 0.5 * jnp.sum((Z - Y) ** 2) / Z.shape[1]


def cross_entropy_loss(Z: Array, labels: Array) -> Array:
    """``(1/N) Σ_i −log softmax(z_i)_{y_i}`` with logits as columns (K × N)."""
    logp = jax.nn.log_softmax(Z, axis=0)
    return -jnp.mean(jnp.take_along_axis(logp, labels[None, :], axis=0))


def output_loss(loss: str, Z: Array, labels: Array) -> Array:
    """The data term for integer ``labels`` (N,): MSE against one-hot or cross-entropy."""
    if loss == "mse":
        return mse_loss(Z, jax.nn.one_hot(labels, Z.shape[0], dtype=Z.dtype, axis=0))
    if loss == "ce":
        return cross_entropy_loss(Z, labels)
    raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")


def data_loss(spec: UFMSpec, params: UFMParams) -> Array:
    """The data term Φ (no ridge): MSE ``(1/2N)‖Z − Y‖²`` or mean cross-entropy."""
    Z = forward(spec, params).output
    return output_loss(spec.loss, Z, jnp.asarray(spec.class_index))


def regularizer(spec: UFMSpec, params: UFMParams) -> Array:
    """``Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_H/2)‖H_1‖_F²``."""
    reg = 0.5 * spec.lambda_H * jnp.sum(params.H1**2)
    for lam, W in zip(spec.lambdas, params.Ws, strict=True):
        reg = reg + 0.5 * lam * jnp.sum(W**2)
    return reg


def column_loss(spec: UFMSpec, params: UFMParams, columns=None, *, regularized: bool = True) -> Array:
    """The loss on the columns ``columns`` of ``H_1`` (a mini-batch of samples; None = all): the
    data term over those columns (``docs/theory.md`` §1, its 1/N replaced by 1/|columns|) plus,
    when ``regularized``, the ridge over *all* parameters. The one column-batched UFM loss
    (SGD in `ufm.train`, the alignment and diffusion-map experiments)."""
    if columns is None:
        Z, labels = forward(spec, params).output, jnp.asarray(spec.class_index)
    else:
        Z = forward(spec, UFMParams(params.H1[:, columns], params.Ws)).output
        labels = jnp.asarray(spec.class_index)[columns]
    value = output_loss(spec.loss, Z, labels)
    return value + regularizer(spec, params) if regularized else value


def loss(spec: UFMSpec, params: UFMParams) -> Array:
    """Total loss: data term + ridge on every factor (``docs/theory.md`` §1)."""
    return data_loss(spec, params) + regularizer(spec, params)


@functools.lru_cache(maxsize=64)
def loss_fn(spec: UFMSpec, *, regularized: bool = True):
    """``params -> scalar`` for the curvature tools (data term only if not ``regularized``).

    Cached per (spec, regularized): the same function object comes back, so jitted
    curvature routines keyed on it compile once per spec.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=2, per_class=1, depth=1, width=2)
      >>> p = ufm.init_params(spec, 0)._replace(Ws=(jnp.zeros((2, 2)),))
      >>> float(ufm.model.loss_fn(spec, regularized=False)(p))   # Z = 0: (1/2N)‖Y‖² = 1/2
      0.5
    """
    return functools.partial(loss, spec) if regularized else functools.partial(data_loss, spec)
