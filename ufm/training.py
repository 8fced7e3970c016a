"""Training a deep UFM to deep neural collapse with optax.

The default optimiser is full-batch gradient descent whose step is found by a line
search satisfying the (approximate) Wolfe conditions: a sufficient decrease plus a
curvature condition, so the iterates converge to a stationary point rather than
hovering at a fixed step's noise floor (see `gd_linesearch`). Any optax optimiser may
be passed instead.

The loop is `ufm.dynamics.record` (the package's one optimiser loop) with a checkpoint every
``log_every`` steps: one gradient evaluation per full-batch step (the line search's own, reused
through ``optax.value_and_grad_from_state``); it stops as soon as ``‖∇L‖₂ <= tol`` (gradient of
the total, regularised loss over all parameters; ``grad_tol``, checked every step inside the
compiled loop) and raises `TrainingDiverged` naming the step where the loss stops being finite.
Mini-batches are columns of ``H_1`` (`ufm.model.column_loss`, drawn by
`ufm.dynamics.minibatch_indices`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import collapse
from .model import UFMParams, check_params, column_loss, loss
from .results import result, to_jsonable
from .spec import UFMSpec

__all__ = ["TrainResult", "TrainingDiverged", "gd_linesearch", "train"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during training."""


@functools.cache
def gd_linesearch(max_linesearch_steps: int = 30) -> optax.GradientTransformationExtraArgs:
    """Full-batch gradient descent, step chosen by a zoom line search (strong Wolfe).

    The line search (``optax.scale_by_zoom_linesearch``) falls back to Hager–Zhang's
    approximate Wolfe conditions near the optimum, where the loss decrease drops below
    float64 resolution: plain Armijo backtracking stalls there (measured: ‖∇L‖ stuck at
    1.4e-9 on K=10, L=3), the approximate conditions keep converging.
    """
    return optax.chain(
        optax.sgd(learning_rate=1.0),
        optax.scale_by_zoom_linesearch(max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"),
    )


@result(static=("steps",))
class TrainResult:
    """Trained parameters and the history recorded every ``log_every`` steps.

    ``history`` maps ``"step"``, ``"loss"``, ``"grad_norm"`` to 1-d arrays and ``"nc1"`` to
    an array (records × (L + 1)) of NC1 at ``H̃_1..H̃_L`` and the output.
    """

    params: UFMParams
    history: dict
    converged: bool
    steps: int
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return to_jsonable(
            {"converged": self.converged, "steps": self.steps, "history": self.history, "messages": self.messages}
        )


@functools.cache
def _loss_of(spec: UFMSpec, full: bool):
    """The `record` loss of `train`: ``(params, columns) -> loss`` (full batch: the columns are ignored).

    Cached per (spec, full), so the compiled loop (keyed on this function) is reused by a second call."""
    return functools.partial(_full_loss, spec) if full else functools.partial(column_loss, spec)


def _full_loss(spec: UFMSpec, params: UFMParams, columns) -> jax.Array:
    return loss(spec, params)


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grad(spec, params):
    return jax.value_and_grad(loss, argnums=1)(spec, params)


@dataclasses.dataclass(frozen=True)
class _HistoryProbe:
    """The `record` probe of `train`: full-batch loss, ‖∇L‖ and NC1 at each record. In full-batch
    mode the value and gradient are read from a line search's state when it holds them at the
    current point (``optax.value_and_grad_from_state``: no extra evaluation)."""

    spec: UFMSpec
    full: bool
    callback: Callable | None

    def __call__(self, params, ctx) -> dict:
        value = grad = None
        if self.full:
            try:
                value, grad = optax.tree.get(ctx.opt_state, "value"), optax.tree.get(ctx.opt_state, "grad")
            except (KeyError, ValueError):
                value = grad = None
        if value is None or grad is None or not np.isfinite(float(value)):
            value, grad = _value_and_grad(self.spec, params)
        out = {"loss": float(value), "grad_norm": float(optax.tree.norm(grad))}
        out["nc1"] = collapse.metrics(self.spec, params).nc1
        if self.callback is not None:
            self.callback({"step": ctx.step, **out})
        return out


def train(
    spec: UFMSpec,
    params: UFMParams,
    *,
    steps: int = 100_000,
    optimizer: optax.GradientTransformation | None = None,
    tol: float | None = None,
    log_every: int = 500,
    batch_size: int | None = None,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Minimise the deep-UFM loss of ``spec`` from ``params``.

    Args:
      spec: the model.
      params: the starting point (not modified).
      steps: the most optimiser steps.
      optimizer: any optax transformation; default `gd_linesearch` (full batch).
      tol: stop once ‖∇L‖ <= tol; default 1e-9 in float64, 1e-4 in float32.
      log_every: steps between history records (and compiled chunks).
      batch_size: SGD on random column subsets of this size (the full gradient norm is
        then checked only at the records); ``None`` = full batch.
      seed: PRNG seed of the mini-batches.
      callback: called with each history record (a dict), e.g. for a progress bar.

    Raises:
      TrainingDiverged: the loss became NaN/inf; the message names the step.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=2, per_class=2, depth=1, width=2, lambda_H=1e-2, lambda_W=1e-2)
      >>> r = ufm.train(spec, ufm.init_params(spec, 0), steps=2_000)
      >>> r.converged, abs(float(ufm.model.loss(spec, r.params)) - ufm.theory.dnc_solution(spec).optimal_loss) < 1e-12
      (True, True)
    """
    check_params(spec, params)
    for name, value in (("steps", steps), ("log_every", log_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size <= spec.num_samples):
        raise ValueError(f"batch_size must be an int in [1, N={spec.num_samples}] or None, got {batch_size!r}")
    dtype = params.H1.dtype
    if tol is None:
        tol = 1e-9 if dtype == jnp.float64 else 1e-4
    from .dynamics._trajectory import record  # the one optimiser loop (lazy: keeps `import ufm` light)

    opt = optax.with_extra_args_support(optimizer if optimizer is not None else gd_linesearch())
    full = batch_size is None
    probe = _HistoryProbe(spec, full, callback)

    def stop(_, ctx):
        return ctx.probes["history"]["grad_norm"] <= tol

    traj = record(
        _loss_of(spec, full),
        params,
        opt,
        steps=steps,
        checkpoints=np.arange(0, steps, log_every),
        data=jnp.arange(spec.num_samples),
        batch_size=batch_size,
        seed=seed,
        probes={"history": probe},
        stop=stop,
        grad_tol=tol if full else None,
    )
    rows = traj.probes["history"]
    history = {
        "step": traj.steps,
        "loss": np.asarray([float(r["loss"]) for r in rows]),
        "grad_norm": np.asarray([float(r["grad_norm"]) for r in rows]),
        "nc1": np.stack([np.asarray(r["nc1"]) for r in rows]),
    }
    converged = float(rows[-1]["grad_norm"]) <= tol
    return TrainResult(params=traj.final_params, history=history, converged=bool(converged), steps=int(traj.steps[-1]))
