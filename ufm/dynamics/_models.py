"""The models of ``DYNAMICS.md`` §D2 and the exact closed forms of the 1-layer model.

Every loss here is ``loss(params, batch, ridge)`` with ``batch = (Y, labels)`` (samples as
rows, ``Y`` n × d) and is the *mean* over the batch of the per-sample loss ``ℓ`` of §D2, the
ridge ``(β/2)‖θ‖²`` included once (it is part of ℓ, so also of every per-sample gradient).
Use ``functools.partial(loss, ridge=β)`` as the ``loss_fn(params, batch)`` of
`ufm.dynamics.record`.

* 1-layer softmax regression: ``params = (x^1, ..., x^k)``, a tuple of k vectors in R^d, so
  ``leaves=[c]`` is the class block c of the curvature tools;
  ``ℓ = −Σ_c y_c x^c·Y + log Σ_c exp(x^c·Y) + (β/2)‖θ‖²``.
  Closed forms (``docs/alignment.md`` §2), θ flattened class-major (x^1 first, row-major
  ``X = [x^1; ...; x^k]``): ``∇_{x^c} ℓ = (π_c − y_c) Y + β x^c`` with ``π = softmax(X Y)``,
  ``∇²ℓ = (diag π − ππᵀ) ⊗ YYᵀ + β I`` (`softmax_hessian`, `softmax_per_sample_grads`).
* 2-layer ReLU–sigmoid net: ``params = TwoLayerParams(W, v)``, ``W`` (K × d), ``v`` (K,);
  ``ŷ = sigmoid(v·ReLU(W Y))``, binary cross-entropy ``softplus(s) − y s`` with
  ``s = v·ReLU(WY)``, plus ``(β/2)(‖W‖² + ‖v‖²)``. ReLU is ``jax.nn.relu`` (σ'(0) = 0).

Initialisation "uninformative, norm O(1)" (§D2): every block ``N(0, I/dim(block))``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TwoLayerParams",
    "init_softmax",
    "softmax_loss",
    "softmax_hessian",
    "softmax_per_sample_grads",
    "init_two_layer",
    "two_layer_hidden",
    "two_layer_logits",
    "two_layer_loss",
]


def _gaussian_blocks(seed, shapes, dtype):
    # numpy, not jax.random: no compilation per shape (as ufm.networks.init_network)
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s) / np.sqrt(np.prod(s)), dtype) for s in shapes]


# ---- 1-layer softmax regression ----------------------------------------------------------
def init_softmax(seed: int, num_classes: int, dim: int, dtype=None) -> tuple:
    """``(x^1, ..., x^k)`` with ``x^c ~ N(0, I_d/d)`` (``numpy.random.default_rng(seed)``)."""
    dtype = dtype or jnp.zeros(()).dtype
    return tuple(_gaussian_blocks(seed, [(dim,)] * num_classes, dtype))


def _probs(params, Y):
    X = jnp.stack(params)  # k × d
    return jax.nn.softmax(Y @ X.T, axis=1), X  # π: n × k


def softmax_loss(params, batch, ridge: float = 0.0):
    """Mean cross-entropy of softmax regression on ``batch = (Y, labels)`` plus ``(β/2)‖θ‖²``."""
    Y, labels = batch
    X = jnp.stack(params)
    logits = Y @ X.T
    ce = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return jnp.mean(ce) + 0.5 * ridge * jnp.sum(X**2)


def softmax_hessian(params, Y, ridge: float = 0.0) -> jax.Array:
    """Exact Hessian ``(1/M) Σ_i (diag π_i − π_iπ_iᵀ) ⊗ Y_iY_iᵀ + β I`` (kd × kd, class-major).

    The labels do not enter. Block (c, c') is ``Yᵀ diag(δ_cc' π_c − π_c π_c') Y / M``; built
    as ``blockdiag_c(Yᵀ diag π_c Y) − FᵀF`` with ``F_i = π_i ⊗ Y_i`` (two matrix products).
    """
    P, X = _probs(params, jnp.asarray(Y))
    M, d = Y.shape
    k = X.shape[0]
    diag = jnp.einsum("ic,ia,ib->cab", P, Y, Y) / M  # k × d × d
    F = (P[:, :, None] * Y[:, None, :]).reshape(M, k * d)
    H = -(F.T @ F) / M
    H = H.reshape(k, d, k, d).at[jnp.arange(k), :, jnp.arange(k), :].add(diag).reshape(k * d, k * d)
    return H + ridge * jnp.eye(k * d, dtype=H.dtype)


def softmax_per_sample_grads(params, Y, labels, ridge: float = 0.0) -> jax.Array:
    """Per-sample gradients ``∇ℓ_i`` (M × kd, class-major): block c is ``(π_ic − y_ic) Y_i + β x^c``."""
    P, X = _probs(params, jnp.asarray(Y))
    R = P - jax.nn.one_hot(labels, X.shape[0], dtype=P.dtype)  # M × k
    return (R[:, :, None] * Y[:, None, :]).reshape(Y.shape[0], -1) + ridge * X.reshape(1, -1)


# ---- 2-layer ReLU–sigmoid network -----------------------------------------------------------
class TwoLayerParams(NamedTuple):
    """First layer ``W`` (K × d, leaf 0) and second layer ``v`` (K,, leaf 1)."""

    W: jax.Array
    v: jax.Array


def init_two_layer(seed: int, width: int, dim: int, dtype=None) -> TwoLayerParams:
    """Rows of ``W`` ~ ``N(0, I_d/d)`` (each hidden unit's weight has norm ≈ 1), ``v ~ N(0, I_K/K)``."""
    dtype = dtype or jnp.zeros(()).dtype
    W, v = _gaussian_blocks(seed, [(width, dim), (width,)], dtype)
    return TwoLayerParams(W * np.sqrt(width), v)


def two_layer_hidden(params: TwoLayerParams, Y) -> jax.Array:
    """``ReLU(W Y)`` for each sample (n × K)."""
    return jax.nn.relu(Y @ params.W.T)


def two_layer_logits(params: TwoLayerParams, Y) -> jax.Array:
    """``s = v·ReLU(WY)`` per sample (n,); the prediction is ``sigmoid(s)``."""
    return two_layer_hidden(params, Y) @ params.v


def two_layer_loss(params: TwoLayerParams, batch, ridge: float = 0.0):
    """Mean binary cross-entropy ``softplus(s) − y s`` plus ``(β/2)(‖W‖² + ‖v‖²)``."""
    Y, labels = batch
    s = two_layer_logits(params, Y)
    bce = jnp.mean(jax.nn.softplus(s) - labels.astype(s.dtype) * s)
    return bce + 0.5 * ridge * (jnp.sum(params.W**2) + jnp.sum(params.v**2))
