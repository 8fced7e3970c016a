"""Diffusion-map benchmark: time and peak memory for N points in R^m (printed, never asserted).

    PYTHONPATH=. python benchmarks/diffusion_map.py [--cases 1000x10000 5000x10000 1000x1000000 5000x1000000]
                                                   [--method dense krylov] [--json PATH]

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own. The points are a 3-dimensional Gaussian cloud embedded in R^m by a random frame,
generated *lazily* column block by column block (`LazyPoints`): the m = 10⁶, N = 5000
trajectory would be 20 GB in float32, and like a memmapped recording it is never held in
memory — the library streams it through the chunked Gram matrix (``docs/diffusion_maps.md``
§1, §7). Phases: the chunked squared distances, the kernel-sum curve, the eigensolver (top
11 pairs; ``dense`` LAPACK subset or ``krylov`` block Krylov). Printed ratios: time of the
Gram pass per N²m, peak memory against the 3 N² float64 model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# One BLAS thread for LAPACK (as benchmarks/curvature.py): on a shared, oversubscribed
# 2-core machine multi-threaded OpenBLAS eigh was 10× slower (N = 1000: 14.8 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine

from ufm.results import dumps

RANK = 3


class LazyPoints:
    """(N, m) points ``Z Fᵀ`` with Z ~ N(0, I_3) rows and a random frame F, made per column block."""

    def __init__(self, N: int, m: int, seed: int = 0):
        self.shape, self.dtype = (N, m), np.float32
        self.Z = np.random.default_rng(seed).standard_normal((N, RANK)).astype(np.float32)
        self.seed = seed

    def __getitem__(self, idx):
        rows, cols = idx
        a, b, _ = cols.indices(self.shape[1])
        F = np.random.default_rng([self.seed, a]).standard_normal((b - a, RANK)).astype(np.float32)
        return (self.Z @ F.T / np.sqrt(self.shape[1] / RANK))[rows]


def run_case(N: int, m: int, method: str, chunk: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ufm.dynamics import _diffusion_map as D

    X = LazyPoints(N, m)
    out = {"N": N, "m": m, "method": method, "chunk_size": chunk}
    t = time.perf_counter()
    D2 = D.squared_distances(X, chunk_size=chunk).block_until_ready()
    out["distances_s"] = time.perf_counter() - t
    t = time.perf_counter()
    curve = D._kernel_sum_curve(D2, 60, 0.1)
    out["kernel_sum_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dm = D._diffusion_map(D2, curve.median_epsilon, 0.5, 10, 1, method)
    out["eigensolver_s"] = time.perf_counter() - t
    out["total_s"] = out["distances_s"] + out["kernel_sum_s"] + out["eigensolver_s"]
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["model_3N2_gb"] = 3 * N * N * 8 / 2**30
    out["gram_ns_per_N2m"] = out["distances_s"] / (N * N * m) * 1e9
    out["dimension_estimate"] = curve.dimension_estimate
    out["top_eigenvalues"] = dm.eigenvalues[:5].tolist()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["1000x10000", "5000x10000", "1000x1000000", "5000x1000000"])
    p.add_argument("--method", nargs="+", default=["dense"], choices=["dense", "krylov"])
    p.add_argument("--chunk-size", type=int, default=8192)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "diffusion_map.json"))
    p.add_argument("--one", nargs=3, metavar=("N", "M", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # the subprocess
        print(json.dumps(run_case(int(args.one[0]), int(args.one[1]), args.one[2], args.chunk_size)))
        return 0
    results, load = [], os.getloadavg()
    print(
        f"{'N':>6} {'m':>9} {'method':>7} {'dist s':>8} {'S(ε) s':>7} {'eig s':>7} {'total s':>8} "
        f"{'peak GB':>8} {'3N² GB':>7} {'ns/N²m':>7}"
    )
    for case in args.cases:
        N, m = (int(v) for v in case.lower().split("x"))
        for method in args.method:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(N), str(m), method, "--chunk-size", str(args.chunk_size)],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                print(f"{N:>6} {m:>9} {method:>7} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{N:>6} {m:>9} {method:>7} {r['distances_s']:8.2f} {r['kernel_sum_s']:7.2f} {r['eigensolver_s']:7.2f} "
                f"{r['total_s']:8.2f} {r['peak_rss_gb']:8.2f} {r['model_3N2_gb']:7.2f} {r['gram_ns_per_N2m']:7.3f}",
                flush=True,
            )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    info = {"machine": machine(load_average_at_start=load, load_average_at_end=os.getloadavg()), "results": results}
    with open(args.json, "w") as f:
        f.write(dumps(info, indent=1))
    print(f"# saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
