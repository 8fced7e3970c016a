"""A network's head saved from any framework: the ``.npz`` format that ``ufm analyze`` reads.

Keys (``README.md`` "Analyse your own network"; ``docs/real_networks.md`` §7):

* ``H1``: the head's input features, (N, d) — one row per sample, as a framework exports
  them — or (d, N); which one is read off ``labels`` (N entries) and ``W1`` (d columns).
  When N = d add ``layout = "N,d"`` or ``"d,N"``.
* ``labels``: (N,) integer classes 0..K−1, every class present.
* ``W1``..``WL``: the head's weights, each d_out × d_in (``torch.nn.Linear.weight``), W_L with K rows.
* ``b1``..``bL``: optional biases, all or none.
* ``activation``: ``"linear"`` or ``"relu"`` (between the head layers); ``loss``: ``"mse"`` or ``"ce"``.
* ``H2``..``HL``: optional features of the later head layers (inputs of W_2..W_L, after the
  activation, same layout as ``H1``): checked against the weights' own forward pass.
* ``step``: optional integer, the training step of a checkpoint (labels it in a series,
  ``ufm analyze A.npz B.npz ...``; `load_step`).

Anything else is an error (a misspelt key would otherwise be ignored silently).
"""

from __future__ import annotations

import re
import zipfile

import numpy as np

from ._models import apply_head

__all__ = ["load_features", "load_step"]

_KEY = re.compile(r"^([WbH])([1-9][0-9]*)$")


