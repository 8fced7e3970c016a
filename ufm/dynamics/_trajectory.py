"""Recording a training trajectory: the one optimiser loop of ``ufm`` (``docs/dynamics.md`` §D1).

`record` runs any optax optimiser on any ``loss_fn(params, batch) -> scalar`` over a pytree
``params`` (or a whole ``equinox.Module``: its non-array leaves are held static, as
``eqx.filter_jit`` does) and returns a `Trajectory`. Every optimiser update in the package
happens here: `ufm.train`, `ufm.networks.train_network` and the catapult runs are thin layers
over it (the vmapped one-pass simulator of the SGD ODE is the one exception, see its docstring).
Three ways to feed batches (exactly one):

* full batch: ``data`` (a pytree of arrays whose leading axis indexes samples), every step;
* mini-batch: ``data`` and ``batch_size``: ``batch_size`` distinct samples drawn uniformly
  at each step (`minibatch_indices`, the one sampler of the package);
* one-pass online: ``sampler(key) -> batch``, a fresh batch per step (jit-traceable); with
  ``data`` also given, ``sampler(key, data)`` — the sampler's parameters (e.g. a `KGMM`)
  then travel as arguments, so one compilation serves every mixture of the same shapes.

``mesh=`` (a ``jax.sharding.Mesh``, as in ``ufm.curvature``; the data layer is
``ufm.curvature._data``) splits each step's batch over the devices of its first axis: the
gradient is the exact mean of the per-device means (``docs/curvature.md`` §3), so
``loss_fn`` must then be a mean over the samples of its batch.

Step ``t`` (0-based) uses the key ``fold_in(PRNGKey(seed), t)``, so the result does not
depend on how the run is split into segments or resumed. Between two checkpoints the steps
run as one compiled loop (``lax.while_loop`` with a traced trip count: one compilation
serves every segment length, linear or log spaced); the probes run in Python between
segments. ``compiled=False`` runs the same step as one jitted call per step from Python
(debugging, and the reference of ``benchmarks/dynamics.py``).

Inside the compiled loop: the batch loss of every step (``Trajectory.step_losses``), the
``metrics`` (jit-traceable ``fn(params) -> array``) after every ``metrics_every`` steps, and
with ``iterates_every=n`` the flat iterate (``ravel_pytree`` order) after every n steps — a
dense trajectory (e.g. for a diffusion map) without a Python round trip per kept iterate. These
periods must divide every gap between checkpoints.

Stopping: after ``steps`` steps; at the first checkpoint where ``stop(params, ctx)`` is True
(checked after the probes); with ``grad_tol`` (full batch), at the first step whose gradient
norm is ``<= grad_tol`` (checked inside the compiled loop; a last checkpoint is recorded
there). Divergence (one policy): a batch loss that is not finite or exceeds ``max_loss``, or
a non-finite checkpoint loss, ends the run; with ``throw=True`` (the default,
`ufm.results.THROW`) as `TrainingDiverged` naming the step, else as a `Trajectory` with
``stopped == "diverged"``, ``converged`` False and the step in ``messages``.

A probe is ``probe(params, ctx) -> dict`` with ``ctx`` a `ProbeContext`. Its values must be
numbers or arrays (stored as numpy arrays). Keys starting with ``"_"`` are *state*: handed to
the next call as ``ctx.previous`` (e.g. the previous checkpoint's eigenvectors, for overlaps)
but not part of the recorded outputs.

With ``path=`` the trajectory is written to one ``.npz`` after every checkpoint
(atomically) and a later call resumes from it — the parameters, optimiser state, recorded
outputs and probe states are restored, so the resumed result is the uninterrupted one (a
call with more ``steps`` whose checkpoints extend the saved ones continues the run). A
resume is refused (ValueError naming what differs) when the settings, the optimiser's
hyper-parameters, the loss, the data or the probes differ from the saved run's
(`ufm.dynamics._fingerprint`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ..curvature._data import DataSpec, data_mean, data_spec, place_data
from ..results import THROW, result, to_jsonable
from ..training import TrainingDiverged
from ._fingerprint import data_fingerprint, describe, first_difference

__all__ = ["ProbeContext", "Trajectory", "checkpoint_steps", "minibatch_indices", "record"]


class ProbeContext(NamedTuple):
    """What a probe (and ``stop``) sees besides the parameters.

    Fields:
      step: optimiser steps done (0 at the initial checkpoint).
      time: ``step · time_per_step`` (e.g. t = steps · δ for one-pass SGD).
      index: the checkpoint's position (0, 1, ...).
      last_update: the last step's update ``θ_t − θ_{t−1}`` (a pytree like params), or None
        at step 0.
      previous: this probe's output at the previous checkpoint, ``"_"`` state keys
        included, or None at the first checkpoint.
      opt_state: the optimiser state at this checkpoint.
      loss: the checkpoint loss (``Trajectory.losses``).
      probes: the outputs of the probes already run at this checkpoint (all of them for ``stop``).
    """

    step: int
    time: float
    index: int
    last_update: Any
    previous: dict | None
    opt_state: Any = None
    loss: float = float("nan")
    probes: dict | None = None


def checkpoint_steps(steps: int, num: int, spacing: str = "linear") -> np.ndarray:
    """Checkpoint steps in ``[0, steps]``, both ends included, about ``num`` + 1 of them.

    ``"linear"``: ``round(linspace(0, steps, num + 1))``; ``"log"``: 0 and
    ``round(geomspace(1, steps, num))``; duplicates dropped.
    """
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(num, (int, np.integer)) and num >= 1):
        raise ValueError(f"num (checkpoints after step 0) must be an int >= 1, got {num!r}")
    if spacing == "linear":
        marks = np.linspace(0, steps, num + 1)
    elif spacing == "log":
        marks = np.concatenate([[0], np.geomspace(1, steps, num)])
    else:
        raise ValueError(f"spacing must be 'linear' or 'log', got {spacing!r}")
    return np.unique(np.round(marks).astype(np.int64))


def minibatch_indices(key, num_samples: int, batch_size: int) -> jax.Array:
    """The one mini-batch sampler: ``batch_size`` distinct indices in ``[0, num_samples)``,
    uniformly (``jax.random.choice(key, num_samples, (batch_size,), replace=False)``)."""
    return jax.random.choice(key, num_samples, (batch_size,), replace=False)


@result(static=("config", "stopped"))
class Trajectory:
    """A recorded run: one entry per checkpoint, plus what the compiled loop kept.

    Fields:
      steps: (T,) optimiser steps at the checkpoints.
      times: (T,) ``steps · time_per_step``.
      losses: (T,) ``loss_fn(params, eval_data)`` (``eval_data`` defaults to ``data``; NaN
        when there is neither).
      train_losses: (T,) mean of the training-batch losses over the segment ending at the
        checkpoint (NaN at step 0).
      probes: ``{name: [dict per checkpoint]}``, values numpy arrays.
      params: the kept parameter pytrees (see ``keep_params``), or None.
      param_steps: (T',) the steps of ``params``, or None.
      final_params: parameters at the end (the last checkpoint; at a divergence, the
        parameters whose loss was not finite).
      probe_state: ``{name: dict}``: the ``"_"`` keys of each probe's last output.
      config: the settings (JSON-able), also the resume fingerprint.
      iterates: with ``iterates_every=n``, (T'', P) the flat parameters after every n
        steps (``ravel_pytree`` order, the params' dtype), else None.
      iterate_steps: (T'',) their steps, or None.
      iterate_losses: (T'',) the mean batch loss over the n steps before each, or None.
      step_losses: (S,) the batch loss of every step, at the parameters before it (step s
        moves θ_s to θ_{s+1}); at a divergence the last entry is the loss that diverged.
      metrics: ``{name: (M, ...)}`` the in-loop ``metrics`` at ``metric_steps[name]``.
      metric_steps: ``{name: (M,)}`` 0, n, 2n, ... for ``metrics_every`` n.
      stopped: ``"steps"`` (all steps done), ``"stop"`` (``stop`` returned True),
        ``"grad_tol"`` (gradient norm <= grad_tol) or ``"diverged"``.
      converged: the run ended as asked (not diverged; with ``grad_tol``, reached it or stopped)
        and every probe that reports ``"converged"`` (a Krylov solve) reached its tolerance.
      messages: why not, when not.
    """

    steps: np.ndarray
    times: np.ndarray
    losses: np.ndarray
    train_losses: np.ndarray
    probes: dict
    params: tuple | None
    param_steps: np.ndarray | None
    final_params: Any
    probe_state: dict
    config: dict
    iterates: np.ndarray | None = None
    iterate_steps: np.ndarray | None = None
    iterate_losses: np.ndarray | None = None
    step_losses: np.ndarray | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    metric_steps: dict = dataclasses.field(default_factory=dict)
    stopped: str = "steps"
    converged: bool = True
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [
            (name, int(step))
            for name, rows in self.probes.items()
            for step, row in zip(self.steps, rows, strict=False)
            if isinstance(row, dict) and "converged" in row and not bool(np.all(row["converged"]))
        ]
        if bad:  # a probe's eigensolve that missed its tolerance makes the run's measurement unconverged
            msgs = tuple(f"probe {n!r} at step {s}: an eigensolve missed its tolerance" for n, s in bad)
            object.__setattr__(self, "converged", False)
            object.__setattr__(
                self, "messages", tuple(self.messages) + tuple(m for m in msgs if m not in self.messages)
            )

    def __len__(self) -> int:
        return int(self.steps.size)

    def probe(self, name: str, key: str) -> np.ndarray:
        """One probe value across checkpoints, stacked (needs equal shapes)."""
        return np.stack([np.asarray(row[key]) for row in self.probes[name]])

    def to_dict(self, params: bool = False) -> dict:
        """Strict-JSON dict; the kept parameters (their array leaves, flattened) only when ``params``."""
        out = {
            "config": self.config,
            "steps": self.steps.tolist(),
            "times": self.times.tolist(),
            "losses": _jsonable(self.losses),
            "train_losses": _jsonable(self.train_losses),
            "probes": {
                n: [{k: _jsonable(v) for k, v in row.items()} for row in rows] for n, rows in self.probes.items()
            },
            "stopped": self.stopped,
            "converged": bool(self.converged),
            "messages": list(self.messages),
        }
        if self.metrics:
            out["metrics"] = {k: _jsonable(v) for k, v in self.metrics.items()}
            out["metric_steps"] = {k: np.asarray(v).tolist() for k, v in self.metric_steps.items()}
        if params and self.params is not None:
            out["param_steps"] = self.param_steps.tolist()
            out["params"] = [[_jsonable(x) for x in jax.tree_util.tree_leaves(p) if _is_array(x)] for p in self.params]
        return out


def _jsonable(x):
    """Numbers and arrays as (nested) lists, non-finite floats as None (strict JSON)."""
    return to_jsonable(np.asarray(x))


# ---- equinox modules and other pytrees with non-array leaves --------------------------------
def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, complex)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class _Rejoin:
    """``fn(combine(arrays, static), *rest)``: a function of the array part of a module (hashable)."""

    fn: Callable
    static: Any

    def __call__(self, arrays, *rest):
        import equinox as eqx

        return self.fn(eqx.combine(arrays, self.static), *rest)


def _split_module(params):
    """``(arrays, static)``: a pytree of arrays as is (static None); an ``eqx.Module`` split by
    ``eqx.is_array``; anything else with non-array leaves refused in one line."""
    bad = [
        (jax.tree_util.keystr(path), type(x).__name__)
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
        if not _is_array(x)
    ]
    if not bad:
        return params, None
    try:
        import equinox as eqx
    except ImportError:  # pragma: no cover - equinox is a dependency
        eqx = None
    if eqx is not None and isinstance(params, eqx.Module):
        arrays, static = eqx.partition(params, eqx.is_array)
        try:
            hash(static)
        except TypeError:
            raise TypeError(
                "params: the non-array part of this equinox Module is not hashable; partition it yourself: "
                "arrays, static = eqx.partition(model, eqx.is_array), and pass arrays with a loss_fn that "
                "calls eqx.combine(arrays, static)"
            ) from None
        return arrays, static
    path, kind = bad[0]
    raise TypeError(
        f"params has a non-array leaf ({kind} at {path or 'the root'}); record trains array leaves only: "
        "pass an equinox Module, or split it yourself with arrays, static = eqx.partition(params, eqx.is_array) "
        "and close loss_fn over static"
    )


def _join(arrays, static):
    if static is None:
        return arrays
    import equinox as eqx

    return eqx.combine(arrays, static)


# ---- the compiled segment -------------------------------------------------------------
class _Carry(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    last_update: Any
    value: jax.Array  # the batch loss of the pending step ``step`` at ``params``
    grad: Any  # and its gradient


@dataclasses.dataclass(frozen=True)
class _Loop:
    """Everything static about a run's step (hashable: the compiled loop's cache key)."""

    loss_fn: Callable
    opt: Any
    mode: str
    batch_size: int | None
    sampler: Callable | None
    dspec: DataSpec | None  # with a mesh
    from_state: bool  # full batch, optimiser stores (value, grad) at the accepted point
    metrics: tuple  # ((name, fn, every), ...)
    grad_tol: bool
    buffer: int  # the longest segment (rows of the per-step buffers)
    metrics_data: bool  # metrics take (params, metrics_data)


def _batch(loop: _Loop, data, key):
    if loop.mode == "full":
        return data
    if loop.mode == "online":
        return loop.sampler(key) if data is None else loop.sampler(key, data)
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    idx = minibatch_indices(key, n, loop.batch_size)
    return jax.tree_util.tree_map(lambda x: x[idx], data)


def _mean_fn(loop: _Loop, fn):
    """``(params, batch) -> fn(params, batch)``, or its exact mean over devices with a mesh."""
    if loop.dspec is None:
        return fn
    if loop.mode == "full":
        spec, placed = loop.dspec, True
    else:
        spec, placed = dataclasses.replace(loop.dspec, num_samples=loop.batch_size, batch_size=None), False

    def mean(params, batch):
        if not placed:  # a mini-batch drawn inside the loop: split it as place_data would
            cut = spec.num_samples // spec.num_devices * spec.num_devices
            batch = (jax.tree_util.tree_map(lambda x: x[:cut], batch), jax.tree_util.tree_map(lambda x: x[cut:], batch))
        return data_mean(lambda b, p: fn(p, b), batch, spec, params)

    return mean


def _value_and_grad(loop: _Loop, params, batch):
    if loop.dspec is None:
        return jax.value_and_grad(loop.loss_fn)(params, batch)
    return _mean_fn(loop, jax.value_and_grad(loop.loss_fn))(params, batch)


def _pending(loop: _Loop, params, step, data, key, dtype):
    """The batch loss and gradient of step ``step`` at ``params`` (what the carry holds)."""
    value, grad = _value_and_grad(loop, params, _batch(loop, data, jax.random.fold_in(key, step)))
    return jnp.asarray(value, dtype), grad


def _metric(loop: _Loop, fn, params, mdata):
    return fn(params, mdata) if loop.metrics_data else fn(params)


def _buffers(loop: _Loop, params, dtype, mdata):
    out = {"_step_loss": jnp.zeros((loop.buffer,), dtype)}
    for name, fn, every in loop.metrics:
        shape = jax.eval_shape(functools.partial(_metric, loop, fn), params, mdata)
        out[name] = jax.tree_util.tree_map(lambda s, r=loop.buffer // every: jnp.zeros((r, *s.shape), s.dtype), shape)
    return out


def _body(loop: _Loop, state, data, key, mdata):
    """One step from the carried batch loss and gradient at θ_t: the update, then the loss and
    gradient of the next step's batch at θ_{t+1} (read from a line search's state in full-batch
    mode), then the metrics due."""
    c, i, bufs = state
    bufs = {**bufs, "_step_loss": bufs["_step_loss"].at[i].set(c.value)}
    if isinstance(loop.opt, optax.GradientTransformationExtraArgs):
        batch = _batch(loop, data, jax.random.fold_in(key, c.step))
        mean_loss = _mean_fn(loop, loop.loss_fn)
        updates, opt_state = loop.opt.update(
            c.grad, c.opt_state, c.params, value=c.value, grad=c.grad, value_fn=lambda p: mean_loss(p, batch)
        )
    else:
        updates, opt_state = loop.opt.update(c.grad, c.opt_state, c.params)
    params = optax.apply_updates(c.params, updates)
    if loop.from_state:
        mean_loss = _mean_fn(loop, loop.loss_fn)
        value, grad = optax.value_and_grad_from_state(lambda p: mean_loss(p, data))(params, state=opt_state)
        value = value.astype(c.value.dtype)
    else:
        value, grad = _pending(loop, params, c.step + 1, data, key, c.value.dtype)
    c = _Carry(params, opt_state, c.step + 1, updates, value, grad)
    for name, fn, every in loop.metrics:
        row = (i + 1) // every - 1

        def write(b, fn=fn, row=row, name=name):
            value = _metric(loop, fn, params, mdata)
            return {**b, name: jax.tree_util.tree_map(lambda buf, v: buf.at[row].set(v), b[name], value)}

        bufs = write(bufs) if every == 1 else jax.lax.cond((i + 1) % every == 0, write, lambda b: b, bufs)
    return c, i + 1, bufs


def _running(c: _Carry, tol, max_loss, grad_tol: bool):
    """Whether the carried state may step: a finite loss below ``max_loss`` (and a gradient norm above ``tol``)."""
    ok = jnp.isfinite(c.value) & (c.value <= max_loss)
    return ok & (optax.tree.norm(c.grad) > tol) if grad_tol else ok


def _cond(state, num_steps, tol, max_loss, grad_tol):
    c, i, _ = state
    return (i < num_steps) & _running(c, tol, max_loss, grad_tol)


@functools.partial(jax.jit, static_argnames=("loop",))
def _segment(carry, num_steps, data, key, tol, max_loss, mdata, *, loop):
    state = (carry, jnp.zeros((), jnp.int32), _buffers(loop, carry.params, carry.value.dtype, mdata))
    body = functools.partial(_body, loop, data=data, key=key, mdata=mdata)
    return jax.lax.while_loop(lambda s: _cond(s, num_steps, tol, max_loss, loop.grad_tol), body, state)


@functools.partial(jax.jit, static_argnames=("loop",))
def _one_step(state, data, key, mdata, *, loop):
    return _body(loop, state, data, key, mdata)


@functools.partial(jax.jit, static_argnames=("loop",))
def _init_buffers(carry, mdata, *, loop):
    return _buffers(loop, carry.params, carry.value.dtype, mdata)


@functools.partial(jax.jit, static_argnames=("grad_tol",))
def _running_jit(carry, tol, max_loss, *, grad_tol):
    return _running(carry, tol, max_loss, grad_tol)


def _python_segment(carry, num_steps, data, key, tol, max_loss, mdata, *, loop):
    state = (carry, jnp.zeros((), jnp.int32), _init_buffers(carry, mdata, loop=loop))
    while int(state[1]) < int(num_steps) and bool(_running_jit(state[0], tol, max_loss, grad_tol=loop.grad_tol)):
        state = _one_step(state, data, key, mdata, loop=loop)
    return state


@functools.lru_cache(maxsize=64)
def _jitted(fn):
    """One jitted wrapper per function object, so repeated calls reuse the compilation."""
    return jax.jit(fn)


def _stores_value_and_grad(state) -> bool:
    """Whether the optimiser state keeps the value and gradient at the accepted point (optax line searches)."""
    try:
        return optax.tree.get(state, "value") is not None and optax.tree.get(state, "grad") is not None
    except (KeyError, ValueError):  # several line searches in one chain: do not guess
        return False


# ---- the npz file ------------------------------------------------------------------------
def _leaves(prefix, tree) -> dict:
    return {f"{prefix}{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}


def _rebuild(f, prefix, like):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(f[f"{prefix}{i}"], dtype=jnp.asarray(x).dtype) for i, x in enumerate(leaves)]
    )


def _save(path, config, carry, rows, kept, probe_state):
    arrays = {"config": np.asarray(json.dumps(config, sort_keys=True)), "stopped": np.asarray(rows["stopped"])}
    arrays["fingerprint"] = np.asarray(json.dumps(rows["fingerprint"], sort_keys=True))
    arrays |= _leaves("params/", carry.params) | _leaves("opt_state/", carry.opt_state)
    arrays |= _leaves("last_update/", carry.last_update) | _leaves("grad/", carry.grad)
    arrays["value"] = np.asarray(carry.value)
    for name in ("steps", "times", "losses", "train_losses"):
        arrays[name] = np.asarray(rows[name])
    arrays["step_losses"] = _concat(rows["step_losses"], np.float64)
    for name, chunks in rows["metrics"].items():
        arrays |= {f"metric/{name}/{i}": np.asarray(x) for i, x in enumerate(chunks)}
    for pname, outputs in rows["probes"].items():
        for i, out in enumerate(outputs):
            arrays |= {f"probe/{pname}/{i}/{k}": v for k, v in out.items()}
    for pname, state in probe_state.items():
        arrays |= {f"state/{pname}/{k}": v for k, v in state.items()}
    for j, (s, p) in enumerate(kept):
        arrays[f"kept_step/{j}"] = np.asarray(s)
        arrays |= _leaves(f"kept/{j}/", p)
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _refusal(path, saved, config) -> str:
    diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    details = []
    for k in diff:
        where = first_difference(saved.get(k), config.get(k))
        details.append(f"{k} ({where.lstrip('.')})" if where and isinstance(saved.get(k), (dict, list)) else k)
    return (
        f"{path} does not match this run: it was recorded with other settings ({'; '.join(details)} differ: "
        "saved vs now); pass another path or delete the file"
    )


def _load(path, config, fingerprint, carry, metric_names):
    with np.load(path, allow_pickle=False) as f:
        saved = json.loads(str(f["config"]))
        if "fingerprint" in f.files:
            saved = {**saved, **json.loads(str(f["fingerprint"]))}
        now = json.loads(json.dumps({**config, **fingerprint}, sort_keys=True))
        recorded = f["steps"].tolist()
        extended = (  # the same run asked for more steps: resumed past the saved run's end
            {k: v for k, v in saved.items() if k not in ("steps", "checkpoints")}
            == {k: v for k, v in now.items() if k not in ("steps", "checkpoints")}
            and recorded == now["checkpoints"][: len(recorded)]
            and now["steps"] > saved["steps"]
        )
        if saved != now and not extended:
            raise ValueError(_refusal(path, saved, now))
        T = f["steps"].size
        rows = {name: f[name].tolist() for name in ("steps", "times", "losses", "train_losses")}
        rows["probes"] = {p: [{} for _ in range(T)] for p in config["probes"]}
        rows["step_losses"] = [f["step_losses"]]
        rows["stopped"] = "" if extended and str(f["stopped"]) == "steps" else str(f["stopped"])
        rows["fingerprint"] = fingerprint
        metrics = {n: {} for n in metric_names}
        state = {p: {} for p in config["probes"]}
        kept = {}
        for key in f.files:
            parts = key.split("/")
            if parts[0] == "probe":
                rows["probes"][parts[1]][int(parts[2])]["/".join(parts[3:])] = f[key]
            elif parts[0] == "state":
                state[parts[1]]["/".join(parts[2:])] = f[key]
            elif parts[0] == "metric":
                metrics[parts[1]][int(parts[2])] = f[key]
            elif parts[0] == "kept_step":
                j = int(parts[1])
                kept[j] = (int(f[key]), _rebuild(f, f"kept/{j}/", carry.params))
        rows["metrics"] = {n: [m[i] for i in sorted(m)] for n, m in metrics.items()}
        carry = _Carry(
            _rebuild(f, "params/", carry.params),
            _rebuild(f, "opt_state/", carry.opt_state),
            jnp.asarray(rows["steps"][-1], carry.step.dtype),
            _rebuild(f, "last_update/", carry.params),
            jnp.asarray(f["value"], carry.value.dtype),
            _rebuild(f, "grad/", carry.grad),
        )
    return carry, rows, [kept[j] for j in sorted(kept)], state


def _concat(chunks, dtype=None):
    chunks = [np.asarray(c) for c in chunks if np.size(c) or np.ndim(c) > 1]
    if not chunks:
        return np.zeros((0,), dtype or np.float64)
    return np.concatenate(chunks)


# ---- record -------------------------------------------------------------------------------
def _check_mode(data, batch_size, sampler):
    if sampler is not None:
        if batch_size is not None:
            raise ValueError("batch_size is for mini-batches of data; a sampler draws its own batches")
        if not callable(sampler):
            raise TypeError(f"sampler must be a function key -> batch, got {type(sampler).__name__}")
        return "online"
    if data is None:
        raise ValueError("pass data (full batch, or mini-batch with batch_size) or sampler (one-pass online)")
    if batch_size is None:
        return "full"
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    if not (isinstance(batch_size, (int, np.integer)) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an int in [1, {n}] (the number of samples), got {batch_size!r}")
    return "minibatch"


def _normalise(name, out):
    if not isinstance(out, Mapping):
        raise TypeError(f"probe {name!r} must return a dict of numbers / arrays, got {type(out).__name__}")
    public, state = {}, {}
    for k, v in out.items():
        if not isinstance(k, str) or "/" in k:
            raise ValueError(f"probe {name!r}: keys must be strings without '/', got {k!r}")
        (state if k.startswith("_") else public)[k] = np.asarray(v)
    return public, state


def _check_period(name, value, marks):
    if not (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value >= 1
        and np.all(np.diff(marks) % value == 0)
        and marks[0] % value == 0
    ):
        raise ValueError(
            f"{name} must be an int >= 1 dividing every checkpoint and gap "
            f"(checkpoints {marks.tolist()}), got {value!r}"
        )
    return int(value)


def _flat_iterate(params, *_):
    """The flat iterate (``iterates_every``) as a metric."""
    return ravel_pytree(params)[0]


def record(
    loss_fn: Callable,
    params,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    checkpoints=None,
    num_checkpoints: int = 10,
    spacing: str = "linear",
    data=None,
    batch_size: int | None = None,
    mesh=None,
    sampler: Callable | None = None,
    eval_data=None,
    probes: Mapping[str, Callable] | None = None,
    metrics: Mapping[str, Callable] | None = None,
    metrics_every: int | Mapping[str, int] = 1,
    metrics_data=None,
    opt_state=None,
    stop: Callable | None = None,
    grad_tol: float | None = None,
    max_loss: float | None = None,
    seed: int = 0,
    time_per_step: float = 1.0,
    keep_params: bool | int = False,
    path=None,
    compiled: bool = True,
    callback: Callable | None = None,
    iterates_every: int | None = None,
    throw: bool = THROW,
) -> Trajectory:
    """Train with ``optimizer`` for ``steps`` steps and record at the checkpoints.

    Args:
      loss_fn: ``(params, batch) -> scalar``, jit-traceable; hashable (a module-level
        function or a ``functools.partial`` of one kept alive between calls), as it is a static
        argument of the compiled loop.
      params: the initial pytree of arrays, or an ``equinox.Module`` (non-array leaves static).
      optimizer: any optax ``GradientTransformation`` (those with extra args, e.g. a line
        search, get ``value``, ``grad`` and ``value_fn``; in full-batch mode a line search's
        stored value and gradient are reused, ``optax.value_and_grad_from_state``: one
        gradient per step).
      steps: total optimiser steps.
      checkpoints: explicit checkpoint steps (sorted, distinct, in [0, steps]; ``steps`` is
        appended if missing); default `checkpoint_steps(steps, num_checkpoints, spacing)`.
      data, batch_size, sampler: the batches (module docstring); ``sampler`` must be
        hashable (a static argument) and is called with one PRNG key per step (and
        ``data``, if given).
      mesh: a ``jax.sharding.Mesh`` whose first axis splits each step's batch (``loss_fn``
        a mean over samples); ``batch_size`` must then be divisible by its devices.
      eval_data: the batch on which ``losses`` are evaluated (default ``data``, except in
        online mode).
      probes: ``{name: probe(params, ctx) -> dict}``, run at every checkpoint in order.
      metrics: ``{name: fn(params) -> array}``, jit-traceable, evaluated inside the compiled
        loop at step 0 and after every ``metrics_every`` steps (an int, or one per name).
      metrics_data: when given, each metric is called as ``fn(params, metrics_data)``; a traced
        argument (one compilation serves all values of the same shapes; closed-over arrays
        would be compiled in as constants).
      opt_state: the initial optimiser state (default ``optimizer.init(params)``); e.g. the
        state of ``optax.inject_hyperparams`` carries its hyper-parameters as arrays, so one
        compilation serves every learning rate.
      stop: ``stop(params, ctx) -> bool`` after the probes at each checkpoint; True ends the run
        (``ctx.probes`` holds this checkpoint's probe outputs).
      grad_tol: full batch only: end at the first step whose gradient norm is <= grad_tol.
      max_loss: a batch loss above this is a divergence (default: only non-finite losses).
      seed: the PRNG seed of the batches.
      time_per_step: the time unit of ``times`` (δ for one-pass SGD, §D2).
      keep_params: False; True (every checkpoint); or an int n (every n-th, and the last).
      path: an ``.npz`` to write after every checkpoint and to resume from.
      compiled: False runs one jitted step per Python iteration (same result).
      callback: progress, called as ``callback({"index": i, "step": s, "loss": l})`` after each
        checkpoint (the package's one callback signature: one dict per event).
      iterates_every: keep the flat iterate after every this many steps, inside the
        compiled loop (module docstring); must divide every gap between checkpoints.
      throw: raise `TrainingDiverged` at a divergence (default `ufm.results.THROW`), else
        return the trajectory so far with ``stopped == "diverged"``.

    Raises:
      TrainingDiverged: (a ``FloatingPointError``) when a batch loss of a step, or the loss at
        a checkpoint, is not finite (or above ``max_loss``) and ``throw``; it names the step.
    """
    mode = _check_mode(data, batch_size, sampler)
    arrays, static = _split_module(params)
    probes = dict(probes or {})
    for name, fn in probes.items():
        if not callable(fn):
            raise TypeError(f"probes[{name!r}] must be callable, got {type(fn).__name__}")
    metrics = dict(metrics or {})
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"metrics[{name!r}] must be callable, got {type(fn).__name__}")
        if not isinstance(name, str) or "/" in name or name.startswith("_"):
            raise ValueError(f"metrics: names must be strings without '/' and not starting with '_', got {name!r}")
    if stop is not None and not callable(stop):
        raise TypeError(f"stop must be a function (params, ctx) -> bool, got {type(stop).__name__}")
    if grad_tol is not None:
        if mode != "full":
            raise ValueError("grad_tol needs full-batch mode (data without batch_size or sampler)")
        if not (isinstance(grad_tol, (int, float)) and grad_tol >= 0 and math.isfinite(grad_tol)):
            raise ValueError(f"grad_tol must be a finite number >= 0, got {grad_tol!r}")
    if max_loss is not None and not (isinstance(max_loss, (int, float)) and max_loss > 0):
        raise ValueError(f"max_loss must be a number > 0, got {max_loss!r}")
    marks = checkpoint_steps(steps, num_checkpoints, spacing) if checkpoints is None else np.asarray(checkpoints)
    if (
        marks.ndim != 1
        or marks.size == 0
        or not np.issubdtype(marks.dtype, np.integer)
        or np.any(np.diff(marks) <= 0)
        or marks[0] < 0
        or marks[-1] > steps
    ):
        raise ValueError(f"checkpoints must be distinct increasing ints in [0, steps={steps}], got {marks.tolist()}")
    if marks[-1] != steps:
        marks = np.append(marks, steps)
    every = 1 if keep_params is True else int(keep_params)
    if every < 0:
        raise ValueError(f"keep_params must be a bool or an int >= 1, got {keep_params!r}")
    periods = metrics_every if isinstance(metrics_every, Mapping) else dict.fromkeys(metrics, metrics_every)
    unknown = set(periods) - set(metrics)
    if unknown:
        raise ValueError(f"metrics_every names no metric: {sorted(unknown)}")
    periods = {n: _check_period(f"metrics_every[{n!r}]", periods.get(n, 1), marks) for n in metrics}
    if iterates_every is not None:
        iterates_every = _check_period("iterates_every", iterates_every, marks)
    dspec = None
    if mesh is not None:
        if mode == "online":
            raise ValueError("mesh splits data; a sampler's batches are not sharded (pass data=)")
        dspec = data_spec(data, None, mesh)
        if mode == "minibatch" and batch_size % dspec.num_devices:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the {dspec.num_devices} devices of the mesh"
            )
    eval_is_data = eval_data is None and mode != "online"
    eval_data = data if eval_is_data else eval_data

    leaves = jax.tree_util.tree_leaves(arrays)
    config = {
        "steps": int(steps),
        "checkpoints": marks.tolist(),
        "mode": mode,
        "batch_size": batch_size,
        "seed": int(seed),
        "time_per_step": float(time_per_step),
        "keep_params": every,
        "probes": list(probes),
        "optimizer": type(optimizer).__name__,
        "params": [[list(np.shape(x)), str(jnp.asarray(x).dtype)] for x in leaves],
    }
    if iterates_every:
        config["iterates_every"] = iterates_every
    if metrics:
        config["metrics"] = periods
    for name, value in (("grad_tol", grad_tol), ("max_loss", max_loss), ("devices", dspec and dspec.num_devices)):
        if value is not None:
            config[name] = value
    fingerprint = None
    if path is not None:  # what a resume must share besides the settings: the objects themselves (issue 24 item 8)
        fingerprint = {
            "optimizer settings": describe(optimizer),
            "loss_fn": describe(loss_fn),
            "sampler": describe(sampler),
            "probe settings": {n: describe(fn) for n, fn in probes.items()},
            "metric functions": {n: describe(fn) for n, fn in metrics.items()},
            "stop": describe(stop),
            "opt_state": None if opt_state is None else data_fingerprint(opt_state),
            "metrics_data": data_fingerprint(metrics_data),
            "data": data_fingerprint(data),
            "eval_data": None if eval_is_data else data_fingerprint(eval_data),
            "static": describe(static),
        }

    loss_of = loss_fn if static is None else _Rejoin(loss_fn, static)
    metric_fns = {n: (fn if static is None else _Rejoin(fn, static)) for n, fn in metrics.items()}
    if iterates_every:
        metric_fns["_iterate"] = _flat_iterate
        periods = {**periods, "_iterate": iterates_every}
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    # strong dtypes throughout, so the first segment and later ones share one compilation
    if opt_state is None:
        opt_state = optimizer.init(arrays)
    opt_state = jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.result_type(x)), opt_state)
    from_state = mode == "full" and _stores_value_and_grad(opt_state)
    if dspec is not None and mode == "full":
        data = place_data(data, dspec)
    gaps = np.diff(marks, prepend=0)  # the first segment runs from step 0 to the first checkpoint
    loop = _Loop(
        loss_fn=loss_of,
        opt=optimizer,
        mode=mode,
        batch_size=batch_size,
        sampler=sampler,
        dspec=dspec,
        from_state=from_state,
        metrics=tuple((n, fn, periods[n]) for n, fn in metric_fns.items()),
        grad_tol=grad_tol is not None,
        buffer=int(gaps.max()) if gaps.size else 1,
        metrics_data=metrics_data is not None,
    )
    key = jax.random.PRNGKey(seed)
    value, grad = _pending_jit(arrays, jnp.asarray(0, jnp.int32), data, key, loop=loop, dtype=np.dtype(dtype).name)
    if from_state:  # the stored value / gradient at θ_0, as after every accepted step
        opt_state = optax.tree.set(
            opt_state, value=jnp.asarray(value, optax.tree.get(opt_state, "value").dtype), grad=grad
        )
    carry = _Carry(
        arrays, opt_state, jnp.asarray(0, jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, arrays), value, grad
    )
    rows = {
        "steps": [],
        "times": [],
        "losses": [],
        "train_losses": [],
        "probes": {p: [] for p in probes},
        "step_losses": [],
        "metrics": {n: [] for n in metric_fns},
        "stopped": "",
    }
    kept, probe_state = [], {p: {} for p in probes}
    if path is not None and os.path.exists(path):
        carry, rows, kept, probe_state = _load(path, config, fingerprint, carry, list(metric_fns))
    rows["fingerprint"] = fingerprint
    tol = jnp.asarray(0.0 if grad_tol is None else grad_tol, dtype)
    cap = jnp.asarray(np.inf if max_loss is None else max_loss, dtype)
    carried_loss = mode == "full" and eval_is_data  # the carried value is the full loss at the checkpoint
    if dspec is not None and eval_data is not None and not carried_loss:
        eval_spec = data_spec(eval_data, None, mesh)
        eval_placed = place_data(eval_data, eval_spec)
        evaluate = _jitted(functools.partial(_sharded_loss, loss_of, eval_spec))  # the exact mean over eval_data
    else:
        evaluate, eval_placed = _jitted(loss_of), eval_data
    if not rows["steps"] and metrics:  # the metrics at step 0 (the kept iterates start after step 0)
        first = _metrics_at(
            carry.params,
            metrics_data,
            loop=_MetricsOnly(tuple((n, metric_fns[n]) for n in metrics), metrics_data is not None),
        )
        for n, v in first.items():
            rows["metrics"][n].append(jax.tree_util.tree_map(lambda x: np.asarray(x)[None], v))
    run = _segment if compiled else _python_segment
    messages: list[str] = []
    stopped = rows["stopped"]
    index = len(rows["steps"])
    while not stopped and index < marks.size:
        n = int(marks[index]) - int(carry.step)
        done = 0
        if n > 0:
            carry, done, bufs = run(carry, jnp.asarray(n, jnp.int32), data, key, tol, cap, metrics_data, loop=loop)
            done = int(done)
            rows["step_losses"].append(np.asarray(bufs["_step_loss"])[:done])
            for name, _, per in loop.metrics:
                kept_rows = done // per
                rows["metrics"][name].append(
                    jax.tree_util.tree_map(lambda b, k=kept_rows: np.asarray(b)[:k], bufs[name])
                )
        step = int(carry.step)
        halted = done < n
        value = float(carry.value)
        if not (np.isfinite(value) and (max_loss is None or value <= max_loss)):
            rows["step_losses"].append(np.asarray([value]))
            stopped = "diverged"
            messages.append(
                f"the batch loss is {value} at step {step}: training diverged (the step size is too large for the "
                "curvature; lower the learning rate)"
            )
            break
        if halted and rows["steps"] and rows["steps"][-1] == step:  # grad_tol at a recorded checkpoint
            stopped = rows["stopped"] = "grad_tol"
            if path is not None:
                _save(path, config, carry, rows, kept, probe_state)
            break
        time = step * float(time_per_step)
        if carried_loss:
            loss = value
        else:
            loss = float(evaluate(carry.params, eval_placed)) if eval_data is not None else float("nan")
        if not (np.isfinite(loss) or eval_data is None):
            stopped = "diverged"
            messages.append(
                f"the loss is {loss} at step {step} (checkpoint {index}): training diverged (the step size is too "
                "large for the curvature; lower the learning rate)"
            )
            break
        rows["steps"].append(step)
        rows["times"].append(time)
        rows["losses"].append(loss)
        rows["train_losses"].append(float(np.mean(rows["step_losses"][-1])) if done > 0 else float("nan"))
        ctx_update = carry.last_update if step > 0 else None
        joined = _join(carry.params, static)
        outputs = {}
        for name, fn in probes.items():
            prev = None
            if index > 0:
                prev = {**rows["probes"][name][-1], **probe_state[name]}
            ctx = ProbeContext(step, time, index, ctx_update, prev, carry.opt_state, loss, dict(outputs))
            public, state = _normalise(name, fn(joined, ctx))
            rows["probes"][name].append(public)
            probe_state[name] = state
            outputs[name] = public
        last = index == marks.size - 1 or halted
        if halted:
            stopped = "grad_tol"
        elif stop is not None and bool(
            stop(joined, ProbeContext(step, time, index, ctx_update, None, carry.opt_state, loss, outputs))
        ):
            stopped, last = "stop", True
        elif index == marks.size - 1:
            stopped = "steps"
        if every and (index % every == 0 or last):
            kept.append((step, carry.params))
        rows["stopped"] = stopped
        if path is not None:
            _save(path, config, carry, rows, kept, probe_state)
        if callback is not None:
            callback({"index": index, "step": step, "loss": loss})
        index += 1
    if stopped == "diverged" and throw:
        raise TrainingDiverged(messages[-1])
    converged = stopped in ("stop", "grad_tol") or (stopped == "steps" and grad_tol is None)
    if stopped == "steps" and grad_tol is not None:
        messages.append(f"the gradient norm did not reach grad_tol={grad_tol} in {steps} steps")
    return Trajectory(
        steps=np.asarray(rows["steps"], dtype=np.int64),
        times=np.asarray(rows["times"], dtype=np.float64),
        losses=np.asarray(rows["losses"], dtype=np.float64),
        train_losses=np.asarray(rows["train_losses"], dtype=np.float64),
        probes=rows["probes"],
        params=tuple(_join(p, static) for _, p in kept) if every else None,
        param_steps=np.asarray([s for s, _ in kept], dtype=np.int64) if every else None,
        final_params=_join(carry.params, static),
        probe_state=probe_state,
        config=config,
        step_losses=_concat(rows["step_losses"]),
        **_metric_fields(rows, periods),
        **_iterate_fields(rows, iterates_every),
        stopped=stopped,
        converged=bool(converged),
        messages=tuple(messages),
    )


@functools.partial(jax.jit, static_argnames=("loop", "dtype"))
def _pending_jit(params, step, data, key, *, loop, dtype):
    return _pending(loop, params, step, data, key, dtype)


def _sharded_loss(loss_fn, spec, params, placed):
    return data_mean(lambda b, p: loss_fn(p, b), placed, spec, params)


@dataclasses.dataclass(frozen=True)
class _MetricsOnly:
    items: tuple
    with_data: bool


@functools.partial(jax.jit, static_argnames=("loop",))
def _metrics_at(params, mdata, *, loop: _MetricsOnly):
    return {n: (fn(params, mdata) if loop.with_data else fn(params)) for n, fn in loop.items}


def _metric_fields(rows, periods) -> dict:
    values, steps = {}, {}
    for name, chunks in rows["metrics"].items():
        if name == "_iterate":
            continue
        leaves = [jax.tree_util.tree_leaves(c) for c in chunks]
        treedef = jax.tree_util.tree_structure(chunks[0])
        stacked = jax.tree_util.tree_unflatten(treedef, [np.concatenate(col) for col in zip(*leaves, strict=True)])
        values[name] = stacked
        m = int(np.shape(jax.tree_util.tree_leaves(stacked)[0])[0])
        steps[name] = np.arange(m, dtype=np.int64) * periods[name]
    return {"metrics": values, "metric_steps": steps}


def _iterate_fields(rows, every) -> dict:
    if not every:
        return {}
    flat = _concat(rows["metrics"]["_iterate"])
    step_losses = _concat(rows["step_losses"])
    m = flat.shape[0]
    return {
        "iterates": flat if m else None,
        "iterate_steps": np.arange(1, m + 1, dtype=np.int64) * every,  # from step 0
        "iterate_losses": step_losses[: m * every].reshape(m, every).mean(axis=1) if m else None,
    }
