"""Catapults in GD and SGD: the projected loss, λ_max(K) and AGOP alignment [ZLRB].

Zhu, Liu, Radhakrishnan, Belkin, "Catapults in SGD: spikes in the training loss and their
impact on generalization through feature learning", ICML 2024 (arXiv 2306.04815);
``docs/dynamics.md`` §D4; the maths and conventions are in ``docs/catapults.md``.

* `NTKMLP`: NTK-parameterised MLPs (every layer's pre-activation scaled by 1/√fan_in,
  weights N(0, 1), no biases), any depth / width, ReLU / tanh / linear, c ≥ 1 outputs.
* `make_target`: synthetic targets with known AGOP (x₁x₂, a rank-r polynomial of a random
  projection, a single-index model); `agop`, `agop_alignment`.
* `projected_loss`: ``P_s L`` and ``P_s^⊥ L`` on the top-s eigenvectors of the current kernel.
* `detect_catapults`: the documented rule of ``docs/catapults.md`` §4.
* `run_gd`, `run_schedule`, `run_sgd`: the three experiments, each a `CatapultReport`
  (``to_dict()`` is the JSON of ``ufm dynamics catapult``). Training is optax SGD in jitted
  ``lax.scan`` segments (one compiled program per run shape; the learning rate is traced),
  with a probe (kernel spectrum, projected loss, AGOP alignment, test error) every
  ``probe_every`` steps and the full training loss at every step.

Loss convention (§1): ``L = (1/2n)‖f(X) − y‖²`` (``normalization="half"``) or ``(1/n)‖·‖²``
(``"mean"``); an SGD step uses the same normalisation over its batch of b samples.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._tangent_kernel import _check_normalization, _positive_int, critical_learning_rate, tangent_kernel

__all__ = [
    "NTKMLP",
    "Target",
    "make_target",
    "TARGETS",
    "agop",
    "agop_alignment",
    "projected_loss",
    "Catapult",
    "detect_catapults",
    "CatapultConfig",
    "CatapultRun",
    "CatapultReport",
    "run_gd",
    "run_schedule",
    "run_sgd",
    "add_cli",
]

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda z: z}


# ---- the model ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NTKMLP:
    """``f(x) = W_L σ(… σ(W_1 x/√d) …/√m_1)/√m_{L−1}`` — NTK parameterisation (§2).

    Fields: ``input_dim`` d; ``width`` one int or one per hidden layer; ``depth`` L weight
    layers (1 = the linear model ``W x/√d``); ``output_dim`` c (c = 1 returns ``(n,)``);
    ``activation`` relu / tanh / linear. Params: a tuple of ``W_l`` (fan_out × fan_in), all
    N(0, 1). Hashable, so it is the ``f(params, X)`` of the tangent-kernel functions.
    """

    input_dim: int
    width: int | tuple[int, ...] = 1024
    depth: int = 2
    output_dim: int = 1
    activation: str = "relu"

    def __post_init__(self):
        _positive_int("input_dim", self.input_dim)
        _positive_int("depth", self.depth)
        _positive_int("output_dim", self.output_dim)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        widths = (self.width,) * (self.depth - 1) if isinstance(self.width, (int, np.integer)) else tuple(self.width)
        if len(widths) != self.depth - 1:
            raise ValueError(
                f"width must be one int or {self.depth - 1} ints (one per hidden layer), got {self.width!r}"
            )
        for w in widths:
            _positive_int("width", w)
        object.__setattr__(self, "width", widths if not isinstance(self.width, (int, np.integer)) else int(self.width))

    @property
    def dims(self) -> tuple[int, ...]:
        """``(d, m_1, …, m_{L−1}, c)``."""
        widths = (self.width,) * (self.depth - 1) if isinstance(self.width, int) else self.width
        return (self.input_dim, *widths, self.output_dim)

    @property
    def num_params(self) -> int:
        d = self.dims
        return sum(a * b for a, b in zip(d[:-1], d[1:], strict=True))

    def init(self, key, dtype=None) -> tuple[jax.Array, ...]:
        keys = jax.random.split(key, self.depth)
        d = self.dims
        return tuple(
            jax.random.normal(k, (d[i + 1], d[i]), dtype or jnp.result_type(float)) for i, k in enumerate(keys)
        )

    def __call__(self, params, X) -> jax.Array:
        return self._forward(params, X)[0]

    def _forward(self, params, X, shifts=None):
        """Output and the inputs ``h_{l−1}`` of every layer; ``shifts`` are added to the
        pre-activations ``z_l = h_{l−1} W_lᵀ/√fan_in`` (their cotangents are ``∂f/∂z_l``)."""
        sigma = ACTIVATIONS[self.activation]
        h, inputs = X, []
        for l, W in enumerate(params):
            inputs.append(h)
            h = h @ W.T / math.sqrt(W.shape[1])
            if shifts is not None:
                h = h + shifts[l]
            if l < len(params) - 1:
                h = sigma(h)
        return (h[:, 0] if self.output_dim == 1 else h), inputs

    def tangent_kernel(self, params, X) -> jax.Array:
        """``K = J Jᵀ`` (nc × nc, row-major) from the layer structure, without forming J.

        For ``z_l = h_{l−1} W_lᵀ/√fan_in`` the gradient of output o of sample i with respect to
        ``W_l`` is ``δ_l,io h_l−1,iᵀ / √fan_in`` with ``δ_l,io = ∂f_o(x_i)/∂z_l(x_i)``, so
        ``K_(io),(jo') = Σ_l ⟨δ_l,io, δ_l,jo'⟩ ⟨h_l−1,i, h_l−1,j⟩ / fan_in_l`` — O(n²c² Σ m_l)
        instead of the O(n²c²P) of ``J Jᵀ`` (``docs/catapults.md`` §2). The δ's are c VJPs of
        the batch output with respect to shifts of the pre-activations.
        """
        n, c = X.shape[0], self.output_dim
        shifts = [jnp.zeros((n, W.shape[0]), W.dtype) for W in params]
        inputs = self._forward(params, X)[1]
        f = lambda s: self._forward(params, X, s)[0].reshape(n, c)  # noqa: E731
        _, pull = jax.vjp(f, shifts)
        deltas = jax.vmap(lambda e: pull(jnp.broadcast_to(e, (n, c)))[0])(
            jnp.eye(c, dtype=X.dtype)
        )  # per layer (c, n, m)
        K = 0.0
        for D, H, W in zip(deltas, inputs, params, strict=True):
            D = jnp.swapaxes(D, 0, 1).reshape(n * c, -1)  # row i·c + o
            G = jnp.repeat(jnp.repeat(H @ H.T, c, axis=0), c, axis=1)
            K = K + (D @ D.T) * G / W.shape[1]
        return K


# ---- targets and AGOP ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """A target ``f*: (n, d) -> (n,)`` with its ``name`` and the directions it depends on.

    ``basis`` (d × r, orthonormal columns) spans the support of its AGOP ``G*``.
    """

    name: str
    fn: Callable
    basis: np.ndarray

    def __call__(self, X):
        return self.fn(X)


#: target name -> short description (``make_target``).
TARGETS = {
    "product": "f*(x) = x_1 x_2 (AGOP E = diag(1, 1, 0, ...))",
    "polynomial": "f*(x) = sum_j He_2(u_j.x)/sqrt(2r), U a random d x r orthonormal projection (AGOP -> (2/r) U U^T)",
    "single-index": "f*(x) = tanh(beta.x), |beta| = 1 random (AGOP E = E[sech^4] beta beta^T)",
}


def make_target(name: str, dim: int, *, rank: int = 2, key=None) -> Target:
    """A synthetic target with a known AGOP (``docs/catapults.md`` §3).

    * ``"product"``: ``x₁x₂``; ∇f* = (x₂, x₁, 0, …), so ``G* = (1/n) Σ [[x₂², x₁x₂], [x₁x₂, x₁²]]``
      on span(e₁, e₂) (→ diag(1, 1) for x ~ N(0, I)).
    * ``"polynomial"``: ``Σ_{j≤r} He₂(u_jᵀx)/√(2r)`` with ``U = [u_1 … u_r]`` a random orthonormal
      d × r projection (QR of a Gaussian matrix from ``key``); ``∇f* = U (2z/√(2r))`` with
      ``z = Uᵀx``, so ``G* = (2/r) U ((1/n) Σ z_i z_iᵀ) Uᵀ`` (→ (2/r) U Uᵀ); unit variance.
    * ``"single-index"``: ``tanh(βᵀx)``, β a random unit vector; ``G* = (1/n) Σ sech⁴(βᵀx_i) ββᵀ``.
    """
    dim = _positive_int("dim", dim)
    rank = _positive_int("rank", rank)
    key = jax.random.PRNGKey(0) if key is None else key
    if name == "product":
        if dim < 2:
            raise ValueError(f"the product target x_1 x_2 needs dim >= 2, got {dim}")
        return Target(name, lambda X: X[:, 0] * X[:, 1], np.eye(dim)[:, :2])
    if name == "polynomial":
        if rank > dim:
            raise ValueError(f"rank must be <= dim={dim}, got {rank}")
        U = np.linalg.qr(np.asarray(jax.random.normal(key, (dim, rank))))[0]
        Uj = jnp.asarray(U)
        return Target(name, lambda X: jnp.sum((X @ Uj) ** 2 - 1.0, axis=1) / math.sqrt(2 * rank), U)
    if name == "single-index":
        beta = np.asarray(jax.random.normal(key, (dim,)))
        beta = beta / np.linalg.norm(beta)
        bj = jnp.asarray(beta)
        return Target(name, lambda X: jnp.tanh(X @ bj), beta[:, None])
    raise ValueError(f"target must be one of {sorted(TARGETS)}, got {name!r}")


def agop(f: Callable, params, X) -> jax.Array:
    """Average gradient outer product ``G = (1/n) Σ_i J_x(x_i)ᵀ J_x(x_i)`` (d × d).

    ``J_x(x)`` is the c × d input Jacobian of ``x ↦ f(params, x[None])`` (vmapped
    ``jax.jacrev``); for scalar f it is ``∇_x f(x)ᵀ``, so ``G = (1/n) Σ ∇f ∇fᵀ``. For a
    target pass ``lambda p, X: target(X)`` with ``params=None``.
    """

    def one(x):
        return jnp.reshape(jax.jacrev(lambda z: f(params, z[None]).reshape(-1))(x), (-1, x.shape[0]))

    Jx = jax.vmap(one)(jnp.asarray(X))
    return jnp.einsum("nod,noe->de", Jx, Jx) / Jx.shape[0]


def agop_alignment(G, G_star) -> jax.Array:
    """``ρ(G, G*) = ⟨G, G*⟩_F / (‖G‖_F ‖G*‖_F)`` ∈ [0, 1] for PSD G, G* (``docs/dynamics.md`` §D4)."""
    return jnp.sum(G * G_star) / (jnp.linalg.norm(G) * jnp.linalg.norm(G_star))


def projected_loss(residual, eigenvectors, num_samples: int, normalization: str = "half"):
    """``(L, P_s L, P_s^⊥ L)`` of a residual ``r = vec(f(X) − y)`` on the kernel's top-s eigenvectors.

    ``L = (c/n)‖r‖²``, ``P_s L = (c/n)‖U_sᵀ r‖²``, ``P_s^⊥ L = L − P_s L`` with ``U_s`` the
    (nc × s) orthonormal top eigenvectors of ``K = J Jᵀ`` and c = ½ (``"half"``) or 1
    (``"mean"``) (``docs/catapults.md`` §1).
    """
    c = _check_normalization(normalization)
    r = jnp.reshape(residual, -1)
    U = jnp.asarray(eigenvectors)
    total = c / num_samples * r @ r
    top = c / num_samples * jnp.sum((U.T @ r) ** 2)
    return total, top, total - top


# ---- catapult detection --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Catapult:
    """One detected catapult: steps ``start ≤ peak ≤ end``, the peak loss and where it lives."""

    start: int
    peak: int
    end: int
    peak_loss: float
    start_loss: float
    peak_share_top: float
    lambda_max_before: float
    lambda_max_after: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _at_or_before(steps, t):
    return int(max(np.searchsorted(steps, t, side="right") - 1, 0))


def detect_catapults(
    loss, lambda_max, *, steps=None, top_share=None, ratio: float = 2.0, window: int = 20, min_drop: float = 0.0
) -> tuple[Catapult, ...]:
    """Catapults of a loss curve by the rule of ``docs/catapults.md`` §4.

    With ``L_t`` the loss at step t and ``m_t = min_{s ∈ [t−w, t]} L_s``: a spike begins at the
    first t with ``L_t > r · m_t``; its ``start`` is the argmin of that window, its ``end``
    the first later step with ``L < m_t`` (return below the pre-spike level; a spike that never
    returns is not a catapult: a divergence), its ``peak`` the argmax of L on [start, end]. It
    is a catapult when λ_max(K) dropped: ``λ(end) < (1 − min_drop) · λ(start)``, with λ read at
    the last probe at or before ``start`` and the first at or after ``end``. The search then
    resumes after ``end``.

    Args:
      loss: (T,) loss at every step (index = step).
      lambda_max: λ_max(K) at the probe ``steps`` (default: every step).
      steps: (M,) increasing probe steps for ``lambda_max`` / ``top_share``.
      top_share: (M,) ``P_s L / L`` at the probes (the peak's share is read at the nearest probe).
      ratio, window, min_drop: r, w and the required relative λ_max drop.
    """
    L = np.asarray(loss, dtype=np.float64)
    lam = np.asarray(lambda_max, dtype=np.float64)
    steps = np.arange(lam.size) if steps is None else np.asarray(steps)
    if steps.shape != lam.shape:
        raise ValueError(f"steps must match lambda_max's shape {lam.shape}, got {steps.shape}")
    if not ratio > 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    window = _positive_int("window", window)
    share = None if top_share is None else np.asarray(top_share, dtype=np.float64)
    out, t = [], 1
    while t < L.size:
        lo = max(0, t - window)
        seg = L[lo : t + 1]
        m = np.nanmin(seg) if np.any(np.isfinite(seg)) else np.nan
        if not (np.isfinite(L[t]) and L[t] > ratio * m):
            t += 1
            continue
        start = lo + int(np.nanargmin(seg))
        back = np.nonzero(L[t + 1 :] < m)[0]
        if back.size == 0:
            break
        end = t + 1 + int(back[0])
        peak = start + int(np.nanargmax(L[start : end + 1]))
        i0 = _at_or_before(steps, start)
        i1 = min(int(np.searchsorted(steps, end, side="left")), steps.size - 1)
        if lam[i1] < (1 - min_drop) * lam[i0]:
            ip = int(np.argmin(np.abs(steps - peak)))
            out.append(
                Catapult(
                    start,
                    peak,
                    end,
                    float(L[peak]),
                    float(L[start]),
                    float("nan") if share is None else float(share[ip]),
                    float(lam[i0]),
                    float(lam[i1]),
                )
            )
        t = end + 1
    return tuple(out)


# ---- configuration, training segments ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CatapultConfig:
    """Settings of the catapult experiments (the CLI flags; ``docs/catapults.md`` §5).

    Data: ``samples`` n training and ``test_samples`` inputs x ~ N(0, I_dim), ``y = f*(x)``
    for ``target`` (``rank`` for ``"polynomial"``). Model: `NTKMLP` (``width``, ``depth``,
    ``activation``). Training: ``steps`` (per run; for the schedule, per segment),
    ``lr_multipliers`` c (η = c · η_crit at initialisation; for *schedule*, c · η_crit of
    the current weights at each increase), ``increases`` (schedule), ``batch_sizes`` and
    ``seeds`` (sgd; seed j uses ``seed + j`` for data, init and batches), ``probe_every``.
    Measurement: ``top`` s, ``normalization``, detection ``spike_ratio`` r and
    ``spike_window`` w.
    """

    samples: int = 128
    test_samples: int = 1000
    dim: int = 10
    width: int = 1024
    depth: int = 2
    activation: str = "relu"
    target: str = "product"
    rank: int = 2
    steps: int = 400
    seed: int = 0
    lr_multipliers: tuple[float, ...] = (0.5, 1.5, 3.0)
    increases: int = 3
    batch_sizes: tuple[int, ...] = (8, 32, 128)
    seeds: int = 3
    probe_every: int = 1
    top: int = 5
    normalization: str = "half"
    spike_ratio: float = 2.0
    spike_window: int = 20

    def __post_init__(self):
        for name in (
            "samples",
            "test_samples",
            "dim",
            "depth",
            "rank",
            "steps",
            "seeds",
            "probe_every",
            "top",
            "spike_window",
        ):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.increases, int) or self.increases < 0:
            raise ValueError(f"increases must be an int >= 0, got {self.increases!r}")
        self.model()  # validates width / depth / activation
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        _check_normalization(self.normalization)
        object.__setattr__(self, "lr_multipliers", tuple(float(c) for c in self.lr_multipliers))
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.lr_multipliers or not all(c > 0 for c in self.lr_multipliers):
            raise ValueError(f"lr_multipliers must be positive numbers, got {self.lr_multipliers}")
        if not self.batch_sizes or not all(b >= 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive ints, got {self.batch_sizes}")
        if self.top > self.samples:
            raise ValueError(f"top must be <= samples={self.samples}, got {self.top}")
        if self.steps % self.probe_every:
            raise ValueError(f"steps={self.steps} must be a multiple of probe_every={self.probe_every}")
        if not self.spike_ratio > 1:
            raise ValueError(f"spike_ratio must be > 1, got {self.spike_ratio}")

    def model(self) -> NTKMLP:
        return NTKMLP(self.dim, self.width, self.depth, 1, self.activation)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Problem:
    """Data, target AGOP and initial weights of one seed (everything derived from the seed)."""

    def __init__(self, cfg: CatapultConfig, seed: int):
        self.seed = seed
        k_data, k_test, k_target, k_init, self.key = jax.random.split(jax.random.PRNGKey(seed), 5)
        self.model = cfg.model()
        self.target = make_target(cfg.target, cfg.dim, rank=cfg.rank, key=k_target)
        self.X = jax.random.normal(k_data, (cfg.samples, cfg.dim))
        self.Xt = jax.random.normal(k_test, (cfg.test_samples, cfg.dim))
        self.y, self.yt = self.target(self.X), self.target(self.Xt)
        star = lambda p, X: self.target(X)  # noqa: E731
        self.G_star = (agop(star, None, self.Xt), agop(star, None, self.X))
        self.params = self.model.init(k_init)
        self.data = (self.X, self.y, self.Xt, self.yt, self.G_star)


def _probe(model, params, data, *, top, c):
    """Full-batch measurements at one state (dense kernel: n ≤ a few thousand)."""
    X, y, Xt, yt, G_star = data
    n = X.shape[0]
    r = model(params, X) - y
    kernel = model.tangent_kernel if isinstance(model, NTKMLP) else functools.partial(tangent_kernel, model)
    lam, U = jnp.linalg.eigh(kernel(params, X))
    total = c / n * r @ r
    ptop = c / n * jnp.sum((U[:, -top:].T @ r) ** 2)
    return {
        "loss": total,
        "top": ptop,
        "perp": total - ptop,
        "lambda_max": lam[-1],
        "agop_alignment": agop_alignment(agop(model, params, Xt), G_star[0]),
        "agop_alignment_train": agop_alignment(agop(model, params, X), G_star[1]),
        "test_mse": jnp.mean((model(params, Xt) - yt) ** 2),
    }


def _mse(model, c, params, batch):
    """``c/b ‖f(X_b) − y_b‖²`` on a batch ``(X_b, y_b)`` of b samples (§1)."""
    Xb, yb = batch
    return c / Xb.shape[0] * jnp.sum((model(params, Xb) - yb) ** 2)


def _full_mse(model, c, params, data):
    return _mse(model, c, params, (data[0], data[1]))


def _probe_metric(model, top, c, params, data):
    return _probe(model, params, data, top=top, c=c)


@functools.cache
def _functions(model, top, c):
    """The loss and the in-loop metrics of one model and measurement (cached: `record`'s loop is keyed on them)."""
    return (
        functools.partial(_mse, model, c),
        functools.partial(_probe_metric, model, top, c),
        functools.partial(_full_mse, model, c),
    )


@functools.cache
def _sgd():
    """``optax.sgd`` with its learning rate in the state (``inject_hyperparams``): one compilation for every rate."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)


_probe_jit = jax.jit(_probe, static_argnames=("model", "top", "c"))


def _train(cfg: CatapultConfig, prob: _Problem, params, lr, seed, batch_size=None):
    """One constant-rate run by `ufm.dynamics.record`: ``(params, loss (T+1,), probes {name: (T/probe_every + 1,)},
    probe steps)``. ``loss`` is the full training loss before every step and after the last (full batch: the
    step's own loss; SGD: an in-loop metric). A run whose batch loss passes ``1e12 · (L_0 + 1)`` (or is not
    finite) is a divergence (`record` with ``throw=False``): it freezes there, the rest of its curves repeat
    the loss and probes of the parameters whose loss diverged."""
    from ._trajectory import record

    c = _check_normalization(cfg.normalization)
    loss_fn, probe, full = _functions(prob.model, cfg.top, c)
    opt = _sgd()
    state = opt.init(params)
    state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.result_type(float))})
    metrics = {"probe": probe} if batch_size is None else {"probe": probe, "loss": full}
    every = {"probe": cfg.probe_every} | ({} if batch_size is None else {"loss": 1})
    cap = 1e12 * (float(_full_mse(prob.model, c, params, prob.data)) + 1.0)
    traj = record(
        loss_fn,
        params,
        opt,
        steps=cfg.steps,
        checkpoints=[0],
        data=(prob.X, prob.y),
        batch_size=batch_size,
        metrics=metrics,
        metrics_every=every,
        metrics_data=prob.data,
        opt_state=state,
        max_loss=cap,
        seed=seed,
        throw=False,
    )
    T, M = cfg.steps + 1, cfg.steps // cfg.probe_every + 1
    frozen = {}
    if traj.stopped == "diverged":  # the curves go on at the parameters whose loss diverged (frozen there)
        frozen = {
            k: float(v) for k, v in _probe_jit(prob.model, traj.final_params, prob.data, top=cfg.top, c=c).items()
        }
    probes = {k: _padded(np.asarray(v, dtype=np.float64), M, frozen.get(k)) for k, v in traj.metrics["probe"].items()}
    if batch_size is None:
        loss = np.concatenate([traj.step_losses, probes["loss"][-1:]]) if traj.converged else traj.step_losses
        fill = traj.step_losses[-1]
    else:
        loss, fill = traj.metrics["loss"], frozen.get("loss")
    return traj.final_params, _padded(np.asarray(loss, np.float64), T, fill), probes, np.arange(0, T, cfg.probe_every)


def _padded(x, size, fill):
    """``x`` padded to ``size`` entries with ``fill`` (a diverged run's curves repeat the frozen state)."""
    return np.concatenate([x[:size], np.full(size - min(x.size, size), np.nan if fill is None else fill)])


# ---- results --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CatapultRun:
    """One training run: its curves, the catapults found and the regime (``docs/catapults.md`` §5).

    ``label`` holds ``multiplier`` (gd / schedule) or ``batch_size``, ``multiplier`` and
    ``seed`` (sgd). ``loss`` is the full training loss at every step (T + 1 values);
    ``probe_steps`` index the probe curves ``projected_top`` (P_s L), ``projected_perp``
    (P_s^⊥ L), ``lambda_max`` (λ_max(K) of the training kernel), ``agop_alignment``,
    ``test_mse``. ``learning_rates`` is the rate of every step. ``regime``: ``"diverged"``
    (non-finite, frozen, or not below the initial loss at the end), ``"catapult"`` (≥ 1
    catapult), ``"monotone"`` (``L_{t+1} ≤ L_t (1 + 1e-9)`` throughout) or ``"non-monotone"``.
    ``segments`` (schedule only): per segment its rate, η_crit at its start, the catapults
    started so far (a catapult can end in the next segment: its loss must fall below the
    pre-spike level, §4) and the AGOP alignment at its end.
    """

    label: dict
    eta_crit: float
    learning_rates: np.ndarray
    regime: str
    catapults: tuple[Catapult, ...]
    loss: np.ndarray
    probe_steps: np.ndarray
    projected_top: np.ndarray
    projected_perp: np.ndarray
    lambda_max: np.ndarray
    agop_alignment: np.ndarray
    agop_alignment_train: np.ndarray
    test_mse: np.ndarray
    segments: tuple[dict, ...] = ()

    @property
    def num_catapults(self) -> int:
        return len(self.catapults)

    def to_dict(self) -> dict:
        f = lambda a: [float(x) if np.isfinite(x) else None for x in np.asarray(a)]  # noqa: E731
        out = {
            **self.label,
            "regime": self.regime,
            "catapults": [c.to_dict() for c in self.catapults],
            "num_catapults": self.num_catapults,
            "learning_rate": float(self.learning_rates[0]),
            "eta_crit": self.eta_crit,
            "lambda_max_initial": float(self.lambda_max[0]),
            "lambda_max_final": float(self.lambda_max[-1]),
            "critical_lambda_final": _critical_lambda(self.learning_rates[-1], self),
            "agop_alignment_initial": float(self.agop_alignment[0]),
            "agop_alignment_final": float(self.agop_alignment[-1]),
            "test_mse_final": float(self.test_mse[-1]),
            "loss": f(self.loss),
            "projected_loss": {
                "steps": [int(s) for s in self.probe_steps],
                "top": f(self.projected_top),
                "perp": f(self.projected_perp),
            },
            "lambda_max": f(self.lambda_max),
            "agop_alignment": f(self.agop_alignment),
            "agop_alignment_train": f(self.agop_alignment_train),
            "test_mse": f(self.test_mse),
        }
        if self.segments:
            out["segments"] = list(self.segments)
        return out


def _critical_lambda(lr, run) -> float:
    """``2n/η`` (the λ_max(K) at which rate η is critical), from the run's η_crit = 2n/λ_max(0)."""
    return float(run.eta_crit * run.lambda_max[0] / lr)


@dataclasses.dataclass(frozen=True)
class CatapultReport:
    """``task`` (gd / schedule / sgd), its `CatapultConfig` and its runs; ``to_dict()`` is the JSON."""

    task: str
    config: CatapultConfig
    runs: tuple[CatapultRun, ...]

    def to_dict(self) -> dict:
        out = {"task": self.task, "config": self.config.to_dict(), "runs": [r.to_dict() for r in self.runs]}
        if self.task == "sgd":
            out["batch_table"] = batch_table(self)
        return out


def _regime(loss, catapults) -> str:
    if not np.all(np.isfinite(loss)) or not loss[-1] < loss[0]:
        return "diverged"
    if catapults:
        return "catapult"
    return "monotone" if np.all(loss[1:] <= loss[:-1] * (1 + 1e-9)) else "non-monotone"


def _make_run(cfg, label, eta_crit, rates, loss, probes, steps, segments=()) -> CatapultRun:
    share = probes["top"] / np.where(probes["loss"] > 0, probes["loss"], 1.0)
    cats = detect_catapults(
        loss, probes["lambda_max"], steps=steps, top_share=share, ratio=cfg.spike_ratio, window=cfg.spike_window
    )
    return CatapultRun(
        label,
        float(eta_crit),
        np.asarray(rates, dtype=np.float64),
        _regime(loss, cats),
        cats,
        loss,
        steps,
        probes["top"],
        probes["perp"],
        probes["lambda_max"],
        probes["agop_alignment"],
        probes["agop_alignment_train"],
        probes["test_mse"],
        tuple(segments),
    )


def _eta_crit(cfg, prob, params) -> float:
    """η_crit of the full training kernel at ``params``."""
    c = _check_normalization(cfg.normalization)
    lam = float(_probe_jit(prob.model, params, prob.data, top=cfg.top, c=c)["lambda_max"])
    return float(critical_learning_rate(lam, cfg.samples, cfg.normalization))


# ---- the experiments ----------------------------------------------------------------------
def run_gd(cfg: CatapultConfig, progress: Callable | None = None) -> CatapultReport:
    """Full-batch GD at ``η = c · η_crit(w_0)`` for each ``c`` in ``cfg.lr_multipliers``."""
    prob = _Problem(cfg, cfg.seed)
    eta_crit = _eta_crit(cfg, prob, prob.params)
    runs = []
    for c_mult in cfg.lr_multipliers:
        _, loss, probes, steps = _train(cfg, prob, prob.params, c_mult * eta_crit, prob.seed)
        runs.append(
            _make_run(cfg, {"multiplier": c_mult}, eta_crit, np.full(cfg.steps, c_mult * eta_crit), loss, probes, steps)
        )
        if progress:
            progress(
                f"gd: c = {c_mult:g} (η = {c_mult * eta_crit:.4g}): {runs[-1].regime}, "
                f"{runs[-1].num_catapults} catapult(s)"
            )
    return CatapultReport("gd", cfg, tuple(runs))


def run_schedule(cfg: CatapultConfig, progress: Callable | None = None) -> CatapultReport:
    """A first segment at ``½ η_crit``, then ``cfg.increases`` segments at ``c · η_crit(w)`` of the
    current weights ``w`` (each steps above the critical rate once more), ``cfg.steps`` each."""
    prob = _Problem(cfg, cfg.seed)
    runs = []
    for c_mult in cfg.lr_multipliers:
        params = prob.params
        parts, segments, rates, eta0 = [], [], [], None
        for j in range(cfg.increases + 1):
            eta_crit = _eta_crit(cfg, prob, params)
            eta0 = eta_crit if eta0 is None else eta0
            lr = (0.5 if j == 0 else c_mult) * eta_crit
            params, loss, probes, steps = _train(cfg, prob, params, lr, prob.seed + j)
            parts.append((loss, probes, steps + j * cfg.steps))
            rates.append(np.full(cfg.steps, lr))
            segments.append(
                {
                    "learning_rate": lr,
                    "eta_crit": eta_crit,
                    "end_step": (j + 1) * cfg.steps,
                    "agop_alignment": float(probes["agop_alignment"][-1]),
                    "test_mse": float(probes["test_mse"][-1]),
                }
            )
        # stitch: each segment's first point is the previous one's last
        loss = np.concatenate([parts[0][0]] + [p[0][1:] for p in parts[1:]])
        keys_ = parts[0][1].keys()
        probes = {k: np.concatenate([parts[0][1][k]] + [p[1][k][1:] for p in parts[1:]]) for k in keys_}
        steps = np.concatenate([parts[0][2]] + [p[2][1:] for p in parts[1:]])
        run = _make_run(cfg, {"multiplier": c_mult}, eta0, np.concatenate(rates), loss, probes, steps)
        for seg in segments:
            seg["catapults_so_far"] = sum(1 for cat in run.catapults if cat.start < seg["end_step"])
        runs.append(dataclasses.replace(run, segments=tuple(segments)))
        if progress:
            progress(
                f"schedule: c = {c_mult:g}: {run.num_catapults} catapult(s), AGOP alignment "
                + " -> ".join(f"{s['agop_alignment']:.3f}" for s in segments)
            )
    return CatapultReport("schedule", cfg, tuple(runs))


def run_sgd(cfg: CatapultConfig, progress: Callable | None = None) -> CatapultReport:
    """SGD (batches drawn without replacement, i.i.d. over steps) at ``η = c · η_crit(w_0)`` of the
    full training kernel, for every batch size, multiplier and seed ``seed + j``."""
    if not all(b <= cfg.samples for b in cfg.batch_sizes):
        raise ValueError(f"batch_sizes must be <= samples={cfg.samples}, got {cfg.batch_sizes}")
    runs = []
    for j in range(cfg.seeds):
        prob = _Problem(cfg, cfg.seed + j)
        eta_crit = _eta_crit(cfg, prob, prob.params)
        for c_mult in cfg.lr_multipliers:
            for b in cfg.batch_sizes:
                lr = c_mult * eta_crit
                _, loss, probes, steps = _train(cfg, prob, prob.params, lr, prob.seed, None if b == cfg.samples else b)
                runs.append(
                    _make_run(
                        cfg,
                        {"batch_size": b, "multiplier": c_mult, "seed": cfg.seed + j},
                        eta_crit,
                        np.full(cfg.steps, lr),
                        loss,
                        probes,
                        steps,
                    )
                )
                if progress:
                    r = runs[-1]
                    progress(
                        f"sgd: seed {cfg.seed + j}, c = {c_mult:g}, b = {b}: {r.num_catapults} catapult(s), "
                        f"AGOP alignment {r.agop_alignment[-1]:.3f}, test MSE {r.test_mse[-1]:.4g}"
                    )
    return CatapultReport("sgd", cfg, tuple(runs))


def batch_table(report: CatapultReport) -> list[dict]:
    """Per (multiplier, batch size): mean ± std over seeds of catapults, final AGOP alignment, test MSE."""
    rows = []
    keys = sorted({(r.label["multiplier"], r.label["batch_size"]) for r in report.runs})
    for c_mult, b in keys:
        rs = [r for r in report.runs if r.label["multiplier"] == c_mult and r.label["batch_size"] == b]
        row = {"multiplier": c_mult, "batch_size": b, "seeds": len(rs)}
        for name, vals in (
            ("catapults", [r.num_catapults for r in rs]),
            ("agop_alignment", [r.agop_alignment[-1] for r in rs]),
            ("test_mse", [r.test_mse[-1] for r in rs]),
            ("train_loss", [r.loss[-1] for r in rs]),
        ):
            row[name] = float(np.mean(vals))
            row[name + "_std"] = float(np.std(vals))
        row["diverged"] = sum(r.regime == "diverged" for r in rs)
        rows.append(row)
    return rows


EXPERIMENTS = {"gd": run_gd, "schedule": run_schedule, "sgd": run_sgd}


# ---- figures (drawn from the JSON form, so a saved report re-plots) ---------------------------
def _critical_lambda_curve(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """Steps and ``2n/η`` (the λ_max(K) at which the current rate is critical), piecewise per segment."""
    lam_per_rate = run["eta_crit"] * run["lambda_max_initial"]  # 2n (or n for "mean")
    segs = run.get("segments") or [{"learning_rate": run["learning_rate"], "end_step": len(run["loss"]) - 1}]
    x, y, start = [], [], 0
    for seg in segs:
        x += [start, seg["end_step"]]
        y += [lam_per_rate / seg["learning_rate"]] * 2
        start = seg["end_step"]
    return np.array(x), np.array(y)


def plot_run(axes, run: dict, *, title: str | None = None):
    """Two axes for one run (``CatapultRun.to_dict()``): L, P_s L, P_s^⊥ L vs step (log y) with
    the catapults shaded, and λ_max(K) with ``2n/η`` dashed."""
    from .. import plotting

    ax, bx = axes
    pl = run["projected_loss"]
    nan = lambda v: np.array([np.nan if x is None else x for x in v], dtype=float)  # noqa: E731
    ax.semilogy(np.arange(len(run["loss"])), nan(run["loss"]), color=plotting.COLORS[7], label="$L$")
    ax.semilogy(pl["steps"], nan(pl["top"]), color=plotting.COLORS[1], linestyle="--", label="$P_sL$")
    ax.semilogy(pl["steps"], nan(pl["perp"]), color=plotting.COLORS[0], linestyle=":", label=r"$P_s^\perp L$")
    for cat in run["catapults"]:
        ax.axvspan(cat["start"], cat["end"], color=plotting.COLORS[3], alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    bx.plot(pl["steps"], nan(run["lambda_max"]), color=plotting.COLORS[2], label=r"$\lambda_{\max}(K)$")
    bx.plot(*_critical_lambda_curve(run), color="0.3", linestyle=(0, (4, 2)), linewidth=1.0, label=r"$2n/\eta$")
    bx.set_xlabel("step")
    bx.set_ylabel(r"$\lambda_{\max}(K)$")
    lam = nan(run["lambda_max"])
    if np.nanmax(lam) > 100 * np.nanmin(lam):  # a divergence: λ_max grows by orders of magnitude
        bx.set_yscale("log")
    for a in (ax, bx):  # linear for the first steps (where a catapult happens), logarithmic after
        a.set_xscale("symlog", linthresh=20, linscale=0.6)
        a.set_xlim(0, len(run["loss"]) - 1)
    if title:
        ax.set_title(title, loc="left")
    return ax, bx


def plot_alignment_vs_catapults(ax, report: dict):
    """AGOP alignment at the end of each schedule segment against the catapults so far."""
    from .. import plotting

    for i, run in enumerate(report["runs"]):
        x = [seg["catapults_so_far"] for seg in run["segments"]]
        y = [seg["agop_alignment"] for seg in run["segments"]]
        ax.plot(x, y, "o-", color=plotting.COLORS[i % 8], label=f"c = {run['multiplier']:g}")
    ax.set_xlabel("number of catapults")
    ax.set_ylabel("AGOP alignment")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return ax


def plot_batch_sweep(axes, report: dict):
    """Three axes vs batch size: catapults, final AGOP alignment, test MSE (mean ± std over seeds)."""
    from .. import plotting

    table = report["batch_table"]
    for i, c_mult in enumerate(sorted({row["multiplier"] for row in table})):
        rows = [row for row in table if row["multiplier"] == c_mult]
        b = [row["batch_size"] for row in rows]
        for ax, name in zip(axes, ("catapults", "agop_alignment", "test_mse"), strict=True):
            ax.errorbar(
                b,
                [r[name] for r in rows],
                yerr=[r[name + "_std"] for r in rows],
                marker="o",
                capsize=2,
                color=plotting.COLORS[i % 8],
                label=f"c = {c_mult:g}",
            )
    sizes = sorted({row["batch_size"] for row in table})
    for ax, label in zip(axes, ("catapults", "AGOP alignment", "test MSE"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
    return axes


def report_figure(report: dict):
    """The CLI's ``--plot`` from ``CatapultReport.to_dict()``: two panels per run (gd), plus
    alignment vs catapults (schedule), or the batch-size sweep (sgd)."""
    from .. import plotting

    with plotting.use_style():
        if report["task"] == "sgd":
            fig, axes = plotting.figure(1, 3, columns=2, height=2.2)
            plot_batch_sweep(axes, report)
            axes[0].legend()
            return fig
        runs = report["runs"]
        rows = len(runs) + (report["task"] == "schedule")
        fig, axes = plotting.figure(rows, 2, columns=2, squeeze=False, height=1.9 * rows)
        for row, run in zip(axes, runs, strict=True):
            plot_run(row, run, title=f"c = {run['multiplier']:g}: {run['regime']}")
        axes[0, 0].legend(ncols=3)
        axes[0, 1].legend()
        if report["task"] == "schedule":
            plot_alignment_vs_catapults(axes[-1, 0], report)
            axes[-1, 1].set_axis_off()
        return fig


# ---- command line -------------------------------------------------------------------------
_TASK_DEFAULTS = {"gd": (0.5, 1.5, 3.0), "schedule": (1.5,), "sgd": (0.5,)}


def add_cli(subparsers) -> None:
    """``ufm dynamics catapult --task {gd,schedule,sgd} …`` (see `CatapultConfig`)."""
    d = CatapultConfig()
    p = subparsers.add_parser(
        "catapult",
        help="catapults in GD / SGD: projected loss, λ_max(K), AGOP alignment",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--task", choices=sorted(EXPERIMENTS), default="gd")
    p.add_argument(
        "--lr-multipliers",
        type=float,
        nargs="+",
        default=None,
        metavar="C",
        help="η = C·η_crit (default: gd 0.5 1.5 3; schedule 1.5; sgd 0.5)",
    )
    p.add_argument("--samples", type=int, default=d.samples, help=f"n training samples (default {d.samples})")
    p.add_argument("--test-samples", type=int, default=d.test_samples)
    p.add_argument("--dim", type=int, default=d.dim, help=f"input dimension d (default {d.dim})")
    p.add_argument("--width", type=int, default=d.width, help=f"hidden width (default {d.width})")
    p.add_argument("--depth", type=int, default=d.depth, help=f"weight layers (default {d.depth})")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=d.activation)
    p.add_argument("--target", choices=sorted(TARGETS), default=d.target)
    p.add_argument("--rank", type=int, default=d.rank, help="rank r of the polynomial target")
    p.add_argument("--steps", type=int, default=d.steps, help=f"steps per run / schedule segment (default {d.steps})")
    p.add_argument("--increases", type=int, default=d.increases, help="schedule: rate increases (default 3)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(d.batch_sizes))
    p.add_argument("--seeds", type=int, default=d.seeds, help="sgd: seeds per batch size (default 3)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top", type=int, default=d.top, help="s of the projected loss P_s L (default 5)")
    p.add_argument("--probe-every", type=int, default=d.probe_every)
    p.add_argument(
        "--normalization",
        choices=["half", "mean"],
        default=d.normalization,
        help="MSE (1/2n)||f-y||^2 (half, η_crit = 2n/λ) or (1/n)||f-y||^2 (mean, η_crit = n/λ)",
    )
    p.add_argument("--spike-ratio", type=float, default=d.spike_ratio)
    p.add_argument("--spike-window", type=int, default=d.spike_window)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", help="figure (PDF + PNG)")
    p.add_argument("--x32", action="store_true", help="float32 (default float64)")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    import json
    import os

    from ..cli import _ArgumentError

    for flag in ("json", "plot"):
        path = getattr(args, flag)
        if path and os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
            raise _ArgumentError(f"--{flag}: directory {os.path.dirname(path)!r} does not exist")
    jax.config.update("jax_enable_x64", not args.x32)
    try:
        cfg = CatapultConfig(
            samples=args.samples,
            test_samples=args.test_samples,
            dim=args.dim,
            width=args.width,
            depth=args.depth,
            activation=args.activation,
            target=args.target,
            rank=args.rank,
            steps=args.steps,
            seed=args.seed,
            lr_multipliers=tuple(args.lr_multipliers or _TASK_DEFAULTS[args.task]),
            increases=args.increases,
            batch_sizes=tuple(args.batch_sizes),
            seeds=args.seeds,
            probe_every=args.probe_every,
            top=args.top,
            normalization=args.normalization,
            spike_ratio=args.spike_ratio,
            spike_window=args.spike_window,
        )
        if args.task == "sgd" and max(cfg.batch_sizes) > cfg.samples:
            raise ValueError(f"--batch-sizes must be <= --samples={cfg.samples}, got {list(cfg.batch_sizes)}")
    except (TypeError, ValueError) as e:
        raise _ArgumentError(str(e)) from None
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say(
        f"catapult {args.task}: n={cfg.samples}, d={cfg.dim}, width {cfg.width}, depth {cfg.depth}, "
        f"{cfg.activation}, target {cfg.target}, {cfg.steps} steps"
    )
    report = EXPERIMENTS[args.task](cfg, progress=say)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from .. import plotting

        plotting.savefig(report_figure(report.to_dict()), args.plot)
    return 0


def format_report(report: CatapultReport) -> str:
    """A plain-text table of the runs (sgd: the batch-size table)."""
    if report.task == "sgd":
        lines = [f"{'c':>5} {'batch':>6} {'catapults':>12} {'AGOP align':>16} {'test MSE':>18} {'diverged':>8}"]
        for r in batch_table(report):
            lines.append(
                f"{r['multiplier']:5g} {r['batch_size']:6d} {r['catapults']:6.2f} ± {r['catapults_std']:4.2f} "
                f"{r['agop_alignment']:8.4f} ± {r['agop_alignment_std']:.4f} "
                f"{r['test_mse']:9.4g} ± {r['test_mse_std']:.2g} {r['diverged']:8d}"
            )
        return "\n".join(lines)
    lines = [
        f"{'c':>5} {'regime':>12} {'#cat':>4} {'peak L':>10} {'share top':>9} {'λmax 0':>9} {'λmax T':>9} "
        f"{'2n/η':>9} {'AGOP 0':>7} {'AGOP T':>7} {'test MSE':>9}"
    ]
    for r in report.runs:
        d = r.to_dict()
        peak = max(r.catapults, key=lambda c: c.peak_loss) if r.catapults else None
        lines.append(
            f"{d['multiplier']:5g} {r.regime:>12} {r.num_catapults:4d} "
            f"{peak.peak_loss if peak else float('nan'):10.4g} "
            f"{peak.peak_share_top if peak else float('nan'):9.4f} {d['lambda_max_initial']:9.4g} "
            f"{d['lambda_max_final']:9.4g} {d['critical_lambda_final']:9.4g} "
            f"{d['agop_alignment_initial']:7.4f} {d['agop_alignment_final']:7.4f} {d['test_mse_final']:9.4g}"
        )
    return "\n".join(lines)
