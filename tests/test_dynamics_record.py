"""`ufm.dynamics.record`, the one optimiser loop: stop, grad_tol, divergence, in-loop metrics,
equinox modules, line-search reuse, safe resume (issue 24 items 2, 6, 8).

Independent route: the same optimiser stepped by hand in a Python loop (``optax`` update +
``apply_updates`` on ``jax.value_and_grad`` of the loss, mini-batches drawn with the same
`minibatch_indices` key schedule), and numpy least squares for the quadratic problem.
"""

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ufm import TrainingDiverged
from ufm import dynamics as D
from ufm.training import gd_linesearch

RNG = np.random.default_rng(3)
X = jnp.asarray(RNG.standard_normal((24, 4)))
Y = jnp.asarray(X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * RNG.standard_normal(24))
DATA = (X, Y)
P0 = {"w": jnp.zeros(4), "b": jnp.zeros(())}


def lsq(params, batch):
    """Half mean squared error of a linear model (a mean over the batch's samples)."""
    Xb, yb = batch
    return 0.5 * jnp.mean((Xb @ params["w"] + params["b"] - yb) ** 2)


def full_loss(params):
    return lsq(params, DATA)


def by_hand(opt, steps, batch_size=None, seed=0, params=P0):
    """The independent loop: (params after each step, batch loss of each step)."""
    key, state, out, losses = jax.random.PRNGKey(seed), opt.init(params), [], []
    step = jax.jit(functools.partial(_hand_step, opt))
    for t in range(steps):
        if batch_size is None:
            batch = DATA
        else:
            idx = D.minibatch_indices(jax.random.fold_in(key, t), X.shape[0], batch_size)
            batch = (X[idx], Y[idx])
        params, state, value = step(params, state, batch)
        out.append(params)
        losses.append(float(value))
    return out, np.asarray(losses)


def _hand_step(opt, params, state, batch):
    value, grad = jax.value_and_grad(lsq)(params, batch)
    if isinstance(opt, optax.GradientTransformationExtraArgs):
        updates, state = opt.update(
            grad, state, params, value=value, grad=grad, value_fn=functools.partial(_swap, batch)
        )
    else:
        updates, state = opt.update(grad, state, params)
    return optax.apply_updates(params, updates), state, value


def _swap(batch, params):
    return lsq(params, batch)


def flat(p):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)])


@pytest.mark.parametrize("batch_size", [None, 6])
def test_step_losses_and_metrics_equal_the_hand_loop(batch_size):
    opt = optax.sgd(0.1, momentum=0.5)
    tr = D.record(
        lsq,
        P0,
        opt,
        steps=12,
        checkpoints=[0, 4, 8],
        data=DATA,
        batch_size=batch_size,
        seed=5,
        metrics={"loss": full_loss, "w": lambda p: p["w"]},
        metrics_every={"loss": 1, "w": 2},
    )
    params, losses = by_hand(opt, 12, batch_size, seed=5)
    np.testing.assert_allclose(tr.step_losses, losses, rtol=1e-12)
    ref = np.asarray([float(full_loss(P0))] + [float(full_loss(p)) for p in params])
    np.testing.assert_allclose(tr.metrics["loss"], ref, rtol=1e-12)
    assert tr.metric_steps["w"].tolist() == [0, 2, 4, 6, 8, 10, 12]
    np.testing.assert_allclose(tr.metrics["w"][1:], np.stack([params[i]["w"] for i in (1, 3, 5, 7, 9, 11)]), rtol=1e-12)
    np.testing.assert_allclose(flat(tr.final_params), flat(params[-1]), rtol=1e-12)
    assert tr.converged and tr.stopped == "steps" and tr.messages == ()
    with pytest.raises(ValueError, match="metrics_every"):
        D.record(lsq, P0, opt, steps=12, checkpoints=[0, 4], data=DATA, metrics={"l": full_loss}, metrics_every=3)


def test_stop_ends_at_the_first_checkpoint_where_it_holds():
    opt = optax.sgd(0.2)
    seen = []

    def stop(params, ctx):
        seen.append((ctx.step, float(ctx.probes["n"]["loss"])))
        return ctx.loss < 0.3

    tr = D.record(
        lsq, P0, opt, steps=200, num_checkpoints=20, data=DATA, stop=stop, probes={"n": lambda p, c: {"loss": c.loss}}
    )
    params, _ = by_hand(opt, 200)
    ref = [float(full_loss(P0))] + [float(full_loss(params[s - 1])) for s in range(10, 201, 10)]
    first = next(i for i, v in enumerate(ref) if v < 0.3)
    assert tr.steps.tolist() == list(range(0, 10 * first + 1, 10)) and tr.stopped == "stop" and tr.converged
    np.testing.assert_allclose(flat(tr.final_params), flat(params[10 * first - 1]), rtol=1e-12)
    np.testing.assert_allclose([v for _, v in seen], ref[: first + 1], rtol=1e-12)


