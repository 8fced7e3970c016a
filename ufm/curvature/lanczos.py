"""Matrix-free spectra: top eigenpairs, trace and spectral density of a curvature operator.

Every function takes either ``(loss_fn, params)`` (the Hessian of ``loss_fn`` over the
chosen ``leaves``, linearised once with ``jax.linearize``) or an `Operator` as first
argument with ``params=None`` (e.g. `ggn_operator`). Vectors are flat, row-major over
the chosen leaves in the order given (``MATH.md`` §1). The whole iteration of each solver
is one jitted XLA program; products are batched with ``vmap`` (no host round trip per
product).

* `top_eigenpairs`: thick-restarted block Krylov (block Krylov–Schur; Stewart 2001,
  Zhou & Saad 2008) with full reorthogonalisation and Rayleigh–Ritz on the whole basis.
  A block of ``b`` vectors resolves eigenvalues of multiplicity up to ``b`` — e.g. the K²
  equal layer-wise outliers of a collapsed UFM (``MATH.md`` §4) — which single-vector
  Lanczos cannot do in exact arithmetic; ``b = 1`` is thick-restart Lanczos (Wu & Simon
  2000). Converged when every one of the top k Ritz pairs has
  ``‖A v − θ v‖ <= tol · max|θ|``; the returned residuals are recomputed with fresh products.
* `trace`: Hutchinson's estimator with Rademacher probes (Hutchinson 1990), mean ± standard
  error.
* `spectral_density`: stochastic Lanczos quadrature (Golub & Meurant 1994; Lin, Saad & Yang
  2016; Ghorbani, Krishnan & Xiao 2019): per probe, the Ritz values of m Lanczos steps
  (full reorthogonalisation) are quadrature nodes with weights ``(e_1ᵀ y_j)²``; the density
  is their average smoothed by a Gaussian of width ``sigma`` and integrates to 1.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..spectrum import Spectrum
from ._operator import as_operator
from .hvp import hessian_operator

__all__ = ["top_eigenpairs", "ConvergenceWarning", "NotConvergedError", "trace", "TraceEstimate", "spectral_density", "SpectralDensity"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped before meeting its tolerance (the result says ``converged=False``)."""


class NotConvergedError(RuntimeError):
    """Raised instead of `ConvergenceWarning` when the caller passed ``throw=True``."""


def _check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _orthonormal_block(V, W):
    """``W = H V + R̃ Qn``: Qn's rows orthonormal to each other and to V's rows.

    Block classical Gram–Schmidt with two passes as matrix products ("twice is enough"),
    then a Householder QR (``R̃`` is b × b lower triangular). Zero rows of ``V`` are inert.
    Only when W was (nearly) inside span(V) — an exhausted Krylov space, where the QR has
    normalised rounding noise — is ``Qn`` projected and orthonormalised once more
    (``lax.cond``: the common case pays nothing); ``R̃`` is then of rounding size, so the
    relation still holds to rounding.
    """
    # (V Wᵀ)ᵀ, not W Vᵀ: XLA:CPU runs the latter 10-20× slower for a long contraction axis
    H = (V @ W.T).T
    W = W - H @ V
    H2 = (V @ W.T).T
    W = W - H2 @ V
    Q, R = jnp.linalg.qr(W.T)
    scale = jnp.maximum(jnp.linalg.norm(H, axis=1), jnp.linalg.norm(W, axis=1))
    weak = jnp.any(jnp.abs(jnp.diagonal(R)) <= 1e-3 * scale)

    def again(Qn):
        return jnp.linalg.qr((Qn - (V @ Qn.T).T @ V).T)[0].T

    return jax.lax.cond(weak, again, lambda Qn: Qn, Q.T), H + H2, R.T


def _select(theta, count, which):
    key = -theta if which == "LA" else -jnp.abs(theta)
    return jnp.argsort(key)[:count]


