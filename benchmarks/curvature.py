"""Curvature benchmarks, printed side by side (never asserted).

    PYTHONPATH=. python benchmarks/curvature.py [--quick] [--sizes 2000 5000] [--no-torch] [--json PATH]
                                                [--only 1 3 ...]

1. HVP / gradient time (tanh MLP, cross-entropy, float64), JAX: plain forward-over-reverse,
   linearised (``jax.linearize`` once, reused), vmapped block of 32; PyTorch peer:
   double-backward with a cached graph (PyHessian's route).
2. top-(K²+5) eigenpairs of collapsed UFMs (K=4) at P ≈ 2k, 5k (10k with --sizes): restarted
   block Krylov vs the dense route (chunked HVP Hessian + LAPACK ``eigh`` of the top
   subset).
3. top-20 of the MLP Hessian: JAX block Krylov vs torch HVP + scipy ``eigsh`` (ARPACK,
   OPENBLAS threads limited to 1 as asked), equal tolerance; both residuals re-measured.
4. dense Hessian of an MLP with P ≈ 9k (float64): JAX chunked vmapped HVPs vs torch
   chunked batched double-backward (``is_grads_batched``).

Timings are medians of a few runs after one warm-up (compilation reported apart).
torch is optional and never imported by ufm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# One BLAS thread (as the brief asks for eigsh, applied to every LAPACK call here): on a
# shared, oversubscribed 2-core machine multi-threaded OpenBLAS is up to 40× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import ufm  # noqa: E402
from ufm import curvature as C  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine, median_time, mlp_data  # noqa: E402

from ufm.results import dumps  # noqa: E402


# ---- problems ------------------------------------------------------------------------
def jax_mlp(X, y, Ws, bs):
    params = [{"w": jnp.asarray(W), "b": jnp.asarray(b)} for W, b in zip(Ws, bs, strict=True)]
    X, y = jnp.asarray(X), jnp.asarray(y)

    def loss_fn(p):
        h = X
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["w"].T + layer["b"])
        z = h @ p[-1]["w"].T + p[-1]["b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

    return params, loss_fn


def torch_mlp(X, y, Ws, bs):
    import torch

    torch.set_num_threads(1)  # 2 threads on the shared 2-core machine made torch ~10× slower
    torch.set_default_dtype(torch.float64)
    params = []  # the flat order of jax's ravel_pytree: per layer "b" then "w"
    for W, b in zip(Ws, bs, strict=True):
        params += [torch.tensor(b, requires_grad=True), torch.tensor(W, requires_grad=True)]
    X, y = torch.tensor(X), torch.tensor(y)

    def loss_fn():
        h = X
        for i in range(0, len(params) - 2, 2):
            h = torch.tanh(h @ params[i + 1].T + params[i])
        z = h @ params[-1].T + params[-2]
        return torch.nn.functional.cross_entropy(z, y)

    return params, loss_fn


def torch_hvp_cached(params, loss_fn):
    """PyHessian's route: one graph of the gradient, reused for every product."""
    import torch

    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    sizes = [p.numel() for p in params]

    def hvp(v):  # v: flat torch tensor (P,) or (B, P) with batched=True
        out = torch.autograd.grad(flat_g, params, grad_outputs=v, retain_graph=True, is_grads_batched=v.ndim == 2)
        return torch.cat([o.reshape(v.shape[0], -1) if v.ndim == 2 else o.reshape(-1) for o in out], dim=-1)

    def grad():
        return torch.autograd.grad(loss_fn(), params)

    return hvp, grad, sum(sizes)


