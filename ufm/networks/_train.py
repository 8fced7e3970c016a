"""Training a real network past interpolation with optax, resumable from npz checkpoints.

The loss is `network_loss` (explicit L2 terms on every parameter, so the ridge is part of
the objective whose Hessian the analysis measures — not optax's decoupled decay). The loop
is `ufm.dynamics.record` (the package's one optimiser loop; its ``.npz`` is the checkpoint
format), ``log_every`` steps per compiled segment. Mini-batch ``i`` is the random subset
``ufm.dynamics.minibatch_indices(fold_in(PRNGKey(seed), i), N, B)``: it depends on the step
only, so a run resumed from a checkpoint replays the uninterrupted one.

Stopping: after ``steps`` steps, or earlier once the training accuracy is 100 % and the
full-batch loss changed by less than ``plateau_rtol`` (relative) between two records.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..results import result, to_jsonable
from ._data import Dataset
from ._models import NetworkParams, NetworkSpec, forward, network_loss

__all__ = [
    "NetworkTrainResult",
    "make_optimizer",
    "train_network",
    "train_snapshots",
]


@result(static=("steps", "interpolation_step", "plateaued", "seconds"))
class NetworkTrainResult:
    """Trained parameters, the history recorded every ``log_every`` steps, and the outcome.

    ``history`` maps ``step``, ``loss`` (regularised, full batch), ``data_loss`` and
    ``train_accuracy`` to 1-d arrays. ``interpolation_step`` is the first recorded step
    with 100 % training accuracy (``None`` if never); ``plateaued`` says whether the run
    stopped on the plateau rule. ``converged`` / ``messages``: the result protocol
    (`ufm.results`); a run of a fixed step budget (or to its plateau) is a finished run.
    """

    params: NetworkParams
    history: dict
    steps: int
    interpolation_step: int | None
    plateaued: bool
    seconds: float
    converged: bool = True
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "steps": self.steps,
                "interpolation_step": self.interpolation_step,
                "plateaued": self.plateaued,
                "seconds": self.seconds,
                "history": self.history,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


def make_optimizer(
    name: str = "sgd", learning_rate: float = 0.05, momentum: float = 0.9, warmup_steps: int = 0
) -> optax.GradientTransformation:
    """``"sgd"`` (heavy-ball momentum) or ``"adam"``, the rate ramped linearly from 0 over
    ``warmup_steps``; weight decay lives in the loss, not here."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    rate = optax.warmup_constant_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else learning_rate
    if name == "sgd":
        return optax.sgd(rate, momentum=momentum)
    if name == "adam":
        return optax.adam(rate)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or an optax.GradientTransformation, got {name!r}")


# ---- training ----------------------------------------------------------------------------
def _loss_on_batch(spec: NetworkSpec, params, batch):
    X, y = batch
    return network_loss(spec, params, X, y)


@functools.cache
def _loss_of(spec: NetworkSpec):
    """``(params, (X, y)) -> network_loss`` (cached: `record`'s compiled loop is keyed on it)."""
    return functools.partial(_loss_on_batch, spec)


@functools.cache
def _evaluator(spec: NetworkSpec):
    def evaluate(p, X, y):
        Z = forward(spec, p, X)
        data_term = network_loss(spec, p, X, y, regularized=False)
        return network_loss(spec, p, X, y), data_term, jnp.mean(jnp.argmax(Z, axis=0) == y)

    return jax.jit(evaluate)


class _HistoryProbe:
    """The `record` probe of `train_network`: the full-batch loss, data loss and training accuracy at
    each record, whether the plateau rule holds, and the parameters at the ``snapshots`` steps."""

    def __init__(self, spec, X, y, plateau_rtol, callback, snapshots=()):
        self.spec, self.X, self.y = spec, X, y
        self.plateau_rtol, self.callback = plateau_rtol, callback
        self.snapshots, self.saved = set(snapshots), {}

    def __call__(self, params, ctx) -> dict:
        value, data_term, acc = (float(v) for v in _evaluator(self.spec)(params, self.X, self.y))
        record = {"step": ctx.step, "loss": value, "data_loss": data_term, "train_accuracy": acc}
        plateaued = False
        if self.plateau_rtol is not None and ctx.previous is not None and acc == 1.0:
            prev = float(ctx.previous["loss"])
            plateaued = abs(value - prev) <= self.plateau_rtol * abs(prev)
        if ctx.step in self.snapshots:
            self.saved[ctx.step] = params
        if self.callback is not None:
            self.callback(record)
        return {"loss": value, "data_loss": data_term, "train_accuracy": acc, "plateaued": plateaued}


def _grid(marks, log_every):
    """Record steps: every ``log_every`` steps from each mark to the next (as one resumed run per mark)."""
    out, start = [], 0
    for m in marks:
        out.extend(range(start, m, log_every))
        start = m
    return np.asarray(sorted(set(out) | set(marks)), dtype=np.int64)


