"""ufm.dynamics foundation: recorder, probes, mixtures, models, the alignment experiments.

Independent routes: autodiff Hessians and per-sample gradients (``ufm.curvature``) against
the closed forms; the dense per-sample outer-product sum (``gradient_moments``) against the
Gram route; algebraic identities of alignment and overlaps; an uninterrupted run against a
resumed one; high vs low SNR.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ufm
from ufm import dynamics as D
from ufm.experiments import align

RNG = np.random.default_rng(0)
LOSS = functools.partial(D.softmax_loss, ridge=0.05)  # one object: the compiled loops are keyed on it


@pytest.fixture(scope="module")
def small_gmm():
    g = D.KGMM.create(3, 6, 4.0, seed=1)
    Y, labels = align._sample(g, jax.random.PRNGKey(0), 9)
    return g, (Y, labels), D.init_softmax(2, 3, 6)


def test_softmax_closed_forms_equal_autodiff(small_gmm):
    _, batch, params = small_gmm
    beta = 0.3
    loss = functools.partial(D.softmax_loss, ridge=beta)
    H = ufm.curvature.hessian(lambda p: loss(p, batch), params)
    hess = jax.jit(D.softmax_hessian)
    np.testing.assert_allclose(hess(params, batch[0], beta), H, atol=1e-14)
    J = D.per_sample_grads(loss, params, batch)
    np.testing.assert_allclose(jax.jit(D.softmax_per_sample_grads)(params, *batch, beta), J, atol=1e-14)
    # the data Hessian annihilates every 1 ⊗ w (rank(diag π − ππᵀ) = k − 1, docs/dynamics.md §D2)
    w = RNG.standard_normal(6)
    np.testing.assert_allclose(hess(params, batch[0], 0.0) @ np.tile(w, 3), 0, atol=1e-14)


def test_two_layer_per_sample_grads_and_loss():
    g = D.XORGMM.create(5, 10.0, seed=0)
    Y, labels = align._sample(g, jax.random.PRNGKey(1), 7)
    params = D.init_two_layer(0, 4, 5)
    loss = functools.partial(D.two_layer_loss, ridge=0.1)
    J = D.per_sample_grads(loss, params, (Y, labels))
    grad = jax.jit(jax.grad(loss))
    for i in (0, 3):
        gi = grad(params, (Y[i : i + 1], labels[i : i + 1]))
        np.testing.assert_allclose(J[i], np.concatenate([np.ravel(gi.W), gi.v]), atol=1e-14)
    Y, W, v = (np.asarray(a) for a in (Y, params.W, params.v))
    s = np.maximum(Y @ W.T, 0) @ v
    p = 1 / (1 + np.exp(-s))
    bce = -np.mean(np.where(np.asarray(labels) == 1, np.log(p), np.log(1 - p)))
    ridge = 0.05 * (np.sum(np.asarray(params.W) ** 2) + np.sum(np.asarray(params.v) ** 2))
    np.testing.assert_allclose(jax.jit(loss)(params, (Y, labels)), bce + ridge, rtol=1e-12)


@pytest.mark.parametrize("M", [4, 40])  # M < P (Gram route) and M >= P (dense)
def test_g_matrix_gram_equals_dense_outer_products(M):
    g = D.KGMM.create(3, 6, 4.0, seed=2)
    Y, labels = align._sample(g, jax.random.PRNGKey(M), M)
    params = D.init_softmax(0, 3, 6)
    loss = functools.partial(D.softmax_loss, ridge=0.2)
    per_sample = lambda p: jax.vmap(lambda y, l: loss(p, (y[None], l[None])))(Y, labels)  # noqa: E731
    G = np.asarray(ufm.curvature.gradient_moments(per_sample, params).second_moment)
    k = 3
    space = D.g_top_space(D.per_sample_grads(loss, params, (Y, labels)), k)
    ref = np.linalg.eigvalsh(G)[::-1]
    np.testing.assert_allclose(space.eigenvalues, ref[: space.eigenvalues.size], atol=1e-13)
    U = space.space(k)  # TopSpace is folded into Spectrum: the top-k space is .space(k), counts .counts()
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(G @ U, U * space.eigenvalues[:k], atol=1e-12)
    counts = space.counts()
    assert counts.null + counts.outliers + counts.minibulk + counts.bulk == 18
    if M < 18:
        assert counts.null >= 18 - M


def test_alignment_and_overlap_identities():
    U = np.linalg.qr(RNG.standard_normal((8, 3)))[0]
    full = np.linalg.qr(np.concatenate([U, RNG.standard_normal((8, 5))], axis=1))[0]
    perp = full[:, 3:] @ RNG.standard_normal(5)
    assert D.subspace_alignment(U @ RNG.standard_normal(3), U) == pytest.approx(1, abs=1e-12)
    assert D.subspace_alignment(perp, U) == pytest.approx(0, abs=1e-7)
    v = U[:, 0] + perp / np.linalg.norm(perp)  # 45 degrees
    assert D.subspace_alignment(v, U) == pytest.approx(np.sqrt(0.5), abs=1e-12)
    assert D.top_fraction(v, U) == pytest.approx(0.5, abs=1e-12)
    same = D.subspace_overlap(U, U @ np.linalg.qr(RNG.standard_normal((3, 3)))[0])
    assert same.overlap == pytest.approx(1, abs=1e-12) and same.max_angle == pytest.approx(0, abs=1e-7)
    orth = D.subspace_overlap(U, full[:, 3:6])
    assert orth.overlap == pytest.approx(0, abs=1e-12) and orth.max_angle == pytest.approx(np.pi / 2, abs=1e-7)


def test_spectrum_counts_gap_rule():
    lam = np.concatenate([[100, 90, 80], [5, 4], np.linspace(0.5, 0.3, 10), np.zeros(6)])
    c = D.spectrum_counts(lam)
    assert (c.outliers, c.minibulk, c.bulk, c.null) == (3, 2, 10, 6)
    assert D.spectrum_counts(lam[:15], dim=40) == D.Counts(3, 2, 35, 0)  # unresolved: bulk


def test_top_space_routes_agree():
    """Dense eigh and restarted block Krylov (the two routes of the one helper) agree as subspaces."""
    A = RNG.standard_normal((200, 200))
    A = A @ A.T / 200
    A[:3, :3] += np.diag([30.0, 20.0, 10.0])
    a, b = D.top_space(A, 3, method="dense"), D.top_space(A, 3, method="krylov")
    np.testing.assert_allclose(a.eigenvalues[:3], b.eigenvalues[:3], rtol=1e-10)
    assert D.subspace_overlap(a.space(3), b.space(3)).overlap == pytest.approx(1, abs=1e-10)


_INTERRUPT = {"at": None}  # read at call time: the interruption is not a setting of the probe


def _record(stop_at=None, **kw):
    """A short one-pass run with Hessian and G probes; raises KeyboardInterrupt at checkpoint ``stop_at``."""
    g = D.KGMM.create(3, 8, 20.0, seed=0)
    test = align._sample(g, jax.random.PRNGKey(5), 30)
    loss = LOSS
    _INTERRUPT["at"] = stop_at

    def stop(params, ctx):
        if ctx.index == _INTERRUPT["at"]:
            raise KeyboardInterrupt
        return {"norm": float(np.linalg.norm(np.concatenate(params)))}

    probes = {
        "h": D.spectral_probe(loss, test, 3, leaves=[0]),
        "g": D.spectral_probe(loss, test, 3, kind="g"),
        "stop": stop,
    }
    args = (
        dict(
            steps=40,
            num_checkpoints=4,
            sampler=functools.partial(_one, g),
            eval_data=test,
            probes=probes,
            keep_params=2,
            time_per_step=0.1,
        )
        | kw
    )
    return D.record(loss, D.init_softmax(0, 3, 8), optax.sgd(0.1), **args)


def _one(g, key):
    return g.sample(key, 1)


def test_record_resumes_from_npz(tmp_path):
    full = _record()
    path = str(tmp_path / "traj.npz")
    with pytest.raises(KeyboardInterrupt):  # interrupted in checkpoint 2: the file holds checkpoints 0 and 1
        _record(stop_at=2, path=path)
    with np.load(path) as f:
        assert f["steps"].tolist() == full.steps[:2].tolist()
    resumed = _record(path=path)
    assert json.dumps(full.to_dict(params=True)) == json.dumps(resumed.to_dict(params=True))
    assert set(full.probes["h"][1]) >= {"align_params", "align_grad", "align_update", "overlap_prev", "outliers"}
    with pytest.raises(ValueError, match="other settings"):
        _record(path=path, steps=41)


def test_record_modes_and_python_loop_agree():
    """Full batch, mini-batch: the compiled loop equals one jitted step per Python iteration;
    full-batch GD equals optax's own loop."""
    data = (jnp.asarray(RNG.standard_normal((12, 4))), jnp.asarray(RNG.integers(0, 3, 12)))
    loss = LOSS
    p0 = D.init_softmax(1, 3, 4)
    opt = optax.adam(0.05)
    for kw in ({}, {"batch_size": 5}):
        a = D.record(loss, p0, opt, steps=9, num_checkpoints=3, spacing="log", data=data, **kw)
        b = D.record(loss, p0, opt, steps=9, num_checkpoints=3, spacing="log", data=data, compiled=False, **kw)
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12)
    p, s = p0, opt.init(p0)
    for _ in range(9):
        u, s = opt.update(jax.grad(loss)(p, data), s, p)
        p = optax.apply_updates(p, u)
    gd = D.record(loss, p0, opt, steps=9, data=data)
    np.testing.assert_allclose(np.concatenate(gd.final_params), np.concatenate(p), rtol=1e-12)
    assert D.checkpoint_steps(100, 4, "log").tolist() == [0, 1, 5, 22, 100]
    with pytest.raises(ValueError, match="batch_size is for"):
        D.record(loss, p0, opt, steps=3, data=data, batch_size=2, sampler=lambda k, d: d)


