"""Shared pieces of the paper figures: float64, the npz cache, the models and trained states.

Every computed array goes through `cached`: ``out_dir/cache/<name>-<hash of the config>.npz``,
so re-plotting reads the cache and changing a setting recomputes. The states shared by
several figures (the linear-MSE training trajectory, the trained CE and ReLU states) are
cached under one name each, so building all figures trains each model once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np

SEED = 0


@dataclasses.dataclass(frozen=True)
class FigureResult:
    """What a figure module's ``make`` returns: the files written and the gallery caption."""

    files: tuple[str, ...]
    caption: str


def enable_x64() -> None:
    """float64 for every figure (called by ``make`` / ``build``, never at import)."""
    import jax

    jax.config.update("jax_enable_x64", True)


# ---- the models ---------------------------------------------------------------------------
def mse_spec(quick: bool):
    """The linear-MSE deep UFM of figures 1–6: λ = 2e-2 puts γ near 0.9, so 1 − γ is visible."""
    import ufm

    if quick:
        return ufm.UFMSpec(num_classes=3, per_class=3, depth=3, width=6, lambda_H=2e-2, lambda_W=2e-2)
    return ufm.UFMSpec(num_classes=4, per_class=5, depth=3, width=16, lambda_H=2e-2, lambda_W=2e-2)


def ce_spec(quick: bool):
    """The linear cross-entropy deep UFM (depth 2: the DNC point is the minimiser, 2410.23169 Thm 1)."""
    import ufm

    if quick:
        return ufm.UFMSpec(num_classes=4, per_class=3, depth=2, width=8, loss="ce", lambda_H=5e-3, lambda_W=5e-3)
    return ufm.UFMSpec(num_classes=5, per_class=5, depth=2, width=16, loss="ce", lambda_H=5e-3, lambda_W=5e-3)


def describe(spec, seed: int | None = SEED) -> str:
    """One-line spec for captions."""
    lam = spec.lambda_W if isinstance(spec.lambda_W, float) else list(spec.lambda_W)
    extra = ""
    if spec.activation == "relu":
        extra = f", σ'(0)={spec.relu_grad0:g}"
    elif spec.activation == "softplus":
        extra = f", β={spec.softplus_beta:g}"
    s = (
        f"K={spec.num_classes}, n={spec.per_class}, L={spec.depth}, width {spec.width}, {spec.activation}{extra}, "
        f"{spec.loss.upper()}, λ_H={spec.lambda_H:g}, λ_W={lam}"
    )
    return s + (f"; seed {seed}" if seed is not None else "")


