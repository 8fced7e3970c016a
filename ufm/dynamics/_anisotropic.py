"""Gaussian mixtures with commuting anisotropic class covariances (``docs/sgd_ode.md`` §1).

Class ``j`` (probability ``π_j``, label ``y_j``) draws ``a | j ~ N(μ_j, K_j)`` in ``R^d``, with
every ``K_j = Σ_ρ λ_ρ^{(j)} u_ρ u_ρᵀ`` diagonal in one orthonormal basis ``{u_ρ}`` (the identity,
or a random orthogonal one). Everything is stored *in that eigenbasis*: ``eigenvalues[j, ρ] =
λ_ρ^{(j)}`` and ``means[j, ρ] = ⟨μ_j, u_ρ⟩``. Conventions (the scaling of the SGD ODE):
eigenvalues are O(1) and mean components O(d^{-1/2}), so ``‖μ_j‖ = O(1)`` and ``‖a‖² ≈ Σ_ρ λ_ρ``
is O(d).

Covariance models (modes ``ρ = 1..d``, ordered by increasing variance):
``isotropic`` ``λ_ρ = 1``; ``zero-one`` ``λ_ρ = 0`` for the first ``round(f d)`` modes (the
"clean" directions), 1 for the rest; ``power-law`` ``λ_ρ^{(j)} = (ρ/d)^{a_j}``, one exponent
per class. Means: ``⟨μ, u_ρ⟩ = c · d^{-1/2} (ρ/d)^b`` (``b = 0``: the flat mean of norm ``c``),
antipodal ``±μ`` for two classes, or that profile times seeded random signs per class.

Sampling is seeded (a JAX key) and vectorised, ``a = U (μ + √λ ⊙ g)``, ``g ~ N(0, I_d)``: no
``d × d`` covariance is ever formed (the basis ``U`` is the only ``d × d`` array, and only for
the rotated model).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["COVARIANCES", "AnisotropicMixture", "anisotropic_mixture"]

COVARIANCES = ("isotropic", "zero-one", "power-law")


def _array(name: str, value, ndim: int, dtype=np.float64) -> np.ndarray:
    x = np.asarray(value, dtype=dtype)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {x.shape}")
    if dtype is np.float64 and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class AnisotropicMixture:
    """A k-class Gaussian mixture with class covariances diagonal in one shared basis.

    Fields (validated on construction; stored as float64 numpy arrays):
      eigenvalues: (k, d) ``λ_ρ^{(j)} ≥ 0``, the variance of class ``j`` along ``u_ρ``.
      means: (k, d) ``⟨μ_j, u_ρ⟩`` (O(d^{-1/2}) in the ODE's scaling).
      probs: (k,) class probabilities ``π_j`` (non-negative, summing to 1).
      labels: (k,) the label ``y_j`` of each class (logistic: in [0, 1]; least squares: any
        real; softmax uses the class index ``j`` and ignores them).
      basis: (d, d) orthonormal columns ``u_ρ``, or ``None`` for the identity basis.
      clean: (d,) bool, the "clean" modes on which the clean-direction alignment projects
        (the zero-variance modes of ``zero-one``; by default the modes where every class has
        variance 0).
      name: a short description (for captions and JSON).
    """

    eigenvalues: np.ndarray
    means: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    basis: np.ndarray | None = None
    clean: np.ndarray | None = None
    name: str = "custom"

    def __post_init__(self):
        lam = _array("eigenvalues", self.eigenvalues, 2)
        k, d = lam.shape
        if k < 1 or d < 1:
            raise ValueError(f"eigenvalues must be (classes, dim) with both ≥ 1, got shape {lam.shape}")
        if np.any(lam < 0):
            raise ValueError(f"eigenvalues must be ≥ 0 (variances), got min {lam.min():.3g}")
        mu = _array("means", self.means, 2)
        if mu.shape != lam.shape:
            raise ValueError(f"means must have the shape of eigenvalues {lam.shape}, got {mu.shape}")
        p = _array("probs", self.probs, 1)
        if p.shape != (k,):
            raise ValueError(f"probs must have one entry per class ({k}), got shape {p.shape}")
        if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(f"probs must be non-negative and sum to 1, got {p.tolist()} (sum {p.sum():.12g})")
        y = _array("labels", self.labels, 1)
        if y.shape != (k,):
            raise ValueError(f"labels must have one entry per class ({k}), got shape {y.shape}")
        basis = self.basis
        if basis is not None:
            basis = _array("basis", basis, 2)
            if basis.shape != (d, d):
                raise ValueError(f"basis must be (dim, dim) = ({d}, {d}), got {basis.shape}")
            probe = np.random.default_rng(0).standard_normal(d)
            err = np.linalg.norm(basis.T @ (basis @ probe) - probe) / np.linalg.norm(probe)
            if err > 1e-8:
                raise ValueError(f"basis must have orthonormal columns (‖UᵀU v − v‖/‖v‖ = {err:.2e} on a probe)")
        clean = np.all(lam == 0, axis=0) if self.clean is None else np.asarray(self.clean)
        if clean.shape != (d,) or clean.dtype != bool:
            raise ValueError(f"clean must be a boolean mask of shape ({d},), got {clean.dtype} {clean.shape}")
        for field, value in (
            ("eigenvalues", lam),
            ("means", mu),
            ("probs", p),
            ("labels", y),
            ("basis", basis),
            ("clean", clean),
        ):
            object.__setattr__(self, field, value)

    @property
    def num_classes(self) -> int:
        return self.eigenvalues.shape[0]

    @property
    def dim(self) -> int:
        return self.eigenvalues.shape[1]

    def mean_vectors(self) -> np.ndarray:
        """(k, d) the means ``μ_j`` in the ambient coordinates."""
        return self.means if self.basis is None else self.means @ self.basis.T

    def covariance(self, j: int) -> np.ndarray:
        """The dense ``d × d`` covariance ``K_j`` (for small checks only; sampling never forms it)."""
        lam = self.eigenvalues[j]
        return np.diag(lam) if self.basis is None else (self.basis * lam) @ self.basis.T

    def sample(self, key, num: int):
        """``num`` i.i.d. draws: ``(inputs (num, d), classes (num,))``, seeded by the JAX ``key``."""
        import jax
        import jax.numpy as jnp

        if int(num) < 1:
            raise ValueError(f"num must be ≥ 1, got {num}")
        coords, classes = jax.vmap(lambda k: draw(k, *self.arrays()))(jax.random.split(key, int(num)))
        return (coords if self.basis is None else coords @ jnp.asarray(self.basis).T), classes

    def arrays(self):
        """``(sqrt eigenvalues (k, d), means (k, d), log probs (k,))`` as JAX arrays, for `draw`."""
        import jax.numpy as jnp

        with np.errstate(divide="ignore"):
            logp = np.log(self.probs)
        return jnp.asarray(np.sqrt(self.eigenvalues)), jnp.asarray(self.means), jnp.asarray(logp)

    def to_dict(self) -> dict:
        lam, mu = self.eigenvalues, self.means
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "dim": self.dim,
            "probs": self.probs.tolist(),
            "labels": self.labels.tolist(),
            "basis": "identity" if self.basis is None else "rotated",
            "mean_norms": np.linalg.norm(mu, axis=1).tolist(),
            "eigenvalue_range": [float(lam.min()), float(lam.max())],
            "num_clean": int(self.clean.sum()),
        }


def draw(key, sqrt_eig, means, logp):
    """One draw in the eigenbasis: ``(μ_j + √λ^{(j)} ⊙ g, j)`` with ``j ~ π``, ``g ~ N(0, I)``."""
    import jax

    kc, kg = jax.random.split(key)
    j = jax.random.categorical(kc, logp)
    return means[j] + sqrt_eig[j] * jax.random.normal(kg, means.shape[1:], means.dtype), j


def anisotropic_mixture(
    dim: int,
    covariance: str = "isotropic",
    *,
    num_classes: int = 2,
    exponents=(1.0,),
    zero_fraction: float = 0.0,
    mean_decay: float = 0.0,
    mean_scale: float = 1.0,
    means: str = "auto",
    probs=None,
    labels=None,
    basis="identity",
    seed: int = 0,
) -> AnisotropicMixture:
    """One of the covariance models of ``docs/sgd_ode.md`` §1.

    Args:
      dim: d ≥ 1.
      covariance: ``"isotropic"``, ``"zero-one"`` or ``"power-law"``.
      num_classes: k ≥ 2.
      exponents: power-law exponents ``a_j`` (one, broadcast to every class, one per class,
        or fewer than k, cycled over the classes: ``(1.5, 2.5)`` alternates);
        ``λ_ρ^{(j)} = (ρ/d)^{a_j}``, ``ρ = 1..d``. Ignored by the other models.
      zero_fraction: f ∈ [0, 1]: the first ``round(f d)`` modes are the clean ones (variance 0
        in ``zero-one``; in the other models they only define the clean-direction alignment).
      mean_decay: b, ``⟨μ, u_ρ⟩ ∝ d^{-1/2} (ρ/d)^b``.
      mean_scale: c, the factor in front (``b = 0``: ``‖μ‖ = c``).
      means: ``"antipodal"`` (k = 2: ``μ_1 = μ``, ``μ_2 = −μ``), ``"random-signs"`` (the
        profile times i.i.d. ±1 per class and mode, from ``seed``), or ``"auto"``
        (antipodal for two classes).
      probs: (k,), default uniform.
      labels: (k,), default ``(1, 0)`` for two classes, ``0..k−1`` otherwise.
      basis: ``"identity"``, ``"random"`` (Haar orthogonal from ``seed``) or a (d, d) array.
      seed: numpy seed for the random signs and the random basis.
    """
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer ≥ 1, got {dim!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    if not 0.0 <= zero_fraction <= 1.0:
        raise ValueError(f"zero_fraction must be in [0, 1], got {zero_fraction!r}")
    if not (np.isfinite(mean_decay) and np.isfinite(mean_scale)):
        raise ValueError(f"mean_decay and mean_scale must be finite, got {mean_decay!r}, {mean_scale!r}")
    d, k = int(dim), int(num_classes)
    rng = np.random.default_rng(seed)
    rho = np.arange(1, d + 1) / d
    num_clean = int(round(zero_fraction * d))
    clean = np.arange(d) < num_clean
    if covariance == "isotropic":
        lam, desc = np.ones((k, d)), "isotropic"
    elif covariance == "zero-one":
        lam, desc = np.tile(np.where(clean, 0.0, 1.0), (k, 1)), f"zero-one (f={zero_fraction:g})"
    else:
        a = np.asarray(exponents, dtype=np.float64).ravel()
        if a.size < 1 or a.size > k or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"exponents must be 1 to {k} finite values ≥ 0, got {exponents!r}")
        a = np.resize(a, k)  # cycled over the classes: (1.5, 2.5) → 1.5, 2.5, 1.5, …
        lam = rho[None, :] ** a[:, None]
        desc = f"power-law (a={'/'.join(f'{x:g}' for x in a[: np.size(exponents)])})"
    profile = mean_scale * rho**mean_decay / np.sqrt(d)
    if means == "auto":
        means = "antipodal" if k == 2 else "random-signs"
    if means == "antipodal":
        if k != 2:
            raise ValueError(f"means='antipodal' needs num_classes=2, got {k}")
        mu = np.stack([profile, -profile])
    elif means == "random-signs":
        mu = profile * rng.choice([-1.0, 1.0], size=(k, d))
    else:
        raise ValueError(f"means must be 'auto', 'antipodal' or 'random-signs', got {means!r}")
    if isinstance(basis, str):
        if basis == "identity":
            basis = None
        elif basis == "random":
            q, r = np.linalg.qr(rng.standard_normal((d, d)))
            basis = q * np.sign(np.diag(r))  # Haar (Mezzadri 2007)
        else:
            raise ValueError(f"basis must be 'identity', 'random' or a (d, d) array, got {basis!r}")
    probs = np.full(k, 1.0 / k) if probs is None else probs
    labels = (np.array([1.0, 0.0]) if k == 2 else np.arange(k, dtype=np.float64)) if labels is None else labels
    name = f"{desc}, b={mean_decay:g}, d={d}" + ("" if basis is None else ", rotated basis")
    return AnisotropicMixture(lam, mu, probs, labels, basis, clean, name)
