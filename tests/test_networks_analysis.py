"""ufm.networks analysis: head-as-deep-UFM predictions vs independent dense autodiff.

Independent route everywhere: ``jax.hessian`` over ``ravel_pytree`` written in this file
(not ``ufm.curvature``), ``numpy.linalg.eigh``, and exactly collapsed features obtained
from a noise-free Gaussian mixture (every sample of a class is the same input, so every
head layer is exactly collapsed and the collapsed-point formulas are exact).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufm import networks as nw

EPS = np.finfo(np.float64).eps
K = 3


def _setup(loss="mse", activation="linear", noise=0.0, depth=2, seed=0):
    data = nw.gaussian_mixture(K, 4, 6, noise=noise, seed=seed, dtype=np.float64)
    spec = nw.NetworkSpec(
        input_shape=(6,),
        num_classes=K,
        hidden=(8,),
        width=4,
        depth=depth,
        loss=loss,
        activation=activation,
        lambda_W=1e-2,
    )
    params = nw.init_network(spec, seed, dtype=jnp.float64)
    return spec, params, data


def _dense_layer_block(spec, params, data, layer):
    """Data Hessian of W_layer through the WHOLE network (backbone not frozen), by jax.hessian."""
    W = params.head[layer - 1]

    def f(w):
        head = list(params.head)
        head[layer - 1] = w.reshape(W.shape)
        p = nw.NetworkParams(params.backbone, tuple(head), params.head_biases)
        return nw.network_loss(spec, p, data.X, data.labels, regularized=False)

    return np.asarray(jax.hessian(f)(W.reshape(-1)))


def _angles_ok(U, V, tol):
    s = np.linalg.svd(U.T @ V, compute_uv=False)
    assert np.all(s > 1 - tol), f"principal cosines {s}"


@pytest.mark.parametrize(
    "loss,activation,layer", [("mse", "linear", 1), ("mse", "linear", 2), ("ce", "linear", 1), ("mse", "relu", 1)]
)
def test_prediction_exact_at_collapsed_features(loss, activation, layer):
    spec, params, data = _setup(loss, activation)
    H1 = nw.backbone_features(spec, params, data.X)
    pred = nw.predicted_layer_spectrum(spec, params, H1, data.labels, layer)
    Hd = _dense_layer_block(spec, params, data, layer)
    vals, vecs = np.linalg.eigh(Hd)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    n = int(np.sum(vals > 1e-10 * vals[0]))
    assert n <= K * K  # K² (MSE); CE at a generic collapsed point: up to K(K−1), (K−1)² only at an ETF
    scale = vals[0]
    np.testing.assert_allclose(pred.eigenvalues[:n], vals[:n], rtol=0, atol=1e4 * EPS * scale)
    np.testing.assert_allclose(pred.eigenvalues[n:], 0, atol=1e4 * EPS * scale)
    _angles_ok(np.asarray(pred.eigenvectors)[:, :n], vecs[:, :n], 1e-8)


def test_compare_layer_at_collapse():
    spec, params, data = _setup("mse")
    H1 = nw.backbone_features(spec, params, data.X)
    for layer in (1, 2):
        c = nw.compare_layer(spec, params, H1, data.labels, layer)
        k = K * K
        assert c.expected == k and c.num_params == params.head[layer - 1].size
        assert c.num_outliers == k and c.gap > 1e6
        assert c.max_rel_error < 1e-8
        assert c.overlap > 1 - 1e-8 and c.alignment_min > 1 - 1e-8
        # linear MSE: the data gradient A^T R ⊗ M lies in the outlier space (docs/theory.md §4)
        assert c.gradient_fraction > 1 - 1e-8
        json.dumps(c.to_dict())


def test_prediction_error_grows_with_within_class_spread():
    """Not collapsed: the prediction misses the Σ_W part, by an amount that shrinks with the noise."""
    errs = []
    for noise in (0.3, 0.01):
        spec, params, data = _setup("mse", noise=noise)
        H1 = nw.backbone_features(spec, params, data.X)
        errs.append(nw.compare_layer(spec, params, H1, data.labels, 1).max_rel_error)
    assert errs[1] < errs[0] and errs[1] < 0.05


@pytest.mark.slow  # 14 s; tests/test_networks_whole.py checks the whole network against dense autodiff
def test_network_spectrum_and_inheritance_against_dense():
    spec, params, data = _setup("mse", noise=0.5, depth=2)
    flat, unravel = ravel_pytree(params)
    f = lambda x: nw.network_loss(spec, unravel(x), data.X, data.labels, regularized=False)  # noqa: E731
    vals, vecs = np.linalg.eigh(np.asarray(jax.hessian(f)(flat)))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    net = nw.network_spectrum(spec, params, data, k=6, density=False)
    np.testing.assert_allclose(net.eigenvalues, vals[:6], rtol=1e-8, atol=1e-10 * vals[0])
    assert 0 <= net.num_outliers <= 6 and net.num_params == flat.size
    assert net.inheritance.shape == (6, 3)
    # mass per block from the dense eigenvectors; ravel_pytree order = tree_leaves order
    sizes = [x.size for x in jax.tree_util.tree_leaves(params)]
    bounds = np.cumsum([0, *sizes])
    head = nw.head_leaf_indices(spec)
    for j in range(6):
        v = vecs[:, j] ** 2
        blocks = [v[bounds[i] : bounds[i + 1]].sum() for i in range(len(sizes))]
        expected = [sum(b for i, b in enumerate(blocks) if i not in head)] + [blocks[i] for i in head]
        np.testing.assert_allclose(net.inheritance[j], expected, atol=1e-6)
    np.testing.assert_allclose(net.inheritance.sum(axis=1), 1.0, atol=1e3 * EPS)


def test_run_real_quick_smoke():
    report, history = nw.run_real(
        "gmm",
        "mlp",
        "mse",
        quick=True,
        per_class=6,
        steps=40,
        learning_rate=0.01,
        test_per_class=5,
        hidden=(16,),
        width=10,
        depth=2,
        whole_network=False,
    )
    d = report.to_dict()
    json.dumps(d)
    json.dumps(history)
    assert len(d["layers"]) == 2 and d["network"] is None and history["step"][-1] == 40
    assert "W_2" in nw.format_table(report)


@pytest.mark.slow  # 7 s; the table with a network row is also printed by test_run_real_quick_smoke
def test_format_table_with_network():
    spec, params, data = _setup("mse", noise=0.5, depth=2)
    report = nw.analyze(spec, params, data, data, network_k=6, density=True)
    assert report.network.density.size and report.network.density_grid.size
    table = nw.format_table(report)
    assert "whole network" in table and "W_2" in table
    json.dumps(report.to_dict())
