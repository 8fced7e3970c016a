"""`ufm.networks.train_network` / `train_snapshots` over `ufm.dynamics.record` (issue 24 item 2).

Independent routes: the snapshots of one run against separate `train_network` runs of each
length; the full-batch trainer against optax's own loop stepped by hand; divergence named
at its step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ufm import TrainingDiverged
from ufm import networks as nw


def _tiny():
    spec = nw.NetworkSpec(input_shape=(6,), num_classes=3, hidden=(7,), width=4)
    data = nw.gaussian_mixture(3, 4, 6, seed=1, dtype=np.float64)
    return spec, nw.init_network(spec, 0, dtype=jnp.float64), data


def _flat(p):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)])


def test_snapshots_equal_separate_runs_and_full_batch_equals_optax():
    spec, params, data = _tiny()
    kw = dict(learning_rate=0.01, batch_size=5, seed=3, log_every=10)
    snaps = dict(nw.train_snapshots(spec, params, data, [15, 40], **kw))
    for m in (15, 40):
        alone = nw.train_network(spec, params, data, steps=m, **kw)
        assert snaps[m].steps == m
        np.testing.assert_allclose(_flat(snaps[m].params), _flat(alone.params), rtol=1e-12, atol=1e-14)
    opt = optax.sgd(0.01, momentum=0.9)
    res = nw.train_network(spec, params, data, steps=12, optimizer=opt, log_every=4)
    p, s = params, opt.init(params)
    X, y = jnp.asarray(data.X), jnp.asarray(data.labels)
    for _ in range(12):
        u, s = opt.update(jax.grad(lambda q: nw.network_loss(spec, q, X, y))(p), s, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(_flat(res.params), _flat(p), rtol=1e-12, atol=1e-14)
    assert res.history["step"].tolist() == [0, 4, 8, 12]


def test_divergence_names_the_step():
    spec, params, data = _tiny()
    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        nw.train_network(spec, params, data, steps=400, learning_rate=1e3, log_every=100)