# ---- 1. HVP / gradient ------------------------------------------------------------------
def bench_hvp(sizes, num_samples, repeats, use_torch):
    X, y, Ws, bs = mlp_data(sizes, num_samples)
    params, loss_fn = jax_mlp(X, y, Ws, bs)
    P = sum(x.size for x in jax.tree_util.tree_leaves(params))
    rng = np.random.default_rng(1)
    v = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), params)
    grad = jax.jit(jax.grad(loss_fn))
    hvp = jax.jit(lambda p, t: C.hvp(loss_fn, p, t))
    lin = jax.jit(lambda p: C.linearized_hvp(loss_fn, p))  # returns a jitted-closure linear map
    op = C.hessian_operator(loss_fn, params)
    V = jnp.asarray(rng.standard_normal((32, op.dim)))

    @jax.jit
    def block_hvp(args, V):
        return jax.vmap(op.make(args))(V)

    # linearised products: the linearisation is traced once, each product is a jitted linear map
    lin_fn = jax.linearize(jax.grad(loss_fn), params)[1]
    lin_jit = jax.jit(lin_fn)
    out = {"model": f"tanh MLP {'-'.join(map(str, sizes))}, N={num_samples}, CE, float64", "P": P}
    t = time.perf_counter()
    jax.block_until_ready((grad(params), hvp(params, v), lin_jit(v), block_hvp(op.args, V)))
    out["jax_compile_s"] = time.perf_counter() - t
    del lin
    out["jax_grad_s"] = median_time(lambda: grad(params), repeats)
    out["jax_hvp_s"] = median_time(lambda: hvp(params, v), repeats)
    out["jax_hvp_linearized_s"] = median_time(lambda: lin_jit(v), repeats)
    out["jax_hvp_block32_per_product_s"] = median_time(lambda: block_hvp(op.args, V), repeats) / 32
    out["ratio_hvp_over_grad"] = out["jax_hvp_s"] / out["jax_grad_s"]
    out["ratio_linearized_hvp_over_grad"] = out["jax_hvp_linearized_s"] / out["jax_grad_s"]
    if use_torch:
        import torch

        torch.set_default_dtype(torch.float64)
        tparams, tloss = torch_mlp(X, y, Ws, bs)
        thvp, tgrad, _ = torch_hvp_cached(tparams, tloss)
        tv = torch.tensor(np.asarray(jax.flatten_util.ravel_pytree(v)[0]))
        thvp(tv), tgrad()
        out["torch_grad_s"] = median_time(tgrad, repeats)
        out["torch_hvp_cached_s"] = median_time(lambda: thvp(tv), repeats)
        tV = torch.tensor(np.asarray(V))
        out["torch_hvp_block32_per_product_s"] = median_time(lambda: thvp(tV), repeats) / 32
        out["ratio_jax_linearized_over_torch_cached"] = out["jax_hvp_linearized_s"] / out["torch_hvp_cached_s"]
        out["ratio_jax_block_over_torch_block"] = (
            out["jax_hvp_block32_per_product_s"] / out["torch_hvp_block32_per_product_s"]
        )
        # agreement of the two products (same maths, independent code)
        jax_flat = np.asarray(jax.flatten_util.ravel_pytree(lin_jit(v))[0])
        out["max_rel_diff_jax_vs_torch_hvp"] = float(
            np.abs(jax_flat - thvp(tv).detach().numpy()).max() / np.abs(jax_flat).max()
        )
    return out


# ---- 2. top-k vs dense on collapsed UFMs --------------------------------------------------
def ufm_of_size(target_P, steps):
    K, n, L = 4, 5, 3
    N = K * n
    # P = d N + (L − 1) d² + K d
    d = int(np.floor((-(N + K) + np.sqrt((N + K) ** 2 + 4 * (L - 1) * target_P)) / (2 * (L - 1))))
    spec = ufm.UFMSpec(num_classes=K, per_class=n, depth=L, width=d)
    res = ufm.train(spec, ufm.init_params(spec, 0), steps=steps)
    return spec, res