@functools.partial(jax.jit, static_argnames=("make", "k", "keep", "num_blocks", "max_restarts", "which"))
def _block_krylov(make, args, X0, tol, *, k, keep, num_blocks, max_restarts, which):
    """Thick-restarted block Krylov (block Krylov–Schur) with full reorthogonalisation.

    Vectors are rows. The basis ``V`` ((m + b) × P, preallocated; rows not yet reached are
    0, the last b rows receive the continuation block ``C``) and ``T = V A Vᵀ`` (m × m) are
    filled block by block from the Gram–Schmidt coefficients,
    ``A q_j = Σ_r T_rj v_r + (R̃_j Q_{j+1})``, so no product is stored or recomputed and a
    restart's only P-sized work is ``X = Yᵀ V``. ``T`` is filled on and above the
    diagonal blocks and mirrored. After Rayleigh–Ritz, ``A x_i = θ_i x_i + (R̃ᵀ y_i,last)ᵀ C``
    (Stewart 2001), so ``‖A x_i − θ_i x_i‖ = ‖R̃ᵀ y_i,last‖``: the restart keeps ``X`` and
    ``C`` and the next basis is ``[X; C; A C ...]``. The first basis is a plain block
    Krylov space of the random block ``X0``.
    """
    A = jax.vmap(make(args))
    b, P = X0.shape
    m = keep + num_blocks * b
    tiny = jnp.finfo(X0.dtype).tiny

    def fill(V, T, first):
        """Blocks first, first + b, ... of the chain from the block at row ``first``."""
        rows = T.shape[0]

        def extend(j, carry):
            V, T, _ = carry
            off = first + j * b
            Qn, H, R = _orthonormal_block(V, A(jax.lax.dynamic_slice_in_dim(V, off, b)))
            T = jax.lax.dynamic_update_slice_in_dim(T, H[:, :rows].T, off, axis=1)
            return jax.lax.dynamic_update_slice_in_dim(V, Qn, off + b, axis=0), T, R

        R0 = jnp.zeros((b, b), V.dtype)
        V, T, R = jax.lax.fori_loop(0, (rows - first) // b, extend, (V, T, R0))
        return V, T, R

    def ritz(V, T, R):
        rows = T.shape[0]
        T = jnp.triu(T) + jnp.triu(T, 1).T
        theta, Y = jnp.linalg.eigh(T)
        idx = _select(theta, keep, which)
        theta, Y = theta[idx], Y[:, idx]
        X = Y.T @ V[:rows]
        return X, V[rows:], theta, jnp.linalg.norm(R.T @ Y[rows - b :], axis=0)

    def restart(state):
        X, C, it, theta, _ = state
        V = jnp.zeros((m + b, P), X.dtype).at[:keep].set(X).at[keep : keep + b].set(C)
        T = jnp.zeros((m, m), X.dtype).at[jnp.arange(keep), jnp.arange(keep)].set(theta)
        X, C, theta, res = ritz(*fill(V, T, keep))
        return X, C, it + 1, theta, res

    def not_done(state):
        *_, it, theta, res = state
        scale = jnp.maximum(jnp.max(jnp.abs(theta[:k])), tiny)
        return (it < max_restarts) & (jnp.max(res[:k]) > tol * scale)

    m0 = m // b * b
    V0 = jnp.zeros((m0 + b, P), X0.dtype).at[:b].set(jnp.linalg.qr(X0.T)[0].T)
    X, C, theta, res = ritz(*fill(V0, jnp.zeros((m0, m0), X0.dtype), 0))
    X, _, it, theta, _ = jax.lax.while_loop(not_done, restart, (X, C, 0, theta, res))
    theta_k, Xk, residuals = _rayleigh_ritz(A, X[:k], which)
    return theta_k, Xk.T, residuals, it


def _rayleigh_ritz(A, X, which):
    """Re-orthonormalise the rows of ``X``, one product per row, Rayleigh–Ritz on span(X).

    The returned values are eigenvalues of ``Q A Qᵀ`` for an orthonormal ``Q``, hence inside
    ``[λ_min, λ_max]`` of A (Cauchy interlacing) whatever state the iteration ended in; the
    residuals are measured with these products, not estimated.
    """
    Q = jnp.linalg.qr(X.T)[0].T
    AQ = A(Q)
    T = Q @ AQ.T
    theta, Y = jnp.linalg.eigh(0.5 * (T + T.T))
    Y = Y[:, _select(theta, X.shape[0], which)]
    theta, Q, AQ = jnp.diagonal(Y.T @ T @ Y), Y.T @ Q, Y.T @ AQ
    return theta, Q, jnp.linalg.norm(AQ - theta[:, None] * Q, axis=1)


@functools.partial(jax.jit, static_argnames=("make", "dim", "dtype", "k", "which"))
def _dense_top(make, args, *, dim, dtype, k, which):
    A = jax.vmap(make(args), in_axes=1, out_axes=1)
    I = jnp.eye(dim, dtype=dtype)
    M = A(I)
    theta, Y = jnp.linalg.eigh(0.5 * (M + M.T))
    idx = _select(theta, k, which)
    theta, Y = theta[idx], Y[:, idx]
    return theta, Y, jnp.linalg.norm(A(Y) - Y * theta, axis=0)


def top_eigenpairs(loss_fn, params, k: int, *, leaves=None, seed: int = 0, tol: float | None = None,
                   block_size: int | None = None, oversample: int | None = None, num_blocks: int | None = None,
                   max_restarts: int = 200, which: str = "LA", throw: bool = False) -> Spectrum:
    """The ``k`` largest eigenpairs of the Hessian of ``loss_fn`` (or of an `Operator`).

    Thick-restarted block Krylov: the basis holds ``keep = k + oversample`` Ritz vectors
    plus ``num_blocks`` Krylov blocks of ``block_size`` vectors; each restart costs
    ``num_blocks · block_size`` products (vmapped, one block at a time).

    Args:
      loss_fn: ``params -> scalar``, or an `Operator` (then ``params=None``).
      params: pytree at which the Hessian is taken.
      k: number of eigenpairs, ``1 <= k <= P``.
      leaves: indices into ``tree_leaves(params)`` (None = all), flattened in that order.
      seed: PRNG seed of the random starting block.
      tol: relative residual tolerance, ``‖Hv − θv‖ <= tol · max|θ|`` for each of the k
        pairs; default ``√eps`` of the dtype (eigenvalue errors are then ~``tol²`` relative
        for separated eigenvalues).
      block_size: vectors per Krylov block, default ``k``. A group of equal eigenvalues is
        resolved reliably when its multiplicity is at most ``block_size`` (e.g. the K²
        layer-wise UFM outliers need ``block_size >= K²``); ``block_size=1`` is thick-restart
        Lanczos, the fewest products for spectra without degenerate groups.
      oversample: extra Ritz vectors kept at a restart (``keep = k + oversample``);
        default ``max(10, block_size)``.
      num_blocks: Krylov blocks per restart; default so that the basis has about
        ``2 keep + 2 block_size`` columns and at least 6 blocks (for large blocks the
        polynomial degree per restart, not the basis width, limits convergence: top-20 of
        the MLP Hessian in ``benchmarks/curvature.py`` took 1 560 products with 4 blocks
        and oversample 10, 900 with 6 blocks and oversample 20).
      max_restarts: cap on restarts; ``info["converged"]`` says whether ``tol`` was met.
        A result that missed ``tol`` warns (`ConvergenceWarning`), or raises
        `NotConvergedError` with ``throw=True``.
      which: ``"LA"`` largest algebraic (descending) or ``"LM"`` largest magnitude.

    Returns:
      `Spectrum` with ``eigenvalues`` (k, descending), ``eigenvectors`` (P × k, flat),
      ``residuals`` ``‖Hv − λv‖`` (recomputed with fresh products, after a final
      Rayleigh–Ritz step on the returned vectors, so every value lies in the spectrum) and ``info``
      (restarts, products, converged, tol). An operator too small for the basis is
      solved densely (``info["method"]``).
    """
    op = as_operator(loss_fn, params, leaves, hessian_operator)
    P = op.dim
    k = _check_int("k", k, 1)
    if k > P:
        raise ValueError(f"k must be <= the dimension P={P}, got {k}")
    b = k if block_size is None else _check_int("block_size", block_size, 1)
    oversample = max(10, b) if oversample is None else _check_int("oversample", oversample, 0)
    max_restarts = _check_int("max_restarts", max_restarts, 1)
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude), got {which!r}")
    dtype = jnp.dtype(op.dtype)
    tol = float(np.sqrt(jnp.finfo(dtype).eps)) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    keep = k + oversample
    b = min(b, keep)
    if num_blocks is None:
        num_blocks = max(6, -(-(keep + 2 * b) // b))
    num_blocks = _check_int("num_blocks", num_blocks, 1)
    # The basis holds keep Ritz vectors, num_blocks Krylov blocks *and* the continuation
    # block carried into the next restart: keep + (num_blocks + 1) b orthonormal rows, which
    # must fit in R^P. Shrink the basis to fit, or solve densely when it cannot.
    if keep + (num_blocks + 1) * b > P:
        num_blocks = (P - keep - b) // b
    if (keep + num_blocks * b) // b * b < keep + 1:  # the first, plain Krylov basis must exceed keep
        num_blocks = 0
    if num_blocks < 1:
        theta, X, res = _dense_top(op.make, op.args, dim=P, dtype=dtype, k=k, which=which)
        info = {"method": "dense eigh (operator too small for a Krylov basis)", "products": P + k,
                "restarts": 0, "converged": True, "tol": tol, "which": which}
    else:
        X0 = jax.random.normal(jax.random.PRNGKey(seed), (P, b), dtype).T  # the same start as before for a seed
        theta, X, res, it = _block_krylov(op.make, op.args, X0, jnp.asarray(tol, dtype), k=k, keep=keep,
                                          num_blocks=num_blocks, max_restarts=max_restarts, which=which)
        it = int(it)
        scale = max(float(jnp.max(jnp.abs(theta))), float(jnp.finfo(dtype).tiny))
        info = {"method": "thick-restarted block Krylov", "block_size": b, "keep": keep, "num_blocks": num_blocks,
                "restarts": it, "products": (keep + num_blocks * b) // b * b + it * num_blocks * b + k,
                "converged": bool(float(jnp.max(res)) <= tol * scale), "tol": tol, "which": which}
        if not info["converged"]:
            msg = (f"top_eigenpairs did not converge: max residual {float(jnp.max(res)):.3g} > tol·max|λ| = "
                   f"{tol * scale:.3g} after {it} restarts ({info['products']} products); the values are Ritz "
                   "values (inside the spectrum) but not to tol. Raise max_restarts, loosen tol, or pass "
                   "throw=True to make this an error")
            if throw:
                raise NotConvergedError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return Spectrum(np.asarray(theta), np.asarray(X), dim=P, residuals=np.asarray(res), source="lanczos", info=info)


# ---- Hutchinson trace -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate ``value ± stderr`` from ``num_samples`` probes ``zᵀ A z``."""

    value: float
    stderr: float
    num_samples: int
    samples: np.ndarray

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "num_samples": self.num_samples}


@functools.partial(jax.jit, static_argnames=("make", "batch"))
def _quadratic_forms(make, args, Z, *, batch):
    A = make(args)
    return jax.lax.map(lambda z: z @ A(z), Z, batch_size=batch)


def trace(loss_fn, params=None, *, leaves=None, num_samples: int = 100, seed: int = 0,
          batch_size: int = 32) -> TraceEstimate:
    """Hutchinson's estimate of ``tr H`` with its standard error.

    ``E[zᵀHz] = tr H`` for Rademacher ``z``; the variance of one probe is
    ``2(‖H‖_F² − Σ_i H_ii²)``. ``stderr`` is the sample standard deviation / √num_samples.
    Products run ``batch_size`` at a time (vmapped).
    """
    op = as_operator(loss_fn, params, leaves, hessian_operator)
    num_samples = _check_int("num_samples", num_samples, 2)
    batch_size = _check_int("batch_size", batch_size, 1)
    Z = jax.random.rademacher(jax.random.PRNGKey(seed), (num_samples, op.dim), dtype=jnp.dtype(op.dtype))
    q = np.asarray(_quadratic_forms(op.make, op.args, Z, batch=min(batch_size, num_samples)))
    return TraceEstimate(float(q.mean()), float(q.std(ddof=1) / np.sqrt(num_samples)), num_samples, q)


# ---- stochastic Lanczos quadrature ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
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

    def to_dict(self) -> dict:
        return {"grid": self.grid.tolist(), "density": self.density.tolist(), "nodes": self.nodes.tolist(),
                "weights": self.weights.tolist(), "sigma": self.sigma, "log": self.log, "floor": self.floor}


@functools.partial(jax.jit, static_argnames=("make", "num_matvecs"))
def _slq_nodes(make, args, V0, *, num_matvecs):
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


def spectral_density(loss_fn, params=None, *, leaves=None, num_matvecs: int = 64, num_samples: int = 8,
                     seed: int = 0, grid=None, sigma: float | None = None, num_points: int = 1000,
                     log: bool = False) -> SpectralDensity:
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
    op = as_operator(loss_fn, params, leaves, hessian_operator)
    m = min(_check_int("num_matvecs", num_matvecs, 1), op.dim)
    num_samples = _check_int("num_samples", num_samples, 1)
    V0 = jax.random.rademacher(jax.random.PRNGKey(seed), (num_samples, op.dim), dtype=jnp.dtype(op.dtype))
    nodes, weights = (np.asarray(a, dtype=np.float64) for a in _slq_nodes(op.make, op.args, V0, num_matvecs=m))
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
        grid = np.linspace(x.min() - 5 * sigma, x.max() + 5 * sigma, _check_int("num_points", num_points, 2))
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be 1-d, got shape {grid.shape}")
    gauss = np.exp(-0.5 * ((grid[:, None] - x.reshape(-1)[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = gauss @ weights.reshape(-1) / num_samples
    return SpectralDensity(grid, density, nodes, weights, sigma, bool(log), floor)
