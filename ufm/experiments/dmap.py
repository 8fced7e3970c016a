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

Every ``run_*`` returns a `DiffusionReport`; ``callback`` (optional) is called with one line
per stage (the CLI prints them on stderr).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import curvature
from ..dynamics._diffusion_map import TrajectoryDiffusion, analyze_trajectory
from ..dynamics._trajectory import record
from ..results import result, to_jsonable
from ._config import call_task

__all__ = [
    "DiffusionReport",
    "DmapConfig",
    "TASKS",
    "run",
    "run_quadratic",
    "run_ufm",
    "run_mnist",
]

TASKS = ("quadratic", "ufm", "mnist")


@result(static=("task", "config", "info"))
class DiffusionReport:
    """One experiment: its configuration, the trajectory analysis and the Hessian spectrum.

    ``to_dict()`` has ``config``, ``eigenvalues``, ``epsilon``, ``alpha``, ``slope_curve``,
    ``dimension_estimate``, ``n_coords``, ``hessian_outliers``, ``r2`` (and more).
    ``converged`` / ``messages`` (`ufm.results`): the diffusion map's and the Hessian's
    eigensolvers reached their tolerances, and the iterates stayed finite.
    """

    task: str
    config: dict
    analysis: TrajectoryDiffusion
    hessian_eigenvalues: np.ndarray
    info: dict
    converged: bool | None = None  # None: the analysis's status
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", bool(self.analysis.converged))
            object.__setattr__(self, "messages", self.messages or tuple(self.analysis.messages))

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "task": self.task,
                "config": self.config,
                **self.analysis.to_dict(),
                "hessian_eigenvalues": self.hessian_eigenvalues,
                "info": self.info,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


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


def _progress(message: str, callback) -> None:
    if callback is not None:
        callback({"stage": message})


def _dense_eigh(loss, theta):
    """Eigenvalues / vectors (descending) of the dense Hessian (`ufm.curvature.spectrum`)."""
    s = curvature.spectrum(loss, theta, method="dense")
    return np.asarray(s.eigenvalues), np.asarray(s.eigenvectors)


def _analyze(task, config, thetas, steps, losses, lam, U, t0, callback, hessian=None, **kw) -> DiffusionReport:
    """The trajectory analysis of recorded iterates; ``burn_in=None`` drops the first 5 % of records."""
    _progress(f"diffusion map of {thetas.shape[0]} iterates in R^{thetas.shape[1]}", callback)
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
    parts = [a] if hessian is None else [a, hessian]
    return DiffusionReport(
        task,
        config,
        a,
        np.asarray(lam),
        info,
        converged=all(bool(p.converged) for p in parts),
        messages=tuple(m for p in parts for m in p.messages),
    )


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
    callback=None,
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

    _progress(f"quadratic: {steps} SGD steps in R^{dim}, Hessian rank {rank}", callback)
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
    return _analyze("quadratic", config, thetas, st, losses, lam[: rank + 10], U[:, : rank + 10], t0, callback)


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
    callback=None,
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

    _progress(f"ufm: {steps} SGD steps (batch {batch_size}) from the DNC point, {theta0.size} parameters", callback)
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
        callback,
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
    callback=None,
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

    _progress(f"mnist: {pretrain_steps} Adam steps on {X.shape[0]} images, {theta0.size} parameters", callback)
    if pretrain_steps:
        p0 = record(
            loss, p0, optax.adam(1e-3), steps=pretrain_steps, checkpoints=[0], data=train, seed=seed
        ).final_params

    _progress(f"mnist: {steps} SGD steps (batch {batch_size}), loss {float(loss(p0, train)):.4g} after Adam", callback)
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
    _progress(f"mnist: top {hessian_k} Hessian eigenpairs at the end point", callback)
    top = curvature.spectrum(
        full, jnp.asarray(thetas[-1], dtype), k=hessian_k, method="krylov", seed=seed, throw=False
    )  # its status goes into the report
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
        callback,
        final_loss=float(full(jnp.asarray(thetas[-1], dtype))),
        train_accuracy=accuracy,
        hessian=top,
    )


@dataclasses.dataclass(frozen=True)
class DmapConfig:
    """Settings of a diffusion-map experiment (``ufm dynamics dmap``): ``task`` (``"quadratic"``,
    ``"ufm"``, ``"mnist"``) and its settings; ``None`` takes the task's default (`run_quadratic`,
    `run_ufm`, `run_mnist` document them). A setting the task does not take is refused by `run`."""

    task: str = "quadratic"
    seed: int = 0
    steps: int | None = None
    learning_rate: float | None = None
    dim: int | None = None
    rank: int | None = None
    noise: float | None = None
    batch_size: int | None = None
    per_class: int | None = None
    hidden: int | None = None
    width: int | None = None
    pretrain_steps: int | None = None
    hessian_k: int | None = None
    record_every: int | None = None
    burn_in: int | None = None
    alpha: float | None = None
    epsilon: float | str | None = None
    max_coords: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TASK_FUNCTIONS = {"quadratic": run_quadratic, "ufm": run_ufm, "mnist": run_mnist}


def run(config: DmapConfig | str, callback=None, **settings) -> DiffusionReport:
    """The experiment of ``config`` (a `DmapConfig`; or a task name and its settings, the older
    entry ``run("quadratic", steps=...)``); ``callback({"stage": message})`` hears each stage."""
    if isinstance(config, str):
        config = DmapConfig(task=config, **settings)
    elif settings:
        raise TypeError(f"run(DmapConfig) takes no further settings, got {sorted(settings)}")
    return call_task(config, _TASK_FUNCTIONS, callback=callback)
