"""Real networks whose last layers are exactly a deep UFM head (``docs/theory.md`` §1).

A network is a backbone (an MLP or a small CNN) followed by an L-layer head of width d:

    H_1 = backbone(X)                      (d × N, features as columns, no activation)
    H̃_1 = H_1,  H_{l+1} = W_l H̃_l (+ b_l),  H̃_{l+1} = σ(H_{l+1})   (l = 1..L−1)
    Z = W_L H̃_L (+ b_L)                    (K × N, no activation)

so the head *is* the deep UFM of ``ufm.model`` with free features replaced by H_1: the
collapse metrics and the layer-wise theory apply to it unchanged. W_l is d × d for
l < L and W_L is K × d; head biases are optional (off by default: the theory is
bias-free). The backbone's last layer is affine without activation, so H_1 may take any
sign, like the UFM's free features.

Parameters are a plain pytree `NetworkParams(backbone, head, head_biases)`;
``jax.tree_util.tree_leaves`` lists the backbone leaves first, then ``W_1..W_L``, then the
head biases — `head_leaf_indices` gives the positions of ``W_1..W_L`` for the curvature
tools' ``leaves=`` argument.

Loss (`network_loss`), on a batch of B samples:

    (1/B) Σ_i ℓ(z_i, y_i)  +  Σ_θ (λ_W/2)‖θ‖²  +  (λ_H/2)(1/B) Σ_i ‖h_i‖²

with ℓ the MSE ½‖z − e_y‖² or cross-entropy (``ufm.model.output_loss``), the ridge over
*every* leaf (weights, kernels, biases; explicit L2 terms, not decoupled decay), and the
optional feature penalty on the columns h_i of H_1 averaged over samples. With the full
training set (B = N) this is the deep-UFM loss of ``docs/theory.md`` §1 with λ_{W_l} = λ_W and
λ_H^{UFM} = λ_H / N.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model import output_loss

__all__ = [
    "NetworkSpec",
    "NetworkParams",
    "init_network",
    "backbone_features",
    "head_features",
    "apply_head",
    "forward",
    "network_loss",
    "head_leaf_indices",
    "accuracy",
]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Architecture, loss and ridge of a real network with a deep-UFM head.

    Args:
      input_shape: one sample's shape: ``(p,)`` or ``(C, H, W)`` (the CNN needs images).
      num_classes: K >= 2.
      backbone: ``"mlp"`` or ``"cnn"``.
      hidden: MLP hidden widths (ReLU after each), then an affine map to d.
      channels: CNN channels; each stage is a 3 × 3 convolution with stride 2 and
        padding 1 (halving each side), then ReLU; then an affine map to d.
      width: head width d >= K (the dimension of H_1).
      depth: L >= 1 head layers.
      activation: head σ, ``"linear"`` or ``"relu"`` (``jax.nn.relu``, σ'(0) = 0).
      head_bias: biases in the head (the theory assumes none).
      loss: ``"mse"`` or ``"ce"``.
      lambda_W: ridge on every parameter, >= 0.
      lambda_H: penalty on the backbone features, >= 0 (see the module docstring).
    """

    input_shape: tuple[int, ...]
    num_classes: int = 10
    backbone: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (8, 16)
    width: int = 32
    depth: int = 3
    activation: str = "linear"
    head_bias: bool = False
    loss: str = "mse"
    lambda_W: float = 5e-4
    lambda_H: float = 0.0

    def __post_init__(self):
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {self.input_shape!r}")
        if self.backbone not in ("mlp", "cnn"):
            raise ValueError(f"backbone must be 'mlp' or 'cnn', got {self.backbone!r}")
        if self.backbone == "cnn" and len(shape) != 3:
            raise ValueError(f"the cnn backbone needs image inputs (C, H, W), got input_shape {shape}")
        if self.backbone == "cnn" and any(s % 2 ** len(self.channels) for s in shape[1:]):
            raise ValueError(f"image sides {shape[1:]} must be divisible by 2**len(channels)={2 ** len(self.channels)}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if not (isinstance(self.width, int) and self.width >= self.num_classes):
            raise ValueError(f"width must be an int >= num_classes={self.num_classes}, got {self.width!r}")
        if not (isinstance(self.depth, int) and self.depth >= 1):
            raise ValueError(f"depth must be an int >= 1, got {self.depth!r}")
        if any(h < 1 for h in (*self.hidden, *self.channels)):
            raise ValueError(f"hidden and channels must be positive, got {self.hidden}, {self.channels}")
        if self.activation not in ("linear", "relu"):
            raise ValueError(f"activation must be 'linear' or 'relu', got {self.activation!r}")
        if self.loss not in ("mse", "ce"):
            raise ValueError(f"loss must be 'mse' or 'ce', got {self.loss!r}")
        for name in ("lambda_W", "lambda_H"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{name} must be a float >= 0, got {value!r}")

    @property
    def head_shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes of W_1..W_L: (d, d) × (L−1), then (K, d)."""
        d = self.width
        return ((d, d),) * (self.depth - 1) + ((self.num_classes, d),)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class NetworkParams(NamedTuple):
    """``backbone``: tuple of ``(W, b)`` pairs (dense W is out × in, conv W is out × in × 3 × 3);
    ``head``: ``(W_1, ..., W_L)``; ``head_biases``: ``(b_1, ..., b_L)`` or ``()``."""

    backbone: tuple
    head: tuple
    head_biases: tuple


def _cnn_flat_size(spec: NetworkSpec) -> int:
    _, h, w = spec.input_shape
    f = 2 ** len(spec.channels)
    return spec.channels[-1] * (h // f) * (w // f)


def init_network(spec: NetworkSpec, seed: int = 0, *, dtype=None) -> NetworkParams:
    """Fan-in Gaussian initialisation: std √(2/fan_in) before a ReLU, √(1/fan_in) otherwise; zero biases.

    Drawn with ``numpy.random.default_rng(seed)`` in a fixed order (backbone, then head).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    rng = np.random.default_rng(seed)  # numpy: no compilation per shape, same draws on every backend

    def gauss(shape, fan_in, gain):
        return jnp.asarray(rng.standard_normal(shape) * np.sqrt(gain / fan_in), dtype)

    layers = []
    if spec.backbone == "mlp":
        sizes = (int(np.prod(spec.input_shape)), *spec.hidden)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers.append((gauss((b, a), a, 2.0), jnp.zeros(b, dtype)))
        layers.append((gauss((spec.width, sizes[-1]), sizes[-1], 1.0), jnp.zeros(spec.width, dtype)))
    else:
        chans = (spec.input_shape[0], *spec.channels)
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers.append((gauss((b, a, 3, 3), 9 * a, 2.0), jnp.zeros(b, dtype)))
        flat = _cnn_flat_size(spec)
        layers.append((gauss((spec.width, flat), flat, 1.0), jnp.zeros(spec.width, dtype)))
    gain = 2.0 if spec.activation == "relu" else 1.0
    head = tuple(gauss(s, s[1], gain if l < spec.depth - 1 else 1.0) for l, s in enumerate(spec.head_shapes))
    biases = tuple(jnp.zeros(s[0], dtype) for s in spec.head_shapes) if spec.head_bias else ()
    return NetworkParams(tuple(layers), head, biases)


def head_leaf_indices(spec: NetworkSpec) -> tuple[int, ...]:
    """Positions of ``W_1..W_L`` in ``jax.tree_util.tree_leaves(params)``."""
    num_backbone = 2 * (len(spec.hidden if spec.backbone == "mlp" else spec.channels) + 1)
    return tuple(range(num_backbone, num_backbone + spec.depth))


def backbone_features(spec: NetworkSpec, params: NetworkParams, X) -> Array:
    """H_1 = backbone(X): (d × N), features as columns. ``X`` is (N, *input_shape)."""
    X = jnp.asarray(X, dtype=params.head[0].dtype)
    if tuple(X.shape[1:]) != spec.input_shape:
        raise ValueError(f"X must have shape (N, *{spec.input_shape}), got {tuple(X.shape)}")
    *hidden, (Wo, bo) = params.backbone
    if spec.backbone == "mlp":
        h = X.reshape(X.shape[0], -1)
        for W, b in hidden:
            h = jax.nn.relu(h @ W.T + b)
    else:
        # stride 2 instead of stride 1 + pooling: ~8x cheaper on CPU, same output size; the
        # convolutions run channels-last (NHWC), 2.2x faster than NCHW on XLA:CPU (measured,
        # docs/real_networks.md §6), then flatten in (C, H, W) order as the parameters expect
        h = X.transpose(0, 2, 3, 1)
        for W, b in hidden:
            h = jax.lax.conv_general_dilated(
                h, W.transpose(2, 3, 1, 0), (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = jax.nn.relu(h + b)
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)
    return (h @ Wo.T + bo).T


def apply_head(weights, biases, activation: str, H1) -> tuple[Array, ...]:
    """``(H̃_1, ..., H̃_L, Z)`` of the head ``W_1..W_L`` (biases ``b_1..b_L`` or ``()``, σ =
    ``"linear"`` or ``"relu"`` = ``jax.nn.relu``) applied to features ``H1`` (d × N)."""
    sigma = jax.nn.relu if activation == "relu" else (lambda x: x)
    biases = tuple(biases) or (None,) * len(weights)
    out = [H1]
    for l, (W, b) in enumerate(zip(weights, biases, strict=True)):
        H = W @ out[-1] if b is None else W @ out[-1] + b[:, None]
        out.append(H if l == len(weights) - 1 else sigma(H))
    return tuple(out)


def head_features(spec: NetworkSpec, params: NetworkParams, H1) -> tuple[Array, ...]:
    """``(H̃_1, ..., H̃_L, Z)`` of the head applied to features ``H1`` (d × N)."""
    return apply_head(params.head, params.head_biases, spec.activation, H1)


def forward(spec: NetworkSpec, params: NetworkParams, X) -> Array:
    """Logits / outputs Z (K × N)."""
    return head_features(spec, params, backbone_features(spec, params, X))[-1]


def network_loss(spec: NetworkSpec, params: NetworkParams, X, labels, *, regularized: bool = True) -> Array:
    """Mean data term on (X, labels), plus the ridge terms when ``regularized`` (module docstring)."""
    H1 = backbone_features(spec, params, X)
    Z = head_features(spec, params, H1)[-1]
    value = output_loss(spec.loss, Z, jnp.asarray(labels))
    if regularized:
        value = value + 0.5 * spec.lambda_W * sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))
        if spec.lambda_H:
            value = value + 0.5 * spec.lambda_H * jnp.sum(H1**2) / H1.shape[1]
    return value


def accuracy(spec: NetworkSpec, params: NetworkParams, X, labels) -> float:
    """Fraction of samples whose largest output is the label."""
    return float(jnp.mean(jnp.argmax(forward(spec, params, X), axis=0) == jnp.asarray(labels)))
