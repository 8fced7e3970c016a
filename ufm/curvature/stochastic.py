"""Stochastic estimators of a curvature operator: Hutchinson trace and SLQ spectral density.

Every function takes either ``(loss_fn, params)`` (the Hessian of ``loss_fn`` over the
chosen ``leaves``) or an `Operator` with ``params=None``; ``data=`` / ``batch_size=`` /
``mesh=`` as in `ufm.curvature.hessian_operator` (``docs/curvature.md`` §3). Both draw
their Rademacher probes from ``matfree.stochtrace`` (the same draws for one seed).

* `trace`: Hutchinson's estimator with Rademacher probes (Hutchinson 1990), mean ± standard
  error; probes and integrand from ``matfree.stochtrace``.
* `spectral_density`: stochastic Lanczos quadrature (Golub & Meurant 1994; Lin, Saad & Yang
  2016; Ghorbani, Krishnan & Xiao 2019): per probe, the Ritz values of m Lanczos steps
  (full reorthogonalisation) are quadrature nodes with weights ``(e_1ᵀ y_j)²``; the density
  is their average smoothed by a Gaussian of width ``sigma`` and integrates to 1.

The top eigenpairs (the Krylov–Schur eigensolver) live in `ufm.curvature.eigensolver`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from matfree import stochtrace

from ..results import result, to_jsonable
from ..spectrum import _one_blas_thread
from ._checks import check_count, raise_nonfinite
from ._operator import as_operator
from .hvp import hessian_operator

__all__ = ["trace", "TraceEstimate", "spectral_density", "SpectralDensity"]


# ---- Hutchinson trace -----------------------------------------------------------------
@result(static=("num_samples",))
class TraceEstimate:
    """Hutchinson estimate ``value ± stderr`` from ``num_samples`` probes ``zᵀ A z``.

    A Monte Carlo estimate has no tolerance to miss: ``converged`` is True (its accuracy is ``stderr``).
    """

    value: float
    stderr: float
    num_samples: int
    samples: np.ndarray
    converged: bool = True
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "value": self.value,
                "stderr": self.stderr,
                "num_samples": self.num_samples,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


@functools.partial(jax.jit, static_argnames=("make", "batch"))
def _quadratic_forms(make, args, Z, *, batch):
    integrand = stochtrace.monte_carlo_trace()  # z ↦ zᵀ A z
    A = make(args)
    return jax.lax.map(lambda z: integrand(A, z), Z, batch_size=batch)


def _probes(key, dim, num, dtype):
    """Rademacher probes from ``matfree.stochtrace.sampler_signs`` (the same draws as
    ``jax.random.rademacher(key, (num, dim))``, so `trace` and `spectral_density` share probes)."""
    return stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num)(key)


def trace(
    loss_fn,
    params=None,
    *,
    leaves=None,
    num_samples: int = 100,
    seed: int = 0,
    probe_batch: int = 32,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr H`` with its standard error.

    ``E[zᵀHz] = tr H`` for Rademacher ``z``; the variance of one probe is
    ``2(‖H‖_F² − Σ_i H_ii²)``. ``stderr`` is the sample standard deviation / √num_samples.
    Products run ``probe_batch`` at a time (vmapped); ``data=``/``batch_size=``/``mesh=`` as in `top_eigenpairs`.
    """
    op = as_operator(
        loss_fn, params, leaves, hessian_operator, data=data, batch_size=batch_size, mesh=mesh, devices=devices
    )
    num_samples = check_count("num_samples", num_samples, 2)
    probe_batch = check_count("probe_batch", probe_batch, 1)
    # matfree's sampler and integrand; not its estimator_monte_carlo_mean_and_sem, which vmaps all
    # probes at once (num_samples × P products in memory, × a network's activations) and returns
    # neither the per-probe values (kept in TraceEstimate.samples) nor the ddof=1 standard error.
    Z = _probes(jax.random.PRNGKey(seed), op.dim, num_samples, jnp.dtype(op.dtype))
    q = np.asarray(_quadratic_forms(op.make, op.args, Z, batch=min(probe_batch, num_samples)))
    if not np.all(np.isfinite(q)):
        raise_nonfinite("trace", op, f"a probe's z^T A z ({int((~np.isfinite(q)).sum())} of {num_samples})", leaves)
    return TraceEstimate(float(q.mean()), float(q.std(ddof=1) / np.sqrt(num_samples)), num_samples, q)


