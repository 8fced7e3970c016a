"""Shared small problems for the curvature tests (float64; conftest enables x64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import ufm


def mlp_params(sizes, seed=0):
    """A tanh MLP as a list of {"w", "b"} dicts (a pytree with several leaf shapes)."""
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(n)), "b": jnp.asarray(0.1 * rng.standard_normal(m))}
        for n, m in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_forward(params, X):
    h = X
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"].T + layer["b"])
    return h @ params[-1]["w"].T + params[-1]["b"]


@functools.cache
def mlp_problem(sizes=(12, 24, 24, 6), num_samples=64, seed=0):
    """(params, model_fn, output_loss, loss_fn, labels): cross-entropy on random data.

    Cached, so every test reuses the same function objects (and their compilations).
    """
    rng = np.random.default_rng(100 + seed)
    X = jnp.asarray(rng.standard_normal((num_samples, sizes[0])))
    labels = jnp.asarray(rng.integers(0, sizes[-1], num_samples))
    params = mlp_params(sizes, seed)

    def model_fn(p):
        return mlp_forward(p, X)  # (N, K)

    def output_loss(Z):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(Z, axis=1), labels[:, None], axis=1))

    def loss_fn(p):
        return output_loss(model_fn(p))

    return params, model_fn, output_loss, loss_fn, np.asarray(labels)


@functools.cache
def mlp_reference_hessian(sizes=(12, 24, 24, 6), num_samples=64, seed=0):
    """``jax.hessian`` of the raveled `mlp_problem` loss (P × P numpy), computed once."""
    params, _, _, loss_fn, _ = mlp_problem(sizes, num_samples, seed)
    x0, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda x: loss_fn(unravel(x))))(x0))


@functools.cache
def collapsed_ufm():
    """The default spec trained to ‖∇L‖ < 1e-9: (spec, params) near deep neural collapse."""
    spec = ufm.UFMSpec()
    result = ufm.train(spec, ufm.init_params(spec, 0))
    if not result.converged:
        raise RuntimeError("the default UFM did not converge; the curvature tests need a collapsed point")
    return spec, result.params


@functools.cache
def ufm_functions():
    """Cached closures of the collapsed UFM: (data_loss, loss, model_fn, output_loss)."""
    spec, _ = collapsed_ufm()
    labels = jnp.asarray(spec.class_index)
    return (
        ufm.model.loss_fn(spec, regularized=False),
        ufm.model.loss_fn(spec),
        lambda p: ufm.model.forward(spec, p).output,
        lambda Z: ufm.model.output_loss(spec.loss, Z, labels),
    )
