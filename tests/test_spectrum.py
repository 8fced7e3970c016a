"""One `Spectrum` from every route (matfree's ``test_decomp/test_consistency.py`` style).

On one collapsed deep-UFM block the closed form (`ufm.theory.layer_hessian_spectrum`), the
dense route and the block-Krylov route of `ufm.curvature.spectrum` must agree in every
field: eigenvalues (descending) with their multiplicities, the eigenspace of every level,
``dim``, the bulk, residuals, and ``Spectrum`` passes through ``jax.tree`` functions.
Tolerances: eigenvalues 1e-8 relative, principal angles 1e-6 rad (as in test_theory.py).
"""

import jax
import numpy as np
import pytest

import ufm
from ufm import curvature, theory
from ufm.spectrum import Spectrum

EIG_RTOL, ANGLE_TOL = 1e-8, 1e-6
CASES = {
    # one level ×K² (MSE, docs/theory.md §4) and three levels 1, K−1, K²−3K+1 (CE, §5)
    "mse": ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=8, lambda_W=(2e-2, 1e-2), lambda_H=2e-2),
    "ce": ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=8, loss="ce", lambda_W=5e-3, lambda_H=5e-3),
}


@pytest.fixture(scope="module", params=list(CASES))
def routes(request):
    spec = CASES[request.param]
    params = theory.construct_optimum(spec, 0)
    f = ufm.model.loss_fn(spec, regularized=False)
    layer = 1
    closed = theory.layer_hessian_spectrum(spec, params, layer, vectors=True)
    m = closed.eigenvalues.size
    dense = curvature.spectrum(f, params, leaves=[layer], method="dense")
    krylov = curvature.spectrum(f, params, leaves=[layer], k=m, method="krylov", block_size=m)
    return spec, closed, dense, krylov


def test_the_three_routes_agree_in_every_field(routes):
    spec, closed, dense, krylov = routes
    K = spec.num_classes
    m = closed.eigenvalues.size
    assert m == (K * K if spec.loss == "mse" else (K - 1) ** 2)
    assert (closed.source, dense.source, krylov.source) == ("closed-form", "dense", "krylov")
    P = int(np.prod(spec.weight_shapes[0]))
    assert closed.dim == dense.dim == krylov.dim == P
    assert dense.eigenvalues.size == P and krylov.eigenvalues.size == m
    scale = closed.eigenvalues[0]
    for s in (closed, dense, krylov):
        assert np.all(np.diff(s.eigenvalues) <= 0)  # descending
        top = s.top(m)
        np.testing.assert_allclose(top.eigenvalues, closed.eigenvalues, rtol=0, atol=EIG_RTOL * scale)
        # levels with multiplicities
        vals, counts = top.levels(rtol=1e-6)
        want_vals, want_counts = closed.levels(rtol=1e-6)
        assert counts.tolist() == want_counts.tolist()
        np.testing.assert_allclose(vals, want_vals, rtol=EIG_RTOL)
        # the eigenspace of every level, as subspaces
        start = 0
        for c in counts:
            sl = slice(start, start + c)
            angles = np.asarray(curvature.principal_angles(closed.eigenvectors[:, sl], top.eigenvectors[:, sl]))
            assert angles.max() < ANGLE_TOL, (s.source, start, angles.max())
            start += c
    # the bulk: the closed form's value fills what the dense route resolves beyond the outliers
    assert closed.bulk_value == 0.0 and closed.bulk_multiplicity == P - m
    np.testing.assert_allclose(dense.eigenvalues[m:], closed.bulk_value, rtol=0, atol=EIG_RTOL * scale)
    np.testing.assert_allclose(
        np.sort(closed.all_eigenvalues())[::-1], dense.eigenvalues, rtol=0, atol=EIG_RTOL * scale
    )
    # residuals measured by both numerical routes
    for s in (dense, krylov):
        assert s.residuals.shape == (s.eigenvalues.size,) and s.residuals.max() < 1e-7 * scale
    assert krylov.converged


def test_from_dense_is_the_dense_route(routes):
    spec, _, dense, _ = routes
    H = np.asarray(
        curvature.hessian(ufm.model.loss_fn(spec, regularized=False), theory.construct_optimum(spec, 0), leaves=[1])
    )
    s = Spectrum.from_dense(H)
    np.testing.assert_array_equal(s.eigenvalues, dense.eigenvalues)
    assert s.dim == dense.dim and s.source == "dense"
    only = Spectrum.from_dense(H, k=3, vectors=False)
    np.testing.assert_allclose(only.eigenvalues, dense.eigenvalues[:3], rtol=1e-12)
    assert only.eigenvectors is None and only.residuals is None


def test_spectrum_is_a_pytree(routes):
    _, closed, dense, _ = routes
    doubled = jax.tree.map(lambda x: 2 * x, dense)
    np.testing.assert_array_equal(doubled.eigenvalues, 2 * dense.eigenvalues)
    assert doubled.dim == dense.dim and doubled.source == "dense"
    leaves, treedef = jax.tree.flatten(closed)
    assert jax.tree.unflatten(treedef, leaves).eigenvalues is closed.eigenvalues


