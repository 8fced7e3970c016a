"""The head of a real network as a deep UFM: the adaptor and its validation.

The head — the last L linear layers ``u = W_l h̃_l (+ b_l)`` with σ between them — on fixed
features H_1 (the backbone's output, d × N, samples as columns, sorted class-major) is the
deep UFM of ``docs/theory.md`` §1 (``docs/real_networks.md`` §1). `_Head` carries it in
float64 with the function whose Hessian is measured; `head_as_ufm` describes a bias-free head
as a `ufm.UFMSpec` / `ufm.UFMParams`; `_check_head` validates a head given as arrays (one
place, ValueErrors naming the argument); `_nc` / `_layer_nc1` are its collapse metrics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..collapse import CollapseMetrics, nc_metrics
from ..model import UFMParams, output_loss
from ..spec import UFMSpec
from ._measure import _as_f64
from ._models import NetworkParams, NetworkSpec, apply_head

__all__ = ["head_as_ufm"]


def _class_major(H1, labels):
    """Columns sorted by class (stable) and the per-class count; raises unless balanced."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    if counts.size < 2 or np.any(counts != counts[0]):
        raise ValueError(f"the collapsed-point theory needs balanced classes, class counts {counts.tolist()}")
    return np.asarray(H1, np.float64)[:, order], labels[order], int(counts[0])


def head_as_ufm(weights, H1, labels, *, activation: str = "linear", loss: str = "mse") -> tuple[UFMSpec, UFMParams]:
    """The bias-free head ``W_1..W_L`` on features ``H1`` (d × N) as a deep UFM.

    Returns ``(UFMSpec, UFMParams)`` with ``H1``'s columns sorted class-major (balanced
    classes required) and ``relu_grad0 = 0`` (``jax.nn.relu``). The ridge constants of the
    spec are placeholders (1.0): only the data Hessian is taken from it.
    """
    H, y, n = _class_major(H1, labels)
    Ws = tuple(np.asarray(W, np.float64) for W in weights)
    K = Ws[-1].shape[0]
    if y.max() + 1 != K:
        raise ValueError(f"the last weight has {K} rows but the labels have {y.max() + 1} classes")
    spec = UFMSpec(
        num_classes=K,
        per_class=n,
        depth=len(Ws),
        width=tuple(W.shape[1] for W in Ws),
        activation=activation,
        loss=loss,
        lambda_H=1.0,
        lambda_W=1.0,
        relu_grad0=0.0,
    )
    return spec, UFMParams(jnp.asarray(H), tuple(jnp.asarray(W) for W in Ws))


class _Head:
    """A head ``(weights, biases, activation, loss)`` on fixed features, plus the function whose
    Hessian is measured: ``loss_fn(arrays)`` with ``arrays[w_leaves[l-1]] = W_l`` (by default ufm's
    own forward pass; `analyze_model` passes the user's)."""

    def __init__(self, weights, biases, activation, loss, H1, labels, loss_fn=None, arrays=None, w_leaves=None):
        self.weights = tuple(jnp.asarray(W, jnp.float64) for W in weights)
        self.biases = tuple(jnp.asarray(b, jnp.float64) for b in biases)
        self.activation, self.loss = activation, loss
        self.H1 = jnp.asarray(H1, jnp.float64)
        self.labels = np.asarray(labels)
        self.K = int(self.weights[-1].shape[0])
        self.L = len(self.weights)
        if loss_fn is None:
            L, y = self.L, jnp.asarray(self.labels)
            loss_fn = lambda a: output_loss(loss, apply_head(a[:L], a[L:], activation, self.H1)[-1], y)  # noqa: E731
            arrays, w_leaves = (*self.weights, *self.biases), tuple(range(self.L))
        self.loss_fn, self.arrays, self.w_leaves = loss_fn, tuple(arrays), tuple(w_leaves)
        self.features = tuple(np.asarray(f) for f in apply_head(self.weights, self.biases, activation, self.H1))

    def curvatures(self, layer: int, U, labels) -> np.ndarray:
        """``C = ∇²_u ℓ(tail(u), y)`` (m × d_out × d_out) at pre-activations ``U`` (d_out × m) of
        layer ``layer``'s output, by autodiff of the head's own tail (σ'' = 0 for ReLU)."""
        sigma = jax.nn.relu if self.activation == "relu" else (lambda x: x)
        rest_W, rest_b = self.weights[layer:], (self.biases[layer:] if self.biases else (None,) * (self.L - layer))

        def ell(u, y):
            z = u
            for W, b in zip(rest_W, rest_b, strict=True):
                z = W @ sigma(z) + (0.0 if b is None else b)
            return output_loss(self.loss, z[:, None], y[None])

        # one compiled program (eager vmap-of-hessian compiles every primitive on its own: 20x slower)
        return np.asarray(jax.jit(jax.vmap(jax.hessian(ell)))(jnp.asarray(U, jnp.float64).T, jnp.asarray(labels)))

    def preactivations(self, layer: int, H) -> np.ndarray:
        u = np.asarray(self.weights[layer - 1]) @ np.asarray(H)
        return u + np.asarray(self.biases[layer - 1])[:, None] if self.biases else u


