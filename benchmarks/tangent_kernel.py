"""Top-s tangent-kernel eigenpairs: matrix-free (VJP then JVP, block Krylov) vs dense J Jᵀ.

    PYTHONPATH=. python benchmarks/tangent_kernel.py [--quick] [--json PATH]

For a 2-layer NTK tanh MLP (d = 16) over a grid of n samples and widths (P = 17 · width
parameters): seconds for the top-s (s = 5) eigenpairs of K = J Jᵀ (n × n) by

* ``dense``: J (n × P, the memory reported) by per-sample ``jax.jacrev`` (vmapped,
  ``tangent_kernel(..., independent=True)``), ``J Jᵀ``, LAPACK ``eigh``;
* ``matrix-free``: `ufm.dynamics.tangent_kernel_operator` through
  ``ufm.curvature.top_eigenpairs`` (tol 1e-8) — J is never formed;
* ``structured``: `NTKMLP.tangent_kernel` (the layer-wise Gram form, O(n² Σ widths)) + ``eigh``.

Each is timed after one warm-up call (compilation reported apart), median of 3. The dense
route is skipped when J would exceed ``--max-jacobian-mb``. Ratios are printed side by side
and saved with the machine description; never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ufm import curvature  # noqa: E402
from ufm import dynamics as D  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402


def _timed(fn, repeats=3):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    if first > 20:  # slow enough that compilation is noise: one more call
        repeats = 1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return out, first, float(np.median(times))


def bench(n, width, s, max_mb, max_eigh_n):
    model = D.NTKMLP(16, width, 2, 1, "tanh")
    params = model.init(jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (n, 16))
    row = {"n": n, "width": width, "P": model.num_params, "jacobian_mb": n * model.num_params * 8 / 2**20}

    op = D.tangent_kernel_operator(model, params, X)
    mf, first, t = _timed(lambda: curvature.top_eigenpairs(op, None, s, tol=1e-8))
    row.update(matrix_free_s=t, matrix_free_first_s=first, products=mf.info["products"], converged=mf.converged)

    if n > max_eigh_n:  # a full n × n eigh is O(n³): the reason to go matrix-free
        row["structured_s"] = row["dense_s"] = None
        return row
    # X is an argument, not a closed-over constant (XLA would constant-fold the Gram matrices)
    structured = jax.jit(lambda p, X: jnp.linalg.eigh(model.tangent_kernel(p, X))[0][-s:][::-1])
    vals, first, t = _timed(lambda: structured(params, X))
    row.update(
        structured_s=t,
        structured_first_s=first,
        max_rel_diff_structured=float(np.max(np.abs(np.asarray(vals) - mf.eigenvalues) / mf.eigenvalues)),
    )

    if row["jacobian_mb"] <= max_mb:
        dense = jax.jit(lambda p, X: jnp.linalg.eigh(D.tangent_kernel(model, p, X, independent=True))[0][-s:][::-1])
        vals, first, t = _timed(lambda: dense(params, X))
        row.update(
            dense_s=t,
            dense_first_s=first,
            ratio_dense_over_matrix_free=t / row["matrix_free_s"],
            max_rel_diff_dense=float(np.max(np.abs(np.asarray(vals) - mf.eigenvalues) / mf.eigenvalues)),
        )
    else:
        row["dense_s"] = None
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small sizes (a smoke run)")
    ap.add_argument("--max-jacobian-mb", type=float, default=400.0)
    ap.add_argument("--max-eigh-n", type=int, default=2048, help="skip the n × n eigh routes above this n")
    ap.add_argument("--json", default="benchmarks/results/tangent_kernel.json")
    args = ap.parse_args(argv)
    grid = (
        [(64, 128), (256, 256)]
        if args.quick
        else [(128, 256), (512, 256), (512, 2048), (2048, 256), (2048, 2048), (4096, 4096)]
    )
    results = {"machine": machine(), "s": 5, "rows": []}
    print(
        f"{'n':>6} {'width':>6} {'P':>8} {'J MB':>8} {'dense s':>9} {'matfree s':>10} {'struct s':>9} "
        f"{'dense/mf':>9} {'products':>8}"
    )
    for n, width in grid:
        r = bench(n, width, 5, args.max_jacobian_mb, args.max_eigh_n)
        results["rows"].append(r)
        fmt = lambda v, spec: "skipped" if v is None else format(v, spec)  # noqa: E731
        print(
            f"{n:6d} {width:6d} {r['P']:8d} {r['jacobian_mb']:8.1f} {fmt(r['dense_s'], '.4f'):>9} "
            f"{r['matrix_free_s']:10.4f} {fmt(r['structured_s'], '.4f'):>9} "
            f"{fmt(r.get('ratio_dense_over_matrix_free'), '.2f'):>9} {r['products']:8d}",
            flush=True,
        )
        if args.json:  # after every row: a long run that is stopped keeps what it measured
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                f.write(dumps(results, indent=1))


if __name__ == "__main__":
    main()
