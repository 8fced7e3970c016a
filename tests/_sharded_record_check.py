"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (see
test_dynamics_record_sharded.py): `record` with ``mesh=`` over 8 devices equals the single-array
recording in float64 (full batch and mini-batch). Prints one JSON line with the measured errors."""

import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from ufm import dynamics as D  # noqa: E402
from ufm.curvature._data import data_mesh  # noqa: E402


def loss(p, batch):
    """Mean cross-entropy of a tanh MLP (a mean over the batch's samples, as mesh= requires)."""
    h = jnp.tanh(batch[0] @ p[0]["w"].T + p[0]["b"])
    z = h @ p[1]["w"].T + p[1]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), batch[1][:, None], axis=1))


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def flat(p):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)])


def main():
    assert jax.device_count() == 8, f"expected 8 simulated devices, got {jax.device_count()}"
    rng = np.random.default_rng(0)
    N, d, h, K = 37, 5, 4, 3  # N = 37: not divisible by the 8 devices (leftover samples replicated)
    data = (jnp.asarray(rng.standard_normal((N, d))), jnp.asarray(rng.integers(0, K, N)))
    params = [
        {"w": jnp.asarray(rng.standard_normal((h, d)) / np.sqrt(d)), "b": jnp.asarray(0.1 * rng.standard_normal(h))},
        {"w": jnp.asarray(rng.standard_normal((K, h)) / np.sqrt(h)), "b": jnp.asarray(0.1 * rng.standard_normal(K))},
    ]
    mesh = data_mesh()
    out = {"devices": jax.device_count()}
    for name, kw in {"full": {}, "minibatch": {"batch_size": 16}}.items():
        args = dict(steps=12, num_checkpoints=3, data=data, seed=4, metrics={"w0": lambda p: p[0]["w"][0]}, **kw)
        one = D.record(loss, params, optax.sgd(0.5, momentum=0.9), **args)
        many = D.record(loss, params, optax.sgd(0.5, momentum=0.9), mesh=mesh, **args)
        out[name] = {
            "params_rel": rel(flat(many.final_params), flat(one.final_params)),
            "step_losses_rel": rel(many.step_losses, one.step_losses),
            "losses_rel": rel(many.losses, one.losses),
            "metrics_rel": rel(many.metrics["w0"], one.metrics["w0"]),
            "moved": rel(flat(one.final_params), flat(params)),
        }
    try:
        D.record(loss, params, optax.sgd(0.1), steps=2, data=data, batch_size=12, mesh=mesh)
    except ValueError as e:
        out["error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
