"""Tangent kernels, AGOP, η_crit and the catapult detector against independent routes (float64).

Dense references are built here with ``jax.jacfwd`` over ``ravel_pytree``-flattened
parameters (not the library's ``jacrev`` route), closed forms, or plain loops.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ufm import curvature
from ufm import dynamics as D
from ufm.cli import main

EPS = np.finfo(np.float64).eps


def _dense_kernel(f, params, X):
    flat, unravel = ravel_pytree(params)
    J = jax.jacfwd(lambda w: f(unravel(w), X).reshape(-1))(flat)
    return np.asarray(J @ J.T)


def _dict_model(p, X):
    """A model that is not an NTKMLP: dict params, biases, softplus, two outputs."""
    return jax.nn.softplus(X @ p["a"] + p["b"]) @ p["c"]


MODELS = [  # the depth-1 (linear) NTKMLP is covered by the AGOP and η_crit tests
    ("ntk-tanh-depth3-vector", D.NTKMLP(4, (6, 5), 3, 2, "tanh")),
    ("ntk-relu-depth2-scalar", D.NTKMLP(3, 7, 2, 1, "relu")),
]


def _dict_params(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"a": jax.random.normal(k1, (4, 6)), "b": jax.random.normal(k2, (6,)), "c": jax.random.normal(k3, (6, 2))}


@pytest.mark.parametrize("name,model", MODELS + [("dict-softplus", _dict_model)])
def test_matrix_free_kernel_equals_dense(name, model):
    key = jax.random.PRNGKey(3)
    params = _dict_params(key) if name.startswith("dict") else model.init(key)
    X = jax.random.normal(jax.random.PRNGKey(4), (6, 4 if name.startswith("dict") else model.input_dim))
    K = _dense_kernel(model, params, X)
    scale = np.abs(K).max()
    op = D.tangent_kernel_operator(model, params, X)
    assert op.dim == K.shape[0]
    full = np.asarray(jax.vmap(op.make(op.args), in_axes=1, out_axes=1)(jnp.eye(op.dim)))
    np.testing.assert_allclose(full, K, atol=1e3 * EPS * scale)
    np.testing.assert_allclose(D.tangent_kernel(model, params, X), K, atol=1e3 * EPS * scale)
    np.testing.assert_allclose(D.tangent_kernel(model, params, X, independent=True), K, atol=1e3 * EPS * scale)
    if isinstance(model, D.NTKMLP):  # the layer-structured kernel (docs/catapults.md §2)
        np.testing.assert_allclose(model.tangent_kernel(params, X), K, atol=1e3 * EPS * scale)


@pytest.mark.slow  # 11 s; the Krylov spectrum route is checked against eigh in tests/test_curvature_topk.py
def test_krylov_kernel_spectrum_matches_eigh():
    model = D.NTKMLP(5, 40, 2, 2, "tanh")
    params = model.init(jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (30, 5))
    vals, vecs = np.linalg.eigh(_dense_kernel(model, params, X))
    k = 4
    spec = D.kernel_spectrum(model, params, X, k, method="krylov", tol=1e-10)
    assert spec.converged
    np.testing.assert_allclose(spec.eigenvalues, vals[::-1][:k], rtol=1e-9)
    overlap = np.linalg.svd(vecs[:, ::-1][:, :k].T @ spec.eigenvectors, compute_uv=False)  # subspaces
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)
    dense = D.kernel_spectrum(model, params, X, k, method="dense")
    np.testing.assert_allclose(dense.eigenvalues, vals[::-1][:k], rtol=1e-12)
    # the same operator through the project's solver directly
    top = curvature.top_eigenpairs(D.tangent_kernel_operator(model, params, X), None, 1, tol=1e-10)
    np.testing.assert_allclose(top.eigenvalues[0], vals[-1], rtol=1e-9)


def test_batch_kernels_are_kernels_of_batches():
    model = D.NTKMLP(3, 8, 2, 1, "relu")
    params = model.init(jax.random.PRNGKey(2))
    X = jax.random.normal(jax.random.PRNGKey(3), (10, 3))
    Ks = np.asarray(D.batch_tangent_kernels(model, params, X, 4))
    assert Ks.shape == (2, 4, 4)  # the remainder of 2 samples is dropped
    for j in range(2):
        np.testing.assert_allclose(Ks[j], _dense_kernel(model, params, X[4 * j : 4 * j + 4]), atol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        D.batch_tangent_kernels(model, params, X, 11)


def test_agop_of_linear_model_is_WtW():
    W = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
    X = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    G = D.agop(lambda p, X: X @ p.T, W, X)
    np.testing.assert_allclose(G, W.T @ W, rtol=1e-13, atol=1e-13)
    # the NTK-parameterised depth-1 model is W x / √d
    m = D.NTKMLP(5, 1, 1, 3, "linear")
    np.testing.assert_allclose(D.agop(m, (W,), X), W.T @ W / 5, rtol=1e-13, atol=1e-13)


def test_agop_of_targets_matches_closed_forms():
    d, n = 6, 50
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (n, d)))
    x1, x2 = X[:, 0], X[:, 1]
    G = np.asarray(D.agop(lambda p, Z: D.make_target("product", d)(Z), None, X))
    expect = np.zeros((d, d))
    expect[:2, :2] = [[np.mean(x2**2), np.mean(x1 * x2)], [np.mean(x1 * x2), np.mean(x1**2)]]
    np.testing.assert_allclose(G, expect, atol=1e-14)

    t = D.make_target("polynomial", d, rank=3, key=jax.random.PRNGKey(1))
    U = t.basis
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-13)
    z = X @ U
    expect = (2 / 3) * U @ (z.T @ z / n) @ U.T  # ∇f = U (2z/√(2r)), r = 3
    np.testing.assert_allclose(D.agop(lambda p, Z: t(Z), None, X), expect, atol=1e-13)

    t = D.make_target("single-index", d, key=jax.random.PRNGKey(2))
    beta = t.basis[:, 0]
    expect = np.mean(1 / np.cosh(X @ beta) ** 4) * np.outer(beta, beta)
    np.testing.assert_allclose(D.agop(lambda p, Z: t(Z), None, X), expect, atol=1e-13)
    # alignment: 1 with itself, 0 with an orthogonal support, scale-free
    A, B = np.diag([1.0, 2, 0, 0]), np.diag([0.0, 0, 3, 1])
    assert float(D.agop_alignment(A, 5 * A)) == pytest.approx(1.0, abs=1e-15)
    assert float(D.agop_alignment(A, B)) == 0.0


@pytest.mark.parametrize("normalization", ["half", "mean"])
def test_linear_model_eta_crit_is_two_over_hessian_lambda_and_gd_diverges_above(normalization):
    n, d = 20, 4
    X = jax.random.normal(jax.random.PRNGKey(0), (n, d)) * jnp.array([3.0, 1.0, 1.0, 0.5])
    y = jax.random.normal(jax.random.PRNGKey(1), (n,))
    c = D.NORMALIZATIONS[normalization]
    f = lambda w, X: X @ w  # noqa: E731
    loss = lambda w: c / n * jnp.sum((f(w, X) - y) ** 2)  # noqa: E731
    H = np.asarray(jax.hessian(loss)(jnp.zeros(d)))
    eta_hess = 2 / np.linalg.eigvalsh(H).max()
    lam = D.kernel_spectrum(f, jnp.zeros(d), X, 1, method="dense").eigenvalues[0]
    eta = D.critical_learning_rate(lam, n, normalization)
    assert eta == pytest.approx(eta_hess, rel=1e-13)
    grad = jax.jit(jax.grad(loss))

    def final_loss(rate, steps=400):
        w = jnp.zeros(d)
        for _ in range(steps):
            w = w - rate * grad(w)
        return float(loss(w))

    w_star = np.linalg.lstsq(np.asarray(X), np.asarray(y), rcond=None)[0]
    L_star, L0 = float(loss(jnp.asarray(w_star))), float(loss(jnp.zeros(d)))
    assert final_loss(0.98 * eta) - L_star < 1e-6 * L0  # converges just below
    assert final_loss(1.02 * eta) > 1e2 * L0  # diverges just above: |1 − η λ| = 1.02^... grows


def test_projected_loss_splits_the_loss():
    model = D.NTKMLP(3, 10, 2, 2, "tanh")
    params = model.init(jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    r = np.asarray(model(params, X)) - 1.0
    vals, U = np.linalg.eigh(_dense_kernel(model, params, X))
    for normalization in ("half", "mean"):
        c = D.NORMALIZATIONS[normalization]
        L, top, perp = D.projected_loss(r, U[:, ::-1][:, :3], 8, normalization)
        coef = U.T @ r.reshape(-1)  # components on every eigenvector, ascending
        assert float(L) == pytest.approx(c / 8 * np.sum(r**2), rel=1e-13)
        assert float(top) == pytest.approx(c / 8 * np.sum(coef[-3:] ** 2), rel=1e-12)
        assert float(perp) == pytest.approx(c / 8 * np.sum(coef[:-3] ** 2), rel=1e-10)
    assert float(D.projected_loss(r, U, 8)[2]) == pytest.approx(0.0, abs=1e-14)


def _synthetic_curve():
    """exp decay with two catapult-like bumps (×30 at step 100, ×8 at step 300) and λ_max drops."""
    t = np.arange(500)
    base = np.exp(-t / 80.0)
    bump = lambda c, h, w: 1 + h * np.exp(-0.5 * ((t - c) / w) ** 2) * (t < c + 4 * w) * (t > c - 4 * w)  # noqa: E731
    loss = base * bump(100, 30, 5) * bump(300, 8, 6)
    lam = np.where(t < 100, 10.0, np.where(t < 300, 6.0, 4.0))
    return t, loss, lam


def test_detector_finds_spikes_and_none_in_a_monotone_curve():
    t, loss, lam = _synthetic_curve()
    cats = D.detect_catapults(loss, lam, ratio=2.0, window=20)
    assert len(cats) == 2
    assert [c.peak for c in cats] == [int(np.argmax(loss[:200])), 200 + int(np.argmax(loss[200:]))]
    for c, (lo, hi) in zip(cats, [(80, 120), (270, 330)], strict=True):
        assert lo <= c.start < c.peak < c.end <= hi
        assert loss[c.end] < loss[c.start] and c.lambda_max_after < c.lambda_max_before
    assert (cats[0].lambda_max_before, cats[0].lambda_max_after) == (10.0, 6.0)
    # probes every 10 steps read λ at the last probe before start / the first after end
    steps = t[::10]
    share = np.full(steps.size, 0.9)
    cats10 = D.detect_catapults(loss, lam[::10], steps=steps, top_share=share)
    assert [c.peak for c in cats10] == [c.peak for c in cats] and cats10[0].peak_share_top == 0.9
    assert D.detect_catapults(np.exp(-t / 80.0), lam) == ()  # monotone
    assert D.detect_catapults(loss, np.full(t.size, 10.0)) == ()  # spikes without a λ_max drop
    assert D.detect_catapults(np.exp(t / 50.0), lam[::-1]) == ()  # divergence: never returns


def test_gd_regimes_small(tmp_path):
    """A small run: sub-critical is monotone, 1.5 η_crit catapults with the peak in P_s L and ends
    with λ_max below 2n/η; 4 η_crit diverges. Through the CLI, checking the JSON schema."""
    path = tmp_path / "gd.json"
    rc = main(
        [
            "dynamics",
            "catapult",
            "--task",
            "gd",
            "--lr-multipliers",
            "0.5",
            "1.5",
            "4",
            "--samples",
            "32",
            "--width",
            "128",
            "--steps",
            "100",
            "--test-samples",
            "100",
            "--json",
            str(path),
        ]
    )
    assert rc == 0
    out = json.loads(path.read_text())
    assert set(out) >= {"config", "runs"}
    sub, sup, div = out["runs"]
    for run in out["runs"]:
        assert set(run) >= {
            "multiplier",
            "regime",
            "catapults",
            "lambda_max_initial",
            "lambda_max_final",
            "eta_crit",
            "agop_alignment_initial",
            "agop_alignment_final",
            "loss",
            "projected_loss",
        }
    assert (sub["regime"], sup["regime"], div["regime"]) == ("monotone", "catapult", "diverged")
    cat = sup["catapults"][0]
    assert cat["peak_share_top"] > 0.9 and cat["lambda_max_after"] < cat["lambda_max_before"]
    assert sup["lambda_max_final"] < sup["critical_lambda_final"]
    assert sup["learning_rate"] == pytest.approx(1.5 * sup["eta_crit"])
    assert sup["eta_crit"] == pytest.approx(2 * 32 / sup["lambda_max_initial"])


def test_cli_bad_arguments(capsys, tmp_path):
    assert main(["dynamics", "catapult", "--task", "sgd", "--samples", "4", "--batch-sizes", "8"]) == 2
    assert main(["dynamics", "catapult", "--json", str(tmp_path / "nowhere" / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("ufm: error:") == 2 and "Traceback" not in err


def test_batch_trend_recovers_a_planted_paired_slope_and_leaves_out_divergences():
    """`batch_trend` on synthetic runs with a known per-doubling slope: the paired slope interval
    covers it, the b-smallest − full difference equals the planted one, Spearman sees the trend,
    a diverged run is left out (and counted), and `batch_verdict` reads the signs."""
    from ufm.experiments.catapult import batch_trend, batch_verdict

    rng = np.random.default_rng(0)
    sizes = [8, 16, 32, 64, 128]
    runs = []
    for s in range(12):
        base = rng.normal(0.0, 0.1)  # a seed effect much larger than the noise: the paired test sees through it
        for i, b in enumerate(sizes):
            noise = rng.normal(0.0, 0.005)
            runs.append(
                {
                    "seed": s,
                    "batch_size": b,
                    "regime": "diverged" if (s, b) == (3, 8) else "catapult",
                    "catapults": 20 - 4 * i,
                    "agop_alignment": 0.7 + base - 0.02 * i + noise,
                    "test_mse": 0.8 - base + 0.03 * i + noise,
                }
            )
    per_batch, trend = batch_trend(runs, sizes)
    assert per_batch[0]["diverged"] == 1 and all(row["diverged"] == 0 for row in per_batch[1:])
    lo, hi = trend["agop_alignment"]["slope_per_doubling"]["ci95"]
    assert lo < -0.02 < hi and hi < 0
    lo, hi = trend["test_mse"]["slope_per_doubling"]["ci95"]
    assert lo < 0.03 < hi and lo > 0
    assert trend["agop_alignment"]["smallest_minus_full"]["pairs"] == 11
    assert abs(trend["catapults"]["smallest_minus_full"]["mean"] - 16) < 1e-12
    assert trend["catapults"]["spearman_rho"] < -0.9
    assert batch_verdict(trend)[0] == "reproduced"
    flipped = [dict(r, agop_alignment=-r["agop_alignment"]) for r in runs]
    assert batch_verdict(batch_trend(flipped, sizes)[1])[0] == "refuted"


def test_batch_runs_rows_are_what_batch_trend_reads():
    """`batch_runs` turns a sweep's runs into the rows `batch_trend` consumes (final values of each run)."""
    from types import SimpleNamespace

    from ufm.experiments.catapult import BATCH_QUANTITIES, batch_runs, batch_trend

    def run(seed, b, cats):
        return SimpleNamespace(
            label={"seed": seed, "batch_size": b},
            regime="sgd",
            num_catapults=cats,
            agop_alignment=np.array([0.1, 0.5 + 0.01 * cats]),
            test_mse=np.array([2.0, 1.0 - 0.01 * cats]),
        )

    report = SimpleNamespace(runs=[run(s, b, 8 // b + s) for s in range(3) for b in (2, 4, 8)])
    rows = batch_runs(report)
    assert [(r["seed"], r["batch_size"], r["catapults"]) for r in rows] == [
        (s, b, 8 // b + s) for s in range(3) for b in (2, 4, 8)
    ]
    assert rows[0]["agop_alignment"] == 0.5 + 0.01 * rows[0]["catapults"] and rows[0]["test_mse"] == 1.0 - 0.01 * 4
    per_batch, trend = batch_trend(rows, [2, 4, 8])
    assert set(BATCH_QUANTITIES) <= set(trend)
    assert trend["catapults"]["slope_per_doubling"]["mean"] < 0  # 4, 2, 1 (+ seed) catapults per seed