# ---- cache ----------------------------------------------------------------------------------
def cached(out_dir, name: str, config: dict, compute) -> dict:
    """``compute() -> dict of arrays``, stored once in ``out_dir/cache/name-<hash>.npz``."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = os.path.join(os.fspath(out_dir), "cache")
    path = os.path.join(folder, f"{name}-{key}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    data = {k: np.asarray(v) for k, v in compute().items()}
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data


def params_to_arrays(params, prefix: str = "") -> dict:
    out = {prefix + "H1": np.asarray(params.H1)}
    for l, W in enumerate(params.Ws, start=1):
        out[f"{prefix}W{l}"] = np.asarray(W)
    return out


def arrays_to_params(data: dict, depth: int, prefix: str = ""):
    import jax.numpy as jnp

    import ufm

    return ufm.UFMParams(
        jnp.asarray(data[prefix + "H1"]), tuple(jnp.asarray(data[f"{prefix}W{l}"]) for l in range(1, depth + 1))
    )


def trained_state(out_dir, spec, *, steps: int, tol: float = 1e-10, seed: int = SEED, init=None, name="state"):
    """``ufm.train`` from ``init_params(spec, seed)`` (or ``init``: "optimum" for the constructed
    ReLU/linear optimum of ``spec.replace(activation="relu")``), cached. Returns (params, info dict)."""
    import ufm

    def compute():
        if init == "optimum":
            base = spec.replace(activation="relu") if spec.activation == "softplus" else spec
            p0 = ufm.theory.construct_optimum(base, seed)
        else:
            p0 = ufm.init_params(spec, seed)
        r = ufm.train(spec, p0, steps=steps, tol=tol, log_every=max(steps // 4, 1))
        return {
            **params_to_arrays(r.params),
            "steps": r.steps,
            "converged": r.converged,
            "grad_norm": r.history["grad_norm"][-1],
        }

    data = cached(
        out_dir, name, {"spec": spec.to_dict(), "steps": steps, "tol": tol, "seed": seed, "init": init}, compute
    )
    info = {"steps": int(data["steps"]), "converged": bool(data["converged"]), "grad_norm": float(data["grad_norm"])}
    return arrays_to_params(data, spec.depth), info


def train_note(info: dict) -> str:
    return f"trained {info['steps']} steps of line-search GD to ‖∇L‖ = {info['grad_norm']:.1e}" + (
        "" if info["converged"] else " (step cap)"
    )


# ---- the linear-MSE training trajectory (figures 1, 2, 4) --------------------------------------
def _checkpoints(quick: bool) -> list[int]:
    # geometric: the outliers form in the first tens of steps, convergence takes a few hundred
    if quick:
        return [0] + [2**k for k in range(11)]
    return [0] + sorted({int(round(2 ** (k / 2))) for k in range(25)})  # ×√2 up to 4096


@functools.cache
def loss_fns(spec):
    """``(data loss, jitted data gradient, jitted total gradient)`` of ``spec``, made once per spec
    so that `ufm.curvature` and jit reuse their compilations across calls."""
    import jax

    import ufm

    f = ufm.model.loss_fn(spec, regularized=False)
    return f, jax.jit(jax.grad(f)), jax.jit(jax.grad(ufm.model.loss_fn(spec)))


def layer_eigenvalues(spec, params) -> dict:
    """``{"eig<l>": all eigenvalues (descending) of the data-Hessian block of W_l}`` for l = 1..L
    (dense, `ufm.curvature.spectrum`)."""
    import ufm

    f = loss_fns(spec)[0]
    return {
        f"eig{l}": ufm.curvature.spectrum(f, params, leaves=[l], method="dense", vectors=False).eigenvalues
        for l in range(1, spec.depth + 1)
    }


def _measure(spec, params):
    """Per layer at one state: top data-Hessian eigenvalues, f(v) of the K² Kronecker vectors of
    the current class means, squared gradient coefficients on them, gradient fraction in the
    measured top-K² eigenspace."""
    import ufm

    K, L = spec.num_classes, spec.depth
    f, data_grad, _ = loss_fns(spec)
    grad = data_grad(params)
    acts = ufm.model.forward(spec, params)
    labels = spec.class_index
    top, align, coef2, frac = [], [], [], []
    unit = lambda X: X / np.linalg.norm(X, axis=0)  # noqa: E731
    for l in range(1, L + 1):
        meas = ufm.curvature.spectrum(f, params, leaves=[l], method="dense")
        vals, vecs = meas.eigenvalues, meas.eigenvectors
        h_in = np.asarray(acts.post[l - 1])
        mi = unit(ufm.collapse.class_means(h_in, labels, K))
        mo = unit(ufm.collapse.class_means(np.asarray(params.Ws[l - 1]) @ h_in, labels, K))
        V = np.einsum("ac,bd->abcd", mo, mi).reshape(-1, K * K)  # column c·K+c' = μ̂_c^(l+1) ⊗ μ̂_c'^(l)
        H = (vecs * vals) @ vecs.T  # the block, from its eigendecomposition
        align.append([float(ufm.curvature.alignment(H, V[:, j])) for j in range(K * K)])
        g = np.asarray(grad.Ws[l - 1])
        ghat = g / np.linalg.norm(g)
        coef2.append(((mo.T @ ghat @ mi) ** 2).ravel())
        frac.append(float(ufm.curvature.gradient_fraction(ghat.ravel(), vecs[:, : K * K])))
        top.append(vals[: K * K + 2])
    return np.array(top), np.array(align), np.array(coef2), np.array(frac)


def trajectory(out_dir, quick: bool) -> dict:
    """Train the linear-MSE model in segments between geometric checkpoints and measure each.

    Keys: ``steps`` (T,), ``loss``, ``grad_norm`` (T,), ``nc1`` (T × L+1), ``top`` (T × L × K²+2),
    ``alignment`` and ``coef2`` (T × L × K²; index c·K + c'), ``grad_fraction`` (T × L), and
    the final parameters (``H1``, ``W1``..).
    """
    import ufm

    spec = mse_spec(quick)
    marks = _checkpoints(quick)

    def compute():
        p = ufm.init_params(spec, SEED)
        rows = {k: [] for k in ("steps", "loss", "grad_norm", "nc1", "top", "alignment", "coef2", "grad_fraction")}
        done = 0
        for target in marks:
            if target > done:
                r = ufm.train(spec, p, steps=target - done, log_every=target - done, tol=1e-10)
                p, done = r.params, done + r.steps
            nc = ufm.collapse.metrics(spec, p)
            t, a, c, fr = _measure(spec, p)
            for k, v in (
                ("steps", done),
                ("loss", float(ufm.model.loss(spec, p))),
                ("grad_norm", _grad_norm(spec, p)),
                ("nc1", nc.nc1_uncentred),
                ("top", t),
                ("alignment", a),
                ("coef2", c),
                ("grad_fraction", fr),
            ):
                rows[k].append(v)
            if target > done:  # converged before the checkpoint: nothing more happens
                break
        return {**{k: np.array(v) for k, v in rows.items()}, **params_to_arrays(p)}

    return cached(out_dir, "mse-trajectory", {"spec": spec.to_dict(), "marks": marks, "seed": SEED}, compute)


def mse_final_state(out_dir, quick: bool):
    """``(spec, trajectory, final params)`` of the linear-MSE run shared by figures 1–6."""
    spec = mse_spec(quick)
    traj = trajectory(out_dir, quick)
    return spec, traj, arrays_to_params(traj, spec.depth)


def _grad_norm(spec, params) -> float:
    import jax

    g = loss_fns(spec)[2](params)
    return float(np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree_util.tree_leaves(g))))
