r"""One-pass SGD on anisotropic Gaussian mixtures and its exact high-dimensional ODE
([CWS] Collins-Woodfin & Seroussi, arXiv 2510.14074; derived in ``docs/sgd_ode.md``).

Data: `AnisotropicMixture` (``docs/sgd_ode.md`` §1), ``a | j ~ N(μ_j, K_j)``, ``K_j =
Σ_ρ λ_ρ^{(j)} u_ρ u_ρᵀ``, ``λ = O(1)``, ``⟨μ_j, u_ρ⟩ = O(d^{-1/2})``. Model: linear predictor
``z = X a ∈ R^q`` (``q = 1``: binary logistic ``ℓ = log(1 + e^z) − y z`` or least squares
``ℓ = ½(z − y)²``; ``q = k``: softmax ``ℓ = logsumexp(z) − z_j``). One-pass SGD, a fresh
sample per step (§2):

    X_{n+1} = X_n − (γ/d) ∇_z ℓ(X_n a_n, y_n) a_nᵀ,      t = n/d,   X_0 = 0 (or N(0, σ²/d)).

The ODE (§3). Write ``w_ρ = √d X u_ρ ∈ R^q`` (O(1)) and ``μ̄_{jρ} = √d ⟨μ_j, u_ρ⟩`` (O(1)).
The state per mode is ``r_ρ = E w_ρ`` and ``V_ρ = E w_ρ w_ρᵀ`` (``q = 1``: ``v_ρ = d⟨x,u_ρ⟩²``
and ``m_{ρ,i} = d⟨x,u_ρ⟩⟨μ_i,u_ρ⟩ = μ̄_{iρ} r_ρ``). Given X, a class-j pre-activation is
exactly Gaussian, ``z_j ~ N(M_j, S_j)`` with ``M_j = X μ_j = (1/d) Σ_ρ μ̄_{jρ} r_ρ`` and
``S_j = X K_j Xᵀ = (1/d) Σ_ρ λ_ρ^{(j)} V_ρ``. Stein's lemma on the jointly Gaussian
``(z, ⟨a, u_ρ⟩)`` gives ``E[∇ℓ ⟨a,u_ρ⟩] = ⟨μ_j,u_ρ⟩ A_j + λ_ρ^{(j)} B_j X u_ρ`` with
``A_j = E∇ℓ(z_j)``, ``B_j = E∇²ℓ(z_j)``, ``C_j = E∇ℓ∇ℓᵀ``; one unit of t is d steps, so

    dr_ρ/dt = −γ [D_ρ + P_ρ r_ρ],          D_ρ = Σ_j π_j μ̄_{jρ} A_j,  P_ρ = Σ_j π_j λ_ρ^{(j)} B_j,
    dV_ρ/dt = −γ [r_ρ D_ρᵀ + D_ρ r_ρᵀ + P_ρ V_ρ + V_ρ P_ρ] + γ² Σ_j π_j (λ_ρ^{(j)} + μ̄_{jρ}²/d) C_j.

The noise term is ``d · E[(Δw)(Δw)ᵀ] = γ² E[∇ℓ∇ℓᵀ ⟨a,u_ρ⟩²]``; its ``C_j E⟨a,u_ρ⟩² = C_j(λ_ρ +
⟨μ_j,u_ρ⟩²)`` part is kept whole (``mean_noise=True``, the default; the leading-order ODE keeps
``λ_ρ C_j`` only). The means' part is O(1/d), like the dropped correlation terms between ``∇ℓ``
and ``⟨a,u_ρ⟩`` (``docs/sgd_ode.md`` §3 eq. (3.2'), §5), but it grows with ``‖μ_j‖²`` and at
K = 50 it decides the agreement with SGD (§9). The d modes interact only through ``(M_j, S_j)``;
the field is vectorised over ρ (cost linear in d). Expectations (`make_rule`): Gauss–Hermite
product rule (order a parameter) on ``z = M + S^{1/2} ξ`` for q ≤ 3, randomised QMC (scrambled
Sobol, ``R`` independent sets, the error estimate their standard error; ``docs/sgd_ode.md``
§3.1) for softmax with k ≥ 4; closed form for least squares (``A = M − y``, ``B = 1``,
``C = (M − y)² + S``). Integrated with diffrax (Tsit5, PID controller, ``SaveAt(ts=times)``).

Risk: ``R = Σ_j π_j E ℓ(z_j, y_j)``, computed *exactly* for the SGD iterate too (no test
sample: ``z | j`` is Gaussian given X, so the population risk of X is the same Gaussian
expectation of its ``(M_j, S_j)``). Overlaps ``cos(X_c, μ_j)`` and the clean-direction
alignment ``cos(X_c, P_clean μ_j)`` (``P_clean``: the mixture's clean modes).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from ..results import THROW, result, to_jsonable
from ._anisotropic import AnisotropicMixture, anisotropic_mixture, draw

__all__ = [
    "LOSSES",
    "ODEResult",
    "PhaseDiagram",
    "RULES",
    "Rule",
    "SGDResult",
    "TrajectoryGap",
    "gaussian_expectations",
    "gaussian_expectations_stderr",
    "make_rule",
    "ode_sgd_gap",
    "phase_diagram",
    "simulate_sgd",
    "solve_sgd_ode",
    "time_grid",
]

LOSSES = ("logistic", "lsq", "softmax")


# ---- losses and their Gaussian expectations (docs/sgd_ode.md §2, §4) ----------------------------
def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _loss_fn(loss: str):
    """ℓ(z, t) for one sample: z (q,), t the class target ((1,) label, or (k,) one-hot)."""
    import jax
    import jax.numpy as jnp

    if loss == "logistic":
        return lambda z, t: jax.nn.softplus(z[0]) - t[0] * z[0]
    if loss == "lsq":
        return lambda z, t: 0.5 * jnp.sum((z - t) ** 2)
    return lambda z, t: jax.nn.logsumexp(z) - jnp.dot(t, z)


def _targets(mixture: AnisotropicMixture, loss: str) -> np.ndarray:
    """(k, q) per-class targets: the label ``y_j`` (q = 1) or the one-hot ``e_j`` (softmax)."""
    if loss == "softmax":
        return np.eye(mixture.num_classes)
    if loss == "logistic" and np.any((mixture.labels < 0) | (mixture.labels > 1)):
        raise ValueError(f"logistic loss needs labels in [0, 1], got {mixture.labels.tolist()}")
    return mixture.labels[:, None]


RULES = ("auto", "hermite", "qmc", "closed")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How the Gaussian expectations ``E f(z)``, ``z ~ N(M, S)`` in ``R^q``, are computed
    (``docs/sgd_ode.md`` §3.1).

    ``kind``: ``"closed"`` (least squares, exact), ``"hermite"`` (product Gauss–Hermite,
    ``order^q`` nodes, deterministic) or ``"qmc"`` (randomised quasi-Monte Carlo: ``reps``
    independent Owen-scrambled Sobol point sets of ``points`` (a power of 2) nodes each, mapped
    to ``N(0, I_q)`` by the normal quantile; ``seed`` fixes the scrambles, so the points are
    common random numbers). A QMC quantity is the mean over the ``reps`` randomisations and its
    error estimate the standard error over them.
    """

    kind: str
    order: int | None = None
    points: int = 256
    reps: int = 8
    seed: int = 0

    def describe(self) -> str:
        if self.kind == "closed":
            return "closed form (least squares)"
        if self.kind == "hermite":
            return f"Gauss–Hermite, order {self.order} per dimension"
        return f"scrambled Sobol RQMC, {self.reps} × {self.points} points (seed {self.seed})"

    @property
    def num_sets(self) -> int:
        return self.reps if self.kind == "qmc" else 1

    def nodes(self, q: int, rep: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(nodes (N, q), weights (N,))`` for N(0, I_q): randomisation ``rep`` (``None``: the
        ``reps`` sets pooled; Gauss–Hermite ignores ``rep``; the closed form has one dummy node)."""
        if self.kind == "closed":
            return np.zeros((1, q)), np.ones(1)
        if self.kind == "hermite":
            return _hermite_rule(self.order, q)
        sets = range(self.reps) if rep is None else [rep]
        xs = np.concatenate([_sobol_normal(self.points, q, self.seed, r) for r in sets])
        return xs, np.full(xs.shape[0], 1.0 / xs.shape[0])


@functools.cache
def _hermite_rule(order: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Product Gauss–Hermite rule for E over N(0, I_q): nodes (order^q, q), weights summing to 1."""
    x, w = np.polynomial.hermite_e.hermegauss(order)  # weight e^{-x²/2}
    w = w / w.sum()
    grids = np.meshgrid(*([x] * q), indexing="ij")
    weights = np.prod(np.meshgrid(*([w] * q), indexing="ij"), axis=0)
    return np.stack([g.ravel() for g in grids], axis=1), weights.ravel()


@functools.cache
def _sobol_normal(points: int, q: int, seed: int, rep: int) -> np.ndarray:
    """``points`` Owen-scrambled Sobol points in [0, 1)^q (scipy.stats.qmc; randomisation ``rep``
    of ``seed``) mapped to N(0, I_q) coordinate-wise by the normal quantile."""
    from scipy.stats import norm, qmc

    u = qmc.Sobol(q, scramble=True, seed=np.random.default_rng([seed, rep])).random_base2(int(points).bit_length() - 1)
    return norm.ppf(np.clip(u, 1e-16, 1 - 1e-16))


def make_rule(
    loss: str, q: int, order="auto", rule: str = "auto", *, qmc_points: int = 256, qmc_reps: int = 8, qmc_seed: int = 0
):
    """Resolve the quadrature settings into a `Rule` (ValueError naming the bad argument).

    ``rule="auto"``: ``order=None`` → the closed form (least squares only); an integer ``order`` →
    Gauss–Hermite of that order; ``order="auto"`` → closed form (lsq), Gauss–Hermite 40
    (logistic), Gauss–Hermite 12 per dimension (softmax, k ≤ 3) or RQMC (softmax, k ≥ 4).
    ``rule="hermite"`` / ``"qmc"`` / ``"closed"`` force the rule (``order`` then only sets the
    Gauss–Hermite order; ``"auto"`` → 40 for q = 1, 12 otherwise)."""
    _check_loss(loss)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if order is not None and order != "auto" and (not isinstance(order, (int, np.integer)) or order < 2):
        raise ValueError(f"order must be an integer ≥ 2, None or 'auto', got {order!r}")
    for name, v, lo in (("qmc_points", qmc_points, 2), ("qmc_reps", qmc_reps, 2)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    if int(qmc_points) & (int(qmc_points) - 1):
        raise ValueError(f"qmc_points must be a power of 2 (a Sobol net), got {qmc_points!r}")
    if not isinstance(qmc_seed, (int, np.integer)) or qmc_seed < 0:
        raise ValueError(f"qmc_seed must be an integer ≥ 0, got {qmc_seed!r}")
    if rule == "auto":
        if order is None or (order == "auto" and loss == "lsq"):
            rule = "closed"
        elif order != "auto":
            rule = "hermite"
        else:
            rule = "hermite" if (loss == "logistic" or q <= 3) else "qmc"
    if rule == "closed":
        if loss != "lsq":
            raise ValueError(f"the closed form (order=None / rule='closed') exists for loss='lsq' only, got {loss!r}")
        return Rule("closed")
    if rule == "hermite":
        n = (40 if q == 1 else 12) if order in ("auto", None) else int(order)
        if n**q > 2_000_000:
            raise ValueError(f"order: Gauss–Hermite with {n}^{q} nodes is too many; use rule='qmc' for many classes")
        return Rule("hermite", order=n)
    return Rule("qmc", points=int(qmc_points), reps=int(qmc_reps), seed=int(qmc_seed))


def _expectation_fn(loss: str, kind: str, q: int, sequential: bool = False):
    """``expect(M (k,q), S (k,q,q), T (k,q), nodes (N,q), weights (N,)) -> (R (k,), A (k,q),
    B (k,q,q), C (k,q,q))``: E over ``z ~ N(M_j, S_j)`` of ℓ, ∇ℓ, ∇²ℓ, ∇ℓ∇ℓᵀ, by the rule
    ``kind`` (the nodes and weights are arguments, so one compilation serves every randomisation).
    Softmax: ``∇ℓ = p − t``, ``∇²ℓ = diag p − ppᵀ`` written out (O(N q²) per class, no
    per-node Hessian); logistic: autodiff; closed: least squares. ``sequential``: one class at a
    time (``lax.map``; memory N q instead of k N q, for many runs × many classes)."""
    import jax
    import jax.numpy as jnp

    if kind == "closed":

        def expect(M, S, T, nodes=None, weights=None):
            e = M - T
            C = e[:, :, None] * e[:, None, :] + S
            return 0.5 * jnp.trace(C, axis1=1, axis2=2), e, jnp.broadcast_to(jnp.eye(q), S.shape), C

        return expect

    def sqrt_psd(s):  # a factor L with L Lᵀ = S
        if q == 1:
            return jnp.sqrt(jnp.maximum(s, 0.0))
        if kind == "hermite" and q <= 3:  # the symmetric root (the rule is not rotation invariant)
            val, vec = jnp.linalg.eigh(0.5 * (s + s.T))
            return (vec * jnp.sqrt(jnp.maximum(val, 0.0))) @ vec.T
        # Cholesky with a relative jitter: S is singular (softmax: X's rows sum to 0, S 1 = 0), and
        # a jitter ε tr(S)/q changes E f by O(ε) (ε = 1e-10 in float64, 1e-5 in float32)
        eps = 1e-10 if s.dtype == jnp.float64 else 1e-5
        jit = eps * jnp.trace(s) / q + jnp.finfo(s.dtype).tiny ** 0.5
        return jnp.linalg.cholesky(0.5 * (s + s.T) + jit * jnp.eye(q, dtype=s.dtype))

    if loss == "softmax":

        def one(m, s, t, nodes, w):
            z = m + nodes @ sqrt_psd(s).T  # z = M + L ξ, (N, q)
            lse = jax.nn.logsumexp(z, axis=1)
            p = jnp.exp(z - lse[:, None])
            g = p - t
            wp = w[:, None] * p
            B = jnp.diag(jnp.sum(wp, axis=0)) - p.T @ wp
            return w @ (lse - z @ t), w @ g, B, g.T @ (w[:, None] * g)

    else:
        f = _loss_fn(loss)
        fg = jax.vmap(jax.value_and_grad(f), in_axes=(0, None))
        fh = jax.vmap(jax.hessian(f), in_axes=(0, None))

        def one(m, s, t, nodes, w):
            z = m + nodes @ sqrt_psd(s).T
            l, g = fg(z, t)
            return w @ l, w @ g, jnp.einsum("n,nab->ab", w, fh(z, t)), jnp.einsum("n,na,nb->ab", w, g, g)

    if sequential:
        return lambda M, S, T, nodes, w: jax.lax.map(lambda a: one(*a, nodes, w), (M, S, T))
    return jax.vmap(one, in_axes=(0, 0, 0, None, None))


def gaussian_expectations(
    loss: str,
    mean,
    cov,
    target,
    *,
    order="auto",
    rule: str = "auto",
    qmc_points: int = 256,
    qmc_reps: int = 8,
    qmc_seed: int = 0,
):
    """``(E ℓ, E ∇ℓ, E ∇²ℓ, E ∇ℓ∇ℓᵀ)`` for ``z ~ N(mean, cov)`` — the ``R_j, A_j, B_j, C_j`` of the ODE.

    Args:
      loss: ``"logistic"``, ``"lsq"`` or ``"softmax"``.
      mean: (q,) ``M``; cov: (q, q) ``S`` (positive semi-definite); target: (q,) the label
        (``[y]``) or the one-hot class (softmax).
      order, rule, qmc_points, qmc_reps, qmc_seed: the quadrature (`make_rule`): Gauss–Hermite points per
        dimension (``order^q`` nodes, exact for polynomials of degree ``2·order − 1``), ``None``
        for the least-squares closed form, or RQMC (``rule="qmc"``).

    Returns: ``(R, A (q,), B (q, q), C (q, q))``; with RQMC the means over the ``reps``
    randomisations, and `gaussian_expectations_stderr` gives their standard errors.
    """
    return _expectations_and_stderr(loss, mean, cov, target, order, rule, qmc_points, qmc_reps, qmc_seed)[0]


def gaussian_expectations_stderr(loss: str, mean, cov, target, **rule_kw):
    """The standard errors of `gaussian_expectations` over the RQMC randomisations (zeros for the
    deterministic rules): ``(sR, sA (q,), sB (q, q), sC (q, q))``."""
    kw = {"order": "auto", "rule": "auto", "qmc_points": 256, "qmc_reps": 8, "qmc_seed": 0, **rule_kw}
    names = ("order", "rule", "qmc_points", "qmc_reps", "qmc_seed")
    return _expectations_and_stderr(loss, mean, cov, target, *(kw[k] for k in names))[1]


def _expectations_and_stderr(loss, mean, cov, target, order, rule, points, reps, seed):
    import jax.numpy as jnp

    m = jnp.atleast_1d(jnp.asarray(mean))
    q = m.shape[0]
    rl = make_rule(loss, q, order, rule, qmc_points=points, qmc_reps=reps, qmc_seed=seed)
    s = jnp.reshape(jnp.asarray(cov, m.dtype), (q, q))
    t = jnp.reshape(jnp.asarray(target, m.dtype), (q,))
    f = _jitted_expectation(loss, rl.kind, q)
    outs = []
    for rep in range(rl.num_sets):
        x, w = rl.nodes(q, rep)
        outs.append(
            [np.asarray(v[0]) for v in f(m[None], s[None], t[None], jnp.asarray(x, m.dtype), jnp.asarray(w, m.dtype))]
        )
    mean_ = tuple(np.mean([o[i] for o in outs], axis=0) for i in range(4))
    if len(outs) == 1:
        return mean_, tuple(np.zeros_like(x) for x in mean_)
    se = tuple(np.std([o[i] for o in outs], axis=0, ddof=1) / np.sqrt(len(outs)) for i in range(4))
    return mean_, se


@functools.cache
def _jitted_expectation(loss: str, kind: str, q: int):
    import jax

    return jax.jit(_expectation_fn(loss, kind, q))


# ---- observables shared by the ODE and SGD (docs/sgd_ode.md §3) ---------------------------------
def _observables(expect, nodes, weights, r, V, mbar, lam, clean, probs, targets):
    """From the per-mode state ``r (d,q)``, ``V (d,q,q)``: risk, M, S, ‖X_c‖², cos(X_c, μ_j) and
    cos(X_c, P_clean μ_j). A zero X has overlap 0 (by convention); no clean mode gives NaN."""
    import jax.numpy as jnp

    d = r.shape[0]
    M = mbar @ r / d
    S = jnp.einsum("jr,rab->jab", lam, V) / d
    R = expect(M, S, targets, nodes, weights)[0]
    norm2 = jnp.einsum("raa->a", V) / d

    def cos(mu):  # (k, d) in the μ̄ scaling
        ip = (mu @ r / d).T  # (q, k)
        den = jnp.sqrt(norm2[:, None] * jnp.sum(mu**2, axis=1)[None, :] / d)
        return jnp.where(norm2[:, None] > 0, ip / jnp.where(den > 0, den, jnp.nan), 0.0)

    return {"risk": probs @ R, "M": M, "S": S, "norm2": norm2, "overlap": cos(mbar), "clean_overlap": cos(mbar * clean)}


def _model_arrays(mixture: AnisotropicMixture, loss: str):
    import jax.numpy as jnp

    d = mixture.dim
    return (
        jnp.asarray(np.sqrt(d) * mixture.means),
        jnp.asarray(mixture.eigenvalues),
        jnp.asarray(mixture.clean.astype(np.float64)),
        jnp.asarray(mixture.probs),
        jnp.asarray(_targets(mixture, loss)),
    )


def _output_dim(mixture: AnisotropicMixture, loss: str) -> int:
    return mixture.num_classes if loss == "softmax" else 1


def _check_common(mixture, loss, lr, order="auto", rule="auto", qmc_points=256, qmc_reps=8, qmc_seed=0) -> Rule:
    """Validate the shared arguments; the resolved quadrature `Rule`."""
    if not isinstance(mixture, AnisotropicMixture):
        raise TypeError(f"mixture must be an AnisotropicMixture, got {type(mixture).__name__}")
    _check_loss(loss)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    q = _output_dim(mixture, loss)
    return make_rule(loss, q, order, rule, qmc_points=qmc_points, qmc_reps=qmc_reps, qmc_seed=qmc_seed)


# ---- results ------------------------------------------------------------------------------------
@result(static=("num_steps", "rule"))
class ODEResult:
    """The ODE on a time grid (``docs/sgd_ode.md`` §3). Shapes: T times, k classes, q outputs, d modes.

    Fields: ``times`` (T,); ``risk`` (T,); ``M`` (T, k, q) class means of z; ``S`` (T, k, q, q)
    class covariances of z; ``norm2`` (T, q) ``‖X_c‖²``; ``overlap`` (T, q, k) ``cos(X_c, μ_j)``;
    ``clean_overlap`` (T, q, k) ``cos(X_c, P_clean μ_j)``; the per-mode state ``r`` (T, d, q)
    ``= √d E X u_ρ`` (d, q) and ``V`` (d, q, q) ``= d E X u_ρ u_ρᵀ Xᵀ`` at the *last* time (only the
    observables are saved on the grid: the state is d q² numbers per time); ``num_steps`` accepted +
    rejected solver steps (summed over the randomisations); ``converged`` (diffrax's result code
    was ``successful`` for every solve; the result protocol, `ufm.results`) and ``messages``;
    ``rule`` the quadrature (`Rule.describe`); ``risk_err``, ``overlap_err``,
    ``clean_overlap_err``, ``norm2_err`` the error estimate of the quadrature — with RQMC the
    standard error over the independent randomisations (each a full ODE solve; the fields are
    their means), zeros for a deterministic rule (None when not computed).
    """

    times: np.ndarray
    risk: np.ndarray
    M: np.ndarray
    S: np.ndarray
    norm2: np.ndarray
    overlap: np.ndarray
    clean_overlap: np.ndarray
    r: np.ndarray
    V: np.ndarray
    num_steps: int
    converged: bool = True
    messages: tuple[str, ...] = ()
    rule: str = ""
    risk_err: np.ndarray | None = None
    overlap_err: np.ndarray | None = None
    clean_overlap_err: np.ndarray | None = None
    norm2_err: np.ndarray | None = None

    def err(self, field: str) -> np.ndarray:
        """The quadrature's error estimate of ``field`` (zeros if none was computed)."""
        e = getattr(self, field + "_err", None)
        return np.zeros_like(np.asarray(getattr(self, field))) if e is None else np.asarray(e)

    def to_dict(self, modes: bool = False) -> dict:
        out = {k: getattr(self, k) for k in ("times", "risk", "M", "S", "norm2", "overlap", "clean_overlap")}
        out.update({k + "_err": self.err(k) for k in ("risk", "overlap", "clean_overlap", "norm2")})
        out.update(rule=self.rule, num_steps=int(self.num_steps), converged=self.converged, messages=self.messages)
        if modes:
            out.update(r=self.r, V=self.V)
        return to_jsonable(out)


@result(static=("steps_per_point",))
class SGDResult:
    """``runs`` independent one-pass SGD runs recorded on a time grid (exact population risk).

    Fields as `ODEResult` with a leading runs axis: ``risk`` (R, T), ``M`` (R, T, k, q), ``S``,
    ``norm2`` (R, T, q), ``overlap`` and ``clean_overlap`` (R, T, q, k); ``modes`` (R, d, q) the
    final ``w_ρ = √d X u_ρ`` (the per-mode split: ``w_ρ²`` estimates ``V_ρ``); ``steps_per_point``.
    ``converged``: a fixed-step simulation always finishes (`ufm.results`); ``messages`` name runs
    whose risk is not finite.
    """

    times: np.ndarray
    risk: np.ndarray
    M: np.ndarray
    S: np.ndarray
    norm2: np.ndarray
    overlap: np.ndarray
    clean_overlap: np.ndarray
    modes: np.ndarray
    steps_per_point: int
    converged: bool = True
    messages: tuple[str, ...] = ()

    def mean(self, field: str) -> np.ndarray:
        return np.mean(getattr(self, field), axis=0)

    def stderr(self, field: str) -> np.ndarray:
        """Standard error of the mean over runs (ddof = 1; 0 for a single run)."""
        x = getattr(self, field)
        return np.std(x, axis=0, ddof=1) / np.sqrt(x.shape[0]) if x.shape[0] > 1 else np.zeros(x.shape[1:])

    def estimate(self, field: str, reduce: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The runs' estimate of what the ODE computes for ``field``, and its jackknife standard error.

        The ODE's observables are functions of the expected state (``docs/sgd_ode.md`` §3), so the
        runs are compared through the same function of their means: ``risk``, ``norm2``, ``M``,
        ``S`` the run mean; ``overlap`` and ``clean_overlap`` the ratio of run means
        ``E⟨X_c, v_j⟩ / (√(E‖X_c‖²) ‖v_j‖)`` (``v_j = μ_j`` or ``P_clean μ_j``), not the mean of
        the per-run cosines, which exceeds it by an O(1/d) Jensen bias (``E 1/‖X_c‖ >
        1/√(E‖X_c‖²)``) that at K = 50 is larger than the standard error of 16 runs (§9).
        ``reduce`` (e.g. the mean of the diagonal) is applied to the estimate before the
        jackknife; for a mean the jackknife error equals `stderr`. One run: error 0.
        """
        x = getattr(self, field)
        f = reduce if reduce is not None else (lambda v: v)
        if field in ("overlap", "clean_overlap"):  # per run: ⟨X_c, v_j⟩/‖v_j‖ and ‖X_c‖²
            parts = (x * np.sqrt(self.norm2)[..., None], self.norm2)

            def stat(ip, n2):
                n2 = n2[..., None]
                return f(np.where(n2 > 0, ip / np.sqrt(np.where(n2 > 0, n2, 1.0)), 0.0))
        else:
            parts, stat = (x,), f
        runs = x.shape[0]
        sums = [p.sum(0) for p in parts]
        value = stat(*(t / runs for t in sums))
        if runs == 1:
            return value, np.zeros_like(value)
        loo = np.stack(
            [stat(*((t - p[i]) / (runs - 1) for t, p in zip(sums, parts, strict=True))) for i in range(runs)]
        )
        return value, np.sqrt((runs - 1) / runs * np.sum((loo - loo.mean(0)) ** 2, axis=0))

    def to_dict(self) -> dict:
        out = {
            "times": self.times,
            "runs": int(self.risk.shape[0]),
            "steps_per_point": int(self.steps_per_point),
        }
        for k in ("risk", "norm2", "overlap", "clean_overlap"):  # the overlaps: ratios of run means
            out[k], out[k + "_stderr"] = self.estimate(k)
        out.update(converged=self.converged, messages=self.messages)
        return to_jsonable(out)


# ---- the ODE -------------------------------------------------------------------------------------
@functools.cache
def _ode_solver(loss: str, kind: str, q: int, rtol: float, atol: float, max_steps: int):
    import diffrax
    import jax
    import jax.numpy as jnp

    expect = _expectation_fn(loss, kind, q)

    def field(t, y, args):  # docs/sgd_ode.md §3, eq. (3.3)
        r, V = y
        mbar, _, _, probs, targets, lr, nodes, weights, lam_u, member, mu2 = args
        d = r.shape[0]
        # classes with the same variance profile share S_j and enter P_ρ and the noise together:
        # U distinct profiles cost U d q² instead of k d q² (docs/sgd_ode.md §3.1)
        S = jnp.einsum("uj,uab->jab", member, jnp.einsum("ur,rab->uab", lam_u, V) / d)
        _, A, B, C = expect(mbar @ r / d, S, targets, nodes, weights)
        Bu = jnp.einsum("uj,j,jab->uab", member, probs, B)
        Cu = jnp.einsum("uj,j,jab->uab", member, probs, C)
        D = jnp.einsum("j,jr,ja->ra", probs, mbar, A)
        rD = r[:, :, None] * D[:, None, :]
        if lam_u.shape[0] == 1:  # P_ρ = λ_ρ P̄: one (q × q)·(q × d q) product
            PV = lam_u[0][:, None, None] * jnp.einsum("ab,rbc->rac", Bu[0], V)
            Pr = lam_u[0][:, None] * (r @ Bu[0].T)
        else:
            P = jnp.einsum("ur,uab->rab", lam_u, Bu)
            PV = jnp.einsum("rab,rbc->rac", P, V)
            Pr = jnp.einsum("rab,rb->ra", P, r)
        dr = -lr * (D + Pr)
        noise = jnp.einsum("ur,uab->rab", lam_u, Cu)
        # E a_ρ² = λ_ρ + μ_ρ²: the mean's part of the noise, Σ_j π_j μ̄_jρ² C_j / d (mu2 = π_j μ̄_jρ²/d,
        # or zeros for the leading-order ODE; docs/sgd_ode.md §5)
        noise = noise + (mu2.T @ C.reshape(C.shape[0], -1)).reshape(noise.shape)
        dV = -lr * (rD + jnp.swapaxes(rD, 1, 2) + PV + jnp.swapaxes(PV, 1, 2)) + lr**2 * noise
        return dr, dV

    @jax.jit
    def solve(y0, times, args):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            t0=0.0,
            t1=times[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(
                subs=[
                    diffrax.SubSaveAt(ts=times, fn=lambda t, y, a: _observables(expect, a[6], a[7], *y, *a[:5])),
                    diffrax.SubSaveAt(t1=True),
                ]
            ),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
        )
        obs, (r, V) = sol.ys
        return r[-1], V[-1], obs, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

    return solve


def solve_sgd_ode(
    mixture: AnisotropicMixture,
    loss: str,
    lr: float,
    times,
    *,
    order="auto",
    rule: str = "auto",
    qmc_points: int = 256,
    qmc_reps: int = 8,
    qmc_seed: int = 0,
    init_scale: float = 0.0,
    mean_noise: bool = True,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    max_steps: int = 200_000,
    throw: bool = THROW,
) -> ODEResult:
    """Integrate the high-dimensional SGD ODE (``docs/sgd_ode.md`` §3) with diffrax.

    Args:
      mixture: the data model.
      loss: ``"logistic"`` / ``"lsq"`` (one output) or ``"softmax"`` (one output per class).
      lr: γ (SGD steps γ/d, one unit of time = d steps).
      times: increasing grid ``t ≥ 0`` on which to save (e.g. ``SGDResult.times``).
      order, rule: the quadrature of the Gaussian expectations (`make_rule`): ``"auto"`` is the
        closed form for lsq, Gauss–Hermite 40 (logistic) or 12 per dimension (softmax, k ≤ 3),
        and randomised QMC for softmax with k ≥ 4 (cost linear in the number of points,
        polynomial in k; ``docs/sgd_ode.md`` §3.1); an integer ``order`` asks for Gauss–Hermite.
      qmc_points, qmc_reps, qmc_seed: RQMC: ``qmc_reps`` independent scrambled Sobol sets of
        ``qmc_points`` (a power of 2) points; the ODE is solved once per set, the result is the
        mean and ``*_err`` the standard error over the sets (the quadrature's error estimate).
      init_scale: σ, ``X_0`` with i.i.d. ``N(0, σ²/d)`` entries (σ = 0: ``X_0 = 0``), i.e.
        ``r_ρ(0) = 0``, ``V_ρ(0) = σ² I``.
      mean_noise: the noise term with the exact second moment ``E a_ρ² = λ_ρ + μ_ρ²`` (default),
        or the leading order ``λ_ρ`` only (``False``). The means' part is O(1/d) but grows with
        ``‖μ_j‖²``; it removes most of SGD's finite-d excess of ``‖X_c‖²`` (``docs/sgd_ode.md`` §5, §9).
      rtol, atol: the PID step-size controller's tolerances (Tsit5).
      max_steps: solver step cap; hitting it (or any other failure) is an error (RuntimeError)
        with ``throw=True`` (the package default, `ufm.results.THROW`); with ``throw=False`` the
        partial result comes back with ``converged=False`` and the reason in ``messages``.
    """
    import jax.numpy as jnp

    rl = _check_common(mixture, loss, lr, order, rule, qmc_points, qmc_reps, qmc_seed)
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 1 or ts[0] < 0 or ts[-1] <= 0 or np.any(np.diff(ts) <= 0):
        raise ValueError(f"times must be an increasing 1-d grid of t ≥ 0 ending at t > 0, got {ts}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    if not (np.isfinite(init_scale) and init_scale >= 0):
        raise ValueError(f"init_scale must be ≥ 0, got {init_scale!r}")
    q, d = _output_dim(mixture, loss), mixture.dim
    solve = _ode_solver(loss, rl.kind, q, float(rtol), float(atol), int(max_steps))
    model = _model_arrays(mixture, loss)
    lam_u, which = np.unique(mixture.eigenvalues, axis=0, return_inverse=True)
    member = jnp.asarray((np.arange(lam_u.shape[0])[:, None] == np.ravel(which)[None, :]).astype(np.float64))
    lam_u = jnp.asarray(lam_u)
    y0 = (jnp.zeros((d, q)), jnp.broadcast_to(init_scale**2 * jnp.eye(q), (d, q, q)))
    mbar, _, _, probs, _ = model
    mu2 = probs[:, None] * mbar**2 / d * float(bool(mean_noise))  # π_j μ̄_jρ²/d, the means' noise
    runs = []
    for rep in range(rl.num_sets):
        x, w = rl.nodes(q, rep)
        args = (*model, jnp.asarray(float(lr)), jnp.asarray(x), jnp.asarray(w), lam_u, member, mu2)
        r, V, obs, ok, steps = solve(y0, jnp.asarray(ts), args)
        runs.append(({k: np.asarray(v) for k, v in obs.items()}, np.asarray(r), np.asarray(V), bool(ok), int(steps)))
    ok = all(x[3] for x in runs)
    msg = f"solve_sgd_ode: diffrax did not finish (max_steps={max_steps}, rtol={rtol}); the result is incomplete"
    if not ok and throw:
        raise RuntimeError(msg + "; pass throw=False to get the partial result with converged=False")
    o = {k: np.mean([x[0][k] for x in runs], axis=0) for k in runs[0][0]}
    n = len(runs)
    err = {
        k: (np.std([x[0][k] for x in runs], axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(o[k]))
        for k in ("risk", "overlap", "clean_overlap", "norm2")
    }
    return ODEResult(
        ts,
        o["risk"],
        o["M"],
        o["S"],
        o["norm2"],
        o["overlap"],
        o["clean_overlap"],
        np.mean([x[1] for x in runs], axis=0),
        np.mean([x[2] for x in runs], axis=0),
        sum(x[4] for x in runs),
        ok,
        () if ok else (msg,),
        rl.describe(),
        err["risk"],
        err["overlap"],
        err["clean_overlap"],
        err["norm2"],
    )


# ---- one-pass SGD --------------------------------------------------------------------------------
def time_grid(time: float, num_points: int, dim: int) -> tuple[np.ndarray, int]:
    """``(times, steps_per_point)``: ``num_points`` equally spaced times from 0 to ≈ ``time``, each a
    whole number ``steps_per_point`` of SGD steps apart (t = steps/d)."""
    if not (np.isfinite(time) and time > 0):
        raise ValueError(f"time must be a finite number > 0, got {time!r}")
    if not isinstance(num_points, (int, np.integer)) or num_points < 2:
        raise ValueError(f"num_points must be an integer ≥ 2, got {num_points!r}")
    every = max(1, int(round(time * dim / (num_points - 1))))
    return np.arange(num_points) * every / dim, every


@functools.cache
def _sgd_runner(loss: str, kind: str, q: int, every: int, num_points: int, rotated: bool):
    import jax
    import jax.numpy as jnp

    expect = _expectation_fn(loss, kind, q, sequential=q > 8)
    grad = jax.grad(_loss_fn(loss))

    def run(key, x0, data, model, basis, lr, nodes, weights):
        sqrt_eig, means, logp = data
        d = means.shape[1]

        def step(i, x):  # x_{n+1} = x_n − (γ/d) ∇_z ℓ a_n (docs/sgd_ode.md §2); x is (d, q), ambient
            coords, j = draw(jax.random.fold_in(key, i), sqrt_eig, means, logp)
            a = basis @ coords if rotated else coords
            return x - (lr / d) * a[:, None] * grad(a @ x, model[4][j])[None, :]

        def record(x):
            w = jnp.sqrt(d) * (basis.T @ x if rotated else x)
            return _observables(expect, nodes, weights, w, w[:, :, None] * w[:, None, :], *model), w

        def segment(x, s):
            x = jax.lax.fori_loop(s * every, (s + 1) * every, step, x)
            return x, record(x)[0]

        x, obs = jax.lax.scan(segment, x0, jnp.arange(num_points - 1))
        first = record(x0)[0]
        obs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, obs)
        return obs, record(x)[1]

    return jax.jit(jax.vmap(run, in_axes=(0, 0, None, None, None, None, None, None)))


def simulate_sgd(
    mixture: AnisotropicMixture,
    loss: str,
    lr: float,
    *,
    time: float,
    num_points: int = 41,
    runs: int = 8,
    seed: int = 0,
    order="auto",
    rule: str = "auto",
    qmc_points: int = 256,
    qmc_reps: int = 8,
    qmc_seed: int = 0,
    init_scale: float = 0.0,
) -> SGDResult:
    """``runs`` independent one-pass SGD runs (``docs/sgd_ode.md`` §2), vmapped, compiled with ``lax.scan``.

    Each run draws a fresh sample every step (``jax.random.fold_in(run_key, step)``), steps
    ``γ/d``, and records at ``time_grid(time, num_points, d)`` the exact population risk and
    overlaps of its iterate (from ``(M_j, S_j)`` of X; the same Gaussian expectations as the
    ODE, ``order``, ``rule`` and ``qmc_*`` as in `solve_sgd_ode`; RQMC records with the
    ``qmc_reps`` point sets pooled). With a rotated basis the run is done in the ambient
    coordinates (O(d²) per step) and projected on the basis to record.

    This simulator is the one optimiser loop outside `ufm.dynamics.record` (issue 24): it steps a
    vmapped batch of ``runs`` plain-SGD iterates in one ``lax.scan`` and records exact *population*
    observables of every run at once, which `record` (one run, probes in Python between segments)
    would do ``runs`` times over with a Python round trip per checkpoint.
    """
    import jax
    import jax.numpy as jnp

    rl = _check_common(mixture, loss, lr, order, rule, qmc_points, qmc_reps, qmc_seed)
    if not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"runs must be an integer ≥ 1, got {runs!r}")
    if not (np.isfinite(init_scale) and init_scale >= 0):
        raise ValueError(f"init_scale must be ≥ 0, got {init_scale!r}")
    times, every = time_grid(time, num_points, mixture.dim)
    q, d = _output_dim(mixture, loss), mixture.dim
    rotated = mixture.basis is not None
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * runs)
    x0 = init_scale / np.sqrt(d) * jax.vmap(lambda k: jax.random.normal(k, (d, q)))(keys[runs:])
    run = _sgd_runner(loss, rl.kind, q, every, int(num_points), rotated)
    basis = jnp.asarray(mixture.basis) if rotated else jnp.zeros(())
    nodes, weights = (jnp.asarray(a) for a in rl.nodes(q, None))
    model = _model_arrays(mixture, loss)
    obs, w = run(keys[:runs], x0, mixture.arrays(), model, basis, jnp.asarray(float(lr)), nodes, weights)
    o = {k: np.asarray(v) for k, v in obs.items()}
    return SGDResult(
        times, o["risk"], o["M"], o["S"], o["norm2"], o["overlap"], o["clean_overlap"], np.asarray(w), every
    )


# ---- comparison ----------------------------------------------------------------------------------
@result(static=("quantity",))
class TrajectoryGap:
    """ODE vs the mean of the SGD runs for one scalar quantity on the shared grid.

    ``max_abs_gap`` = max_t |ODE − mean SGD|, at ``time``, where the standard error is
    ``stderr_at``; ``max_stderr`` the largest standard error on the grid; ``max_ratio`` the
    largest |gap| / stderr (over times with stderr > 0); final values of both. The standard
    error is the SGD runs' combined with the ODE's quadrature error estimate,
    ``√(s.e.² + e²)`` (e = 0 for Gauss–Hermite and the closed form). ``converged``:
    the comparison could be made (the gap is finite; `ufm.results`).
    """

    quantity: str
    max_abs_gap: float
    time: float
    stderr_at: float
    max_stderr: float
    max_ratio: float
    final_ode: float
    final_sgd: float
    final_stderr: float
    converged: bool | None = None  # None: the gap is finite
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            ok = bool(np.isfinite(self.max_abs_gap))
            object.__setattr__(self, "converged", ok)
            if not ok and not self.messages:
                object.__setattr__(self, "messages", (f"{self.quantity}: the ODE or SGD curve is not finite",))


def ode_sgd_gap(ode: ODEResult, sgd: SGDResult, quantity: str = "risk", index: tuple = ()) -> TrajectoryGap:
    """`TrajectoryGap` of ``quantity`` (an `ODEResult` / `SGDResult` field; ``index`` picks a
    scalar of a vector quantity, e.g. ``quantity="overlap", index=(0, 0)`` for cos(x, μ_1))."""
    if ode.times.shape != sgd.times.shape or not np.allclose(ode.times, sgd.times):
        raise ValueError("ode and sgd must be on the same time grid (solve the ODE on sgd.times)")
    o = np.asarray(getattr(ode, quantity))[(Ellipsis, *index)]
    m, se = (v[(Ellipsis, *index)] for v in sgd.estimate(quantity))
    if o.shape != ode.times.shape:
        raise ValueError(f"{quantity}{list(index)} is not a scalar per time (shape {o.shape}); give index")
    gap = np.abs(o - m)
    i = int(np.nanargmax(gap))
    se = np.sqrt(se**2 + ode.err(quantity)[(Ellipsis, *index)] ** 2)  # with the ODE's quadrature error
    pos = se > 1e-12 * np.maximum(1.0, np.abs(m))  # a spread at rounding level (e.g. X_0 = 0) is no spread
    ratio = float(np.nanmax(gap[pos] / se[pos])) if np.any(pos) else float("nan")
    return TrajectoryGap(
        quantity + "".join(f"[{j}]" for j in index),
        float(gap[i]),
        float(ode.times[i]),
        float(se[i]),
        float(np.max(se)),
        ratio,
        float(o[-1]),
        float(m[-1]),
        float(se[-1]),
    )


# ---- the phase diagram ---------------------------------------------------------------------------
@result
class PhaseDiagram:
    """ODE risk (and clean alignment) at ``times`` over a grid of power-law exponents × mean decays.

    ``risk`` (A, B, T), ``clean_overlap`` (A, B, T) ``cos(x, P_clean μ_1)``; ``critical`` (B,) the
    predicted boundary ``a_c = 1 + 2b`` (``docs/sgd_ode.md`` §6: risk → 0 iff a ≥ a_c).
    """

    exponents: np.ndarray
    decays: np.ndarray
    times: np.ndarray
    risk: np.ndarray
    clean_overlap: np.ndarray
    critical: np.ndarray
    converged: bool = True  # every ODE solve of the grid finished (`ufm.results`)
    messages: tuple[str, ...] = ()


def phase_diagram(
    exponents,
    decays,
    times,
    *,
    dim: int = 1000,
    loss: str = "logistic",
    lr: float = 1.0,
    zero_fraction: float = 0.1,
    mean_scale: float = 1.0,
    **ode_kw,
) -> PhaseDiagram:
    """Solve the ODE on ``anisotropic_mixture(dim, "power-law", exponents=(a,), mean_decay=b)`` for
    every ``a`` in ``exponents`` and ``b`` in ``decays`` (one compilation: the shapes agree);
    ``zero_fraction`` sets the clean modes (the lowest-variance ``f d``)."""
    ex, de = np.atleast_1d(np.asarray(exponents, float)), np.atleast_1d(np.asarray(decays, float))
    risk = np.empty((ex.size, de.size, np.size(times)))
    clean = np.empty_like(risk)
    for i, a in enumerate(ex):
        for j, b in enumerate(de):
            mix = anisotropic_mixture(
                dim, "power-law", exponents=(a,), mean_decay=b, zero_fraction=zero_fraction, mean_scale=mean_scale
            )
            res = solve_sgd_ode(mix, loss, lr, times, **ode_kw)
            risk[i, j], clean[i, j] = res.risk, res.clean_overlap[:, 0, 0]
    return PhaseDiagram(ex, de, np.asarray(times, float), risk, clean, 1.0 + 2.0 * de)