def test_iterates_every_equals_checkpoints_and_resumes(tmp_path):
    """Iterates kept inside the compiled loop == parameters at checkpoints every n steps."""
    loss = LOSS
    g = D.KGMM.create(3, 8, 20.0, seed=0)
    p0, opt = D.init_softmax(0, 3, 8), optax.sgd(0.1)
    args = dict(steps=12, sampler=functools.partial(_one, g), seed=3)
    ref = D.record(loss, p0, opt, checkpoints=np.arange(0, 13, 3), keep_params=True, **args)
    flat = np.stack([np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)]) for p in ref.params[1:]])
    for kw in ({}, {"compiled": False}, {"checkpoints": [0, 6]}, {"path": str(tmp_path / "t.npz")}):
        tr = D.record(loss, p0, opt, iterates_every=3, **args, **({"checkpoints": [0]} | kw))
        np.testing.assert_allclose(tr.iterates, flat, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(tr.iterate_losses, ref.train_losses[1:], rtol=1e-12)
        assert tr.iterate_steps.tolist() == [3, 6, 9, 12]
    resumed = D.record(loss, p0, opt, iterates_every=3, checkpoints=[0], path=str(tmp_path / "t.npz"), **args)
    np.testing.assert_array_equal(resumed.iterates, tr.iterates)
    with pytest.raises(ValueError, match="iterates_every"):
        D.record(loss, p0, opt, iterates_every=5, checkpoints=[0], **args)


def test_kgmm_high_snr_aligns_better_than_low():
    kw = dict(num_classes=3, dim=30, time=8.0, checkpoints=2, test_samples=90, seed=0)
    hi, lo = align.kgmm(snr=200.0, **kw), align.kgmm(snr=1.0, **kw)
    for key in ("block_alignment_hessian", "top_space_in_means"):
        assert min(hi.summary[key]) > 0.9 > max(lo.summary[key]), key
    assert hi.summary["full_hessian_outliers"] == 3 * 2  # k(k − 1), the rank of (diag π − ππᵀ) ⊗ span(μ)
    assert hi.summary["block_outliers_hessian"] == [3, 3, 3]
    d = hi.to_dict()
    assert set(d) == {"task", "config", "checkpoints", "summary", "converged", "messages"}
    assert len(d["checkpoints"]) == 3 and d["converged"] is True
    json.dumps(d)


def test_cli_align_kgmm(tmp_path, capsys):
    from ufm.cli import main

    out = tmp_path / "r.json"
    assert (
        main(
            [
                "dynamics",
                "align",
                "--task",
                "kgmm",
                "--dim",
                "12",
                "--num-classes",
                "2",
                "--time",
                "2",
                "--checkpoints",
                "1",
                "--test-samples",
                "30",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["task"] == "kgmm" and len(report["summary"]["block_alignment_g"]) == 2
    assert main(["dynamics", "align", "--task", "kgmm", "--seeds", "3"]) == 2
    assert main(["dynamics", "align", "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "does not apply" in capsys.readouterr().err
