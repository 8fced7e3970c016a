"""MNIST real-network curvature on the full 10 000-image split, streamed in batches of 1 000.

    PYTHONPATH=. python benchmarks/mnist_streamed.py [--steps 300] [--k 20] [--json PATH]

Builds the network loss with ``ufm.networks`` (an MLP backbone + deep-UFM head, the
defaults of `NetworkSpec`), trains it briefly with `train_network`, then measures the
whole-network data Hessian with the streamed operators (``data=(X, labels)``,
``batch_size=1000``): top-k eigenpairs, the Hutchinson trace and a check that streamed
products equal the products of the loss with all 10 000 images in one array. float64.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ufm import curvature as C  # noqa: E402
from ufm import networks as nets  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data = nets.load_mnist(dtype=np.float64)
    spec = nets.NetworkSpec(input_shape=data.X.shape[1:], num_classes=data.num_classes)
    t = time.perf_counter()
    trained = nets.train_network(
        spec, nets.init_network(spec, 0, dtype=jnp.float64), data, steps=args.steps, batch_size=500
    )
    out = {
        "machine": machine(),
        "N": int(data.X.shape[0]),
        "spec": spec.to_dict(),
        "train_steps": args.steps,
        "train_s": time.perf_counter() - t,
        "train_accuracy": nets.accuracy(spec, trained.params, data.X, data.labels),
    }
    params = trained.params

    def loss(p, batch):
        return nets.network_loss(spec, p, batch[0], batch[1], regularized=False)

    batch = (jnp.asarray(data.X), jnp.asarray(data.labels))
    op = C.hessian_operator(loss, params, data=batch, batch_size=args.batch_size)
    whole = C.hessian_operator(lambda p: loss(p, batch), params)  # all 10 000 images in one array
    out["P"] = op.dim
    V = np.random.default_rng(0).standard_normal((op.dim, 3))
    HV, HV_ref = np.asarray(op.matmat(V)), np.asarray(whole.matmat(V))
    out["streamed_vs_single_array_hvp_rel"] = float(np.abs(HV - HV_ref).max() / np.abs(HV_ref).max())
    v = jnp.asarray(V[:, 0])
    op.matvec(v).block_until_ready()
    t = time.perf_counter()
    op.matvec(v).block_until_ready()
    out["streamed_hvp_s"] = time.perf_counter() - t
    t = time.perf_counter()
    top = C.top_eigenpairs(op, k=args.k)
    out["topk_s"] = time.perf_counter() - t
    out["topk"] = top.eigenvalues.tolist()
    out["topk_info"] = {key: top.info[key] for key in ("method", "products", "restarts", "converged", "phases")}
    out["topk_max_residual"] = float(top.residuals.max())
    out["outliers_by_gap"] = C.count_outliers(top.eigenvalues)
    t = time.perf_counter()
    tr = C.trace(op, num_samples=20)
    out["trace"] = {"value": tr.value, "stderr": tr.stderr, "s": time.perf_counter() - t}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(dumps(out, indent=1))


if __name__ == "__main__":
    main()
