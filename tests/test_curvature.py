"""ufm.curvature core: products, dense blocks, top eigenpairs, subspace tools.

Independent routes: central finite differences of the gradient, ``jax.hessian`` of the
raveled loss, ``numpy.linalg.eigh`` of the dense matrix, explicit Jacobians.
Tolerances are ``eps`` (float64) times a stated factor.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _curvature_cases import (
    collapsed_ufm,
    mlp_problem,
    mlp_reference_hessian,
    ufm_functions,
)  # tests/ is on sys.path under pytest
from jax.flatten_util import ravel_pytree

from ufm import curvature as C
from ufm.spectrum import group_levels

EPS = np.finfo(np.float64).eps


def _leaf_slices(params):
    out, start = [], 0
    for leaf in jax.tree_util.tree_leaves(params):
        out.append(np.arange(start, start + leaf.size))
        start += leaf.size
    return out


def _sin_max_angle(U, V):
    return float(np.sin(np.max(np.asarray(C.principal_angles(U, V)))))


# ---- products -------------------------------------------------------------------------
def test_hvp_matches_central_differences_of_the_gradient():
    params, _, _, loss_fn, _ = mlp_problem()
    rng = np.random.default_rng(7)
    v = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), params)
    h = 2e-5

    def shift(s):
        return jax.tree_util.tree_map(lambda p, t: p + s * h * t, params, v)

    grad = jax.jit(jax.grad(loss_fn))
    fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * h), grad(shift(1)), grad(shift(-1)))
    Hv = ravel_pytree(jax.jit(C.hvp, static_argnums=0)(loss_fn, params, v))[0]
    err = np.linalg.norm(Hv - ravel_pytree(fd)[0]) / np.linalg.norm(Hv)
    assert err < 1e-7, f"HVP vs central differences: relative error {err:.2e}"  # O(h²) + O(eps/h)
    lin = ravel_pytree(jax.jit(lambda p, t: C.linearized_hvp(loss_fn, p)(t))(params, v))[0]
    np.testing.assert_allclose(lin, Hv, rtol=0, atol=1e3 * EPS * np.abs(Hv).max())


def test_flat_operator_follows_the_given_leaf_order():
    params, _, _, loss_fn, _ = mlp_problem()
    H = mlp_reference_hessian()
    sl = _leaf_slices(params)
    order = [4, 0, 2]
    idx = np.concatenate([sl[i] for i in order])
    op = C.hessian_operator(loss_fn, params, leaves=order)
    assert op.dim == idx.size
    v = np.random.default_rng(0).standard_normal(op.dim)
    np.testing.assert_allclose(
        op.matvec(v), H[np.ix_(idx, idx)] @ v, rtol=0, atol=1e3 * EPS * np.abs(H).max() * np.abs(v).sum()
    )


# ---- dense ------------------------------------------------------------------------------
def test_dense_hessian_matches_jax_hessian_full_blocks_and_cross_blocks():
    params, _, _, loss_fn, _ = mlp_problem()
    H_ref = mlp_reference_hessian()
    atol = 1e3 * EPS * np.abs(H_ref).max()
    sl = _leaf_slices(params)
    np.testing.assert_allclose(C.hessian(loss_fn, params, chunk_size=37), H_ref, rtol=0, atol=atol)
    order = [2, 0]  # a block of two leaves in a chosen order
    idx = np.concatenate([sl[i] for i in order])
    np.testing.assert_allclose(C.hessian(loss_fn, params, order), H_ref[np.ix_(idx, idx)], rtol=0, atol=atol)
    cross = C.hessian_block(loss_fn, params, [2], [0, 1])
    np.testing.assert_allclose(cross, H_ref[np.ix_(sl[2], np.concatenate([sl[0], sl[1]]))], rtol=0, atol=atol)


def test_dense_hessian_refuses_matrices_over_max_bytes():
    params, _, _, loss_fn, _ = mlp_problem()
    with pytest.raises(ValueError, match="top_eigenpairs"):
        C.hessian(loss_fn, params, max_bytes=1000)


@pytest.mark.parametrize(
    "leaves, error",
    [(5, TypeError), ([0, 0], ValueError), ([9], ValueError), ([], ValueError), (["a"], TypeError)],
)
def test_bad_leaves_are_rejected(leaves, error):
    params, _, _, loss_fn, _ = mlp_problem()
    with pytest.raises(error, match="leaves"):
        C.hessian_operator(loss_fn, params, leaves=leaves)


def test_ggn_and_residual_against_explicit_jacobians():
    params, model_fn, output_loss, loss_fn, _ = mlp_problem()
    x0, unravel = ravel_pytree(params)
    J = np.asarray(jax.jit(jax.jacobian(lambda x: model_fn(unravel(x))))(x0)).reshape(-1, x0.size)  # (N K) × P
    Z = jax.jit(model_fn)(params)
    H_out = np.asarray(jax.jit(jax.hessian(lambda z: output_loss(z.reshape(Z.shape))))(Z.reshape(-1)))
    G_ref = J.T @ H_out @ J
    split = C.hessian_split(model_fn, output_loss, params)
    H_ref = mlp_reference_hessian()
    atol = 1e3 * EPS * np.abs(H_ref).max()
    np.testing.assert_allclose(split.ggn, G_ref, rtol=0, atol=atol)
    np.testing.assert_allclose(split.hessian, H_ref, rtol=0, atol=atol)
    np.testing.assert_allclose(split.residual, H_ref - G_ref, rtol=0, atol=atol)
    assert np.abs(split.residual).max() > 1e3 * atol  # a non-linear model: H ≠ G


def test_ggn_equals_hessian_for_a_linear_layer_block_of_the_ufm():
    spec, params = collapsed_ufm()
    data_loss, _, model_fn, output_loss = ufm_functions()
    for layer in (1, spec.depth):
        H = C.hessian(data_loss, params, [layer])
        G = C.ggn(model_fn, output_loss, params, [layer])
        np.testing.assert_allclose(G, H, rtol=0, atol=1e3 * EPS * np.abs(H).max())
    # ...but not over two layers: the cross blocks carry the residual (Z − Y ≠ 0, docs/theory.md §4)
    R = C.materialize(C.residual_operator(model_fn, output_loss, params, leaves=[1, 2]))
    assert np.abs(R).max() > 1e-3 * np.abs(H).max()


# ---- top eigenpairs -----------------------------------------------------------------------
def _check_against_eigh(spec_out, A, k, which="LA", rel=1e-8, res=1e-6):
    w, V = np.linalg.eigh(np.asarray(A))
    order = np.argsort(-w if which == "LA" else -np.abs(w))[:k]
    w, V = w[order], V[:, order]
    got = spec_out.eigenvalues if which == "LA" else spec_out.eigenvalues[np.argsort(-np.abs(spec_out.eigenvalues))]
    scale = np.abs(w).max()
    err = np.abs(np.sort(got) - np.sort(w)).max() / scale
    assert err < rel, f"top-{k} eigenvalues: max relative error {err:.2e}"
    assert spec_out.residuals.max() < res * max(scale, 1.0), f"residuals up to {spec_out.residuals.max():.2e}"
    X = spec_out.eigenvectors
    np.testing.assert_allclose(X.T @ X, np.eye(k), rtol=0, atol=1e3 * EPS * A.shape[0])
    # independent residual of the returned pairs against the dense matrix
    dense_res = np.linalg.norm(np.asarray(A) @ X - X * spec_out.eigenvalues, axis=0)
    np.testing.assert_allclose(spec_out.residuals, dense_res, rtol=0, atol=1e-10 * scale)
    return w, V


@pytest.mark.parametrize(
    "sizes", [(12, 24, 24, 6), pytest.param((16, 40, 40, 10), marks=pytest.mark.slow)], ids=["P=1062", "P=2730"]
)
def test_top_eigenpairs_random_mlp_matches_eigh_and_eigenvectors(sizes):
    params, _, _, loss_fn, _ = mlp_problem(sizes=sizes)
    H = C.hessian(loss_fn, params)
    k = 10
    top = C.top_eigenpairs(loss_fn, params, k, seed=1)
    assert top.converged and top.dim == H.shape[0] and top.source == "lanczos"
    w, V = _check_against_eigh(top, H, k)
    gaps = -np.diff(w)
    for j in np.flatnonzero(gaps[: k - 1] > 1e-3 * np.abs(w).max())[:3]:  # well-separated pairs
        assert _sin_max_angle(top.eigenvectors[:, : j + 1], V[:, : j + 1]) < 1e-6


def test_top_eigenpairs_resolves_the_k2_degenerate_layer_outliers_of_a_collapsed_ufm():
    spec, params = collapsed_ufm()
    K = spec.num_classes
    data_loss = ufm_functions()[0]
    for layer in (2,):
        H = C.hessian(data_loss, params, [layer])
        top = C.top_eigenpairs(data_loss, params, K * K + 5, leaves=[layer])
        w, V = _check_against_eigh(top, H, K * K + 5)
        values, mult = group_levels(top.eigenvalues[: K * K + 1], rtol=1e-6)
        assert mult[0] == K * K, f"layer {layer}: top multiplicity {mult[0]} != K²={K * K} ({values})"
        assert _sin_max_angle(top.eigenvectors[:, : K * K], V[:, : K * K]) < 1e-7
        assert C.count_outliers(top.eigenvalues) == K * K


def test_top_eigenpairs_full_ufm_and_no_recompilation():
    spec, params = collapsed_ufm()
    loss = ufm_functions()[1]  # regularised, all leaves (H_1 and W_1..W_L)
    H = C.hessian(loss, params)
    k = 30
    top = C.top_eigenpairs(loss, params, k)
    w, _ = _check_against_eigh(top, H, k)
    # multiplicities agree level by level with the dense eigenvalues
    got_levels, got_mult = group_levels(top.eigenvalues, rtol=1e-7)
    ref_levels, ref_mult = group_levels(w, rtol=1e-7)
    np.testing.assert_array_equal(got_mult[:-1], ref_mult[: len(got_mult) - 1])
    from ufm.curvature.eigensolver import _block_krylov

    size = _block_krylov._cache_size()
    C.top_eigenpairs(loss, params, k, seed=3)
    assert _block_krylov._cache_size() == size, "a second solve with the same loss_fn recompiled"


def test_top_eigenpairs_on_an_operator_with_a_degenerate_group():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    w = np.concatenate([np.full(7, 5.0), [4.0, 3.5], rng.uniform(-1, 1, 291)])
    A = (Q * w) @ Q.T
    top = C.top_eigenpairs(C.Operator.from_matvec(A), None, 9, oversample=6)
    _check_against_eigh(top, A, 9)
    assert group_levels(top.eigenvalues)[1][0] == 7
    B = (Q * -w) @ Q.T  # largest magnitude = the most negative
    lm = C.top_eigenpairs(C.Operator.from_matvec(B), None, 9, oversample=6, which="LM")
    _check_against_eigh(lm, B, 9, which="LM")
    with pytest.raises(ValueError, match="k must be"):
        C.top_eigenpairs(C.Operator.from_matvec(A), None, 301)
    with pytest.raises(ValueError, match="params=None"):
        C.top_eigenpairs(C.Operator.from_matvec(A), {"a": 1.0}, 3)


@pytest.mark.parametrize("block_size", [1, 3])
def test_thick_restart_lanczos_with_small_blocks(block_size):
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.standard_normal((400, 400)))[0]
    w = np.sort(rng.standard_normal(400))[::-1] + np.r_[np.linspace(3, 2, 6), np.zeros(394)]
    A = (Q * w) @ Q.T
    top = C.top_eigenpairs(C.Operator.from_matvec(A), None, 6, block_size=block_size)
    assert top.converged and top.info["block_size"] == block_size
    _check_against_eigh(top, A, 6)


def test_small_operator_falls_back_to_dense():
    A = np.diag(np.arange(6.0))
    top = C.top_eigenpairs(C.Operator.from_matvec(A), None, 3)
    np.testing.assert_allclose(top.eigenvalues, [5.0, 4.0, 3.0], atol=1e3 * EPS)
    assert top.info["method"].startswith("dense")


# ---- subspace -----------------------------------------------------------------------------
def test_principal_angles_and_overlaps_of_known_subspaces():
    rng = np.random.default_rng(0)
    E = np.linalg.qr(rng.standard_normal((50, 6)))[0]
    angles = np.array([1e-9, 0.3, np.pi / 2])
    U = E[:, :3]
    V = E[:, :3] * np.cos(angles) + E[:, 3:] * np.sin(angles)
    R = np.linalg.qr(rng.standard_normal((3, 3)))[0]  # bases are arbitrary within the span
    got = np.asarray(C.principal_angles(U @ R, V))
    np.testing.assert_allclose(got, angles, rtol=1e-6, atol=1e3 * EPS)
    np.testing.assert_allclose(C.projector_overlap(U, V), np.mean(np.cos(angles) ** 2), atol=1e3 * EPS)
    g = U[:, 0] + 2 * E[:, 5]
    np.testing.assert_allclose(C.gradient_fraction(g, U @ R), 1 / 5, atol=1e3 * EPS)


def test_alignment_is_one_exactly_for_eigenvectors():
    A = np.diag([3.0, 1.0])
    assert abs(float(C.alignment(A, np.array([0.0, 2.0]))) - 1) < 1e3 * EPS
    v = np.array([1.0, 1.0])  # (vᵀAv)²/(‖v‖²‖Av‖²) = 16 / (2·10)
    np.testing.assert_allclose(C.alignment(lambda x: A @ x, v), 0.8, atol=1e3 * EPS)


def test_count_outliers_gap_rule():
    assert C.count_outliers([10, 9.5, 9, 1.1, 1.0, 0.9]) == 3
    assert C.count_outliers([5.0] * 4 + [1e-17, -1e-17, 0.0]) == 4
    assert C.count_outliers([1.0, 0.9, 0.8, 0.7]) == 0  # no gap of 3×