# ---- stochastic Lanczos quadrature ----------------------------------------------------------
@result(static=("sigma", "log", "floor"))
class SpectralDensity:
    """Gaussian-smoothed SLQ density on ``grid`` with the raw quadrature behind it.

    ``nodes``/``weights`` are (num_samples × num_matvecs) Ritz values and their weights
    (each row sums to 1). With ``log=True`` the grid is ``log10|λ|`` (|λ| floored at
    ``floor``) and ``density`` is the density of that variable.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    log: bool = False
    floor: float | None = None
    converged: bool = True
    messages: tuple[str, ...] = ()


@functools.partial(jax.jit, static_argnames=("make", "num_matvecs"))
def _slq_nodes(make, args, V0, *, num_matvecs):
    # Hand-written rather than matfree.decomp.tridiag_sym: on an operator whose Krylov space is
    # exhausted early — a collapsed block has only a few distinct eigenvalues — matfree keeps
    # iterating on rounding noise without detecting the breakdown. Measured (matfree 0.6.3,
    # full reorthogonalisation): A = diag(2·1_10, 0_30), 8 steps from a Rademacher probe gives
    # Ritz values from −6.17 to 7.00, far outside the spectrum [0, 2], and a Lanczos basis that
    # is not orthonormal (‖QᵀQ − I‖ = 1.0); this loop stops the recurrence at the breakdown
    # (β_j ≤ √eps · scale) and returns nodes {0, 2} (tests/test_curvature_estimators.py).
    A = make(args)
    m = num_matvecs
    P = V0.shape[1]
    cut = jnp.sqrt(jnp.finfo(V0.dtype).eps)

    def lanczos(v0):
        q0 = v0 / jnp.linalg.norm(v0)
        Q = jnp.zeros((m + 1, P), v0.dtype).at[0].set(q0)

        def step(j, carry):
            Q, alpha, beta, scale = carry
            q = Q[j]
            w = A(q)
            a = q @ w
            w = w - Q.T @ (Q @ w)  # full reorthogonalisation (rows not yet set are 0)
            w = w - Q.T @ (Q @ w)
            bj = jnp.linalg.norm(w)
            scale = jnp.maximum(scale, jnp.abs(a) + bj)
            alive = bj > cut * scale  # breakdown: an invariant subspace was found
            bj = jnp.where(alive, bj, 0.0)
            Q = Q.at[j + 1].set(jnp.where(alive, w / jnp.where(alive, bj, 1.0), 0.0))
            return Q, alpha.at[j].set(a), beta.at[j].set(bj), scale

        zeros = jnp.zeros((m,), v0.dtype)
        _, alpha, beta, _ = jax.lax.fori_loop(0, m, step, (Q, zeros, zeros, jnp.zeros((), v0.dtype)))
        T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
        theta, Y = jnp.linalg.eigh(T)
        return theta, Y[0] ** 2

    return jax.vmap(lanczos)(V0)


def spectral_density(
    loss_fn,
    params=None,
    *,
    leaves=None,
    num_matvecs: int = 64,
    num_samples: int = 8,
    seed: int = 0,
    grid=None,
    sigma: float | None = None,
    num_points: int = 1000,
    log: bool = False,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> SpectralDensity:
    """SLQ spectral density of the Hessian (or an `Operator`), Gaussian-smoothed.

    Args:
      num_matvecs: Lanczos steps m per probe (products per probe; capped at P).
      num_samples: number of Rademacher probes (their vmapped Lanczos runs in parallel).
      grid: points at which to evaluate; default ``num_points`` points spanning the nodes
        ± 5 sigma.
      sigma: Gaussian width; default 1% of the node range (of log10|λ| when ``log``).
      log: smooth the density of ``log10|λ|`` instead of λ (spectra spanning decades);
        |λ| is floored at ``1e-12 · max|λ|``.

    Returns:
      `SpectralDensity`; ``density`` integrates to 1 over a grid that covers the nodes.
    """
    op = as_operator(
        loss_fn, params, leaves, hessian_operator, data=data, batch_size=batch_size, mesh=mesh, devices=devices
    )
    m = min(check_count("num_matvecs", num_matvecs, 1), op.dim)
    num_samples = check_count("num_samples", num_samples, 1)
    V0 = _probes(jax.random.PRNGKey(seed), op.dim, num_samples, jnp.dtype(op.dtype))
    with _one_blas_thread():  # the small tridiagonal eigh: 0.25-0.34 s against 0.5-2.0 s at load 2-3
        nodes, weights = (np.asarray(a, dtype=np.float64) for a in _slq_nodes(op.make, op.args, V0, num_matvecs=m))
    if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))):
        raise_nonfinite("spectral_density", op, "a Lanczos product (the quadrature nodes)", leaves)
    floor = None
    x = nodes
    if log:
        floor = 1e-12 * max(float(np.abs(nodes).max()), np.finfo(np.float64).tiny)
        x = np.log10(np.maximum(np.abs(nodes), floor))
    span = float(x.max() - x.min())
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 1e-3 * max(abs(float(x.max())), 1.0)
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if grid is None:
        grid = np.linspace(x.min() - 5 * sigma, x.max() + 5 * sigma, check_count("num_points", num_points, 2))
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be 1-d, got shape {grid.shape}")
    gauss = np.exp(-0.5 * ((grid[:, None] - x.reshape(-1)[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = gauss @ weights.reshape(-1) / num_samples
    return SpectralDensity(grid, density, nodes, weights, sigma, bool(log), floor)
