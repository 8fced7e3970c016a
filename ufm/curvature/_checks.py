"""Input rules and failure messages shared by every curvature route (issue 21 item 4).

* `check_count`: an argument that counts something (``k``, ``num_samples``, ...) must be a
  Python or NumPy integer (``bool`` is not), at least ``low`` and, where given, at most
  ``high`` (``k <= P``); one `TypeError` / `ValueError` that names the argument.
* `NonFiniteError` (a `FloatingPointError` and a `ValueError`): a loss, gradient or product
  that is NaN or infinite. Routes detect it from what they already hold (one finiteness
  check of the result, or of the Krylov coefficients per block: no extra product) and only
  then, on the error path, `describe_nonfinite` evaluates the loss and gradient once to say
  where the NaN came from (which leaves of the parameters / gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "NonFiniteError",
    "check_count",
    "check_finite_array",
    "describe_nonfinite",
    "nonfinite_error",
    "raise_nonfinite",
]


class NonFiniteError(FloatingPointError, ValueError):
    """A loss, gradient or curvature product is NaN or infinite (the message says where)."""


def check_count(name: str, value, low: int = 1, high: int | None = None, what: str = "") -> int:
    """``int(value)`` if it is an integer in ``[low, high]``; else a TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int (a positive integer; bool is not), got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {what or 'the dimension'} {high}, got {value}")
    return int(value)


def check_finite_array(name: str, value) -> np.ndarray:
    """``np.asarray(value)``, refused with a `NonFiniteError` naming ``name`` if it holds NaN / inf."""
    a = np.asarray(value)
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} holds {_count(a)} (of {a.size} entries)")
    return a


def _count(a) -> str:
    a = np.asarray(a)
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    return " and ".join(s for s in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if s)


def _bad_leaves(view, flat) -> list[int]:
    """Indices (into ``tree_leaves(params)``) of the chosen leaves whose piece of ``flat`` is not finite."""
    flat, out, start = np.asarray(flat), [], 0
    for i, shape in zip(view.indices, view.shapes, strict=True):
        size = int(np.prod(shape))
        if not np.all(np.isfinite(flat[start : start + size])):
            out.append(i)
        start += size
    return out


def describe_nonfinite(op) -> str:
    """Where a non-finite product of ``op`` comes from, as far as the operator can tell (error path only).

    For operators built from a loss (`hessian_operator` / `ggn_operator` / `residual_operator`,
    with or without ``data=``): the chosen leaves whose parameters hold NaN / inf, the loss
    value (closed-over Hessian losses) and the chosen leaves whose gradient is not finite.
    """
    from .hvp import _DataMake, _GradMake, _HessianMake

    make, args = op.make, op.args
    view = getattr(make, "view", None)
    if view is None:  # Operator.from_matvec: nothing more to say
        return "the operator's product (Operator.from_matvec) is not finite"
    all_leaves = args[0] if isinstance(make, _DataMake) else args
    parts = []
    bad = [i for i in view.indices if not bool(jnp.all(jnp.isfinite(jnp.asarray(all_leaves[i]))))]
    if bad:
        parts.append(f"params hold NaN / inf in leaves {bad}")
    try:
        if isinstance(make, _HessianMake):
            x0 = view.flatten(all_leaves)
            value, grad = jax.value_and_grad(lambda x: make.loss_fn(view.unflatten(all_leaves, x)))(x0)
            if not np.isfinite(float(value)):
                parts.append(f"the loss is {float(value)}")
        elif isinstance(make, _DataMake) and make.kind == "hessian":
            grad = _GradMake(make.fns[0], view, make.spec)(args)
        else:
            grad = None
    except Exception as err:  # diagnosis must not hide the original failure
        parts.append(f"(evaluating the loss for the diagnosis failed: {type(err).__name__})")
        grad = None
    if grad is not None:
        leaves = _bad_leaves(view, grad)
        if leaves:
            parts.append(f"the gradient is not finite in leaves {leaves}")
        else:
            parts.append("the gradient is finite (the second derivative is not)")
    return "; ".join(parts) if parts else "params, loss and gradient look finite"


def nonfinite_error(route: str, op, what: str, leaves=None, detail: str | None = None) -> NonFiniteError:
    """The `NonFiniteError` of ``route`` (e.g. ``"top_eigenpairs"``) for operator ``op``.

    ``detail`` (default: `describe_nonfinite`) is kept on the error, so that a route that
    calls another (``spectrum`` → ``top_eigenpairs``) re-raises it under its own name.
    """
    detail = describe_nonfinite(op) if detail is None else detail
    where = "all leaves" if leaves is None else f"leaves={list(leaves)}"
    err = NonFiniteError(
        f"{route}: {what} is NaN or infinite (over {where}, P={op.dim}): {detail}. "
        "Check the loss and the parameters at this point (a diverged run, log(0), an overflow in float32)"
    )
    err.what, err.detail = what, detail
    return err


def raise_nonfinite(route: str, op, what: str, leaves=None):
    """Raise `nonfinite_error` (a `NonFiniteError` naming ``route``, ``what`` and ``leaves``)."""
    raise nonfinite_error(route, op, what, leaves)