def bench_topk_ufm(target_P, steps, repeats):
    spec, res = ufm_of_size(target_P, steps)
    loss = ufm.model.loss_fn(spec)  # regularised, all leaves
    K = spec.num_classes
    k = K * K + 5
    out = {
        "P": spec.num_params,
        "width": spec.widths[0],
        "k": k,
        "train_grad_norm": float(res.history["grad_norm"][-1]),
    }
    t = time.perf_counter()
    top = C.top_eigenpairs(loss, res.params, k)
    out["topk_first_call_s"] = time.perf_counter() - t
    out["topk_s"] = median_time(lambda: C.top_eigenpairs(loss, res.params, k).eigenvalues, repeats)
    out["topk_products"] = top.info["products"]
    out["topk_max_residual"] = float(top.residuals.max())
    t = time.perf_counter()
    H = np.asarray(C.hessian(loss, res.params))
    out["dense_build_first_call_s"] = time.perf_counter() - t
    out["dense_build_s"] = median_time(lambda: C.hessian(loss, res.params), 1)
    P = H.shape[0]
    t = time.perf_counter()
    w, V = scipy.linalg.eigh(H, subset_by_index=[P - k, P - 1], driver="evr")
    out["dense_eigh_topk_s"] = time.perf_counter() - t
    del H, V
    out["dense_total_s"] = out["dense_build_s"] + out["dense_eigh_topk_s"]
    out["speedup_dense_over_topk"] = out["dense_total_s"] / out["topk_s"]
    out["max_rel_eig_err_vs_dense"] = float(np.abs(np.sort(top.eigenvalues) - np.sort(w)).max() / np.abs(w).max())
    out["top_levels"] = [[float(a), int(m)] for a, m in zip(*top.levels(rtol=1e-6), strict=True)][:4]
    return out


# ---- 3. top-20 of the MLP vs torch + eigsh ---------------------------------------------------
def bench_topk_mlp(sizes, num_samples, k, tol, use_torch):
    X, y, Ws, bs = mlp_data(sizes, num_samples)
    params, loss_fn = jax_mlp(X, y, Ws, bs)
    out = {"model": f"tanh MLP {'-'.join(map(str, sizes))}, N={num_samples}", "k": k, "tol": tol}
    for name, block in (("jax", None), ("jax_block1", 1)):  # default block = k; 1 = thick-restart Lanczos
        t = time.perf_counter()
        top = C.top_eigenpairs(loss_fn, params, k, tol=tol, block_size=block)
        out[f"{name}_first_call_s"] = time.perf_counter() - t
        t = time.perf_counter()
        top = C.top_eigenpairs(loss_fn, params, k, tol=tol, block_size=block)
        out[f"{name}_s"] = time.perf_counter() - t
        out[f"{name}_products"] = top.info["products"]
        out[f"{name}_max_rel_residual"] = float(top.residuals.max() / np.abs(top.eigenvalues).max())
    if use_torch:
        import scipy.sparse.linalg as sla
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_default_dtype(torch.float64)
        tparams, tloss = torch_mlp(X, y, Ws, bs)
        P = top.dim
        count = [0]

        def run():
            thvp, _, _ = torch_hvp_cached(tparams, tloss)

            def mv(x):
                count[0] += 1
                return thvp(torch.from_numpy(np.ascontiguousarray(x.reshape(-1)))).detach().numpy()

            op = sla.LinearOperator((P, P), matvec=mv, dtype=np.float64)
            with threadpool_limits(1, user_api="blas"):
                return sla.eigsh(op, k=k, which="LA", tol=tol, v0=np.ones(P))

        run()  # warm-up (first autograd calls)
        count[0] = 0
        t = time.perf_counter()
        w, V = run()
        out["torch_eigsh_s"] = time.perf_counter() - t
        out["torch_products"] = count[0]
        # re-measure the torch pairs' residuals with JAX products (independent of ARPACK's estimate)
        R = (
            np.asarray(jax.vmap(C.hessian_operator(loss_fn, params).matvec, in_axes=1, out_axes=1)(jnp.asarray(V)))
            - V * w
        )
        out["torch_max_rel_residual"] = float(np.linalg.norm(R, axis=0).max() / np.abs(w).max())
        out["max_rel_eig_diff"] = float(np.abs(np.sort(w) - np.sort(top.eigenvalues)).max() / np.abs(w).max())
        out["speedup_jax_over_torch"] = out["torch_eigsh_s"] / out["jax_s"]
        out["speedup_jax_block1_over_torch"] = out["torch_eigsh_s"] / out["jax_block1_s"]
    return out