def test_grad_tol_stops_at_the_first_small_gradient_with_line_search_reuse():
    """gd_linesearch through record (value and gradient read back from the line search's state)
    equals the hand loop that evaluates them afresh, and stops at the first step with ‖∇L‖ <= tol."""
    opt = gd_linesearch()
    tol = 1e-7
    tr = D.record(lsq, P0, opt, steps=300, num_checkpoints=3, data=DATA, grad_tol=tol)
    params, _ = by_hand(opt, 300)
    grad_norm = jax.jit(lambda p: optax.tree.norm(jax.grad(full_loss)(p)))
    norms = [float(grad_norm(p)) for p in [P0, *params]]
    t = next(i for i, g in enumerate(norms) if g <= tol)
    assert tr.stopped == "grad_tol" and tr.converged and int(tr.steps[-1]) == t
    np.testing.assert_allclose(flat(tr.final_params), flat(params[t - 1]), rtol=1e-10)
    w = np.linalg.lstsq(np.c_[np.asarray(X), np.ones(24)], np.asarray(Y), rcond=None)[0]  # numpy's optimum
    np.testing.assert_allclose(flat(tr.final_params), np.r_[w[-1], w[:-1]], atol=1e-6)
    np.testing.assert_allclose(tr.losses[-1], float(full_loss(tr.final_params)), rtol=1e-12)
    with pytest.raises(ValueError, match="full-batch"):
        D.record(lsq, P0, opt, steps=3, data=DATA, batch_size=4, grad_tol=tol)


def test_divergence_raises_naming_the_step_or_is_recorded():
    lam = np.linalg.eigvalsh(np.c_[np.asarray(X), np.ones(24)].T @ np.c_[np.asarray(X), np.ones(24)] / 24).max()
    opt = optax.sgd(2.5 / lam)  # above 2/λ_max: GD diverges geometrically
    _, losses = by_hand(opt, 60)
    t = int(np.argmax(losses > 1e6))
    with pytest.raises(TrainingDiverged, match=rf"at step {t}\b"):
        D.record(lsq, P0, opt, steps=60, data=DATA, max_loss=1e6)
    tr = D.record(lsq, P0, opt, steps=60, checkpoints=[0, 5], data=DATA, max_loss=1e6, throw=False)
    assert tr.stopped == "diverged" and not tr.converged and f"step {t}" in tr.messages[0]
    assert tr.step_losses.size == t + 1 and tr.step_losses[-1] > 1e6
    np.testing.assert_allclose(tr.step_losses[:-1], losses[:t], rtol=1e-12)
    json.dumps(tr.to_dict(), allow_nan=False)


def test_equinox_module_whole_and_refusal():
    mlp = eqx.nn.MLP(4, "scalar", 5, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    mlp = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, mlp)

    def loss(model, batch):
        return 0.5 * jnp.mean((jax.vmap(model)(batch[0]) - batch[1]) ** 2)

    opt = optax.adam(0.01)
    outputs = []
    probes = {"out": lambda m, c: {"y0": m(X[0])}}
    tr = D.record(loss, mlp, opt, steps=15, num_checkpoints=3, data=DATA, probes=probes, keep_params=True)
    arrays, static = eqx.partition(mlp, eqx.is_array)
    state = opt.init(arrays)
    for _ in range(15):
        g = jax.grad(lambda a: loss(eqx.combine(a, static), DATA))(arrays)
        u, state = opt.update(g, state, arrays)
        arrays = optax.apply_updates(arrays, u)
        outputs.append(float(eqx.combine(arrays, static)(X[0])))
    assert isinstance(tr.final_params, eqx.nn.MLP) and isinstance(tr.params[-1], eqx.nn.MLP)
    json.dumps(tr.to_dict(params=True), allow_nan=False)
    np.testing.assert_allclose(tr.probe("out", "y0")[1:], [outputs[4], outputs[9], outputs[14]], rtol=1e-12)
    with pytest.raises(TypeError, match=r"eqx.partition\(params, eqx.is_array\)"):
        D.record(lsq, {**P0, "name": "x"}, opt, steps=2, data=DATA)


def test_resume_refuses_other_settings_and_extends(tmp_path):
    path = str(tmp_path / "run.npz")
    opt = optax.sgd(0.1)
    probe = D.spectral_probe(lsq, DATA, 2)
    D.record(lsq, P0, opt, steps=20, checkpoints=[0, 10], data=DATA, probes={"h": probe}, path=path)
    cases = {
        "optimizer settings": dict(optimizer=optax.sgd(0.2)),
        "data": dict(data=(X, Y + 1.0)),
        "probe settings": dict(probes={"h": D.spectral_probe(lsq, DATA, 3)}),
    }
    for name, change in cases.items():
        kw = dict(optimizer=opt, data=DATA, probes={"h": probe}) | change
        with pytest.raises(ValueError, match=name):
            D.record(lsq, P0, kw.pop("optimizer"), steps=20, checkpoints=[0, 10], path=path, **kw)
    longer = D.record(lsq, P0, opt, steps=30, checkpoints=[0, 10, 20], data=DATA, probes={"h": probe}, path=path)
    straight = D.record(lsq, P0, opt, steps=30, checkpoints=[0, 10, 20], data=DATA, probes={"h": probe})
    assert json.dumps(longer.to_dict(params=True)) == json.dumps(straight.to_dict(params=True))


def test_callback_gets_one_dict_per_checkpoint():
    """The package's one callback signature: ``callback(event: dict)``; the loss is the checkpoint's full loss."""
    events = []
    tr = D.record(lsq, P0, optax.sgd(0.1), steps=6, checkpoints=[0, 3, 6], data=DATA, callback=events.append)
    assert [e["index"] for e in events] == [0, 1, 2] and [e["step"] for e in events] == [0, 3, 6]
    np.testing.assert_allclose([e["loss"] for e in events], tr.losses, rtol=0, atol=0)
    params = tr.final_params
    np.testing.assert_allclose(events[-1]["loss"], float(full_loss(params)), rtol=1e-12)
