"""Diffusion maps of SGD trajectories: the experiments of ``docs/dynamics.md`` §D5 and their CLI.

``ufm dynamics dmap --task {quadratic,ufm,mnist}``: run SGD (`ufm.dynamics.record` with
``optax.sgd``), keep every ``record_every``-th iterate, and compare the trajectory's diffusion dimension and
spectral gap with the Hessian's outliers at the end point (``docs/diffusion_maps.md`` §6):

* ``quadratic``: ``f(θ) = ½ θᵀHθ`` on R^dim, H of rank r, gradient noise of covariance
  ``σ² H`` (the SGD noise of a least-squares problem near its minimum);
* ``ufm``: mini-batch SGD (columns of H_1) on a linear-MSE deep UFM from its DNC point
  (`ufm.theory.construct_optimum`), full dense Hessian, outliers by the gap rule;
* ``mnist``: a small MLP (``ufm.networks``) on the shipped MNIST split, pre-trained with
  Adam, then mini-batch SGD; top Hessian eigenpairs by the Krylov route of
  `ufm.curvature.spectrum` (the dense Hessians of the other tasks by its dense route).

Every ``run_*`` returns a `DiffusionReport`; ``progress`` (optional) is called with one line
per stage (the CLI prints them on stderr).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import curvature
from ._diffusion_map import TrajectoryDiffusion, analyze_trajectory
from ._trajectory import record

__all__ = [
    "DiffusionReport",
    "TASKS",
    "diffusion_figure",
    "run",
    "run_quadratic",
    "run_ufm",
    "run_mnist",
    "add_cli",
    "run_cli",
]

TASKS = ("quadratic", "ufm", "mnist")


@dataclasses.dataclass(frozen=True)
class DiffusionReport:
    """One experiment: its configuration, the trajectory analysis and the Hessian spectrum.

    ``to_dict()`` has ``config``, ``eigenvalues``, ``epsilon``, ``alpha``, ``slope_curve``,
    ``dimension_estimate``, ``n_coords``, ``hessian_outliers``, ``r2`` (and more).
    """

    task: str
    config: dict
    analysis: TrajectoryDiffusion
    hessian_eigenvalues: np.ndarray
    info: dict

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "config": self.config,
            **self.analysis.to_dict(),
            "hessian_eigenvalues": np.asarray(self.hessian_eigenvalues).tolist(),
            "info": self.info,
        }


# ---- SGD trajectories -------------------------------------------------------------------
def _sgd_trajectory(loss_fn, params, *, steps: int, learning_rate: float, record_every: int, seed: int, **batches):
    """Plain SGD ``θ ← θ − η ∇loss_fn(θ, batch)`` (``optax.sgd``) by `ufm.dynamics.record`,
    one compiled loop keeping the iterate every ``record_every`` steps (``iterates_every``);
    ``batches``: `record`'s ``data`` / ``batch_size`` / ``sampler``.

    Returns ``(iterates, steps, losses)``: the ``steps // record_every`` flat iterates after
    every ``record_every`` steps (float32 rows, to halve the memory of long trajectories),
    their step numbers, and the mean training-batch loss over the steps of each block.
    """
    n = steps // record_every
    traj = record(
        loss_fn,
        params,
        optax.sgd(learning_rate),
        steps=n * record_every,
        checkpoints=[0],
        iterates_every=record_every,
        seed=seed,
        **batches,
    )
    return traj.iterates.astype(np.float32), traj.iterate_steps, traj.iterate_losses


def _progress(message: str, progress) -> None:
    if progress is not None:
        progress(message)


def _dense_eigh(loss, theta):
    """Eigenvalues / vectors (descending) of the dense Hessian (`ufm.curvature.spectrum`)."""
    s = curvature.spectrum(loss, theta, method="dense")
    return np.asarray(s.eigenvalues), np.asarray(s.eigenvectors)


def _analyze(task, config, thetas, steps, losses, lam, U, t0, progress, **kw) -> DiffusionReport:
    """The trajectory analysis of recorded iterates; ``burn_in=None`` drops the first 5 % of records."""
    _progress(f"diffusion map of {thetas.shape[0]} iterates in R^{thetas.shape[1]}", progress)
    if config["burn_in"] is None:
        config["burn_in"] = thetas.shape[0] // 20
    a = analyze_trajectory(
        thetas,
        steps=steps,
        losses=losses,
        burn_in=config["burn_in"],
        hessian_eigenvalues=lam,
        hessian_vectors=U,
        epsilon=config["epsilon"],
        alpha=config["alpha"],
        max_coords=config["max_coords"],
    )
    info = {"seconds": time.perf_counter() - t0, "num_params": int(thetas.shape[1]), **kw}
    return DiffusionReport(task, config, a, np.asarray(lam), info)


# ---- the tasks ------------------------------------------------------------------------
def run_quadratic(
    *,
    dim: int = 50,
    rank: int = 3,
    steps: int = 40_000,
    seed: int = 0,
    learning_rate: float = 0.05,
    noise: float = 1.0,
    record_every: int = 20,
    burn_in: int | None = None,
    alpha: float = 0.5,
    epsilon="median",
    max_coords: int = 10,
    progress=None,
) -> DiffusionReport:
    """SGD on ``½ θᵀHθ`` in R^dim, ``H = Q diag(h) Qᵀ`` of rank r (h evenly in [1, 2], Q a
    random orthonormal frame), gradient ``Hθ + σ Q diag(√h) z``: noise covariance ``σ²H``.

    The stationary law is Gaussian in range(H), variance ``ησ²/(2 − ηh)`` per eigendirection
    (nearly isotropic), and frozen in the null space: a Gaussian cloud of dimension r
    (``docs/diffusion_maps.md`` §6).
    """
    if not (isinstance(dim, int) and isinstance(rank, int) and 1 <= rank <= dim):
        raise ValueError(f"need ints 1 <= rank <= dim, got rank={rank!r}, dim={dim!r}")
    config = dict(
        task="quadratic",
        dim=dim,
        rank=rank,
        steps=steps,
        seed=seed,
        learning_rate=learning_rate,
        noise=noise,
        record_every=record_every,
        burn_in=burn_in,
        alpha=alpha,
        epsilon=epsilon,
        max_coords=max_coords,
    )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    h = np.linspace(1.0, 2.0, rank)
    H = jnp.asarray((Q * h) @ Q.T)
    B = jnp.asarray(noise * Q * np.sqrt(h))  # B Bᵀ = σ² H

    _progress(f"quadratic: {steps} SGD steps in R^{dim}, Hessian rank {rank}", progress)
    theta0 = jnp.asarray(rng.standard_normal(dim))
    thetas, st, losses = _sgd_trajectory(
        _noisy_quadratic,
        theta0,
        steps=steps,
        learning_rate=learning_rate,
        record_every=record_every,
        seed=seed,
        sampler=_quadratic_noise,
        data={"H": H, "B": B},
    )
    lam, U = _dense_eigh(lambda th: 0.5 * th @ H @ th, jnp.asarray(thetas[-1], theta0.dtype))
    return _analyze("quadratic", config, thetas, st, losses, lam[: rank + 10], U[:, : rank + 10], t0, progress)


def _noisy_quadratic(theta, batch):
    """Value ``½ θᵀHθ``, gradient ``Hθ + ξ``: the noise ``ξ = batch["noise"]`` enters the
    gradient only (``θ·ξ − stop_gradient(θ·ξ)`` is 0 with gradient ξ)."""
    tilt = theta @ batch["noise"]
    return 0.5 * theta @ batch["H"] @ theta + tilt - jax.lax.stop_gradient(tilt)


def _quadratic_noise(key, data):
    """The `record` sampler of the quadratic task: ``ξ = B z``, ``z ~ N(0, I_r)``."""
    B = data["B"]
    return {"H": data["H"], "noise": B @ jax.random.normal(key, (B.shape[1],), B.dtype)}


def _stationary_covariance(lam, U, C, learning_rate):
    """Σ of linearised SGD, ``Σ = (I − ηH)Σ(I − ηH) + η²C``, solved in H's eigenbasis:
    ``Σ_ij = η C_ij / (h_i + h_j − η h_i h_j)`` on the non-flat eigenvectors (``docs/diffusion_maps.md`` §6)."""
    keep = lam > 1e-6 * lam[0]
    h, V = lam[keep], U[:, keep]
    Ct = V.T @ C @ V
    St = learning_rate * Ct / (h[:, None] + h[None, :] - learning_rate * np.outer(h, h))
    return V @ St @ V.T


def _ufm_batch_loss(spec, params, batch):
    """The UFM loss on the columns ``batch["cols"]`` of H_1 (labels ``batch["labels"]``), the
    ridge over all parameters."""
    from ..model import column_loss

    return column_loss(spec, params, batch["cols"])  # batch["labels"] == class_index[cols]


def _mnist_loss(spec, params, batch):
    from .. import networks as nets

    return nets.network_loss(spec, params, batch["X"], batch["y"])


def _ufm_spec():
    from ..spec import UFMSpec

    return UFMSpec(num_classes=3, per_class=4, depth=2, width=6, lambda_H=5e-3, lambda_W=5e-3)


def run_ufm(
    *,
    steps: int = 40_000,
    seed: int = 0,
    batch_size: int = 4,
    learning_rate: float = 0.05,
    record_every: int = 20,
    burn_in: int | None = None,
    alpha: float = 0.5,
    epsilon="median",
    max_coords: int = 10,
    progress=None,
) -> DiffusionReport:
    """Mini-batch SGD (``batch_size`` columns of H_1, the ridge over all parameters) on a
    linear-MSE deep UFM (K = 3, n = 4, L = 2, d = 6, λ = 5e-3), started at its DNC point."""
    from .. import model
    from ..curvature import count_outliers
    from ..theory import construct_optimum, dnc_solution

    spec = _ufm_spec()
    config = dict(
        task="ufm",
        spec=spec.to_dict(),
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        record_every=record_every,
        burn_in=burn_in,
        alpha=alpha,
        epsilon=epsilon,
        max_coords=max_coords,
    )
    t0 = time.perf_counter()
    p0 = construct_optimum(spec, seed)
    theta0, unravel = ravel_pytree(p0)
    loss = functools.partial(_ufm_batch_loss, spec)
    data = {"cols": jnp.arange(spec.num_samples), "labels": jnp.asarray(spec.class_index)}

    _progress(f"ufm: {steps} SGD steps (batch {batch_size}) from the DNC point, {theta0.size} parameters", progress)
    thetas, st, losses = _sgd_trajectory(
        loss,
        p0,
        steps=steps,
        learning_rate=learning_rate,
        record_every=record_every,
        seed=seed,
        data=data,
        batch_size=batch_size,
    )
    full = model.loss_fn(spec)
    lam, U = _dense_eigh(lambda th: full(unravel(th)), jnp.asarray(thetas[-1], theta0.dtype))
    positive = lam[lam > 1e-8 * lam[0]]  # the gap rule without the exactly flat (symmetry) directions
    # the stationary covariance the linearised SGD predicts, from the exact mini-batch noise (every batch)
    batches = jnp.asarray(list(itertools.combinations(range(spec.num_samples), batch_size)))
    p_end = unravel(jnp.asarray(thetas[-1], theta0.dtype))
    grad = jax.grad(loss)
    grads = np.asarray(jax.vmap(lambda c: ravel_pytree(grad(p_end, {k: v[c] for k, v in data.items()}))[0])(batches))
    Sigma = _stationary_covariance(lam, U, np.cov(grads.T, bias=True), learning_rate)
    return _analyze(
        "ufm",
        config,
        thetas,
        st,
        losses,
        lam,
        U,
        t0,
        progress,
        optimal_loss=dnc_solution(spec).optimal_loss,
        final_loss=float(full(unravel(thetas[-1]))),
        hessian_rank=int(positive.size),
        outliers_of_positive_part=count_outliers(positive),
        predicted_participation_ratio=float(np.trace(Sigma) ** 2 / np.sum(Sigma**2)),
    )


def run_mnist(
    *,
    steps: int = 10_000,
    seed: int = 0,
    per_class: int = 30,
    hidden: int = 32,
    width: int = 16,
    pretrain_steps: int = 2_000,
    batch_size: int = 32,
    learning_rate: float = 0.05,
    record_every: int = 10,
    burn_in: int | None = None,
    alpha: float = 0.5,
    epsilon="median",
    max_coords: int = 10,
    hessian_k: int = 20,
    progress=None,
) -> DiffusionReport:
    """A small MLP (784 → hidden → width → 10, MSE, λ_W = 5e-4) on ``per_class`` shipped MNIST
    images per class: Adam for ``pretrain_steps`` full-batch steps, then mini-batch SGD."""
    from .. import networks as nets

    config = dict(
        task="mnist",
        steps=steps,
        seed=seed,
        per_class=per_class,
        hidden=hidden,
        width=width,
        pretrain_steps=pretrain_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        record_every=record_every,
        burn_in=burn_in,
        alpha=alpha,
        epsilon=epsilon,
        max_coords=max_coords,
        hessian_k=hessian_k,
    )
    t0 = time.perf_counter()
    data = nets.subsample(nets.load_mnist(), per_class, seed=seed)
    spec = nets.NetworkSpec(
        input_shape=data.input_shape, hidden=(hidden,), width=width, depth=1, loss="mse", lambda_W=5e-4
    )
    dtype = jnp.zeros(()).dtype
    X, y = jnp.asarray(data.X, dtype), jnp.asarray(data.labels)
    p0 = nets.init_network(spec, seed, dtype=dtype)
    theta0, unravel = ravel_pytree(p0)
    full = jax.jit(lambda th: nets.network_loss(spec, unravel(th), X, y))
    loss, train = functools.partial(_mnist_loss, spec), {"X": X, "y": y}

    _progress(f"mnist: {pretrain_steps} Adam steps on {X.shape[0]} images, {theta0.size} parameters", progress)
    if pretrain_steps:
        p0 = record(
            loss, p0, optax.adam(1e-3), steps=pretrain_steps, checkpoints=[0], data=train, seed=seed
        ).final_params

    _progress(f"mnist: {steps} SGD steps (batch {batch_size}), loss {float(loss(p0, train)):.4g} after Adam", progress)
    thetas, st, losses = _sgd_trajectory(
        loss,
        p0,
        steps=steps,
        learning_rate=learning_rate,
        record_every=record_every,
        seed=seed,
        data=train,
        batch_size=batch_size,
    )
    _progress(f"mnist: top {hessian_k} Hessian eigenpairs at the end point", progress)
    top = curvature.spectrum(full, jnp.asarray(thetas[-1], dtype), k=hessian_k, method="krylov", seed=seed)
    accuracy = nets.accuracy(spec, unravel(jnp.asarray(thetas[-1], dtype)), X, y)
    return _analyze(
        "mnist",
        config,
        thetas,
        st,
        losses,
        top.eigenvalues,
        top.eigenvectors,
        t0,
        progress,
        final_loss=float(full(jnp.asarray(thetas[-1], dtype))),
        train_accuracy=accuracy,
        lanczos_converged=bool(top.info["converged"]),
    )


def run(task: str, **kwargs) -> DiffusionReport:
    """`run_quadratic`, `run_ufm` or `run_mnist` by name."""
    funcs = {"quadratic": run_quadratic, "ufm": run_ufm, "mnist": run_mnist}
    if task not in funcs:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return funcs[task](**kwargs)


# ---- figure ---------------------------------------------------------------------------
def diffusion_figure(reports, *, color_by=None):
    """One row per report: the diffusion spectrum (gap marked), ψ_1 vs ψ_2 coloured by SGD
    step or mini-batch loss (``color_by``: one of "step" / "loss" per report, default
    "step"), and the kernel-sum slope curve with both bandwidths and the dimension."""
    from .. import plotting

    reports = [reports] if isinstance(reports, DiffusionReport) else list(reports)
    color_by = ["step"] * len(reports) if color_by is None else ([color_by] if isinstance(color_by, str) else color_by)
    with plotting.use_style():
        fig, axes = plotting.figure(len(reports), 3, columns=2, height=2.2 * len(reports), squeeze=False)
        for row, report, how in zip(axes, reports, color_by, strict=True):
            _draw_row(fig, row, report, how)
    return fig


def _draw_row(fig, axes, report: DiffusionReport, color_by: str) -> None:
    from .. import plotting

    a = report.analysis
    ax0, ax1, ax2 = axes
    lam = a.diffusion.eigenvalues[1:]
    idx = np.arange(1, lam.size + 1)
    q = a.n_coords
    if q:
        ax0.plot(idx[:q], lam[:q], "o", color=plotting.COLORS[0], label=f"slow modes (q = {q})")
    ax0.plot(idx[q:], lam[q:], "o", color="0.6", markerfacecolor="none", label="rest" if q else "no gap (q = 0)")
    if q:
        ax0.axvline(q + 0.5, color="0.3", linestyle=":", linewidth=0.8)
        ax0.text(
            q + 0.6,
            0.6,
            f"τ gap ×{a.gap_ratio:.2f}",
            transform=ax0.get_xaxis_transform(),
            va="top",
            fontsize="x-small",
            color="0.3",
        )
    ax0.set_xlabel("index $l$")
    ax0.set_ylabel(r"diffusion eigenvalue $\lambda_l$")
    ax0.set_title(report.task, fontsize="small", loc="left")
    ax0.set_ylim(0, 1.05)
    ax0.legend(loc="upper right")
    ax0.xaxis.get_major_locator().set_params(integer=True)
    c = a.steps if color_by == "step" or a.losses is None else a.losses
    psi = a.diffusion.psi
    sc = ax1.scatter(psi[:, 1], psi[:, 2], c=c, s=2, cmap="cividis", linewidths=0, rasterized=True)
    fig.colorbar(sc, ax=ax1, label="SGD step" if c is a.steps else "mini-batch loss", shrink=0.9)
    ax1.set_xlabel(r"$\psi_1$")
    ax1.set_ylabel(r"$\psi_2$")
    cu = a.curve
    dims = 2 * cu.slopes
    ax2.semilogx(cu.epsilons, dims, color=plotting.COLORS[1], label=r"$2\,d\log S/d\log\varepsilon$")
    ax2.plot(
        [cu.epsilon],
        [np.interp(np.log(cu.epsilon), np.log(cu.epsilons), dims)],
        "v",
        color=plotting.COLORS[1],
        label="kernel-sum ε",
    )
    ax2.axvline(a.diffusion.epsilon, color=plotting.COLORS[0], linewidth=0.8, label=r"$\varepsilon$ used")
    m = a.hessian_outliers
    shown = m is not None and m <= 3 * dims.max()
    top = 1.7 * max(dims.max(), m if shown else 0)  # room for the legend above the lines
    if shown:
        plotting.mark_value(ax2, m, f"{m} Hessian outliers", color=plotting.COLORS[2], where=0.99)
    elif m is not None:
        ax2.set_title(f"Hessian outliers: {m} (off scale)", fontsize="small")
    plotting.mark_value(ax2, a.dimension_estimate, f"dim ≈ {a.dimension_estimate:.2f}", where=0.99, va="top")
    ax2.set_xlabel(r"bandwidth $\varepsilon$")
    ax2.set_ylabel("dimension (2 × slope)")
    ax2.set_ylim(0, top)
    ax2.legend(loc="upper left")


# ---- command line -----------------------------------------------------------------------
def add_cli(subparsers) -> None:
    """``ufm dynamics dmap --task {quadratic,ufm,mnist} [--dim --rank] --steps --seed --json [--plot]``."""
    p = subparsers.add_parser(
        "dmap", help="diffusion maps of SGD trajectories vs Hessian outliers (docs/dynamics.md §D5)"
    )
    p.add_argument("--task", choices=TASKS, default="quadratic")
    p.add_argument("--dim", type=int, default=None, help="quadratic: ambient dimension m (default 50)")
    p.add_argument("--rank", type=int, default=None, help="quadratic: Hessian rank r (default 3)")
    p.add_argument("--steps", type=int, default=None, help="SGD steps (default: the task's preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.5, help="α normalisation in [0, 1] (default 1/2, Fokker–Planck)")
    p.add_argument(
        "--epsilon",
        default="median",
        help="bandwidth: 'median' (default), 'kernel-sum' (upper linear region) or a number",
    )
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--plot", metavar="PATH", help="figure: spectrum, first coordinates, slope curve (PDF + PNG)")
    x = p.add_mutually_exclusive_group()
    x.add_argument("--x64", dest="x64", action="store_true", default=True, help="float64 (default)")
    x.add_argument("--x32", dest="x64", action="store_false", help="float32")
    p.set_defaults(func=run_cli)


def _parse_epsilon(text: str):
    if text in ("median", "kernel-sum"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"--epsilon must be 'median', 'kernel-sum' or a number > 0, got {text!r}")
    return value


def run_cli(args) -> int:
    import json
    import os

    from ..cli import _ArgumentError

    for path in (args.json, args.plot):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise _ArgumentError(f"the directory of {path!r} does not exist")
    kw = {
        "seed": args.seed,
        "alpha": args.alpha,
        "progress": lambda message: print(f"[dmap] {message}", file=sys.stderr, flush=True),
    }
    try:
        kw["epsilon"] = _parse_epsilon(args.epsilon)
        if not 0 <= args.alpha <= 1:
            raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
        if args.task != "quadratic" and (args.dim is not None or args.rank is not None):
            raise ValueError("--dim and --rank apply to --task quadratic only")
        if args.task == "quadratic":
            kw.update({k: v for k, v in (("dim", args.dim), ("rank", args.rank)) if v is not None})
        if args.steps is not None:
            if args.steps < 1:
                raise ValueError(f"--steps must be >= 1, got {args.steps}")
            kw["steps"] = args.steps
        jax.config.update("jax_enable_x64", args.x64)
        report = run(args.task, **kw)
    except (TypeError, ValueError) as e:
        raise _ArgumentError(str(e)) from None
    a = report.analysis
    lam = ", ".join(f"{v:.3f}" for v in a.diffusion.eigenvalues[1:8])
    print(
        f"dmap {args.task}: {a.diffusion.psi.shape[0]} iterates, ε = {a.diffusion.epsilon:.3g} "
        f"(median {a.curve.median_epsilon:.3g}, kernel-sum {a.curve.epsilon:.3g}), α = {a.diffusion.alpha:g}"
    )
    print(f"  diffusion eigenvalues λ_1.. = {lam}")
    print(
        f"  coordinates by the gap q = {a.n_coords} (τ ratio {a.gap_ratio:.2f}); "
        f"dimension estimate 2·max slope = {a.dimension_estimate:.2f}; Hessian outliers = {a.hessian_outliers}"
    )
    print(
        f"  R² of ψ_1..ψ_{a.r2.size} on the top-Hessian projections (quadratic fit): "
        + ", ".join(f"{v:.3f}" for v in a.r2)
    )
    print(
        f"  PCA participation ratio {a.participation_ratio:.2f}; drift (Spearman ψ_1 vs step) {a.drift:+.2f}"
        f"   [{report.info['seconds']:.1f} s]"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    if args.plot:
        from .. import plotting

        plotting.savefig(diffusion_figure(report), args.plot)
    return 0
