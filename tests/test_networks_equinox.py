"""Bring your own JAX model: Equinox backbone + head through `ufm.networks.analyze_model`.

Reference: the dense Hessian of the *user's* loss (``jax.hessian`` over ``eqx.tree_at`` surgery
written here), and the same head passed as arrays to `analyze_features`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")  # the `test` extra

from jax.flatten_util import ravel_pytree  # noqa: E402

from ufm import networks as nw  # noqa: E402

EPS = np.finfo(np.float64).eps
K = 3


def _model(bias):
    kb, kh = jax.random.split(jax.random.PRNGKey(0))
    backbone = eqx.nn.MLP(6, 5, 8, 1, key=kb)
    head = eqx.nn.MLP(5, K, 5, 1, activation=jax.nn.relu, use_bias=bias, use_final_bias=bias, key=kh)
    f64 = lambda m: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64) if eqx.is_array(x) else x, m)  # noqa: E731
    return f64(backbone), f64(head)


features = lambda m, X: jax.vmap(m)(X)  # noqa: E731
apply = lambda m, H: jax.vmap(m)(H)  # noqa: E731


def _layer_weight(m, l):
    return m.layers[l].weight


def _ce(Z, y):
    return -jnp.mean(jax.nn.log_softmax(Z, axis=1)[jnp.arange(y.size), y])


# 27 s without biases (measured, load 5): slow; the bias variant (15 s) stays in the default suite
@pytest.mark.parametrize("bias", [pytest.param(False, marks=pytest.mark.slow), True])
def test_equinox_head_layers_against_dense(bias):
    data = nw.gaussian_mixture(K, 4, 6, noise=0.0, seed=0, dtype=np.float64)  # collapsed: exact predictions
    backbone, head = _model(bias)
    rep = nw.analyze_model(features, backbone, apply, head, data.X, data.labels, activation="relu", loss="ce")
    H = features(backbone, jnp.asarray(data.X))
    y = jnp.asarray(data.labels)
    for l, c in enumerate(rep.layers):
        W = head.layers[l].weight

        def f(w, l=l, W=W):
            return _ce(apply(eqx.tree_at(functools.partial(_layer_weight, l=l), head, w.reshape(W.shape)), H), y)

        ref = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(W.reshape(-1))))[::-1]
        np.testing.assert_allclose(c.measured, ref[: c.measured.size], rtol=0, atol=1e4 * EPS * ref[0])
        m = c.predicted_outliers
        np.testing.assert_allclose(c.predicted[:m], ref[:m], rtol=0, atol=1e4 * EPS * ref[0])
        assert c.max_rel_error < 1e-8 and c.class_averaged_max_rel_error < 1e-8
    # the same head as arrays gives the same report
    ws = [head.layers[i].weight for i in range(2)]
    bs = [head.layers[i].bias for i in range(2)] if bias else []
    ref = nw.analyze_features(np.asarray(H).T, data.labels, ws, bs, activation="relu", loss="ce")
    for a, b in zip(rep.layers, ref.layers, strict=True):
        np.testing.assert_allclose(a.measured, b.measured, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(a.predicted, b.predicted, rtol=1e-10, atol=1e-14)


def test_equinox_wrong_activation_is_refused():
    data = nw.gaussian_mixture(K, 4, 6, noise=0.3, seed=1, dtype=np.float64)
    backbone, head = _model(True)
    with pytest.raises(ValueError, match="not the stack of linear layers"):
        nw.analyze_model(features, backbone, apply, head, data.X, data.labels, activation="linear", loss="mse")


@pytest.mark.slow
def test_equinox_whole_network():
    data = nw.gaussian_mixture(K, 4, 6, noise=0.3, seed=1, dtype=np.float64)
    backbone, head = _model(True)
    rep = nw.analyze_model(
        features,
        backbone,
        apply,
        head,
        data.X,
        data.labels,
        activation="relu",
        loss="mse",
        whole_network=True,
        network_k=6,
    )
    arrays = eqx.filter((backbone, head), eqx.is_array)
    flat, unravel = ravel_pytree(arrays)
    static = eqx.filter((backbone, head), eqx.is_array, inverse=True)

    def f(x):
        b, h = eqx.combine(unravel(x), static)
        return 0.5 * jnp.mean(
            jnp.sum((apply(h, features(b, jnp.asarray(data.X))) - jax.nn.one_hot(data.labels, K)) ** 2, 1)
        )

    ref = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(flat)))[::-1]
    net = rep.network
    np.testing.assert_allclose(net.eigenvalues, ref[:6], rtol=1e-8, atol=1e-10 * ref[0])
    assert net.num_params == flat.size and net.inheritance.shape == (6, 3) and not net.resolved
    np.testing.assert_allclose(net.inheritance.sum(axis=1), 1.0, atol=1e3 * EPS)