def test_spectrum_rejects_bad_arguments():
    f = ufm.model.loss_fn(ufm.UFMSpec(num_classes=2, per_class=1, depth=1, width=2))
    params = ufm.init_params(ufm.UFMSpec(num_classes=2, per_class=1, depth=1, width=2), 0)
    with pytest.raises(ValueError, match="method"):
        curvature.spectrum(f, params, method="qr")
    with pytest.raises(ValueError, match="needs k"):
        curvature.spectrum(f, params, method="krylov")
    with pytest.raises(ValueError, match="which"):
        curvature.spectrum(f, params, which="smallest")
    with pytest.raises(ValueError, match="square"):
        Spectrum.from_dense(np.zeros((2, 3)))
    for k, error in ((0, ValueError), (3, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="k must be"):  # nothing to keep, more than P, not an int
            Spectrum.from_dense(np.eye(2), k=k)


def test_result_types_pass_through_jax_tree_and_compare_field_by_field():
    """The Gauss–Newton split from the closed form and from autodiff is one type: map over both."""
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
    params = theory.construct_optimum(spec, 0)
    closed = theory.gn_decomposition(spec, params, 1, vectors=False)
    model = lambda p: ufm.model.forward(spec, p).output  # noqa: E731
    measured = curvature.papyan_decomposition(model, params, spec.class_index, loss="mse", leaves=[1]).spectra()
    assert type(closed) is type(measured)
    for name in ("G_class", "G_cross"):  # ranks K and K(K−1), one common value (docs/theory.md §4)
        c, m = getattr(closed, name), getattr(measured, name)
        np.testing.assert_allclose(m.top(c.eigenvalues.size).eigenvalues, c.eigenvalues, rtol=EIG_RTOL)
        assert np.all(np.abs(m.eigenvalues[c.eigenvalues.size :]) < EIG_RTOL * c.eigenvalues[0])
    doubled = jax.tree.map(lambda x: 2 * x, measured)  # a NamedTuple of Spectrum pytrees
    np.testing.assert_array_equal(doubled.G_cross.eigenvalues, 2 * measured.G_cross.eigenvalues)
    sol = theory.dnc_solution(spec)
    assert jax.tree.map(lambda x: 2 * x, sol).scale == 2 * sol.scale and jax.tree.structure(sol).num_leaves > 5
    w = theory.weight_spectrum(spec, params)[0]
    assert jax.tree.map(np.shape, w).values == (4,)


def test_dnc_solution_levels_per_layer_against_dense_autodiff():
    """DNCSolution's layer outliers use each layer's own λ_l, and its full-Hessian levels are
    eigenvalues of the dense full data Hessian with their multiplicities (docs/theory.md §4)."""
    spec = ufm.UFMSpec(num_classes=2, per_class=1, depth=2, width=3, lambda_H=2e-2, lambda_W=(1e-2, 3e-2))
    params = theory.construct_optimum(spec, 0)
    sol = theory.dnc_solution(spec)
    f = ufm.model.loss_fn(spec, regularized=False)
    K = spec.num_classes
    for l in (1, 2):
        dense = curvature.spectrum(f, params, leaves=[l], method="dense").eigenvalues
        np.testing.assert_allclose(dense[: K * K], sol.layer_outliers[l - 1][0], rtol=EIG_RTOL)
        assert sol.layer_multiplicities[l - 1] == (K * K,)
    assert sol.layer_outliers[0][0] != pytest.approx(sol.layer_outliers[1][0])  # unequal λ: unequal outliers
    full = curvature.spectrum(f, params, leaves=[1, 2], method="dense").eigenvalues
    levels = sol.full_levels
    for values, mult in (
        (levels.symmetric, levels.symmetric_multiplicity),
        (levels.antisymmetric, levels.antisymmetric_multiplicity),
    ):
        for v in values:
            assert np.sum(np.abs(full - v) <= EIG_RTOL * np.abs(full).max()) >= mult, (v, full)
    assert full[0] == pytest.approx(max(levels.symmetric[0], levels.antisymmetric[0]), rel=EIG_RTOL)


def test_spectrum_streams_data_like_the_closed_over_loss():
    """``spectrum(loss_fn(params, batch), data=, batch_size=)`` (37 samples in batches of 8,
    a partial last batch) equals the spectrum of the closed-over full-data loss, both routes."""
    import jax.numpy as jnp

    X = jax.random.normal(jax.random.PRNGKey(0), (37, 5))
    y = jnp.sin(X[:, 0])
    loss = lambda w, b: 0.5 * jnp.mean((jnp.tanh(b[0] @ w) - b[1]) ** 2)  # noqa: E731
    w = jax.random.normal(jax.random.PRNGKey(1), (5,))
    full = curvature.spectrum(lambda w: loss(w, (X, y)), w)
    streamed = curvature.spectrum(loss, w, data=(X, y), batch_size=8)
    krylov = curvature.spectrum(loss, w, data=(X, y), batch_size=8, method="krylov", k=2)
    np.testing.assert_allclose(streamed.eigenvalues, full.eigenvalues, rtol=0, atol=1e-14)
    np.testing.assert_allclose(krylov.eigenvalues, full.eigenvalues[:2], rtol=0, atol=1e-12)
