"""The Gaussian mixtures of ``docs/dynamics.md`` §D2 (Ben Arous, Gheissari, Huang, Jagannath 2024).

* `KGMM`: k classes, label c with probability p_c, input ``Y = μ_c + Z/√λ``,
  ``Z ~ N(0, I_d)``, unit means μ_c (orthonormal by default); λ is the SNR.
* `XORGMM`: orthogonal unit μ, ν; clusters +μ, −μ (label 1) and +ν, −ν (label 0), each with
  probability 1/4, ``Y = cluster mean + Z/√λ``.

Both are frozen dataclasses registered as pytrees (the arrays are leaves, the SNR too), so a
``sample(key, n)`` call traces inside a jitted training loop (`ufm.dynamics.record`'s
``sampler``). Samples are rows: ``Y`` is (n × d), labels (n,) ints.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KGMM", "XORGMM", "orthonormal_means"]


def orthonormal_means(num: int, dim: int, *, seed: int = 0, dtype=None) -> np.ndarray:
    """``num`` orthonormal unit vectors in R^dim as rows (a Haar-random frame, seeded)."""
    if not (isinstance(num, (int, np.integer)) and isinstance(dim, (int, np.integer)) and 1 <= num <= dim):
        raise ValueError(f"need integers 1 <= num <= dim, got num={num!r}, dim={dim!r}")
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, num)))
    Q = Q * np.sign(np.diag(R))  # Haar: fix the signs of the QR factor
    return np.asarray(Q.T, dtype=dtype or np.float64)


def _check_snr(snr):
    if not (isinstance(snr, (int, float, np.floating)) and not isinstance(snr, bool) and snr > 0):
        raise ValueError(f"snr must be a float > 0 (λ, the inverse noise variance per coordinate), got {snr!r}")
    return float(snr)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KGMM:
    """k-component Gaussian mixture with unit means (``docs/dynamics.md`` §D2).

    Fields:
      means: (k × d), rows μ_c of unit norm.
      snr: λ > 0; the noise is ``N(0, I/λ)``.
      probs: (k,) class probabilities p_c (positive, summing to 1).
    """

    means: jax.Array
    snr: float
    probs: jax.Array

    @staticmethod
    def create(num_classes: int, dim: int, snr: float, *, probs=None, means=None, seed: int = 0) -> KGMM:
        """Orthonormal means (Haar, ``seed``) unless ``means`` (k × d, rows normalised) is given;
        uniform ``probs`` by default."""
        snr = _check_snr(snr)
        if means is None:
            means = orthonormal_means(num_classes, dim, seed=seed)
        means = np.asarray(means, dtype=np.float64)
        if means.shape != (num_classes, dim):
            raise ValueError(f"means must be (num_classes, dim) = ({num_classes}, {dim}), got shape {means.shape}")
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("means must be nonzero (they are normalised to unit length)")
        probs = np.full(num_classes, 1.0 / num_classes) if probs is None else np.asarray(probs, dtype=np.float64)
        if probs.shape != (num_classes,) or np.any(probs <= 0) or abs(probs.sum() - 1) > 1e-12:
            raise ValueError(f"probs must be {num_classes} positive numbers summing to 1, got {probs.tolist()}")
        return KGMM(jnp.asarray(means / norms), snr, jnp.asarray(probs))

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, key, n: int):
        """``(Y, labels)``: (n × d) inputs and (n,) integer classes."""
        kc, kz = jax.random.split(key)
        labels = jax.random.choice(kc, self.num_classes, (n,), p=self.probs)
        Z = jax.random.normal(kz, (n, self.dim), self.means.dtype)
        return self.means[labels] + Z / jnp.sqrt(self.snr), labels

    def to_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "dim": self.dim,
            "snr": float(self.snr),
            "probs": np.asarray(self.probs).tolist(),
        }


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class XORGMM:
    """XOR mixture: ±μ with label 1, ±ν with label 0, probability 1/4 each (``docs/dynamics.md`` §D2)."""

    mu: jax.Array
    nu: jax.Array
    snr: float

    @staticmethod
    def create(dim: int, snr: float, *, seed: int = 0) -> XORGMM:
        """Orthonormal μ, ν (Haar, ``seed``)."""
        snr = _check_snr(snr)
        mu, nu = orthonormal_means(2, dim, seed=seed)
        return XORGMM(jnp.asarray(mu), jnp.asarray(nu), snr)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @property
    def cluster_means(self) -> jax.Array:
        """(4 × d): +μ, −μ, +ν, −ν (clusters 0..3; labels 1, 1, 0, 0)."""
        return jnp.stack([self.mu, -self.mu, self.nu, -self.nu])

    def sample(self, key, n: int):
        """``(Y, labels)``: (n × d) inputs and (n,) labels in {0, 1} (1 for the ±μ clusters)."""
        kc, kz = jax.random.split(key)
        cluster = jax.random.randint(kc, (n,), 0, 4)
        Z = jax.random.normal(kz, (n, self.dim), self.mu.dtype)
        return self.cluster_means[cluster] + Z / jnp.sqrt(self.snr), (cluster < 2).astype(jnp.int32)

    def to_dict(self) -> dict:
        return {"dim": self.dim, "snr": float(self.snr)}
