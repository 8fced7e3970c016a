"""`UFMSpec`: the deep unconstrained feature model, fixed once and validated once.

Conventions (``docs/theory.md`` §1, ``DESIGN.md``):

* K classes, n samples per class, N = K n; columns are class-major, so column ``i``
  belongs to class ``i // n``. MSE targets are ``Y = I_K ⊗ 1_nᵀ`` (K × N).
* Free features ``H_1`` (d_1 × N); weights ``W_l`` (d_{l+1} × d_l) for l < L and
  ``W_L`` (K × d_L). ``H_{l+1} = W_l σ̃(H_l)`` with ``σ̃ = identity`` on ``H_1``.
* Loss: ``(1/2N)‖Z − Y‖_F² + Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_H/2)‖H_1‖_F²`` (MSE) or the
  mean cross-entropy plus the same ridge terms.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

import numpy as np

ACTIVATIONS = ("linear", "relu", "softplus")
LOSSES = ("mse", "ce")


def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class UFMSpec:
    """A deep unconstrained feature model: data shape, architecture, loss, ridge.

    Args:
      num_classes: K >= 2.
      per_class: n >= 1 samples per class.
      depth: L >= 1 weight layers after the free features.
      width: d_l >= K, one int for every hidden layer or a tuple (d_1, ..., d_L).
      activation: ``"linear"``, ``"relu"`` or ``"softplus"``; applied after
        W_1..W_{L-1}, never to H_1 or to the output (``docs/theory.md`` §1).
      loss: ``"mse"`` or ``"ce"``.
      lambda_H: ridge on the free features, > 0.
      lambda_W: ridge on the weights, > 0, one float or a tuple (λ_{W_1}, ..., λ_{W_L}).
      relu_grad0: the derivative of ReLU at exactly 0, a value in [0, 1]. It matters at
        the collapsed optimum, whose non-negative features have exact zeros
        (``docs/theory.md`` §6): 1 reproduces the linear spectra, 0 is ``jax.nn.relu``'s.
      softplus_beta: sharpness β of ``softplus(βx)/β`` (→ ReLU as β → ∞), > 0.
    """

    num_classes: int = 4
    per_class: int = 5
    depth: int = 3
    width: int | tuple[int, ...] = 16
    activation: str = "linear"
    loss: str = "mse"
    lambda_H: float = 1e-3
    lambda_W: float | tuple[float, ...] = 1e-3
    relu_grad0: float = 0.0
    softplus_beta: float = 20.0

    def __post_init__(self):
        for name in ("num_classes", "per_class", "depth"):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

        widths = self._per_layer("width", self.width, _is_int, "int")
        object.__setattr__(self, "width", widths if isinstance(self.width, tuple) else int(self.width))
        for l, d in enumerate(widths, start=1):
            if d < self.num_classes:
                raise ValueError(
                    f"width must be >= num_classes={self.num_classes} at every layer "
                    f"(the collapsed means need K dimensions), got d_{l}={d}"
                )

        lambdas = self._per_layer("lambda_W", self.lambda_W, _is_real, "float")
        if isinstance(self.lambda_W, tuple):
            object.__setattr__(self, "lambda_W", tuple(float(x) for x in lambdas))
        else:
            object.__setattr__(self, "lambda_W", float(self.lambda_W))
        for l, lam in enumerate(lambdas, start=1):
            if not (lam > 0 and math.isfinite(lam)):
                raise ValueError(f"lambda_W must be finite and > 0 at every layer, got λ_W{l}={lam}")
        if not _is_real(self.lambda_H):
            raise TypeError(f"lambda_H must be a float, got {self.lambda_H!r}")
        if not (self.lambda_H > 0 and math.isfinite(self.lambda_H)):
            raise ValueError(f"lambda_H must be finite and > 0, got {self.lambda_H}")
        object.__setattr__(self, "lambda_H", float(self.lambda_H))

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (_is_real(self.relu_grad0) and 0.0 <= self.relu_grad0 <= 1.0):
            raise ValueError(f"relu_grad0 must be a number in [0, 1], got {self.relu_grad0!r}")
        if not (_is_real(self.softplus_beta) and self.softplus_beta > 0):
            raise ValueError(f"softplus_beta must be a number > 0, got {self.softplus_beta!r}")
        object.__setattr__(self, "relu_grad0", float(self.relu_grad0))
        object.__setattr__(self, "softplus_beta", float(self.softplus_beta))

    def _per_layer(self, name, value, is_type, type_name) -> tuple:
        if isinstance(value, (list, np.ndarray)):
            raise TypeError(f"{name} must be a {type_name} or a tuple of {type_name}s, got {type(value).__name__}")
        values = value if isinstance(value, tuple) else (value,) * self.depth
        if not all(is_type(v) for v in values):
            raise TypeError(f"{name} must be a {type_name} or a tuple of {type_name}s, got {value!r}")
        if len(values) != self.depth:
            raise ValueError(f"{name} as a tuple needs one entry per layer (depth={self.depth}), got {len(values)}")
        return tuple(values)

    # ---- derived quantities -------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """N = K n."""
        return self.num_classes * self.per_class

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_1, ..., d_L): the feature dimension entering each weight layer."""
        return self.width if isinstance(self.width, tuple) else (self.width,) * self.depth

    @property
    def lambdas(self) -> tuple[float, ...]:
        """(λ_{W_1}, ..., λ_{W_L})."""
        return self.lambda_W if isinstance(self.lambda_W, tuple) else (self.lambda_W,) * self.depth

    @property
    def weight_shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes of W_1..W_L: (d_{l+1}, d_l), with d_{L+1} = K."""
        outs = self.widths[1:] + (self.num_classes,)
        return tuple(zip(outs, self.widths, strict=True))

    @property
    def num_params(self) -> int:
        """Number of scalars in (H_1, W_1..W_L)."""
        return self.widths[0] * self.num_samples + sum(a * b for a, b in self.weight_shapes)

    @property
    def class_index(self) -> np.ndarray:
        """Class of every column, class-major: ``i // n`` (shape (N,))."""
        return np.repeat(np.arange(self.num_classes), self.per_class)

    @property
    def targets(self) -> np.ndarray:
        """One-hot targets Y = I_K ⊗ 1_nᵀ (K × N), float64."""
        return np.kron(np.eye(self.num_classes), np.ones((1, self.per_class)))

    def replace(self, **changes) -> UFMSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
