"""Top-k eigenpairs at their floor (issue 21 item 1), printed and saved as JSON with the machine.

    PYTHONPATH=. python benchmarks/topk.py [--quick] [--ks 10 20 50] [--no-torch] [--json PATH]

Workloads (each in its own subprocess, ``--worker``):

* ``mlp``: the Hessian of a tanh MLP 784-256-256-10 (P = 269 322) on N = 1000 random samples of
  MNIST's shape (Gaussian inputs, uniform labels; ``_env.mlp_data``), mean cross-entropy,
  float32, tol 1e-6, for each k in ``--ks``;
* ``ufm``: the W_2 block of a deep UFM at its exact collapsed optimum
  (``ufm.theory.construct_optimum``, K = 4, width 256, P = 65 536, float64), whose top
  eigenvalue has multiplicity K² = 16 (``docs/theory.md`` §4); k = K².

Routes, one run each after a warm-up (compilation excluded):

* ``ufm``: `ufm.curvature.top_eigenpairs`, the default (adaptive) solver, the best of 3 runs.
  Two floors: products × one ``Operator.matvec`` (``hvp_s``; it re-linearises at every call,
  the floor of the earlier tables, ``over_floor``) and products × one product as the solver
  pays it, linearised once, inside a compiled loop (``hvp_in_solver_s``,
  ``over_floor_in_solver``); ``bookkeeping_ms_per_product`` = (wall − products ×
  ``hvp_in_solver_s``) / products;
* ``eigsh_ufm_hvp``: scipy ``eigsh`` (ARPACK, default ncv = 2k + 1, BLAS on one thread) over
  ufm's own jitted HVP (``Operator.to_scipy()``): a baseline that needs no torch;
* ``torch_eigsh`` (MLP, when torch is importable): PyTorch's cached-graph double-backward HVP
  fed to ``eigsh`` (PyHessian's route), torch on one thread.

``profile`` times the phases of one step at the basis shape of each Krylov phase (Lanczos, and
the block phase when the multiplicity check found a group): the coefficient pass ``H = W Vᵀ``
and the update ``W − H V`` (one read of the basis each), the m × m ``eigh``, a block's QR, and a
restart (``X = Zᵀ V``). ``speedup_at_floor`` is the speed-up over torch + ``eigsh`` that a
solver exactly at its in-solver floor would reach.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _env import machine, median_time  # noqa: E402

from ufm.results import dumps  # noqa: E402


def _counted(op_scipy):
    """A scipy LinearOperator that counts its products (matvec and matmat columns)."""
    import scipy.sparse.linalg as sla

    count = [0]

    def mv(x):
        count[0] += 1
        return op_scipy.matvec(x)

    return sla.LinearOperator(op_scipy.shape, matvec=mv, dtype=op_scipy.dtype), count


def _eigsh(lin, count, k, tol, dtype):
    import scipy.sparse.linalg as sla
    from threadpoolctl import threadpool_limits

    v0 = np.ones(lin.shape[0], dtype)
    with threadpool_limits(1, user_api="blas"):
        sla.eigsh(lin, k=k, which="LA", tol=tol, v0=v0)  # warm-up
        count[0] = 0
        t = time.perf_counter()
        w, _ = sla.eigsh(lin, k=k, which="LA", tol=tol, v0=v0)
        elapsed = time.perf_counter() - t
    return np.sort(w)[::-1], elapsed, count[0]


def _run(f, a):
    import jax

    return jax.block_until_ready(f(*a))


def _profile(op, top, repeats=5):
    """Per-step phase times (s) at the basis shape of each Krylov phase the solver ran.

    One coefficient pass (``H = W Vᵀ``, `_coefficients`: one read of the basis), one update
    (``W − H V``), the m × m ``eigh`` of the Rayleigh quotient, the QR of a block (b > 1), and a
    restart (``X = Zᵀ V``); LAPACK on one thread as in the solver.
    """
    import functools

    import jax
    import jax.numpy as jnp
    from threadpoolctl import threadpool_limits

    from ufm.curvature import eigensolver as E

    out = {}
    P, dtype = op.dim, jnp.dtype(op.dtype)
    rng = np.random.default_rng(0)
    for phase in top.info["phases"]:
        keep, b, nb = phase.get("keep"), phase.get("block_size"), phase.get("num_blocks")
        if keep is None or phase.get("phase") == "multiplicity check":
            continue
        m = keep + nb * b
        V = jnp.asarray(rng.standard_normal((m + b, P)).astype(dtype) / np.sqrt(P))
        w = jnp.asarray(rng.standard_normal((b, P)).astype(dtype))
        H = jnp.asarray(rng.standard_normal((b, m + b)).astype(dtype))
        T = jnp.asarray(rng.standard_normal((m, m)).astype(dtype))
        T = T + T.T
        Z = jnp.asarray(rng.standard_normal((m + b, keep + b)).astype(dtype))
        coef = jax.jit(E._coefficients)
        update = jax.jit(E._subtract)
        eigh = jax.jit(jnp.linalg.eigh)
        qr = jax.jit(lambda w: jnp.linalg.qr(w.T))
        restart = jax.jit(lambda Z, V: Z.T @ V)
        calls = {"coefficients_s": (coef, (V, w)), "update_s": (update, (V, H, w)), "eigh_s": (eigh, (T,))}
        calls["restart_s"] = (restart, (Z, V))
        if b > 1:
            calls["qr_s"] = (qr, (w,))
        row = {"block_size": b, "basis_rows": m + b, "basis_mib": (m + b) * P * dtype.itemsize / 2**20}
        with threadpool_limits(1, user_api="blas"):
            for name, (f, a) in calls.items():
                jax.block_until_ready(f(*a))
                row[name] = median_time(functools.partial(_run, f, a), 4 * repeats if name == "eigh_s" else repeats)
        out[f"b{b}"] = row
    return out


def _product_in_solver_s(op, repeats=5):
    """The time of one product as the solver pays it: inside a jitted loop, ``make(args)`` traced once.

    ``Operator.matvec`` re-linearises at every call (forward + backward pass, then the product);
    the solver linearises once per phase. Measured as (21 products − 1 product) / 20 in one
    compiled ``fori_loop`` (vmapped over a batch of 1, as `_block_krylov` calls it).
    """
    import functools

    import jax
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnums=(0, 2))
    def loop(make, args, n, v):
        A = jax.vmap(make(args))

        def step(i, x):
            y = A(x)
            return y / jnp.linalg.norm(y)

        return jax.lax.fori_loop(0, n, step, v[None])

    v = jnp.asarray(np.random.default_rng(1).standard_normal(op.dim), op.dtype)
    for n in (1, 21):
        loop(op.make, op.args, n, v).block_until_ready()
    one = median_time(lambda: loop(op.make, op.args, 1, v).block_until_ready(), repeats)
    many = median_time(lambda: loop(op.make, op.args, 21, v).block_until_ready(), repeats)
    return max((many - one) / 20, 0.0)


def _ufm_route(op, k, tol, out):
    import jax

    from ufm import curvature as C

    C.top_eigenpairs(op, None, k, tol=tol)  # compile every phase
    walls = []
    for _ in range(3):  # the best of 3 (the machine is shared)
        t = time.perf_counter()
        top = C.top_eigenpairs(op, None, k, tol=tol)
        walls.append(time.perf_counter() - t)
    out["ufm_s"] = min(walls)
    out["ufm_s_runs"] = walls
    out["ufm_products"] = top.info["products"]
    out["ufm_restarts"] = top.info["restarts"]
    out["ufm_phases"] = top.info["phases"]
    out["ufm_converged"] = top.converged
    out["ufm_max_rel_residual"] = float(top.residuals.max() / np.abs(top.eigenvalues).max())
    X = top.eigenvectors
    out["ufm_max_orthogonality_error"] = float(np.abs(X.T @ X - np.eye(k)).max())
    v = jax.numpy.asarray(np.random.default_rng(1).standard_normal(op.dim), op.dtype)
    op.matvec(v).block_until_ready()
    out["hvp_s"] = median_time(lambda: op.matvec(v), 7)
    out["hvp_in_solver_s"] = _product_in_solver_s(op)
    out["ufm_floor_s"] = out["ufm_products"] * out["hvp_s"]
    out["ufm_over_floor"] = out["ufm_s"] / out["ufm_floor_s"]
    out["ufm_over_floor_in_solver"] = out["ufm_s"] / (out["ufm_products"] * out["hvp_in_solver_s"])
    out["bookkeeping_ms_per_product"] = (
        1e3 * (out["ufm_s"] - out["ufm_products"] * out["hvp_in_solver_s"]) / out["ufm_products"]
    )
    out["profile"] = _profile(op, top)
    return top


def worker_mlp(cfg):

    from scale import jax_mlp, torch_mlp

    from ufm import curvature as C

    sizes, N, k, tol = tuple(cfg["sizes"]), cfg["N"], cfg["k"], cfg["tol"]
    params, loss, data = jax_mlp(sizes, N, np.float32)

    def closed(p):
        return loss(p, data)

    op = C.hessian_operator(closed, params)
    out = {"workload": f"tanh MLP {'-'.join(map(str, sizes))}, N={N}, CE, float32", "P": op.dim, "k": k, "tol": tol}
    top = _ufm_route(op, k, tol, out)
    lin, count = _counted(op.to_scipy())
    w, out["eigsh_ufm_hvp_s"], out["eigsh_ufm_hvp_products"] = _eigsh(lin, count, k, tol, np.float32)
    out["max_rel_eig_diff_vs_eigsh"] = float(np.abs(w - top.eigenvalues).max() / np.abs(w).max())
    out["speedup_vs_eigsh_ufm_hvp"] = out["eigsh_ufm_hvp_s"] / out["ufm_s"]
    if cfg.get("torch"):
        try:
            import torch
        except ImportError:
            return out
        import scipy.sparse.linalg as sla

        torch.set_num_threads(1)
        tparams, tloss = torch_mlp(sizes, N, torch.float32)
        flat_g = torch.cat([g.reshape(-1) for g in torch.autograd.grad(tloss(), tparams, create_graph=True)])

        def mv(x):
            vt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1), dtype=np.float32))
            hv = torch.autograd.grad(flat_g, tparams, grad_outputs=vt, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv]).numpy()

        tlin, tcount = _counted(sla.LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float32))
        wt, out["torch_eigsh_s"], out["torch_products"] = _eigsh(tlin, tcount, k, tol, np.float32)
        x = np.random.default_rng(1).standard_normal(op.dim).astype(np.float32)
        out["torch_hvp_s"] = median_time(lambda: mv(x), 7)
        out["speedup_vs_torch_eigsh"] = out["torch_eigsh_s"] / out["ufm_s"]
        out["hvp_jax_in_solver_over_torch"] = out["hvp_in_solver_s"] / out["torch_hvp_s"]
        # the speed-up a solver exactly at its floor (products x in-solver product) would reach
        out["speedup_at_floor"] = out["torch_eigsh_s"] / (out["ufm_products"] * out["hvp_in_solver_s"])
        out["max_rel_eig_diff_vs_torch"] = float(np.abs(wt - top.eigenvalues).max() / np.abs(wt).max())
    return out


def worker_ufm(cfg):
    import jax

    jax.config.update("jax_enable_x64", True)  # a benchmark script owns its precision
    import ufm
    from ufm import curvature as C

    spec = ufm.UFMSpec(num_classes=cfg["K"], width=cfg["width"])
    params = ufm.theory.construct_optimum(spec)
    op = C.hessian_operator(ufm.model.loss_fn(spec), params, leaves=[2])
    k, tol = cfg["K"] ** 2, cfg["tol"]
    out = {"workload": f"collapsed UFM W_2 block, K={cfg['K']}, width {cfg['width']}, float64", "P": op.dim, "k": k}
    out["tol"] = tol
    top = _ufm_route(op, k, tol, out)
    values, mult = top.levels(rtol=1e-6)
    out["ufm_levels"] = [[float(a), int(m)] for a, m in zip(values, mult, strict=True)]
    out["multiplicity_right"] = bool(mult[0] == k)  # K² equal outliers (docs/theory.md §4)
    lin, count = _counted(op.to_scipy())
    w, out["eigsh_ufm_hvp_s"], out["eigsh_ufm_hvp_products"] = _eigsh(lin, count, k, tol, np.float64)
    out["eigsh_levels"] = [[float(a), int(m)] for a, m in zip(*_levels(w), strict=True)]
    out["max_rel_eig_diff_vs_eigsh"] = float(np.abs(w - top.eigenvalues).max() / np.abs(w).max())
    out["speedup_vs_eigsh_ufm_hvp"] = out["eigsh_ufm_hvp_s"] / out["ufm_s"]
    return out


def _levels(w):
    from ufm.spectrum import group_levels

    return group_levels(w, rtol=1e-6)


WORKERS = {"mlp": worker_mlp, "ufm": worker_ufm}


def run_worker(kind, cfg, timeout=3000):
    from scale import run_worker as run_script  # one subprocess runner for the benchmarks

    row = run_script(kind, cfg, timeout=timeout, script=__file__)
    if "error" not in row:
        row["load_average_after"] = os.getloadavg()[0]
    return row


KEYS = [
    "k",
    "ufm_s",
    "ufm_products",
    "hvp_s",
    "hvp_in_solver_s",
    "ufm_over_floor",
    "ufm_over_floor_in_solver",
    "bookkeeping_ms_per_product",
    "eigsh_ufm_hvp_s",
    "eigsh_ufm_hvp_products",
    "torch_eigsh_s",
    "torch_products",
    "speedup_vs_torch_eigsh",
    "torch_hvp_s",
    "hvp_jax_in_solver_over_torch",
    "speedup_at_floor",
    "speedup_vs_eigsh_ufm_hvp",
    "multiplicity_right",
    "load_average_after",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models (a smoke run)")
    ap.add_argument("--ks", type=int, nargs="*", default=[10, 20, 50])
    ap.add_argument("--only", nargs="*", default=["mlp", "ufm"], choices=["mlp", "ufm"])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "topk.json"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return 0
    q = args.quick
    results = {"machine": machine(), "quick": q, "rows": []}
    if "mlp" in args.only:
        sizes, N = ([64, 32, 10], 200) if q else ([784, 256, 256, 10], 1000)
        for k in args.ks:
            cfg = {"sizes": sizes, "N": N, "k": k, "tol": 1e-6, "torch": not args.no_torch}
            results["rows"].append(run_worker("mlp", cfg))
            _print(results["rows"][-1])
    if "ufm" in args.only:
        results["rows"].append(run_worker("ufm", {"K": 4, "width": 32 if q else 256, "tol": 1e-6}))
        _print(results["rows"][-1])
    results["load_average_at_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        f.write(dumps(results, indent=1))
    print(f"\nsaved {args.json}")
    return 0


def _print(r):
    if "error" in r:
        print("  ERROR", r["error"][-600:])
        return
    print(f"\n== {r['workload']} (P={r['P']})")
    print(
        "  "
        + "  ".join(
            f"{key}={r[key]:.4g}" if isinstance(r[key], float) else f"{key}={r[key]}" for key in KEYS if key in r
        )
    )
    for name, prof in (r.get("profile") or {}).items():
        print(f"  profile per step ({name}):", {key: round(val, 5) for key, val in prof.items()})


if __name__ == "__main__":
    sys.exit(main())