def _string(f, key, choices) -> str:
    if key not in f:
        raise ValueError(f"missing key {key!r} (one of {', '.join(choices)})")
    value = f[key]
    if value.ndim != 0 or value.dtype.kind not in "US":
        raise ValueError(f"{key!r} must be a string, one of {', '.join(choices)}; got {value.dtype} {value.shape}")
    text = str(value.item() if value.dtype.kind == "U" else value.item().decode())
    if text not in choices:
        raise ValueError(f"{key!r} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _float_array(f, key) -> np.ndarray:
    a = f[key]
    if a.dtype.kind not in "fiu" or a.dtype == bool:
        raise ValueError(f"{key!r} must be a numeric array, got dtype {a.dtype}")
    a = np.asarray(a, np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{key!r} has {int(np.sum(~np.isfinite(a)))} NaN or infinite entries")
    return a


def _columns(key, H, N, d, layout) -> np.ndarray:
    """``H`` as (d × N) from (N, d) or (d, N)."""
    if H.ndim != 2:
        raise ValueError(f"{key!r} must be 2-d, (N, d) or (d, N), got shape {H.shape}")
    if layout is None and H.shape == (N, d) and N == d:
        raise ValueError(f"{key!r} is {N} × {d} with N = d: add layout = 'N,d' or 'd,N' to say which")
    if layout == "d,N" or (layout is None and H.shape == (d, N)):
        if H.shape != (d, N):
            raise ValueError(f"{key!r} must be (d={d}, N={N}) with layout 'd,N', got shape {H.shape}")
        return H
    if H.shape != (N, d):
        raise ValueError(
            f"{key!r} must be (N={N}, d={d}) or (d, N) (N from labels, d from the weights), got shape {H.shape}"
        )
    return H.T


def _step(f) -> int:
    s = f["step"]
    if s.ndim != 0 or s.dtype.kind not in "iu":
        raise ValueError(f"'step' must be a scalar integer (the training step), got dtype {s.dtype} shape {s.shape}")
    return int(s)


def load_step(path) -> int | None:
    """The optional ``step`` of a saved head (a checkpoint's training step), or ``None``."""
    with np.load(path, allow_pickle=False) as f:
        return _step(f) if "step" in f.files else None


def load_features(path, *, rtol: float = 1e-4) -> dict:
    """Read and check a saved head (module docstring); returns the keyword arguments of
    `analyze_features`: ``H1`` (d × N), ``labels``, ``weights``, ``biases``, ``activation``, ``loss``.

    ``rtol``: how closely saved ``H2..HL`` must match the forward pass (relative to their max; float32
    exports agree to ~1e-6). Raises ValueError with one line naming the key and the rule.
    """
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e})") from None
    with f:
        keys = set(f.files)
        numbered = {}
        for k in keys:
            m = _KEY.match(k)
            if m:
                numbered.setdefault(m.group(1), {})[int(m.group(2))] = k
        unknown = (
            keys
            - {"labels", "activation", "loss", "layout", "step"}
            - {k for d in numbered.values() for k in d.values()}
        )
        if unknown:
            raise ValueError(
                f"unknown key(s) {sorted(unknown)}; expected H1, labels, W1..WL, b1..bL, H2..HL, "
                "activation, loss, layout, step"
            )
        if "step" in keys:
            _step(f)
        for key in ("H1", "labels", "W1"):
            if key not in keys:
                raise ValueError(f"missing key {key!r}")
        Ws = numbered.get("W", {})
        L = max(Ws)
        if sorted(Ws) != list(range(1, L + 1)):
            raise ValueError(f"weights must be W1..W{L} without gaps, got {sorted(Ws)}")
        weights = [_float_array(f, f"W{l}") for l in range(1, L + 1)]
        for l, W in enumerate(weights, start=1):
            if W.ndim != 2:
                raise ValueError(f"'W{l}' must be 2-d (d_out × d_in), got shape {W.shape}")
            if l > 1 and W.shape[1] != weights[l - 2].shape[0]:
                raise ValueError(
                    f"'W{l}' has {W.shape[1]} columns but 'W{l - 1}' has {weights[l - 2].shape[0]} rows "
                    "(each W is d_out × d_in, as nn.Linear.weight)"
                )
        bs = numbered.get("b", {})
        if bs and sorted(bs) != list(range(1, L + 1)):
            raise ValueError(f"biases must be b1..b{L} (all or none), got {sorted(bs)}")
        biases = [_float_array(f, f"b{l}") for l in sorted(bs)]
        for l, (b, W) in enumerate(zip(biases, weights if biases else [], strict=True), start=1):  # no biases: none
            if b.shape != (W.shape[0],):
                raise ValueError(f"'b{l}' must have shape ({W.shape[0]},), got {b.shape}")
        y = f["labels"]
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"'labels' must be a 1-d integer array, got dtype {y.dtype} shape {y.shape}")
        K = weights[-1].shape[0]
        if y.size == 0 or y.min() < 0 or y.max() >= K:
            raise ValueError(
                f"'labels' must lie in 0..{K - 1} (W{L} has K={K} rows), got range "
                f"[{y.min() if y.size else '-'}, {y.max() if y.size else '-'}]"
            )
        if np.unique(y).size != K:
            raise ValueError(f"every class 0..{K - 1} needs a sample; 'labels' has {np.unique(y).size} distinct values")
        layout = _string(f, "layout", ("N,d", "d,N")) if "layout" in keys else None
        N, d = y.size, weights[0].shape[1]
        H1 = _columns("H1", _float_array(f, "H1"), N, d, layout)
        activation = _string(f, "activation", ("linear", "relu"))
        loss = _string(f, "loss", ("mse", "ce"))
        saved = numbered.get("H", {})
        if any(l > L for l in saved):
            raise ValueError(f"features H2..H{L} at most (inputs of W2..W{L}), got {sorted(saved)}")
        if saved:
            feats = [np.asarray(x) for x in apply_head(weights, biases, activation, H1)]
            for l in sorted(saved):
                if l == 1:
                    continue
                H = _columns(f"H{l}", _float_array(f, f"H{l}"), N, weights[l - 1].shape[1], layout)
                err = np.abs(H - feats[l - 1]).max() / max(np.abs(feats[l - 1]).max(), 1e-300)
                if err > rtol:
                    raise ValueError(
                        f"'H{l}' does not match the forward pass of W1..W{l - 1} with activation "
                        f"{activation!r} (relative difference {err:.2g} > {rtol:g}): check the "
                        "weights' orientation (d_out × d_in), the activation, and the biases"
                    )
    return {
        "H1": H1,
        "labels": np.asarray(y, np.int64),
        "weights": weights,
        "biases": biases,
        "activation": activation,
        "loss": loss,
    }
