"""The deep-neural-collapse (DNC) point of a deep UFM: scale, singular values, loss.

Conventions are ``docs/theory.md`` §1: loss ``(1/2N)‖Z − Y‖² + Σ_l (λ_l/2)‖W_l‖² + (λ_H/2)‖H_1‖²``
(MSE) or the mean cross-entropy plus the same ridge, λ_l := λ_{W_l}.

* MSE (``docs/theory.md`` §3, v1 Eq. (2)): ``Z* = γ Y`` with γ the largest root of
  ``γ^{L−1}(1−γ)^{L+1} = b``, ``b = K^{L+1} n λ_H Π_l λ_l``; ``σ_l² = γ(1−γ)/(K λ_l)``,
  ``s² = γ(1−γ)/(K n λ_H)`` (``M_1ᵀM_1 = s² I_K``), optimal loss ``(1−γ)(1+Lγ)/2``.
  The collapsed point beats the zero point iff ``γ > (L−1)/L``, i.e. iff
  ``b < (L−1)^{L−1}/L^{2L}`` (a non-zero critical point exists up to the larger bound
  ``max_γ γ^{L−1}(1−γ)^{L+1}``, but above ``(L−1)^{L−1}/L^{2L}`` zero is the global minimum).
* CE (``docs/theory.md`` §5): class means of Z are ``α S`` (``S = I − 11ᵀ/K``), ``p = e^α/(e^α+K−1)``,
  α the larger root of ``α^{L−1}/(e^α+K−1)^{L+1} = n λ_H Π λ_l``,
  ``σ_l² = (1−p)α/((K−1)λ_l)``, ``M_1ᵀM_1 = s² S`` with ``λ_H n s² = (1−p)α/(K−1)``.
  A critical point, not always the global minimum (arXiv 2410.23169 Thm 1).

All of this is re-derived symbolically in `ufm.theory.symbolic`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.optimize import brentq

from ..model import UFMParams
from ..results import result, to_jsonable
from ..spec import UFMSpec

__all__ = ["DNCSolution", "FullHessianLevels", "dnc_solution", "construct_optimum", "mse_threshold"]


@result(static=("symmetric_multiplicity", "antisymmetric_multiplicity"))
class FullHessianLevels:
    """The frame levels of the full data Hessian over W_1..W_L at the linear-MSE DNC point (``docs/theory.md`` §4).

    ``symmetric``: the L eigenvalues of ``S = (2γ−1) r + diag(λ)``, each ×``K(K+1)/2``;
    ``antisymmetric``: those of ``T = r − diag(λ)``, each ×``K(K−1)/2``, with
    ``r_{lm} = √(λ_lλ_m)/(1−γ)`` (descending). Equal λ: the tops are
    ``λ(L(2γ−1)+1−γ)/(1−γ)`` and ``λ(L−1+γ)/(1−γ)``.
    """

    symmetric: tuple[float, ...]
    antisymmetric: tuple[float, ...]
    symmetric_multiplicity: int
    antisymmetric_multiplicity: int
    converged: bool = True  # closed form (`ufm.results`)
    messages: tuple[str, ...] = ()


def frame_matrices(lams, gamma: float, one_minus_gamma: float, regularized: bool = False):
    """``(S, T)`` of `FullHessianLevels` for the per-layer ``lams`` (``regularized`` adds diag(λ) to both)."""
    lams = np.asarray(lams, dtype=np.float64)
    sq = np.sqrt(lams)
    r = np.outer(sq, sq) / one_minus_gamma
    reg = np.diag(lams) if regularized else 0.0
    return (2 * gamma - 1) * r + np.diag(lams) + reg, r - np.diag(lams) + reg


@result(static=("loss", "collapsed_to_zero"))
class DNCSolution:
    """The closed-form DNC point of a spec.

    Fields:
      loss: ``"mse"`` or ``"ce"``.
      scale: γ (MSE: ``Z = γY``) or α (CE: class means of Z are ``α S``).
      singular_values: σ_l of W_1..W_L (each with multiplicity K for MSE, K−1 for CE).
      feature_scale: s with ``M_1ᵀM_1 = s² I_K`` (MSE) or ``s² S`` (CE).
      optimal_loss: the total (regularised) loss at the point.
      b: the scale-equation constant (MSE: ``K^{L+1} n λ_H Πλ_l``; CE: ``n λ_H Πλ_l``).
      b_bound: MSE: ``(L−1)^{L−1}/L^{2L}``, the DNC point is the global minimiser iff
        ``b < b_bound``; CE: ``max_α α^{L−1}/(e^α+K−1)^{L+1}``, a critical point exists iff
        ``b < b_bound``.
      collapsed_to_zero: MSE only: the global minimiser is 0 (all fields then 0).
      p: CE only: the softmax probability of the true class.
      one_minus_scale: MSE: 1 − γ to full relative precision.
      layer_outliers: per layer l, the distinct outlier levels (descending) of the data-Hessian
        block of W_l at the point, with its own λ_l: MSE ``λ_lγ/(1−γ)`` (``docs/theory.md`` §4); CE
        ``αλ_l p``, ``(αλ_l/K)[1+(Kp−1)(K−2)/(K−1)]``, ``αλ_l/K`` (§5; only the first for K = 2).
      layer_multiplicities: their multiplicities per layer: MSE ``(K²,)``, CE
        ``(1, K−1, K²−3K+1)``; ``None`` where the value holds but the count is not known in
        closed form (ReLU with σ'(0) < 1 before the last layer, ``docs/theory.md`` §6).
      full_levels: `FullHessianLevels` where the full-Hessian closed form applies (MSE, linear
        or ReLU with σ'(0) = 1), else ``None``.
    """

    loss: str
    scale: float
    singular_values: tuple[float, ...]
    feature_scale: float
    optimal_loss: float
    b: float
    b_bound: float
    collapsed_to_zero: bool
    p: float | None = None
    one_minus_scale: float | None = None  # 1 − γ to full relative precision (MSE)
    layer_outliers: tuple[tuple[float, ...], ...] = ()
    layer_multiplicities: tuple[tuple[int, ...] | None, ...] = ()
    full_levels: FullHessianLevels | None = None
    converged: bool = True  # closed form; the CE scale equation is solved to rounding (`ufm.results`)
    messages: tuple[str, ...] = ()

    @property
    def gamma(self) -> float:
        if self.loss != "mse":
            raise AttributeError("gamma is the MSE scale; this is a CE solution (use .alpha)")
        return self.scale

    @property
    def alpha(self) -> float:
        if self.loss != "ce":
            raise AttributeError("alpha is the CE scale; this is an MSE solution (use .gamma)")
        return self.scale

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["gamma" if self.loss == "mse" else "alpha"] = self.scale
        return to_jsonable(out)


def mse_threshold(depth: int) -> float:
    """``(L−1)^{L−1}/L^{2L}``: the DNC point is the global MSE minimiser iff ``b`` is below it."""
    L = depth
    return (L - 1) ** (L - 1) / L ** (2 * L) if L > 1 else 1.0


def _mse_one_minus_gamma(b: float, L: int) -> float:
    """u = 1 − γ for the largest root γ of ``γ^{L−1}(1−γ)^{L+1} = b`` (log form, bracketed)."""
    if L == 1:
        return math.sqrt(b)
    # In u = 1 − γ the function is increasing on (0, (L+1)/(2L)]; its maximum is at γ = (L−1)/(2L).
    f = lambda u: (L - 1) * math.log1p(-u) + (L + 1) * math.log(u) - math.log(b)  # noqa: E731
    lo, hi = 1e-300, (L + 1) / (2 * L)
    return brentq(f, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def _ce_log_g(alpha: float, L: int, K: int) -> float:
    """``log(α^{L−1}/(e^α+K−1)^{L+1})`` without overflow."""
    return (L - 1) * math.log(alpha) - (L + 1) * (alpha + math.log1p((K - 1) * math.exp(-alpha)))


def _ce_alpha(b: float, L: int, K: int) -> tuple[float, float]:
    """(α, bound): the larger root of ``α^{L−1}/(e^α+K−1)^{L+1} = b`` and the largest value of the LHS on α > 0."""
    if L == 1:
        amax = 0.0
        bound = K**-2.0
    else:
        # d/dα log g = (L−1)/α − (L+1) e^α/(e^α+K−1); decreasing, one sign change.
        dlog = lambda a: (L - 1) / a - (L + 1) / (1 + (K - 1) * math.exp(-a))  # noqa: E731
        amax = brentq(dlog, 1e-12, 10.0 * L + 50.0, xtol=1e-15, rtol=4 * np.finfo(float).eps)
        bound = math.exp(_ce_log_g(amax, L, K))
    if not b < bound:
        raise ValueError(
            f"cross-entropy has no collapsed critical point for these lambdas: n·λ_H·Πλ_l = {b:.6g} "
            f"must be < max_α α^(L-1)/(e^α+K-1)^(L+1) = {bound:.6g} (docs/theory.md §5); lower lambda_H or lambda_W"
        )
    lo = max(amax, 1e-300)
    hi = max(2.0 * lo, 1.0)
    logb = math.log(b)
    h = lambda a: (_ce_log_g(a, L, K) if a > 0 else -math.inf) - logb  # noqa: E731
    while h(hi) > 0:
        hi *= 2.0
    if L == 1:
        lo = 1e-300 if h(1e-300) > 0 else lo
    return brentq(h, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500), bound


def dnc_solution(spec: UFMSpec) -> DNCSolution:
    """The closed-form DNC point of ``spec`` (``docs/theory.md`` §3 MSE, §5 CE), any depth, per-layer λ.

    The scale equation is solved on a bracket in log form (largest root), so the result
    is accurate to a few ulps even when γ → 1. ReLU with MSE has the same point as the
    linear model (non-negative frames, ``docs/theory.md`` §6).

    Raises:
      ValueError: CE with no critical point; softplus, or ReLU with CE (no closed form).

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> sol = ufm.theory.dnc_solution(ufm.UFMSpec(num_classes=3, per_class=2, depth=2, lambda_H=1e-2, lambda_W=1e-2))
      >>> g, L = sol.gamma, 2                     # γ^{L−1}(1−γ)^{L+1} = b = K^{L+1} n λ_H Πλ_l
      >>> abs(g ** (L - 1) * (1 - g) ** (L + 1) - 3**3 * 2 * 1e-2**3) < 1e-15
      True
      >>> abs(sol.layer_outliers[0][0] - 1e-2 * g / (1 - g)) < 1e-15, sol.layer_multiplicities[0]
      (True, (9,))
    """
    if not isinstance(spec, UFMSpec):
        raise TypeError(f"spec must be a UFMSpec, got {type(spec).__name__}")
    if spec.activation == "softplus" or (spec.activation == "relu" and spec.loss == "ce"):
        raise ValueError(
            f"no closed-form DNC point for activation={spec.activation!r} with loss={spec.loss!r}: "
            "closed forms exist for linear (MSE, CE) and ReLU with MSE; train the model instead"
        )
    K, n, L = spec.num_classes, spec.per_class, spec.depth
    lams = np.array(spec.lambdas)
    if spec.loss == "mse":
        b = float(K ** (L + 1) * n * spec.lambda_H * np.prod(lams))
        bound = mse_threshold(L)
        if not b < bound:
            return DNCSolution("mse", 0.0, (0.0,) * L, 0.0, 0.5, b, bound, True, None, 1.0, ((),) * L, ((),) * L)
        u = _mse_one_minus_gamma(b, L)
        g = 1.0 - u
        sig = tuple(float(math.sqrt(g * u / (K * lam))) for lam in lams)
        s = math.sqrt(g * u / (K * n * spec.lambda_H))
        linear = spec.activation == "linear" or spec.relu_grad0 == 1.0
        outliers = tuple((float(lam * g / u),) for lam in lams)
        mults = tuple((K * K,) if linear or l == L else None for l in range(1, L + 1))
        full = None
        if linear:
            S, T = frame_matrices(lams, g, u)
            full = FullHessianLevels(
                tuple(np.linalg.eigvalsh(S)[::-1].tolist()),
                tuple(np.linalg.eigvalsh(T)[::-1].tolist()),
                K * (K + 1) // 2,
                K * (K - 1) // 2,
            )
        return DNCSolution("mse", g, sig, s, 0.5 * u * (1 + L * g), b, bound, False, None, u, outliers, mults, full)
    b = float(n * spec.lambda_H * np.prod(lams))
    alpha, bound = _ce_alpha(b, L, K)
    one_minus_p = (K - 1) / (math.exp(alpha) + K - 1)
    c = one_minus_p * alpha / (K - 1)
    sig = tuple(float(math.sqrt(c / lam)) for lam in lams)
    s = math.sqrt(c / (n * spec.lambda_H))
    ce = math.log1p((K - 1) * math.exp(-alpha))
    p = 1.0 - one_minus_p
    if K == 2:  # (K−1)² = 1: only the top level (docs/theory.md §5's multiplicities assume K >= 3)
        outliers, mults = tuple((alpha * lam * p,) for lam in lams), ((1,),) * L
    else:
        outliers = tuple(
            (alpha * lam * p, alpha * lam / K * (1 + (K * p - 1) * (K - 2) / (K - 1)), alpha * lam / K) for lam in lams
        )
        mults = ((1, K - 1, K * K - 3 * K + 1),) * L
    outliers = tuple(tuple(float(v) for v in level) for level in outliers)
    return DNCSolution(
        "ce", alpha, sig, s, ce + 0.5 * (L + 1) * one_minus_p * alpha, b, bound, False, p, None, outliers, mults, None
    )


# ---- constructing the point ---------------------------------------------------------------
def _orthonormal(rng, d: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    return q * np.sign(np.diag(r))


def _nonnegative_orthonormal(rng, d: int, k: int) -> np.ndarray:
    """k orthonormal non-negative columns in R^d: disjoint random supports, positive entries."""
    perm = rng.permutation(d)
    size = d // k
    U = np.zeros((d, k))
    for c in range(k):
        idx = perm[c * size : (c + 1) * size]
        v = np.abs(rng.standard_normal(size)) + 0.1
        U[idx, c] = v / np.linalg.norm(v)
    return U


def simplex_basis(K: int) -> np.ndarray:
    """An orthonormal basis Q (K × (K−1)) of 1^⊥, so ``Q Qᵀ = S = I − 11ᵀ/K``."""
    u, _, _ = np.linalg.svd(np.eye(K) - np.ones((K, K)) / K)
    return u[:, : K - 1]


def construct_optimum(spec: UFMSpec, seed: int = 0) -> UFMParams:
    """Parameters exactly at the DNC point of ``spec`` (``docs/theory.md`` §3, §5, §6).

    MSE: ``H_1 = s U_1 Y``, ``W_l = σ_l U_{l+1} U_lᵀ`` with random orthonormal frames U_l
    (d_l × K, ``U_{L+1} = I_K``); for ReLU all frames are non-negative with disjoint supports,
    so ReLU acts as the identity and the off-support pre-activations are exact zeros (where
    ``spec.relu_grad0`` decides the derivative). CE (linear): the same with frames
    ``Q_l`` (d_l × (K−1)), ``Q_{L+1}`` a basis of 1^⊥, and ``H_1 = s Q_1 Q_{L+1}ᵀ Y``: the
    simplex-ETF critical point. Below the threshold the point has ‖∇L‖ = 0 up to rounding;
    above it (MSE) the zero parameters are returned. Arrays are ``jnp`` (float64 only
    with ``jax_enable_x64``).

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4)
      >>> p = ufm.theory.construct_optimum(spec, seed=0)
      >>> g = jax.grad(ufm.model.loss_fn(spec))(p)       # a critical point of the total loss
      >>> bool(max(abs(x).max() for x in jax.tree.leaves(g)) < 1e-12)
      True
    """
    import jax.numpy as jnp

    sol = dnc_solution(spec)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = np.random.default_rng(seed)
    K = spec.num_classes
    widths = spec.widths
    Y = spec.targets
    if spec.loss == "mse":
        # ReLU: disjoint supports in every frame (U_1 included), so the off-support entries
        # of every H_l are exact zeros, not ±1e-17 rounding that ReLU would treat as negative.
        make = _nonnegative_orthonormal if spec.activation == "relu" else _orthonormal
        frames = [make(rng, d, K) for d in widths] + [np.eye(K)]
        H1 = sol.feature_scale * frames[0] @ Y
    else:
        frames = [_orthonormal(rng, d, K - 1) for d in widths] + [simplex_basis(K)]
        H1 = sol.feature_scale * frames[0] @ frames[-1].T @ Y
    Ws = tuple(sig * frames[l + 1] @ frames[l].T for l, sig in enumerate(sol.singular_values))
    return UFMParams(jnp.asarray(H1), tuple(jnp.asarray(W) for W in Ws))
