"""Scale benchmarks of the curvature engine (issue 11 item 4), printed and saved as JSON.

    PYTHONPATH=. python benchmarks/scale.py [--quick] [--only hvp devices topk dense] [--json PATH]

1. ``hvp``: products per second and peak memory (max RSS of a fresh process) of the
   Hessian-vector product of a tanh MLP streamed over its data in batches
   (``hessian_operator(loss, params, data=..., batch_size=...)``), float32.
2. ``devices``: the same product sharded over 1, 2, 4, 8 devices (simulated CPU devices
   with ``XLA_FLAGS=--xla_force_host_platform_device_count``; on one host with several
   accelerators the same script measures real scaling; on CPU it measures the overhead).
3. ``topk``: top-20 of a tanh MLP 784-256-256-10 (N = 1000, CE, float32, tol 1e-6): the
   default ``ufm.curvature.top_eigenpairs`` against PyTorch's cached-graph HVP fed to scipy
   ``eigsh`` (PyHessian's / curvlinops users' route; BLAS single-threaded for scipy), with
   the time ratio, product counts, and ufm's time over its own floor (its products × its
   single-HVP time).
4. ``dense``: dense Hessian of a tanh MLP with P ≈ 9 000 in float64: ``ufm.curvature.hessian``
   against torch's chunked ``torch.func.jacrev(torch.func.grad(f), chunk_size=...)``; time
   and peak memory (each in its own process).

Peak memory is reported twice: XLA's buffer plan of the compiled product
(``memory_analysis().temp_size_in_bytes``: the temporaries one product needs, which is what
the batch size controls) and the max RSS of the worker process (dominated by the JAX
runtime, ~340 MiB, at these sizes). Every measurement that needs its own memory high-water mark or XLA flags runs in a
subprocess (``--worker``). torch is optional and never imported by ufm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # also under python -m benchmarks.x
from _env import machine, median_time, mlp_data  # noqa: E402

from ufm.results import dumps  # noqa: E402


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def jax_mlp(sizes, num_samples, dtype):
    """``(params, loss(params, batch), data)``: tanh MLP, mean cross-entropy over the batch."""
    import jax
    import jax.numpy as jnp

    X, y, Ws, bs = mlp_data(sizes, num_samples)
    params = [{"w": jnp.asarray(W, dtype), "b": jnp.asarray(b, dtype)} for W, b in zip(Ws, bs, strict=True)]

    def loss(p, batch):
        h = batch[0]
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["w"].T + layer["b"])
        z = h @ p[-1]["w"].T + p[-1]["b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), batch[1][:, None], axis=1))

    return params, loss, (jnp.asarray(X, dtype), jnp.asarray(y))


def torch_mlp(sizes, num_samples, dtype):
    import torch

    torch.set_num_threads(1)
    X, y, Ws, bs = mlp_data(sizes, num_samples)
    params = []  # the flat order of ufm's operators: per layer "b" then "w" (sorted dict keys)
    for W, b in zip(Ws, bs, strict=True):
        params += [torch.tensor(b, dtype=dtype, requires_grad=True), torch.tensor(W, dtype=dtype, requires_grad=True)]
    X, y = torch.tensor(X, dtype=dtype), torch.tensor(y)

    def loss_fn(*ps):
        ps = ps or params
        h = X
        for i in range(0, len(ps) - 2, 2):
            h = torch.tanh(h @ ps[i + 1].T + ps[i])
        return torch.nn.functional.cross_entropy(h @ ps[-1].T + ps[-2], y)

    return params, loss_fn


# ---- workers (one measurement per process) ---------------------------------------------
def worker_hvp(cfg):
    import jax

    from ufm import curvature as C

    params, loss, data = jax_mlp(tuple(cfg["sizes"]), cfg["N"], np.float32)
    mesh = C.data_mesh(jax.devices()[: cfg["devices"]]) if cfg["devices"] > 1 else None
    op = C.hessian_operator(loss, params, data=data, batch_size=cfg["batch_size"], mesh=mesh)
    v = jax.numpy.asarray(np.random.default_rng(1).standard_normal(op.dim), np.float32)
    base = _maxrss_mib()
    t = time.perf_counter()
    op.matvec(v).block_until_ready()
    compile_s = time.perf_counter() - t
    per = median_time(lambda: op.matvec(v).block_until_ready(), cfg["repeats"])
    from ufm.curvature._operator import _matvec

    mem = _matvec.lower(op.make, op.args, v).compile().memory_analysis()  # XLA's own buffer plan
    return {
        **cfg,
        "P": op.dim,
        "compile_s": compile_s,
        "hvp_s": per,
        "products_per_s": 1.0 / per,
        "xla_temp_mib": mem.temp_size_in_bytes / 2**20,
        "xla_args_mib": mem.argument_size_in_bytes / 2**20,
        "peak_rss_mib": _maxrss_mib(),
        "rss_before_first_product_mib": base,
    }


def worker_topk(cfg):
    import jax

    from ufm import curvature as C

    sizes, N, k, tol = tuple(cfg["sizes"]), cfg["N"], cfg["k"], cfg["tol"]
    params, loss, data = jax_mlp(sizes, N, np.float32)

    def closed(p):
        return loss(p, data)

    out = {"model": f"tanh MLP {'-'.join(map(str, sizes))}, N={N}, CE, float32", "k": k, "tol": tol}
    C.top_eigenpairs(closed, params, k=k, tol=tol)  # compile every phase
    t = time.perf_counter()
    top = C.top_eigenpairs(closed, params, k=k, tol=tol)
    out["ufm_s"] = time.perf_counter() - t
    out["ufm_products"] = top.info["products"]
    out["ufm_restarts"] = top.info["restarts"]
    out["ufm_phases"] = top.info["phases"]
    out["ufm_converged"] = top.converged
    op = C.hessian_operator(closed, params)
    v = jax.numpy.asarray(np.random.default_rng(1).standard_normal(op.dim), np.float32)
    op.matvec(v).block_until_ready()
    out["ufm_hvp_s"] = median_time(lambda: op.matvec(v).block_until_ready(), 7)
    out["ufm_floor_s"] = out["ufm_products"] * out["ufm_hvp_s"]
    out["ufm_over_floor"] = out["ufm_s"] / out["ufm_floor_s"]
    out["ufm_max_rel_residual"] = float(top.residuals.max() / np.abs(top.eigenvalues).max())
    out["P"] = op.dim
    try:
        import torch
    except ImportError:
        return out
    import scipy.sparse.linalg as sla
    from threadpoolctl import threadpool_limits

    tparams, tloss = torch_mlp(sizes, N, torch.float32)
    grads = torch.autograd.grad(tloss(), tparams, create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    count = [0]

    def mv(x):
        count[0] += 1
        vt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1), dtype=np.float32))
        hv = torch.autograd.grad(flat_g, tparams, grad_outputs=vt, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    P = op.dim
    lin = sla.LinearOperator((P, P), matvec=mv, dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        sla.eigsh(lin, k=k, which="LA", tol=tol, v0=np.ones(P, np.float32))  # warm-up
        count[0] = 0
        t = time.perf_counter()
        w, V = sla.eigsh(lin, k=k, which="LA", tol=tol, v0=np.ones(P, np.float32))
        out["torch_eigsh_s"] = time.perf_counter() - t
    out["torch_products"] = count[0]
    x = np.random.default_rng(1).standard_normal(P).astype(np.float32)
    out["torch_hvp_s"] = median_time(lambda: mv(x), 7)
    out["time_ratio_torch_over_ufm"] = out["torch_eigsh_s"] / out["ufm_s"]
    out["max_rel_eig_diff"] = float(np.abs(np.sort(w)[::-1] - top.eigenvalues).max() / np.abs(w).max())
    return out


def worker_dense(cfg):
    sizes, N, chunk = tuple(cfg["sizes"]), cfg["N"], cfg["chunk"]
    if cfg["route"] == "ufm":
        import jax

        jax.config.update("jax_enable_x64", True)
        from ufm import curvature as C

        params, loss, data = jax_mlp(sizes, N, np.float64)

        def closed(p):
            return loss(p, data)

        base = _maxrss_mib()
        t = time.perf_counter()
        H = C.hessian(closed, params, chunk_size=chunk).block_until_ready()
        first = time.perf_counter() - t
        del H  # else two P × P results are alive at once and the peak RSS counts both
        t = time.perf_counter()
        H = C.hessian(closed, params, chunk_size=chunk).block_until_ready()
        elapsed = time.perf_counter() - t
        H = np.asarray(H)  # a zero-copy view on CPU
        out = {"first_call_s": first}
        from ufm.curvature.dense import _columns

        op = C.hessian_operator(closed, params)
        lowered = _columns.lower(
            op.make, op.args, dim=op.dim, dtype=jax.numpy.dtype(op.dtype), chunk=chunk, col_start=0, num_cols=op.dim
        )
        mem = lowered.compile().memory_analysis()  # XLA's own buffer plan of the whole build
        out["xla_temp_mib"] = mem.temp_size_in_bytes / 2**20
        out["xla_output_mib"] = mem.output_size_in_bytes / 2**20
        out["xla_peak_over_output_mib"] = (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**20
    else:
        import torch

        torch.set_default_dtype(torch.float64)
        tparams, tloss = torch_mlp(sizes, N, torch.float64)
        flat0 = torch.cat([p.detach().reshape(-1) for p in tparams])
        shapes = [p.shape for p in tparams]

        def f(x):
            ps, i = [], 0
            for s in shapes:
                n = int(np.prod(s))
                ps.append(x[i : i + n].reshape(s))
                i += n
            return tloss(*ps)

        base = _maxrss_mib()
        t = time.perf_counter()
        H = torch.func.jacrev(torch.func.grad(f), chunk_size=chunk)(flat0).numpy()
        elapsed = time.perf_counter() - t
        out = {}
    P = H.shape[0]
    return {
        **cfg,
        **out,
        "P": P,
        "time_s": elapsed,
        "peak_rss_mib": _maxrss_mib(),
        "rss_before_mib": base,
        "output_mib": P * P * 8 / 2**20,
        "checksum": float(np.abs(H).sum()),
        "fro": float(np.linalg.norm(H)),
    }


WORKERS = {"hvp": worker_hvp, "topk": worker_topk, "dense": worker_dense}


def run_worker(kind, cfg, devices=1, timeout=3000, script=__file__):
    """``script --worker kind cfg`` in a fresh process (its own peak RSS); its last stdout line as a dict."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(
        [sys.executable, os.path.abspath(script), "--worker", kind, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode:
        return {**cfg, "error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models (a smoke run)")
    ap.add_argument(
        "--only", nargs="*", default=["hvp", "devices", "topk", "dense"], choices=["hvp", "devices", "topk", "dense"]
    )
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scale.json"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return 0
    q = args.quick
    mlp = [64, 32, 10] if q else [784, 256, 256, 10]
    results = {"machine": machine(), "quick": q}
    if "hvp" in args.only:
        N = 1000 if q else 4000
        results["hvp"] = [
            run_worker("hvp", {"sizes": mlp, "N": N, "batch_size": bs, "devices": 1, "repeats": 5})
            for bs in ([N, 250] if q else [N, 2000, 1000, 500, 250])
        ]
        _table(
            "1. HVP vs batch size",
            results["hvp"],
            ["batch_size", "hvp_s", "products_per_s", "xla_temp_mib", "peak_rss_mib"],
        )
    if "devices" in args.only:
        N = 1000 if q else 4000
        results["devices"] = [
            run_worker("hvp", {"sizes": mlp, "N": N, "batch_size": None, "devices": D, "repeats": 5}, devices=D)
            for D in ([1, 4] if q else [1, 2, 4, 8])
        ]
        _table(
            "2. HVP vs (simulated) device count",
            results["devices"],
            ["devices", "hvp_s", "products_per_s", "xla_temp_mib", "peak_rss_mib"],
        )
    if "topk" in args.only:
        results["topk"] = run_worker("topk", {"sizes": mlp, "N": 200 if q else 1000, "k": 20, "tol": 1e-6})
        _table(
            "3. top-20: ufm default vs torch cached HVP + scipy eigsh",
            [results["topk"]],
            [key for key in results["topk"] if key != "ufm_phases"],
        )
    if "dense" in args.only:
        sizes = [64, 40, 10] if q else [128, 64, 10]
        cfg = {"sizes": sizes, "N": 200 if q else 1000, "chunk": 128}
        results["dense"] = [run_worker("dense", {**cfg, "route": r}) for r in ("ufm", "torch")]
        ufm_r, torch_r = results["dense"]
        if "time_s" in ufm_r and "time_s" in torch_r:
            results["dense_summary"] = {
                "time_ratio_ufm_over_torch": ufm_r["time_s"] / torch_r["time_s"],
                "ufm_peak_over_output_mib": ufm_r["peak_rss_mib"] - ufm_r["output_mib"],
                "ufm_xla_peak_over_output_mib": ufm_r.get("xla_peak_over_output_mib"),
                "ufm_rss_growth_over_output_mib": ufm_r["peak_rss_mib"] - ufm_r["rss_before_mib"] - ufm_r["output_mib"],
                "torch_peak_over_output_mib": torch_r["peak_rss_mib"] - torch_r["output_mib"],
                "max_rel_fro_diff": abs(ufm_r["fro"] - torch_r["fro"]) / torch_r["fro"],
            }
        _table("4. dense Hessian, float64", results["dense"], ["route", "P", "time_s", "peak_rss_mib", "output_mib"])
        print(results.get("dense_summary"))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        f.write(dumps(results, indent=1))
    print(f"\nsaved {args.json}")
    return 0


def _table(title, rows, keys):
    print(f"\n== {title}")
    for r in rows:
        if "error" in r:
            print("  ERROR", r["error"][-400:])
            continue
        print(
            "  "
            + "  ".join(
                f"{key}={r.get(key):.4g}" if isinstance(r.get(key), float) else f"{key}={r.get(key)}" for key in keys
            )
        )


if __name__ == "__main__":
    sys.exit(main())
