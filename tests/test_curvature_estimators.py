"""ufm.curvature estimators and decompositions: Hutchinson trace, SLQ density, Papyan's
split of the GGN, per-sample gradient moments — against dense float64 matrices,
algebraic identities and the closed forms of docs/theory.md §4 (with γ read off the trained Z)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _curvature_cases import collapsed_ufm, mlp_problem, ufm_functions  # tests/ is on sys.path under pytest

from ufm import curvature as C
from ufm.spectrum import group_levels

EPS = np.finfo(np.float64).eps


def _rank(A, rtol=1e-8):
    w = np.linalg.eigvalsh(np.asarray(A))
    return int(np.sum(np.abs(w) > rtol * np.abs(w).max()))


# ---- Hutchinson -------------------------------------------------------------------------
def test_trace_is_within_three_standard_errors_of_the_dense_trace():
    params, _, _, loss_fn, _ = mlp_problem()
    exact = float(np.trace(C.hessian(loss_fn, params)))
    est = C.trace(loss_fn, params, num_samples=200, seed=1)
    assert est.stderr > 0 and est.samples.shape == (200,)
    assert abs(est.value - exact) < 3 * est.stderr, f"{est.value} ± {est.stderr} vs {exact}"


def test_trace_of_a_diagonal_operator_is_exact():
    d = np.linspace(-1.0, 3.0, 50)  # Rademacher probes: zᵀ diag(d) z = Σ d exactly
    est = C.trace(C.Operator.from_matvec(np.diag(d)), num_samples=4)
    np.testing.assert_allclose(est.value, d.sum(), atol=1e3 * EPS)
    assert est.stderr < 1e3 * EPS


# ---- SLQ --------------------------------------------------------------------------------
def test_slq_density_integrates_to_one_and_matches_the_dense_histogram():
    params, _, _, loss_fn, _ = mlp_problem()
    w = np.linalg.eigvalsh(np.asarray(C.hessian(loss_fn, params)))
    d = C.spectral_density(loss_fn, params, num_matvecs=60, num_samples=10, seed=0)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, atol=1e3 * EPS)
    np.testing.assert_allclose(np.trapezoid(d.density, d.grid), 1.0, atol=1e-6)
    # the exact eigenvalues smoothed by the same Gaussian (an independent route)
    ref = np.exp(-0.5 * ((d.grid[:, None] - w[None, :]) / d.sigma) ** 2).sum(1) / (
        w.size * d.sigma * np.sqrt(2 * np.pi)
    )
    l1 = np.trapezoid(np.abs(ref - d.density), d.grid)
    assert l1 < 0.1, f"L1 distance SLQ vs dense density {l1:.3f}"
    # Gauss quadrature reproduces the first moment: P Σ_j w_j θ_j = zᵀHz (Hutchinson, same probes)
    hutch = C.trace(loss_fn, params, num_samples=10, seed=0)
    np.testing.assert_allclose(w.size * (d.weights * d.nodes).sum(1).mean(), hutch.value, rtol=1e-10)
    log = C.spectral_density(loss_fn, params, num_matvecs=60, num_samples=10, seed=0, log=True)
    np.testing.assert_allclose(np.trapezoid(log.density, log.grid), 1.0, atol=1e-6)


def test_slq_at_full_depth_recovers_every_eigenvalue():
    rng = np.random.default_rng(1)
    eig = np.sort(rng.uniform(-2, 5, 30))
    Q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    d = C.spectral_density(C.Operator.from_matvec((Q * eig) @ Q.T), num_matvecs=30, num_samples=2)
    for nodes in d.nodes:
        np.testing.assert_allclose(np.sort(nodes), eig, atol=1e-8)


def test_slq_survives_an_early_invariant_subspace():
    # two distinct eigenvalues: the Krylov space is exhausted after 2 steps (breakdown)
    A = np.diag(np.r_[np.full(10, 2.0), np.zeros(30)])
    d = C.spectral_density(C.Operator.from_matvec(A), num_matvecs=8, num_samples=3)
    assert np.all(np.isfinite(d.density))
    mass_at_2 = (d.weights * (np.abs(d.nodes - 2) < 1e-8)).sum(1)
    np.testing.assert_allclose(d.weights.sum(1), 1.0, atol=1e3 * EPS)
    assert np.all((mass_at_2 > 0) & (mass_at_2 < 1))


# ---- Papyan decomposition ------------------------------------------------------------------
def test_papyan_parts_sum_to_the_ggn_for_cross_entropy():
    params, model_fn, output_loss, _, labels = mlp_problem()
    parts = C.papyan_decomposition(model_fn, params, labels, loss="ce", sample_axis=0, leaves=[4, 5])
    G = C.ggn(model_fn, output_loss, params, [4, 5])
    np.testing.assert_allclose(parts.ggn, G, rtol=0, atol=1e3 * EPS * np.abs(G).max())
    assert np.abs(parts.within).max() > 1e-3 * np.abs(G).max()  # random data: no collapse


def test_papyan_split_at_neural_collapse_matches_math_section_4():
    spec, params = collapsed_ufm()
    data_loss, _, model_fn, output_loss = ufm_functions()
    K, layer = spec.num_classes, 2
    parts = C.papyan_decomposition(model_fn, params, spec.class_index, loss="mse", leaves=[layer])
    G = np.asarray(C.ggn(model_fn, output_loss, params, [layer]))
    scale = np.abs(G).max()
    np.testing.assert_allclose(parts.ggn, G, rtol=0, atol=1e3 * EPS * scale)
    # docs/theory.md §4: G_class rank K, G_cross rank K(K−1), G_within = 0, one common eigenvalue
    assert (_rank(parts.class_), _rank(parts.cross)) == (K, K * (K - 1))
    assert np.abs(parts.within).max() < 1e-8 * scale
    outlier = np.linalg.eigvalsh(np.asarray(C.hessian(data_loss, params, [layer])))[-1]
    for M, r in ((parts.class_, K), (parts.cross, K * (K - 1))):
        np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(M))[-r:], outlier, rtol=1e-7)


# ---- gradients ---------------------------------------------------------------------------
def _ufm_per_sample_loss(spec, model_fn):
    Y = jnp.asarray(spec.targets)
    return lambda p: 0.5 * jnp.sum((model_fn(p) - Y) ** 2, axis=0)  # mean over samples = data loss


def test_gradient_moments_against_per_sample_autodiff():
    spec, params = collapsed_ufm()
    data_loss, _, model_fn, _ = ufm_functions()
    per_sample = _ufm_per_sample_loss(spec, model_fn)
    gm = C.gradient_moments(per_sample, params, [3])
    g_total = np.asarray(jax.grad(data_loss)(params).Ws[2]).ravel()
    np.testing.assert_allclose(gm.mean, g_total, rtol=0, atol=1e3 * EPS * np.abs(g_total).max())
    g5 = np.asarray(jax.grad(lambda p: per_sample(p)[5])(params).Ws[2]).ravel()
    np.testing.assert_allclose(gm.per_sample[5], g5, rtol=0, atol=1e3 * EPS * np.abs(g5).max())
    np.testing.assert_allclose(gm.covariance, gm.second_moment - np.outer(gm.mean, gm.mean), atol=1e3 * EPS)


def test_gradient_structure_at_neural_collapse_matches_math_section_4():
    spec, params = collapsed_ufm()
    data_loss, _, model_fn, _ = ufm_functions()
    K, layer = spec.num_classes, 2
    Z = np.asarray(model_fn(params))
    gamma = Z[spec.targets == 1].mean()  # Z* = γY at the optimum (docs/theory.md §3)
    assert np.abs(Z - gamma * spec.targets).max() < 1e-6
    lam = spec.lambdas[layer - 1]
    gm = C.gradient_moments(_ufm_per_sample_loss(spec, model_fn), params, [layer])
    # per-sample second moment: rank K at γ(1−γ)λ_l; centred covariance: rank K−1, same value
    for M, r in ((gm.second_moment, K), (gm.covariance, K - 1)):
        w = np.linalg.eigvalsh(np.asarray(M))
        assert _rank(M) == r
        np.testing.assert_allclose(w[-r:], gamma * (1 - gamma) * lam, rtol=1e-6)
    # the data gradient lies in the K²-dim outlier space of the layer Hessian
    top = C.top_eigenpairs(data_loss, params, K * K + 5, leaves=[layer])
    assert group_levels(top.eigenvalues)[1][0] == K * K
    np.testing.assert_allclose(C.gradient_fraction(gm.mean, top.eigenvectors[:, : K * K]), 1.0, atol=1e-8)
    assert C.gradient_fraction(gm.mean, top.eigenvectors[:, K * K :]) < 1e-8


def test_papyan_rejects_bad_input():
    params, model_fn, _, _, labels = mlp_problem()
    with pytest.raises(ValueError, match="loss"):
        C.papyan_decomposition(model_fn, params, labels, loss="hinge", sample_axis=0)
    with pytest.raises(ValueError, match="labels"):
        C.papyan_decomposition(model_fn, params, labels[:-1], loss="ce", sample_axis=0)
