"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (see
test_curvature_sharded.py): sharded, streamed and sharded+streamed curvature products equal
the single-array ones in float64. Prints one JSON line with the measured errors."""

import json
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ufm import curvature as C  # noqa: E402
from ufm.curvature._operator import _matvec  # noqa: E402


def main():
    assert jax.device_count() == 8, (
        f"expected 8 simulated devices, got {jax.device_count()} ({os.environ.get('XLA_FLAGS')})"
    )
    rng = np.random.default_rng(0)
    N, d, h, K = 37, 5, 4, 3  # N = 37: not divisible by 8 devices, nor by the batches below
    X, y = rng.standard_normal((N, d)), rng.integers(0, K, N)
    params = [
        {"w": jnp.asarray(rng.standard_normal((h, d)) / np.sqrt(d)), "b": jnp.asarray(0.1 * rng.standard_normal(h))},
        {"w": jnp.asarray(rng.standard_normal((K, h)) / np.sqrt(h)), "b": jnp.asarray(0.1 * rng.standard_normal(K))},
    ]

    def model(p, batch):
        return jnp.tanh(batch[0] @ p[0]["w"].T + p[0]["b"]) @ p[1]["w"].T + p[1]["b"]

    def output_loss(z, batch):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), batch[1][:, None], axis=1))

    def loss(p, batch):
        return output_loss(model(p, batch), batch)

    data = (jnp.asarray(X), jnp.asarray(y))
    ref = C.hessian_operator(lambda p: loss(p, data), params)
    ref_ggn = C.ggn_operator(lambda p: model(p, data), lambda z: output_loss(z, data), params)
    V = rng.standard_normal((ref.dim, 4))
    HV, GV = np.asarray(ref.matmat(V)), np.asarray(ref_ggn.matmat(V))
    top_ref = C.top_eigenpairs(ref, k=3, seed=1, block_size=1)
    tr_ref = C.trace(ref, num_samples=6, seed=2)
    mesh = C.data_mesh()

    def per_sample(p, batch):
        return -jnp.take_along_axis(jax.nn.log_softmax(model(p, batch)), batch[1][:, None], 1)[:, 0]

    g_ref = np.asarray(C.gradient_moments(lambda p: per_sample(p, data), params).per_sample)
    g = np.asarray(C.gradient_moments(per_sample, params, data=data, mesh=mesh, batch_size=16).per_sample)
    out = {"gradient_moments": {"per_sample_rel": float(np.abs(g - g_ref).max() / np.abs(g_ref).max())}}
    for name, kw in {
        "streamed": dict(batch_size=8),
        "sharded": dict(mesh=mesh),
        "sharded+streamed": dict(mesh=mesh, batch_size=16),
    }.items():
        op = C.hessian_operator(loss, params, data=data, **kw)
        top = C.top_eigenpairs(op, k=3, seed=1, block_size=1)
        hlo = _matvec.lower(op.make, op.args, jnp.asarray(V[:, 0])).compile().as_text()
        out[name] = {
            "hvp_rel": float(np.abs(np.asarray(op.matmat(V)) - HV).max() / np.abs(HV).max()),
            "topk_rel": float(np.abs(top.eigenvalues - top_ref.eigenvalues).max() / np.abs(top_ref.eigenvalues).max()),
            "products": top.info["products"],
            "all_reduces_per_product": hlo.count("all-reduce-start(") + hlo.count(" all-reduce("),
        }
        if name == "sharded+streamed":  # the GGN and the trace through the composed route only (compile time)
            gop = C.ggn_operator(model, output_loss, params, data=data, **kw)
            out[name]["ggn_rel"] = float(np.abs(np.asarray(gop.matmat(V)) - GV).max() / np.abs(GV).max())
            tr = C.trace(op, num_samples=6, seed=2)
            out[name]["trace_rel"] = float(np.abs(tr.samples - tr_ref.samples).max() / np.abs(tr_ref.samples).max())
    errors = {}
    for name, kw in {
        "batch_not_divisible": dict(mesh=mesh, batch_size=12),
        "batch_zero": dict(batch_size=0),
        "leading_axes": dict(data=(data[0], data[1][:-1])),
    }.items():
        try:
            C.hessian_operator(loss, params, **{"data": data, **kw})
            errors[name] = "no error"
        except ValueError as e:
            errors[name] = str(e)
    print(json.dumps({"devices": jax.device_count(), "results": out, "errors": errors}))


if __name__ == "__main__":
    sys.exit(main())
