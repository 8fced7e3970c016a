"""Foundation: spec validation, losses vs finite differences, NC metrics, training to DNC."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import ufm
from ufm import TrainingDiverged, collapse, model

EPS = np.finfo(np.float64).eps


# ---- spec ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(per_class=0), "per_class"),
        (dict(depth=0), "depth"),
        (dict(width=3), "width"),
        (dict(width=(16, 16)), "width"),
        (dict(activation="tanh"), "activation"),
        (dict(loss="hinge"), "loss"),
        (dict(lambda_H=0.0), "lambda_H"),
        (dict(lambda_W=-1e-3), "lambda_W"),
        (dict(lambda_W=(1e-3, 1e-3)), "lambda_W"),
        (dict(lambda_W=float("nan")), "lambda_W"),
        (dict(relu_grad0=2.0), "relu_grad0"),
        (dict(softplus_beta=0), "softplus_beta"),
    ],
)
def test_spec_rejects_bad_fields_by_name(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ufm.UFMSpec(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(num_classes=2.0), dict(width=[16, 16, 16]), dict(lambda_H="1e-3")])
def test_spec_rejects_bad_types(kwargs):
    with pytest.raises(TypeError):
        ufm.UFMSpec(**kwargs)


def test_spec_derived_shapes():
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=3, width=(5, 6, 7), lambda_W=(1e-3, 2e-3, 3e-3))
    assert spec.num_samples == 6
    assert spec.weight_shapes == ((6, 5), (7, 6), (3, 7))
    assert spec.lambdas == (1e-3, 2e-3, 3e-3)
    np.testing.assert_array_equal(spec.class_index, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(spec.targets, np.kron(np.eye(3), np.ones((1, 2))))
    params = ufm.init_params(spec, seed=1)
    assert params.H1.shape == (5, 6) and [W.shape for W in params.Ws] == list(spec.weight_shapes)
    assert spec.num_params == sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_check_params_names_the_array():
    spec = ufm.UFMSpec()
    params = ufm.init_params(spec, 0)
    bad = params._replace(Ws=(params.Ws[0], params.Ws[1][:, :3], params.Ws[2]))
    with pytest.raises(ValueError, match=r"W_2"):
        ufm.train(spec, bad, steps=1)


# ---- losses --------------------------------------------------------------------------
def test_mse_matches_definition():
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4, lambda_W=(0.1, 0.2), lambda_H=0.3)
    p = ufm.init_params(spec, 3)
    Z = np.asarray(p.Ws[1]) @ np.asarray(p.Ws[0]) @ np.asarray(p.H1)
    expected = (
        np.sum((Z - spec.targets) ** 2) / (2 * spec.num_samples)
        + 0.05 * np.sum(np.asarray(p.Ws[0]) ** 2)
        + 0.1 * np.sum(np.asarray(p.Ws[1]) ** 2)
        + 0.15 * np.sum(np.asarray(p.H1) ** 2)
    )
    np.testing.assert_allclose(model.loss(spec, p), expected, rtol=1e-13)


def test_cross_entropy_matches_definition():
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=1, width=4, loss="ce")
    p = ufm.init_params(spec, 0)
    Z = np.asarray(p.Ws[0]) @ np.asarray(p.H1)
    logp = Z - np.log(np.exp(Z).sum(axis=0))
    expected = -np.mean(logp[spec.class_index, np.arange(spec.num_samples)])
    np.testing.assert_allclose(model.data_loss(spec, p), expected, rtol=1e-13)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["linear", "relu", "softplus"])
def test_gradient_matches_finite_differences(loss, activation):
    spec = ufm.UFMSpec(
        num_classes=3,
        per_class=2,
        depth=3,
        width=5,
        loss=loss,
        activation=activation,
        lambda_W=(1e-2, 2e-2, 3e-2),
        lambda_H=5e-3,
    )
    p = ufm.init_params(spec, 7)
    v = ufm.init_params(spec, 8)
    f = model.loss_fn(spec)
    g = jax.grad(f)(p)
    directional = sum(
        jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(v), strict=True)
    )
    h = 1e-5
    shift = lambda t: jax.tree_util.tree_map(lambda a, b: a + t * b, p, v)  # noqa: E731
    fd = (f(shift(h)) - f(shift(-h))) / (2 * h)
    np.testing.assert_allclose(directional, fd, rtol=1e-7)


def test_relu_grad0_convention():
    for g0 in (0.0, 0.5, 1.0):
        relu = model.relu_with_grad0(g0)
        assert jax.grad(relu)(0.0) == g0
        assert jax.grad(relu)(1.0) == 1.0 and jax.grad(relu)(-1.0) == 0.0
        assert jax.grad(jax.grad(relu))(0.3) == 0.0


def test_float32_stays_float32():
    spec = ufm.UFMSpec()
    p = ufm.init_params(spec, 0, dtype=jnp.float32)
    assert model.loss(spec, p).dtype == jnp.float32
    assert jax.jit(model.loss_fn(spec))(p).dtype == jnp.float32


# ---- collapse metrics ----------------------------------------------------------------
def _collapsed_features(K=4, n=3, d=7, seed=0, simplex=False):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, K)))
    M = Q * 2.5
    if simplex:
        M = M @ (np.eye(K) - np.ones((K, K)) / K)
    return np.kron(M, np.ones((1, n))), np.repeat(np.arange(K), n), M


def test_nc_metrics_vanish_on_collapse():
    H, labels, M = _collapsed_features()
    W = 0.7 * M.T  # self-dual classifier
    m = collapse.nc_metrics([H], labels, weights=[W], predictions=labels)
    tol = 100 * EPS
    for name in ("nc1", "nc1_uncentred", "of_distance", "nc3", "duality", "nc4"):
        assert abs(getattr(m, name)[0]) < tol, (name, getattr(m, name))
    Hs, labels, Ms = _collapsed_features(simplex=True)
    m = collapse.nc_metrics([Hs], labels, weights=[Ms.T], geometry="etf")
    for name in ("nc1", "etf_distance", "equinorm", "equiangularity", "nc3", "duality"):
        assert abs(getattr(m, name)[0]) < tol, (name, getattr(m, name))


def test_nc_metrics_positive_off_collapse():
    rng = np.random.default_rng(1)
    H = rng.standard_normal((7, 12))
    labels = np.repeat(np.arange(4), 3)
    m = collapse.nc_metrics([H], labels, weights=[rng.standard_normal((4, 7))], predictions=(labels + 1) % 4)
    for name in ("nc1", "nc1_uncentred", "of_distance", "etf_distance", "equinorm", "equiangularity", "nc3", "duality"):
        assert getattr(m, name)[0] > 1e-2, (name, getattr(m, name))
    assert m.nc4[0] > 0


def test_nc1_is_stable_near_collapse():
    """A pinv without an explicit rank turns noise directions into huge/negative NC1."""
    H, labels, _ = _collapsed_features(d=20)
    noise = 1e-9 * np.random.default_rng(2).standard_normal(H.shape)
    m = collapse.nc_metrics([H + noise], labels)
    assert 0 <= m.nc1[0] < 1e-15


def test_class_means_rejects_missing_class():
    with pytest.raises(ValueError, match="every class"):
        collapse.class_means(np.ones((2, 3)), np.array([0, 0, 2]), num_classes=3)


# ---- training --------------------------------------------------------------------------
def _sigma_dnc(spec):
    """σ_l from docs/theory.md §3 via an independent route: brentq on the scale equation, largest root."""
    K, n, L = spec.num_classes, spec.per_class, spec.depth
    b = K ** (L + 1) * n * spec.lambda_H * np.prod(spec.lambdas)
    f = lambda g: g ** (L - 1) * (1 - g) ** (L + 1) - b  # noqa: E731
    peak = (L - 1) / (2 * L)  # argmax of g^(L-1)(1-g)^(L+1)
    gamma = scipy.optimize.brentq(f, peak, 1.0, xtol=1e-15, rtol=4 * EPS)
    return np.sqrt(gamma * (1 - gamma) / (K * np.array(spec.lambdas)))


def test_training_reaches_deep_neural_collapse():
    spec = ufm.UFMSpec()
    result = ufm.train(spec, ufm.init_params(spec, seed=0), steps=50_000, log_every=5_000)
    assert result.converged and result.history["grad_norm"][-1] < 1e-9
    nc = collapse.metrics(spec, result.params)
    assert np.all(np.abs(nc.nc1) < 1e-8), nc.nc1
    sigma = _sigma_dnc(spec)
    for l, W in enumerate(result.params.Ws):
        s = np.linalg.svd(np.asarray(W), compute_uv=False)
        K = spec.num_classes
        assert np.all(s[K:] < 1e-6 * s[0]), s  # exactly K non-zero singular values
        np.testing.assert_allclose(s[:K], sigma[l], rtol=1e-7)


def test_training_is_deterministic_and_records_history():
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
    a = ufm.train(spec, ufm.init_params(spec, 4), steps=300, log_every=100)
    b = ufm.train(spec, ufm.init_params(spec, 4), steps=300, log_every=100)
    np.testing.assert_array_equal(a.params.H1, b.params.H1)
    assert list(a.history["step"]) == [0, 100, 200, 300]
    assert a.history["nc1"].shape == (4, 3)
    assert np.all(np.diff(a.history["loss"]) <= 0)  # line search: monotone


def test_second_train_call_does_not_recompile():
    from ufm.dynamics._trajectory import _segment as _run_chunk  # train's compiled loop is record's segment

    spec = ufm.UFMSpec(num_classes=2, per_class=2, depth=2, width=3)
    ufm.train(spec, ufm.init_params(spec, 0), steps=20, log_every=10)
    size = _run_chunk._cache_size()
    ufm.train(spec, ufm.init_params(spec, 1), steps=30, log_every=10)
    assert _run_chunk._cache_size() == size


def test_sgd_minibatches_and_any_optax_optimizer():
    spec = ufm.UFMSpec(num_classes=3, per_class=4, depth=2, width=6, lambda_W=1e-2, lambda_H=1e-2)
    p0 = ufm.init_params(spec, 0)
    r = ufm.train(spec, p0, steps=2000, optimizer=optax.sgd(0.1), batch_size=6, log_every=500)
    assert r.history["loss"][-1] < 0.5 * r.history["loss"][0]
    r = ufm.train(spec, p0, steps=2000, optimizer=optax.adam(1e-2), log_every=1000)
    assert r.history["loss"][-1] < 0.5 * r.history["loss"][0]


def test_divergence_names_the_step():
    spec = ufm.UFMSpec()
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*step size"):
        ufm.train(spec, ufm.init_params(spec, 0), steps=1000, optimizer=optax.sgd(1e3), log_every=100)


def test_train_rejects_bad_arguments():
    spec = ufm.UFMSpec()
    p = ufm.init_params(spec, 0)
    with pytest.raises(ValueError, match="steps"):
        ufm.train(spec, p, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        ufm.train(spec, p, batch_size=10_000)
