"""The class-averaged CE prediction and the exact class-mean + within-class split of a layer block
(``ufm.theory.class_averaged_layer_hessian``, ``ufm.theory.layer_block_split``; docs/real_networks.md §3–§4).

Independent route: the dense block by ``jax.hessian`` of the loss written in this file, the
curvatures by the closed form ``Wᵀ ρ W`` in numpy (not the autodiff of ``ufm.networks``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ufm import theory

EPS = np.finfo(np.float64).eps


def _softmax(Z):
    P = np.exp(Z - Z.max(axis=0))
    return P / P.sum(axis=0)


def _ce(Z, y):
    return -jnp.mean(jax.nn.log_softmax(Z, axis=0)[y, jnp.arange(y.size)])


def test_class_averaged_is_exact_when_features_collapse_but_logits_vary():
    """h_i = μ_{y_i} exactly, logits z_i = W μ_{y_i} + s_i with per-sample offsets s_i (not parameters):
    the block of W is (1/K) Σ_c ρ̄_c ⊗ μ_c μ_cᵀ exactly, the class-mean prediction is not."""
    rng = np.random.default_rng(0)
    K, n, d = 3, 4, 5
    y = np.repeat(np.arange(K), n)
    M = rng.standard_normal((d, K))
    H = M[:, y]
    W = rng.standard_normal((K, d))
    S = 1.5 * rng.standard_normal((K, K * n))
    dense = np.asarray(jax.hessian(lambda w: _ce(w.reshape(K, d) @ H + S, y))(W.reshape(-1)))
    exact = np.linalg.eigvalsh(dense)[::-1]
    Z = W @ H + S
    rho = theory.softmax_curvature(Z)
    # the closed form of ρ_i, independently
    p = _softmax(Z)[:, 0]
    np.testing.assert_allclose(rho[0], np.diag(p) - np.outer(p, p), atol=10 * EPS)
    rho_bar = np.stack([rho[y == c].mean(axis=0) for c in range(K)])
    avg = theory.class_averaged_layer_hessian(rho_bar, M)
    m = avg.eigenvalues.size
    assert m <= K * K and avg.dim == K * d
    np.testing.assert_allclose(avg.eigenvalues, exact[:m], rtol=0, atol=1e3 * EPS * exact[0])
    np.testing.assert_allclose(exact[m:], 0, atol=1e3 * EPS * exact[0])
    # eigenvectors: H v = λ v for the dense block
    V = np.asarray(avg.eigenvectors)
    np.testing.assert_allclose(dense @ V, V * avg.eigenvalues, atol=1e4 * EPS * exact[0])
    # the paper's class-mean prediction (ρ at the class-mean logits) misses here
    zbar = np.stack([Z[:, y == c].mean(axis=1) for c in range(K)], axis=1)
    mean = theory.collapsed_layer_hessian(np.eye(K), M, loss="ce", probs=_softmax(zbar))
    assert np.max(np.abs(mean.eigenvalues[:m] - exact[:m]) / exact[:m]) > 1e-2


def test_split_sums_to_the_dense_block_unbalanced():
    """Two-layer linear CE head, features NOT collapsed, unbalanced classes: the four parts sum to
    the dense block of W_1; class_mean + curvature_spread is the class-averaged prediction."""
    rng = np.random.default_rng(1)
    K, d1, d2 = 3, 4, 4
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1, 0])
    N = y.size
    H = rng.standard_normal((d1, K))[:, y] + 0.4 * rng.standard_normal((d1, N))
    W1, W2 = rng.standard_normal((d2, d1)), rng.standard_normal((K, d2))
    dense = np.asarray(jax.hessian(lambda w: _ce(W2 @ w.reshape(d2, d1) @ H, y))(W1.reshape(-1)))
    P = _softmax(W2 @ W1 @ H)
    C = np.stack([W2.T @ (np.diag(P[:, i]) - np.outer(P[:, i], P[:, i])) @ W2 for i in range(N)])
    M = np.stack([H[:, y == c].mean(axis=1) for c in range(K)], axis=1)
    P0 = _softmax(W2 @ W1 @ M)
    C0 = np.stack([W2.T @ (np.diag(P0[:, c]) - np.outer(P0[:, c], P0[:, c])) @ W2 for c in range(K)])
    split = theory.layer_block_split(C, H, y, mean_curvatures=C0)
    scale = np.abs(dense).max()
    np.testing.assert_allclose(split.total(), dense, rtol=0, atol=1e3 * EPS * scale)
    for part in (split.class_mean, split.curvature_spread, split.feature_covariance, split.joint):
        np.testing.assert_allclose(part, part.T, atol=1e3 * EPS * scale)
    norms = split.norms()
    assert all(v > 1e-3 for k, v in norms.items())  # every part is present in this state
    # class-averaged prediction with the class shares π_c = n_c / N
    Cbar = np.stack([C[y == c].mean(axis=0) for c in range(K)])
    pi = np.bincount(y) / N
    avg = theory.class_averaged_layer_hessian(Cbar, M, weights=pi)
    ref = np.linalg.eigvalsh(split.class_mean + split.curvature_spread)[::-1]
    np.testing.assert_allclose(avg.eigenvalues, ref[: avg.eigenvalues.size], atol=1e3 * EPS * scale)
    np.testing.assert_allclose(ref[avg.eigenvalues.size :], 0, atol=1e3 * EPS * scale)


def test_split_of_a_collapsed_mse_layer_is_all_class_mean():
    rng = np.random.default_rng(2)
    K, d = 3, 4
    y = np.repeat(np.arange(K), 3)
    H = rng.standard_normal((d, K))[:, y]
    A = rng.standard_normal((K, d))
    C = np.broadcast_to(A.T @ A, (y.size, d, d))
    split = theory.layer_block_split(C, H, y)
    norms = split.norms()
    assert norms["class_mean"] == 1.0 or abs(norms["class_mean"] - 1) < 1e-12
    for k in ("curvature_spread", "feature_covariance", "joint", "within_class"):
        assert norms[k] < 1e-12, (k, norms[k])
