"""Training a real network past interpolation with optax, resumable from npz checkpoints.

The loss is `network_loss` (explicit L2 terms on every parameter, so the ridge is part of
the objective whose Hessian the analysis measures — not optax's decoupled decay). Steps
run ``log_every`` at a time inside one jitted ``lax.fori_loop``. Mini-batch ``i`` is the
random subset ``choice(fold_in(PRNGKey(seed), i), N, B, replace=False)``: it depends on
the step only, so a run resumed from a checkpoint replays the uninterrupted one.

Stopping: after ``steps`` steps, or earlier once the training accuracy is 100 % and the
full-batch loss changed by less than ``plateau_rtol`` (relative) between two records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

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
    "save_checkpoint",
    "load_checkpoint",
]

_HISTORY_KEYS = ("step", "loss", "data_loss", "train_accuracy")


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


# ---- checkpoints ----------------------------------------------------------------------
def save_checkpoint(path, params, opt_state, step: int, history: dict) -> None:
    """Write params, optimiser state, step and history to one ``.npz`` (atomically)."""
    path = Path(path)
    arrays = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(params))}
    arrays |= {f"s{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(opt_state))}
    arrays |= {f"h_{k}": np.asarray(history[k]) for k in _HISTORY_KEYS}
    arrays["step"] = np.asarray(step)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, params_like, opt_state_like):
    """Read a checkpoint into the tree structures of ``params_like`` / ``opt_state_like``.

    Returns ``(params, opt_state, step, history)``. Raises ValueError when the file does
    not match those structures (another model or optimiser).
    """
    with np.load(path) as f:

        def rebuild(tree, prefix):
            leaves, treedef = jax.tree_util.tree_flatten(tree)
            names = sorted((k for k in f.files if k.startswith(prefix) and k[1:].isdigit()), key=lambda k: int(k[1:]))
            if len(names) != len(leaves) or any(f[n].shape != np.shape(x) for n, x in zip(names, leaves, strict=True)):
                raise ValueError(f"checkpoint {path} does not match this model/optimiser ({prefix!r} leaves differ)")
            return jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(f[n], dtype=jnp.asarray(x).dtype) for n, x in zip(names, leaves, strict=True)]
            )

        params = rebuild(params_like, "p")
        state = rebuild(opt_state_like, "s")
        history = {k: f[f"h_{k}"].tolist() for k in _HISTORY_KEYS}
        return params, state, int(f["step"]), history


# ---- training -------------------------------------------------------------------------
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
    """Minimise `network_loss` on ``data`` from ``params``.

    Args:
      spec, params: the model and its starting point (not modified).
      data: the training set (balanced and class-major for the analysis, not required here).
      steps: total optimiser steps (a resumed run counts the steps already done).
      optimizer: ``"sgd"`` (momentum 0.9), ``"adam"`` or any optax transformation.
      learning_rate, warmup_steps: for the named optimisers (linear warm-up from 0).
      batch_size: mini-batch size, ``None`` = full batch.
      seed: PRNG seed of the mini-batches.
      log_every: steps per jitted chunk and between history records / checkpoints.
      plateau_rtol: stop once 100 % train accuracy is reached and the loss changed by
        less than this (relative) since the previous record; ``None`` = run all steps.
      checkpoint: an ``.npz`` path; resumed from if it exists, rewritten at every record.
      callback: called with each record (a dict) — e.g. a progress bar; nothing is printed.
    """
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
    opt = (
        make_optimizer(optimizer, learning_rate, warmup_steps=warmup_steps) if isinstance(optimizer, str) else optimizer
    )
    dtype = params.head[0].dtype
    X, y = jnp.asarray(data.X, dtype), jnp.asarray(data.labels)
    key = jax.random.PRNGKey(seed)

    def step_fn(i, carry):
        p, state = carry
        if batch_size is None:
            Xb, yb = X, y
        else:
            cols = jax.random.choice(jax.random.fold_in(key, i), N, (batch_size,), replace=False)
            Xb, yb = X[cols], y[cols]
        grad = jax.grad(lambda q: network_loss(spec, q, Xb, yb))(p)
        updates, state = opt.update(grad, state, p)
        return optax.apply_updates(p, updates), state

    @jax.jit
    def run_chunk(p, state, start, stop):
        return jax.lax.fori_loop(start, stop, step_fn, (p, state))

    @jax.jit
    def evaluate(p):
        Z = forward(spec, p, X)
        data_term = network_loss(spec, p, X, y, regularized=False)
        return network_loss(spec, p, X, y), data_term, jnp.mean(jnp.argmax(Z, axis=0) == y)

    p, state, step = params, opt.init(params), 0
    history = {k: [] for k in _HISTORY_KEYS}
    if checkpoint is not None and Path(checkpoint).exists():
        p, state, step, history = load_checkpoint(checkpoint, p, state)
    t0 = time.perf_counter()
    plateaued = False
    while True:
        if not history["step"] or history["step"][-1] != step:
            value, data_term, acc = (float(v) for v in evaluate(p))
            if not np.isfinite(value):
                raise FloatingPointError(f"the loss became {value} at step {step}; lower the learning rate")
            record = {"step": step, "loss": value, "data_loss": data_term, "train_accuracy": acc}
            for k in _HISTORY_KEYS:
                history[k].append(record[k])
            if checkpoint is not None:
                save_checkpoint(checkpoint, p, state, step, history)
            if callback is not None:
                callback(record)
        losses, accs = history["loss"], history["train_accuracy"]
        if plateau_rtol is not None and len(losses) > 1 and accs[-1] == 1.0:
            plateaued = abs(losses[-1] - losses[-2]) <= plateau_rtol * abs(losses[-2])
        if plateaued or step >= steps:
            break
        stop = min(step + log_every, steps)
        p, state = run_chunk(p, state, step, stop)
        step = stop
    accs = np.asarray(history["train_accuracy"])
    hit = np.flatnonzero(accs == 1.0)
    return NetworkTrainResult(
        params=p,
        history={k: np.asarray(v) for k, v in history.items()},
        steps=step,
        interpolation_step=int(np.asarray(history["step"])[hit[0]]) if hit.size else None,
        plateaued=bool(plateaued),
        seconds=time.perf_counter() - t0,
    )


def train_snapshots(spec: NetworkSpec, params: NetworkParams, data: Dataset, marks, **kwargs):
    """`train_network` once, yielding ``(step, NetworkTrainResult)`` at each step of ``marks``.

    The run is cut into segments that resume from a checkpoint in a temporary directory (the
    optimiser state carries over), so the states equal those of one uninterrupted run of
    ``max(marks)`` steps. ``kwargs`` go to `train_network` (``steps`` and ``checkpoint`` are set here).
    """
    import tempfile

    marks = sorted({int(m) for m in marks})
    if not marks or marks[0] < 1:
        raise ValueError(f"marks must be positive step counts, got {marks}")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "snapshot.npz")
        for m in marks:
            yield m, train_network(spec, params, data, steps=m, checkpoint=path, **kwargs)
