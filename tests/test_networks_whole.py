"""The whole network past K² (issue 22 item 2): default k, streamed products, masses, the head's prediction.

Independent routes: ``jax.hessian`` over ``ravel_pytree`` written here, ``numpy.linalg.eigh``,
and Cauchy interlacing (the head block is a principal submatrix of the network's Hessian).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufm import networks as nw

K = 3


def _setup(noise, loss="mse"):
    data = nw.gaussian_mixture(K, 4, 6, noise=noise, seed=0, dtype=np.float64)
    spec = nw.NetworkSpec(input_shape=(6,), num_classes=K, hidden=(8,), width=4, depth=2, loss=loss, lambda_W=1e-2)
    return spec, nw.init_network(spec, 0, dtype=jnp.float64), data


def _dense(spec, params, data):
    flat, unravel = ravel_pytree(params)
    f = lambda x: nw.network_loss(spec, unravel(x), data.X, data.labels, regularized=False)  # noqa: E731
    with jax.enable_x64(True):
        vals, vecs = np.linalg.eigh(np.asarray(jax.hessian(f)(flat)))
    return vals[::-1], vecs[:, ::-1]


@pytest.mark.slow  # ~15 s on 2 quiet cores (Krylov compile)
def test_streamed_default_k_past_the_expected_outliers():
    spec, params, data = _setup(0.5)
    vals, vecs = _dense(spec, params, data)
    with jax.enable_x64(True):
        net = nw.network_spectrum(spec, params, data, batch_size=5, density=False)  # 12 samples: 5 + 5 + 2
    k = K * K + K
    assert net.eigenvalues.size == k and net.resolved and net.converged and net.batch_size == 5
    np.testing.assert_allclose(net.eigenvalues, vals[:k], rtol=1e-7, atol=1e-9 * vals[0])
    # masses: the mean of the inheritance rows over the outliers (or the top `expected`)
    over = net.masses["over"]
    assert over == (net.num_outliers or K * K)
    np.testing.assert_allclose(
        [net.masses["backbone"], net.masses["W_1"], net.masses["W_2"]], net.inheritance[:over].mean(axis=0), atol=1e-12
    )
    # the backbone mass from the dense eigenvectors: everything outside W_1, W_2 and the head biases (none)
    sizes = [x.size for x in jax.tree_util.tree_leaves(params)]
    head = nw.head_leaf_indices(spec)
    bounds = np.cumsum([0, *sizes])
    back = [np.sum(vecs[bounds[i] : bounds[i + 1], :over] ** 2, axis=0) for i in range(len(sizes)) if i not in head]
    np.testing.assert_allclose(net.masses["backbone"], np.sum(back, axis=0).mean(), atol=1e-6)


@pytest.mark.slow  # ~15 s on 2 quiet cores
def test_network_above_the_head_prediction_at_collapse():
    """Collapsed features: the head's full prediction is exact, and the network's top eigenvalues
    interlace above it (λ_i(network) ≥ λ_i(head block))."""
    spec, params, data = _setup(0.0)
    with jax.enable_x64(True):
        rep = nw.analyze(spec, params, data, density=False)
    f, net = rep.head_full, rep.network
    assert f.max_rel_error < 1e-8
    r = net.ratio_to_head
    assert r.size == min(f.predicted_outliers, net.eigenvalues.size)
    assert np.all(r >= 1 - 1e-8), r
    vals, _ = _dense(spec, params, data)
    np.testing.assert_allclose(net.eigenvalues[: r.size] / r, f.predicted[: r.size], rtol=1e-12)
    np.testing.assert_allclose(net.eigenvalues, vals[: net.eigenvalues.size], rtol=1e-7, atol=1e-9 * vals[0])
    d = rep.to_dict()["network"]
    for key in ("eigenvalues", "num_outliers", "converged", "masses", "ratio_to_head"):
        assert key in d, key