# ---- 4. dense Hessian -------------------------------------------------------------------------
def bench_dense(sizes, num_samples, chunk, use_torch):
    X, y, Ws, bs = mlp_data(sizes, num_samples)
    params, loss_fn = jax_mlp(X, y, Ws, bs)
    out = {"model": f"tanh MLP {'-'.join(map(str, sizes))}, N={num_samples}, float64", "chunk": chunk}
    t = time.perf_counter()
    H = C.hessian(loss_fn, params, chunk_size=chunk).block_until_ready()
    out["jax_first_call_s"] = time.perf_counter() - t
    out["P"] = int(H.shape[0])
    t = time.perf_counter()
    H = np.asarray(C.hessian(loss_fn, params, chunk_size=chunk).block_until_ready())
    out["jax_s"] = time.perf_counter() - t
    if use_torch:
        import torch

        torch.set_default_dtype(torch.float64)
        tparams, tloss = torch_mlp(X, y, Ws, bs)
        P = H.shape[0]
        t = time.perf_counter()
        thvp, _, _ = torch_hvp_cached(tparams, tloss)
        Ht = np.empty((P, P))
        for s in range(0, P, chunk):
            E = torch.zeros((min(chunk, P - s), P))
            E[torch.arange(E.shape[0]), torch.arange(s, s + E.shape[0])] = 1.0
            Ht[s : s + E.shape[0]] = thvp(E).detach().numpy()
        out["torch_s"] = time.perf_counter() - t
        out["max_abs_diff"] = float(np.abs(Ht - H).max() / np.abs(H).max())
        out["ratio_jax_over_torch"] = out["jax_s"] / out["torch_s"]
        del Ht
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, one size (a smoke run)")
    ap.add_argument(
        "--sizes", type=int, nargs="*", default=[2000, 5000], help="UFM parameter counts for top-k vs dense"
    )
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--only", type=int, nargs="*", choices=[1, 2, 3, 4], default=[1, 2, 3, 4], help="sections to run")
    args = ap.parse_args(argv)
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            use_torch = False
    mlp = (64, 32, 10) if args.quick else (784, 64, 64, 10)
    N = 200 if args.quick else 1000
    results = {"machine": machine()}
    if 1 in args.only:
        results["hvp"] = bench_hvp(mlp, N, 3 if args.quick else 5, use_torch)
        _print("1. HVP vs gradient", results["hvp"])
    if 3 in args.only:
        results["topk_mlp"] = bench_topk_mlp(mlp, N, 20, 1e-6, use_torch)
        _print("3. top-20 of the MLP Hessian: JAX block Krylov vs torch HVP + scipy eigsh", results["topk_mlp"])
    if 4 in args.only:
        dense_sizes = (64, 40, 10) if args.quick else (128, 64, 10)
        results["dense"] = bench_dense(dense_sizes, N, 128, use_torch)
        _print("4. dense Hessian (chunked HVPs)", results["dense"])
    results["topk_ufm"] = []
    for P in ([1000] if args.quick else args.sizes) if 2 in args.only else []:
        r = bench_topk_ufm(P, 2000 if args.quick else 20_000, 2)
        results["topk_ufm"].append(r)
        _print(f"2. top-(K²+5) vs dense eigh, collapsed UFM P={r['P']}", r)
    if args.json:
        with open(args.json, "w") as f:
            f.write(dumps(results, indent=1))


def _print(title, d):
    print(f"\n== {title}")
    for key, val in d.items():
        print(f"  {key:40s} {val:.4g}" if isinstance(val, float) else f"  {key:40s} {val}")


if __name__ == "__main__":
    main()