def _builtin_head(spec: NetworkSpec, params: NetworkParams, H1, labels) -> _Head:
    params = _as_f64(params)
    return _Head(params.head, params.head_biases, spec.activation, spec.loss, H1, labels)


def _layer_nc1(head: _Head, nc: CollapseMetrics | None = None) -> np.ndarray:
    nc = _nc(head) if nc is None else nc
    return np.asarray(nc.nc1_uncentred if head.loss == "mse" else nc.nc1)


def _nc(head: _Head) -> CollapseMetrics:
    preds = head.features[-1].argmax(axis=0)
    return nc_metrics(
        list(head.features),
        head.labels,
        weights=[*head.weights, None],
        predictions=preds,
        geometry="etf" if head.loss == "ce" else "of",
    )


def _check_head(weights, biases, activation, loss, H1, labels):
    if activation not in ("linear", "relu"):
        raise ValueError(f"activation must be 'linear' or 'relu', got {activation!r}")
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    if not weights:
        raise ValueError("the head needs at least one weight W1")
    d = H1.shape[0]
    for l, W in enumerate(weights, start=1):
        if np.ndim(W) != 2 or np.shape(W)[1] != d:
            raise ValueError(f"W{l} must be (d_out, {d}) (d_out × d_in, as nn.Linear.weight), got shape {np.shape(W)}")
        d = np.shape(W)[0]
        if not np.all(np.isfinite(W)):
            raise ValueError(f"W{l} has non-finite entries")
    if biases and (
        len(biases) != len(weights)
        or any(np.shape(b) != (np.shape(W)[0],) for b, W in zip(biases, weights, strict=True))
    ):
        raise ValueError(f"biases must be one (d_out,) vector per weight, got shapes {[np.shape(b) for b in biases]}")
    K = np.shape(weights[-1])[0]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size != H1.shape[1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {H1.shape[1]} integers, got dtype {labels.dtype} shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= K or np.unique(labels).size != K:
        raise ValueError(
            f"labels must cover 0..{K - 1} (the last weight has K={K} rows), got values in "
            f"[{labels.min()}, {labels.max()}] with {np.unique(labels).size} distinct"
        )
    if not np.all(np.isfinite(H1)):
        raise ValueError("H1 has non-finite entries")


def _balanced(H1, labels):
    """The first min-count samples of each class (file order), class-major; and whether any were dropped."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    n = int(counts.min())
    keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(counts.size)])
    return H1[:, keep], labels[keep], keep.size < labels.size


def _array_leaves(tree):
    """``(arrays, rebuild)``: the floating-point array leaves of ``tree`` and the map back (other
    leaves, e.g. an Equinox module's activation function, stay as they are)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_arr = [hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]

    def rebuild(arrays):
        it = iter(arrays)
        return jax.tree_util.tree_unflatten(
            treedef, [next(it) if a else x for x, a in zip(leaves, is_arr, strict=True)]
        )

    return tuple(jnp.asarray(x, jnp.float64) for x, a in zip(leaves, is_arr, strict=True) if a), rebuild
