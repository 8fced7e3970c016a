"""The head's full Hessian (issue 22 item 1): every head parameter jointly, cross-layer blocks included.

References, independent of ufm: the dense ``jax.hessian`` of the loss written out in tests (``_head_loss``) over
the flat (W_1..W_L, b_1..b_L), ``numpy.linalg.eigvalsh``. On exactly collapsed features the
closed form at the class means (docs/theory.md §4.8) must equal it to rounding; with
within-class spread it must not, and its error grows with the spread.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_networks_saved import K, _head, _head_loss, _save  # tests/ is on sys.path under pytest

from ufm import cli
from ufm import networks as nw

EPS = np.finfo(np.float64).eps


def _dense_full(H1, y, Ws, bs, activation, loss):
    shapes = [W.shape for W in Ws] + [b.shape for b in bs]
    sizes = [int(np.prod(s)) for s in shapes]

    def f(x):  # the loss of test_networks_saved over the flat (W_1..W_L, b_1..b_L)
        parts = jnp.split(x, np.cumsum(sizes)[:-1])
        ws = [p.reshape(s) for p, s in zip(parts[: len(Ws)], shapes, strict=False)]
        return _head_loss(ws, parts[len(Ws) :], H1, y, activation, loss)

    x = jnp.concatenate([jnp.asarray(a).reshape(-1) for a in [*Ws, *bs]])
    with jax.enable_x64(True):
        return np.linalg.eigvalsh(np.asarray(jax.hessian(f)(jnp.asarray(x, jnp.float64))))[::-1]


_QUICK = {("linear", "mse", False), ("relu", "ce", True), ("linear", "ce", True), ("relu", "mse", False)}


@pytest.mark.parametrize(
    "activation, loss, bias",
    [
        pytest.param(a, lo, b, marks=() if (a, lo, b) in _QUICK else pytest.mark.slow)
        for a in ("linear", "relu")
        for lo in ("mse", "ce")
        for b in (False, True)
    ],
)
def test_full_head_exact_at_collapse(activation, loss, bias):
    H1, y, Ws, bs = _head(seed=2, bias=bias)
    rep = nw.analyze_features(H1, y, Ws, bs, activation=activation, loss=loss)
    f = rep.head_full
    ref = _dense_full(H1, y, Ws, bs, activation, loss)
    m = f.predicted_outliers
    assert f.num_params == ref.size and f.source == "dense" and f.converged
    scale = abs(ref[0])
    np.testing.assert_allclose(f.measured[:m], ref[:m], rtol=0, atol=1e3 * EPS * scale)
    np.testing.assert_allclose(f.predicted[:m], ref[:m], rtol=0, atol=1e3 * EPS * scale)
    assert f.max_rel_error < 1e-8 and f.holds
    assert 0 < m <= 2 * nw.expected_outliers(nw.NetworkSpec(input_shape=(1,), num_classes=K, loss=loss))


def test_full_head_error_grows_with_within_class_spread():
    errs = []
    for noise in (1e-3, 1e-2, 1e-1):
        H1, y, Ws, bs = _head(seed=3)
        H1 = H1 + noise * np.random.default_rng(7).standard_normal(H1.shape)
        f = nw.analyze_features(H1, y, Ws).head_full
        ref = _dense_full(H1, y, Ws, bs, "linear", "mse")
        np.testing.assert_allclose(f.measured[:9], ref[:9], rtol=1e-10)  # the measurement is exact
        errs.append(f.max_rel_error)
    assert errs[0] < errs[1] < errs[2] and errs[0] > 1e-8, errs


@pytest.mark.slow  # 15 s; the dense route is checked at collapse and under noise in this file
def test_full_head_by_krylov_past_dense_max(tmp_path):
    """Measured and predicted by the Krylov route (closed-form products for the prediction) agree
    with the dense route on the same head."""
    from ufm.networks._head import _Head
    from ufm.networks._head_full import compare_head_full

    H1, y, Ws, bs = _head(seed=4, bias=True)
    order = np.argsort(y, kind="stable")
    with jax.enable_x64(True):
        head = _Head(Ws, bs, "linear", "ce", H1[:, order], y[order])
        dense = compare_head_full(head)
        kry = compare_head_full(head, dense_max=10)
    m = dense.predicted_outliers
    assert kry.source == "krylov" and kry.converged and kry.predicted_outliers == m
    np.testing.assert_allclose(kry.measured[:m], dense.measured[:m], rtol=1e-6)
    np.testing.assert_allclose(kry.predicted[:m], dense.predicted[:m], rtol=1e-6)


def test_full_head_in_json_and_table(tmp_path, capsys):
    H1, y, Ws, bs = _head(seed=5)
    path = _save(tmp_path / "h.npz", H1, y, Ws, bs, "linear", "mse")
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(path), "--json", str(out)]) == 0
    assert "head " in capsys.readouterr().out
    rep = json.loads(out.read_text())
    f = rep["head_full"]
    for key in ("predicted", "measured", "num_outliers", "max_rel_error", "median_rel_error", "converged"):
        assert key in f, key
    ref = _dense_full(H1.astype(np.float32).astype(np.float64), y, Ws, bs, "linear", "mse")
    np.testing.assert_allclose(f["measured"][:9], ref[:9], rtol=1e-9)
    assert rep["verdict"]["head_full_holds"] is True
