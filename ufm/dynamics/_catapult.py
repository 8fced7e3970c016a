"""NTK MLPs, synthetic targets with known AGOP, the projected loss and catapult detection [ZLRB].

Zhu, Liu, Radhakrishnan, Belkin, "Catapults in SGD: spikes in the training loss and their
impact on generalization through feature learning", ICML 2024 (arXiv 2306.04815);
``docs/dynamics.md`` §D4; the maths and conventions are in ``docs/catapults.md``.

* `NTKMLP`: NTK-parameterised MLPs (every layer's pre-activation scaled by 1/√fan_in,
  weights N(0, 1), no biases), any depth / width, ReLU / tanh / linear, c ≥ 1 outputs.
* `make_target`: synthetic targets with known AGOP (x₁x₂, a rank-r polynomial of a random
  projection, a single-index model); `agop`, `agop_alignment`.
* `projected_loss`: ``P_s L`` and ``P_s^⊥ L`` on the top-s eigenvectors of the current kernel.
* `detect_catapults`: the documented rule of ``docs/catapults.md`` §4, on any loss curve.

The experiments built on them (`run_gd`, `run_schedule`, `run_sgd`) are `ufm.experiments.catapult`.

Loss convention (§1): ``L = (1/2n)‖f(X) − y‖²`` (``normalization="half"``) or ``(1/n)‖·‖²``
(``"mean"``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..results import result
from ._tangent_kernel import _check_normalization, _positive_int

__all__ = [
    "NTKMLP",
    "NTK_ACTIVATIONS",
    "Target",
    "make_target",
    "TARGETS",
    "agop",
    "agop_alignment",
    "projected_loss",
    "Catapult",
    "detect_catapults",
]

NTK_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda z: z}


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
        if self.activation not in NTK_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(NTK_ACTIVATIONS)}, got {self.activation!r}")
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
        sigma = NTK_ACTIVATIONS[self.activation]
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
@result(static=("start", "peak", "end"))
class Catapult:
    """One detected catapult: steps ``start ≤ peak ≤ end``, the peak loss and where it lives
    (``converged``: a detection, always True; `ufm.results`)."""

    start: int
    peak: int
    end: int
    peak_loss: float
    start_loss: float
    peak_share_top: float
    lambda_max_before: float
    lambda_max_after: float
    converged: bool = True
    messages: tuple[str, ...] = ()


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
