"""Data as an argument (streamed in batches) and `Operator` ergonomics (issue 11 items 1, 5, 6;
issue 12 item 5). Independent route: the same loss with all data closed over in one array,
its dense ``jax.hessian``, and scipy's ARPACK on the exported `LinearOperator`."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as sla
from jax.flatten_util import ravel_pytree

from ufm import curvature as C

EPS = np.finfo(np.float64).eps


def _problem(N=23, d=4, K=3, seed=0):
    rng = np.random.default_rng(seed)
    data = (jnp.asarray(rng.standard_normal((N, d))), jnp.asarray(rng.integers(0, K, N)))
    params = {"w": jnp.asarray(rng.standard_normal((K, d))), "b": jnp.asarray(0.1 * rng.standard_normal(K))}

    def model(p, batch):
        return jnp.tanh(batch[0] @ p["w"].T + p["b"])

    def out_loss(z, batch):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), batch[1][:, None], axis=1))

    def loss(p, batch):
        return out_loss(model(p, batch), batch)

    return params, data, model, out_loss, loss


@pytest.mark.parametrize(
    "batch_size", [pytest.param(1, marks=pytest.mark.slow), 5, 23, pytest.param(100, marks=pytest.mark.slow)]
)  # 23 = 4·5 + 3: a partial last batch
def test_streamed_products_are_the_exact_means_over_the_data(batch_size):
    params, data, model, out_loss, loss = _problem()
    x0, unravel = ravel_pytree(params)  # the same flat order as the operators (dict keys sorted: b, w)
    H = np.asarray(jax.hessian(lambda x: loss(unravel(x), data))(x0))
    v = np.random.default_rng(1).standard_normal(x0.size)
    op = C.hessian_operator(loss, params, data=data, batch_size=batch_size)
    np.testing.assert_allclose(op.matvec(v), H @ v, rtol=0, atol=1e2 * EPS * np.abs(H).max() * np.abs(v).sum())
    g = C.gradient(loss, params, data=data, batch_size=batch_size)
    g_ref = jax.grad(lambda x: loss(unravel(x), data))(x0)
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e2 * EPS * np.abs(g_ref).max())
    if batch_size == 5:
        G = C.ggn(model, out_loss, params, data=data, batch_size=batch_size)
        G_ref = C.ggn(lambda p: model(p, data), lambda z: out_loss(z, data), params)
        np.testing.assert_allclose(G, G_ref, rtol=0, atol=1e2 * EPS * np.abs(G_ref).max())
        np.testing.assert_allclose(
            C.hessian(loss, params, data=data, batch_size=5), H, rtol=0, atol=1e2 * EPS * np.abs(H).max()
        )


def test_bad_data_arguments_name_the_argument():
    params, data, _, _, loss = _problem()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        C.hessian_operator(loss, params, data=data, batch_size=0)
    with pytest.raises(ValueError, match="leading"):
        C.hessian_operator(loss, params, data=(data[0], data[1][:-2]))
    with pytest.raises(ValueError, match="need data="):
        C.hessian_operator(lambda p: loss(p, data), params, batch_size=4)
    with pytest.raises(TypeError, match="mesh must be"):
        C.hessian_operator(loss, params, data=data, mesh="cpu")
    op = C.hessian_operator(loss, params, data=data)
    with pytest.raises(ValueError, match="cannot be given with an Operator"):
        C.top_eigenpairs(op, k=2, data=data)


def test_operator_matvec_matmat_and_scipy_export_agree_with_the_dense_matrix():
    rng = np.random.default_rng(2)
    Q = np.linalg.qr(rng.standard_normal((60, 60)))[0]
    A = (Q * np.linspace(-1, 3, 60)) @ Q.T
    op = C.Operator.from_matvec(A)
    V = rng.standard_normal((60, 3))
    np.testing.assert_allclose(op.matmat(V), A @ V, atol=1e3 * EPS)
    np.testing.assert_allclose(op.matvec(V[:, 0]), A @ V[:, 0], atol=1e3 * EPS)
    w = sla.eigsh(op.to_scipy(), k=4, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(w), np.linalg.eigvalsh(A)[-4:], atol=1e-10)
    top = C.top_eigenpairs(op, k=5)  # k by keyword, params left out
    np.testing.assert_allclose(top.eigenvalues, np.linalg.eigvalsh(A)[::-1][:5], atol=1e-10)
    with pytest.raises(TypeError, match="needs k"):
        C.top_eigenpairs(op)
    with pytest.raises(ValueError, match="shape"):
        op.matvec(np.ones(3))


def test_float64_input_with_x64_off_warns():
    with jax.enable_x64(False):
        with pytest.warns(UserWarning, match="jax_enable_x64 is off"):
            C.Operator.from_matvec(np.eye(3))
        with pytest.warns(UserWarning, match="params is float64"):
            C.hessian_operator(lambda p: jnp.sum(p**2), np.ones(3))


def test_no_gap_solve_stops_at_its_budget_reports_progress_and_warns():
    P = 300
    Q = np.linalg.qr(np.random.default_rng(3).standard_normal((P, P)))[0]
    A = (Q * np.linspace(1.0, 0.99, P)) @ Q.T  # no gap: tol is out of reach
    seen = []
    with pytest.warns(C.ConvergenceWarning, match="max_products=80"):
        top = C.top_eigenpairs(
            C.Operator.from_matvec(A), k=3, tol=1e-12, max_products=80, callback=seen.append, throw=False
        )
    assert not top.converged and top.info["phases"][0]["products"] <= 80
    assert seen and all(s["phase"] == "lanczos" and s["products"] <= 80 for s in seen)
    X = top.eigenvectors  # the returned residuals are the true ones
    np.testing.assert_allclose(top.residuals, np.linalg.norm(A @ X - X * top.eigenvalues, axis=0), atol=1e-12)
    assert np.all((top.eigenvalues <= 1 + 1e3 * EPS) & (top.eigenvalues >= 0.99 - 1e3 * EPS))


def test_adaptive_default_finds_a_degenerate_group_and_reports_its_phases():
    rng = np.random.default_rng(4)
    P = 200
    Q = np.linalg.qr(rng.standard_normal((P, P)))[0]
    w = np.r_[np.full(6, 3.0), rng.uniform(-1, 1, P - 6)]
    A = (Q * w) @ Q.T
    with warnings.catch_warnings():
        warnings.simplefilter("error", C.ConvergenceWarning)
        top = C.top_eigenpairs(C.Operator.from_matvec(A), k=8)
    np.testing.assert_allclose(top.eigenvalues, np.sort(w)[::-1][:8], atol=1e-10)
    phases = top.info["phases"]
    assert phases[1]["detected"] and len(phases) == 3
    assert top.info["products"] == sum(p["products"] for p in phases) and top.info["wall_s"] > 0
    w[:6] = np.linspace(3.5, 3.0, 6)  # no degenerate group: the check finds nothing, two phases
    plain = C.top_eigenpairs(C.Operator.from_matvec((Q * w) @ Q.T), k=8)
    np.testing.assert_allclose(plain.eigenvalues, np.sort(w)[::-1][:8], atol=1e-10)
    assert [p.get("detected") for p in plain.info["phases"]] == [None, False]


def test_streamed_gradient_moments_equal_the_single_array_ones():
    params, data, model, _, _ = _problem()

    def per_sample(p, batch):
        return -jnp.take_along_axis(jax.nn.log_softmax(model(p, batch)), batch[1][:, None], axis=1)[:, 0]

    ref = C.gradient_moments(lambda p: per_sample(p, data), params)
    got = C.gradient_moments(per_sample, params, data=data, batch_size=5)  # 23 = 4·5 + 3
    for a, b in ((got.per_sample, ref.per_sample), (got.second_moment, ref.second_moment), (got.mean, ref.mean)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e2 * EPS * np.abs(b).max())
