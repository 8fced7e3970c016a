"""Bad input and NaN never slip through a curvature route (issue 21 item 4).

Every route refuses a ``k`` that is not a positive integer <= P with one error naming
``k``; a NaN / infinite loss, gradient or product is reported (a `FloatingPointError`
naming the route, the leaves and what is not finite), never NaN eigenvalues, never zeros;
the collapse metrics name a NaN in their input. Accepted inputs are checked against
``numpy.linalg.eigvalsh`` of the dense matrix (the independent route).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from ufm import curvature as C

DIAG = jnp.arange(1.0, 31.0)  # Hessian of the quadratic below: diag(1..30) over "a", 2·I over "b"


def quadratic(p):
    return 0.5 * jnp.sum(DIAG * p["a"] ** 2) + jnp.sum(p["b"] ** 2)


def log_barrier(p):
    """Finite Hessian everywhere but at b_0 = 1: there the loss is -inf and the gradient NaN / inf."""
    return quadratic(p) + jnp.log(p["b"][0] - 1.0)


PARAMS = {"a": jnp.zeros(30), "b": jnp.ones(8)}  # P = 38; leaves: 0 = "a", 1 = "b"
P = 38


def _routes(loss, params, k, leaves=None):
    """Every route that takes k, as (name, thunk)."""
    return [
        ("spectrum dense", lambda: C.spectrum(loss, params, k=k, leaves=leaves, method="dense")),
        ("spectrum krylov", lambda: C.spectrum(loss, params, k=k, leaves=leaves, method="krylov")),
        ("top_eigenpairs", lambda: C.top_eigenpairs(loss, params, k, leaves=leaves)),
    ]


@pytest.mark.parametrize(
    "k, error, match",
    [
        (0, ValueError, r"k must be >= 1, got 0"),
        (-3, ValueError, r"k must be >= 1"),
        (2.5, TypeError, r"k must be an int"),
        (3.0, TypeError, r"k must be an int"),
        (True, TypeError, r"k must be an int .*bool"),
        ("3", TypeError, r"k must be an int"),
        (P + 1, ValueError, rf"k must be <= the dimension P = {P}, got {P + 1}"),
    ],
)
def test_every_route_refuses_a_bad_k_by_name(k, error, match):
    for name, run in _routes(quadratic, PARAMS, k):
        with pytest.raises(error, match=match):
            run()
            pytest.fail(f"{name} accepted k={k!r}")


def test_numpy_integers_are_ints_and_k_equal_to_P_is_allowed():
    w = np.sort(np.r_[np.arange(1.0, 31.0), np.full(8, 2.0)])[::-1]  # eigvalsh of the dense diagonal
    for name, run in _routes(quadratic, PARAMS, np.int64(4)):
        np.testing.assert_allclose(run().eigenvalues, w[:4], rtol=1e-9, err_msg=name)
    full = C.spectrum(quadratic, PARAMS, k=np.int32(P), method="dense")
    np.testing.assert_allclose(full.eigenvalues, w, rtol=1e-12)


@pytest.mark.parametrize("bad", [0, True, 2.5])
def test_the_count_arguments_of_hessian_trace_and_density_are_checked_by_name(bad):
    error = TypeError if not isinstance(bad, int) or isinstance(bad, bool) else ValueError
    with pytest.raises(error, match="chunk_size"):
        C.hessian(quadratic, PARAMS, chunk_size=bad)
    with pytest.raises(error, match="num_samples"):
        C.trace(quadratic, PARAMS, num_samples=bad)
    with pytest.raises(error, match="num_matvecs"):
        C.spectral_density(quadratic, PARAMS, num_matvecs=bad)


NAN_ROUTES = [
    ("spectrum(method='dense')", lambda loss, p, lv: C.spectrum(loss, p, leaves=lv, method="dense")),
    ("spectrum(method='krylov')", lambda loss, p, lv: C.spectrum(loss, p, k=3, leaves=lv, method="krylov")),
    ("top_eigenpairs", lambda loss, p, lv: C.top_eigenpairs(loss, p, 3, leaves=lv)),
    ("hessian", lambda loss, p, lv: C.hessian(loss, p, lv)),
    ("trace", lambda loss, p, lv: C.trace(loss, p, leaves=lv, num_samples=4)),
    ("spectral_density", lambda loss, p, lv: C.spectral_density(loss, p, leaves=lv, num_matvecs=8)),
]


@pytest.mark.parametrize("route, run", NAN_ROUTES, ids=[r for r, _ in NAN_ROUTES])
def test_a_non_finite_loss_is_reported_with_the_route_and_the_leaves(route, run):
    with pytest.raises(FloatingPointError, match="NaN or infinite") as err:
        run(log_barrier, PARAMS, None)
    msg = str(err.value)
    assert msg.startswith(route + ":"), msg
    assert "the loss is -inf" in msg and "gradient is not finite in leaves [1]" in msg, msg
    with pytest.raises(FloatingPointError, match=r"over leaves=\[1\], P=8"):
        run(log_barrier, PARAMS, [1])


@pytest.mark.parametrize("route, run", NAN_ROUTES, ids=[r for r, _ in NAN_ROUTES])
def test_nan_parameters_are_named_by_leaf(route, run):
    params = {"a": PARAMS["a"].at[3].set(jnp.nan), "b": PARAMS["b"]}

    def loss(p):  # a Hessian that depends on "a", so the NaN reaches every product
        return quadratic(p) + jnp.sum(p["a"] ** 4)

    with pytest.raises(FloatingPointError, match=r"params hold NaN / inf in leaves \[0\]"):
        run(loss, params, None)


def test_krylov_stops_at_the_first_non_finite_product():
    """Before: NaN products gave zeros after the whole budget; now the solve stops at once."""
    A = np.diag(np.arange(1.0, 101.0))
    A[50, 50] = np.inf
    with pytest.raises(FloatingPointError, match=r"top_eigenpairs: .*detected at product 1\b.*from_matvec"):
        C.top_eigenpairs(C.Operator.from_matvec(A), None, 5)
    with pytest.raises(FloatingPointError, match=r"top_eigenpairs: .*dense fallback"):
        C.top_eigenpairs(C.Operator.from_matvec(A[:8, :8] * np.nan), None, 2)  # too small for a basis


def test_a_matrix_source_with_nan_is_refused():
    A = np.eye(5)
    A[1, 2] = np.nan
    with pytest.raises(ValueError, match="matrix source holds 1 NaN"):
        C.spectrum(A)


def test_streamed_losses_report_nan_data_through_the_gradient():
    X = np.ones((6, 3))
    X[4, 1] = np.nan

    def loss(p, batch):
        return jnp.mean((batch @ p["w"]) ** 2)

    with pytest.raises(FloatingPointError, match=r"top_eigenpairs: .*gradient is not finite in leaves \[0\]"):
        C.top_eigenpairs(loss, {"w": jnp.ones(3)}, 1, data=jnp.asarray(X), batch_size=2)


def test_collapse_metrics_name_a_nan_in_their_input():
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
    params = ufm.theory.construct_optimum(spec)
    bad = params._replace(Ws=(params.Ws[0], params.Ws[1].at[0, 0].set(jnp.nan)))
    with pytest.raises(ValueError, match=r"params.Ws\[1\] \(W_2\) holds NaN"):
        ufm.collapse.metrics(spec, bad)
    with pytest.raises(ValueError, match=r"params.H1 holds NaN"):
        ufm.collapse.metrics(spec, params._replace(H1=params.H1.at[1, 1].set(jnp.inf)))
    H = np.ones((4, 6))
    H[2, 3] = np.nan
    labels = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"features\[1\] holds NaN"):
        ufm.collapse.nc_metrics([np.ones((4, 6)), H], labels)
    with pytest.raises(ValueError, match=r"weights\[0\] holds NaN"):
        ufm.collapse.nc_metrics([np.ones((4, 6))], labels, weights=[np.full((3, 4), np.nan)])