def _check(spec, data, steps, log_every, batch_size):
    if tuple(data.input_shape) != spec.input_shape or data.num_classes != spec.num_classes:
        raise ValueError(
            f"data (input {data.input_shape}, K={data.num_classes}) does not fit spec "
            f"(input {spec.input_shape}, K={spec.num_classes})"
        )
    for name, value in (("steps", steps), ("log_every", log_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    N = data.num_samples
    if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size <= N):
        raise ValueError(f"batch_size must be an int in [1, N={N}] or None, got {batch_size!r}")


def _run(
    spec,
    params,
    data,
    marks,
    *,
    optimizer,
    learning_rate,
    warmup_steps,
    batch_size,
    seed,
    log_every,
    plateau_rtol,
    checkpoint,
    callback,
):
    """One `record` run through the record steps of ``marks``: ``(trajectory, probe, seconds)``."""
    from ..dynamics._trajectory import record  # the one optimiser loop

    opt = (
        make_optimizer(optimizer, learning_rate, warmup_steps=warmup_steps) if isinstance(optimizer, str) else optimizer
    )
    dtype = params.head[0].dtype
    X, y = jnp.asarray(data.X, dtype), jnp.asarray(data.labels)
    probe = _HistoryProbe(spec, X, y, plateau_rtol, callback, snapshots=marks)

    def stop(_, ctx):
        return bool(ctx.probes["history"]["plateaued"])

    t0 = time.perf_counter()
    traj = record(
        _loss_of(spec),
        params,
        opt,
        steps=int(marks[-1]),
        checkpoints=_grid(marks, log_every),
        data=(X, y),
        batch_size=batch_size,
        seed=seed,
        probes={"history": probe},
        stop=stop,
        path=None if checkpoint is None else os.fspath(checkpoint),
    )
    return traj, probe, time.perf_counter() - t0


def _result(traj, upto: int, seconds: float) -> NetworkTrainResult:
    rows = [(s, r) for s, r in zip(traj.steps.tolist(), traj.probes["history"], strict=True) if s <= upto]
    history = {
        "step": np.asarray([s for s, _ in rows], dtype=np.int64),
        **{k: np.asarray([float(r[k]) for _, r in rows]) for k in ("loss", "data_loss", "train_accuracy")},
    }
    hit = np.flatnonzero(history["train_accuracy"] == 1.0)
    return NetworkTrainResult(
        params=None,
        history=history,
        steps=int(history["step"][-1]),
        interpolation_step=int(history["step"][hit[0]]) if hit.size else None,
        plateaued=bool(rows[-1][1]["plateaued"]),
        seconds=seconds,
    )


def train_network(
    spec: NetworkSpec,
    params: NetworkParams,
    data: Dataset,
    *,
    steps: int = 2000,
    optimizer: str | optax.GradientTransformation = "sgd",
    learning_rate: float = 0.05,
    warmup_steps: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    log_every: int = 100,
    plateau_rtol: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    callback: Callable[[dict], None] | None = None,
) -> NetworkTrainResult:
    """Minimise `network_loss` on ``data`` from ``params`` (by `ufm.dynamics.record`, the one loop).

    Args:
      spec, params: the model and its starting point (not modified).
      data: the training set (balanced and class-major for the analysis, not required here).
      steps: total optimiser steps.
      optimizer: ``"sgd"`` (momentum 0.9), ``"adam"`` or any optax transformation.
      learning_rate, warmup_steps: for the named optimisers (linear warm-up from 0).
      batch_size: mini-batch size, ``None`` = full batch.
      seed: PRNG seed of the mini-batches.
      log_every: steps per jitted chunk and between history records / checkpoints.
      plateau_rtol: stop once 100 % train accuracy is reached and the loss changed by
        less than this (relative) since the previous record; ``None`` = run all steps.
      checkpoint: an ``.npz`` path (`record`'s format); resumed from if it exists (with the same
        settings, else a ValueError names what differs), rewritten at every record.
      callback: called with each record (a dict) — e.g. a progress bar; nothing is printed.

    Raises:
      TrainingDiverged: (a ``FloatingPointError``) naming the step where the loss stopped being finite.
    """
    _check(spec, data, steps, log_every, batch_size)
    traj, _, seconds = _run(
        spec,
        params,
        data,
        [steps],
        optimizer=optimizer,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        batch_size=batch_size,
        seed=seed,
        log_every=log_every,
        plateau_rtol=plateau_rtol,
        checkpoint=checkpoint,
        callback=callback,
    )
    return dataclasses.replace(_result(traj, steps, seconds), params=traj.final_params)


def train_snapshots(spec: NetworkSpec, params: NetworkParams, data: Dataset, marks, **kwargs):
    """`train_network` once, yielding ``(step, NetworkTrainResult)`` at each step of ``marks``.

    One `record` run of ``max(marks)`` steps whose records fall every ``log_every`` steps from each mark
    to the next; the parameters at each mark are kept, so each result equals ``train_network(steps=mark)``
    (after a plateau stop, the later marks get the last state). ``kwargs`` go to `train_network`
    (``steps`` and ``checkpoint`` are set here).
    """
    marks = sorted({int(m) for m in marks})
    if not marks or marks[0] < 1:
        raise ValueError(f"marks must be positive step counts, got {marks}")
    opts = {
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "warmup_steps": 0,
        "batch_size": None,
        "seed": 0,
        "log_every": 100,
        "plateau_rtol": None,
        "callback": None,
    } | kwargs
    _check(spec, data, marks[-1], opts["log_every"], opts["batch_size"])
    traj, probe, seconds = _run(spec, params, data, marks, checkpoint=None, **opts)
    for m in marks:
        res = _result(traj, m, seconds)
        yield m, dataclasses.replace(res, params=probe.saved.get(res.steps, traj.final_params))
