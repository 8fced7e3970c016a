"""Recording a training trajectory with probes at checkpoints (``docs/dynamics.md`` §D1).

`record` runs any optax optimiser on any ``loss_fn(params, batch) -> scalar`` over a pytree
``params`` and returns a `Trajectory`. Three ways to feed batches (exactly one):

* full batch: ``data`` (a pytree of arrays whose leading axis indexes samples), every step;
* mini-batch: ``data`` and ``batch_size``: ``batch_size`` distinct samples drawn uniformly
  at each step;
* one-pass online: ``sampler(key) -> batch``, a fresh batch per step (jit-traceable); with
  ``data`` also given, ``sampler(key, data)`` — the sampler's parameters (e.g. a `KGMM`)
  then travel as arguments, so one compilation serves every mixture of the same shapes.

Step ``t`` (0-based) uses the key ``fold_in(PRNGKey(seed), t)``, so the result does not
depend on how the run is split into segments or resumed. Between two checkpoints the steps
run as one compiled loop (``lax.fori_loop`` with a traced trip count: one compilation
serves every segment length, linear or log spaced); the probes run in Python between
segments. ``compiled=False`` runs the same step as one jitted call per step from Python
(debugging, and the reference of ``benchmarks/dynamics.py``).

``iterates_every=n`` also keeps the flat iterate (``ravel_pytree`` order) after every n
steps *inside* the compiled loop (a ``lax.scan`` over blocks of n steps), with the mean
batch loss of its block: a dense trajectory (e.g. for a diffusion map, every 20th of
40 000 steps) without a Python round trip per kept iterate. n must divide every gap
between checkpoints; one compilation per distinct gap.

A probe is ``probe(params, ctx) -> dict`` with ``ctx`` a `ProbeContext` (step, time,
index of the checkpoint, the last update ``θ_t − θ_{t−1}`` and this probe's previous
output). Its values must be numbers or arrays (stored as numpy arrays). Keys starting with
``"_"`` are *state*: handed to the next call as ``ctx.previous`` (e.g. the previous
checkpoint's eigenvectors, for overlaps) but not part of the recorded outputs.

With ``path=`` the trajectory is written to one ``.npz`` after every checkpoint
(atomically) and a later call with the same settings resumes from it — the parameters,
optimiser state, recorded outputs and probe states are restored, so the resumed result is
the uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ..results import result, to_jsonable
from ..training import TrainingDiverged

__all__ = ["ProbeContext", "Trajectory", "checkpoint_steps", "record"]


class ProbeContext(NamedTuple):
    """What a probe sees besides the parameters.

    Fields:
      step: optimiser steps done (0 at the initial checkpoint).
      time: ``step · time_per_step`` (e.g. t = steps · δ for one-pass SGD).
      index: the checkpoint's position (0, 1, ...).
      last_update: the last step's update ``θ_t − θ_{t−1}`` (a pytree like params), or None
        at step 0.
      previous: this probe's output at the previous checkpoint, ``"_"`` state keys
        included, or None at the first checkpoint.
    """

    step: int
    time: float
    index: int
    last_update: Any
    previous: dict | None


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


@result(static=("config",))
class Trajectory:
    """A recorded run: one entry per checkpoint.

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
      final_params: parameters at the last checkpoint.
      probe_state: ``{name: dict}``: the ``"_"`` keys of each probe's last output.
      config: the settings (JSON-able), also the resume fingerprint.
      iterates: with ``iterates_every=n``, (T'', P) the flat parameters after every n
        steps (``ravel_pytree`` order, the params' dtype), else None.
      iterate_steps: (T'',) their steps, or None.
      iterate_losses: (T'',) the mean batch loss over the n steps before each, or None.
      converged, messages: the result protocol (`ufm.results`): False when a probe reported
        ``"converged": False`` at a checkpoint (a Krylov solve that missed its tolerance).
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
    converged: bool | None = None  # None: from the probes' "converged" values
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            bad = [
                (name, int(step))
                for name, rows in self.probes.items()
                for step, row in zip(self.steps, rows, strict=False)
                if isinstance(row, dict) and "converged" in row and not bool(np.all(row["converged"]))
            ]
            object.__setattr__(self, "converged", not bad)
            if bad and not self.messages:
                msgs = tuple(f"probe {n!r} at step {s}: an eigensolve missed its tolerance" for n, s in bad)
                object.__setattr__(self, "messages", msgs)

    def __len__(self) -> int:
        return int(self.steps.size)

    def probe(self, name: str, key: str) -> np.ndarray:
        """One probe value across checkpoints, stacked (needs equal shapes)."""
        return np.stack([np.asarray(row[key]) for row in self.probes[name]])

    def to_dict(self, params: bool = False) -> dict:
        """Strict-JSON dict (`ufm.results.to_jsonable`); the kept parameters (flattened leaves) only
        when ``params``."""
        out = {
            "config": self.config,
            "steps": self.steps,
            "times": self.times,
            "losses": self.losses,
            "train_losses": self.train_losses,
            "probes": self.probes,
            "converged": self.converged,
            "messages": self.messages,
        }
        if params and self.params is not None:
            out["param_steps"] = self.param_steps
            out["params"] = [jax.tree_util.tree_leaves(p) for p in self.params]
        return to_jsonable(out)


# ---- the compiled segment -------------------------------------------------------------
class _Carry(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    last_update: Any
    loss_sum: jax.Array


def _batch(mode, batch_size, sampler, data, key):
    if mode == "full":
        return data
    if mode == "online":
        return sampler(key) if data is None else sampler(key, data)
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree_util.tree_map(lambda x: x[idx], data)


def _step(loss_fn, opt, mode, batch_size, sampler, carry: _Carry, data, key) -> _Carry:
    batch = _batch(mode, batch_size, sampler, data, jax.random.fold_in(key, carry.step))
    value, grads = jax.value_and_grad(loss_fn)(carry.params, batch)
    if isinstance(opt, optax.GradientTransformationExtraArgs):
        updates, state = opt.update(
            grads, carry.opt_state, carry.params, value=value, grad=grads, value_fn=lambda p: loss_fn(p, batch)
        )
    else:
        updates, state = opt.update(grads, carry.opt_state, carry.params)
    params = optax.apply_updates(carry.params, updates)
    return _Carry(params, state, carry.step + 1, updates, carry.loss_sum + value)


_STATIC = ("loss_fn", "opt", "mode", "batch_size", "sampler")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _segment(carry, num_steps, data, key, *, loss_fn, opt, mode, batch_size, sampler):
    body = functools.partial(_step, loss_fn, opt, mode, batch_size, sampler)
    carry = carry._replace(loss_sum=jnp.zeros_like(carry.loss_sum))
    return jax.lax.fori_loop(0, num_steps, lambda _, c: body(c, data, key), carry)


@functools.partial(jax.jit, static_argnames=_STATIC + ("blocks", "every"))
def _traced_segment(carry, data, key, *, loss_fn, opt, mode, batch_size, sampler, blocks, every):
    """`_segment` of ``blocks · every`` steps that also returns the flat iterate after each
    block of ``every`` steps and the block's mean batch loss."""
    body = functools.partial(_step, loss_fn, opt, mode, batch_size, sampler)
    zero = jnp.zeros_like(carry.loss_sum)

    def block(state, _):
        c, total = state
        c = jax.lax.fori_loop(0, every, lambda _, cc: body(cc, data, key), c._replace(loss_sum=zero))
        return (c, total + c.loss_sum), (ravel_pytree(c.params)[0], c.loss_sum / every)

    (carry, total), kept = jax.lax.scan(block, (carry, zero), None, length=blocks)
    return carry._replace(loss_sum=total), kept


@functools.partial(jax.jit, static_argnames=_STATIC)
def _one_step(carry, data, key, *, loss_fn, opt, mode, batch_size, sampler):
    return _step(loss_fn, opt, mode, batch_size, sampler, carry, data, key)


@functools.lru_cache(maxsize=64)
def _jitted(fn):
    """One jitted wrapper per function object, so repeated calls reuse the compilation."""
    return jax.jit(fn)


def _python_segment(carry, num_steps, data, key, **static):
    carry = carry._replace(loss_sum=jnp.zeros_like(carry.loss_sum))
    for _ in range(int(num_steps)):
        carry = _one_step(carry, data, key, **static)
    return carry


def _run_segment(compiled, carry, num_steps, data, key, every, **static):
    """``(carry, kept)``: ``num_steps`` steps; ``kept`` = (flat iterates, block losses) every
    ``every`` steps (numpy), or None when ``every`` is None."""
    if not every:
        run = _segment if compiled else _python_segment
        return run(carry, jnp.asarray(num_steps, jnp.int32), data, key, **static), None
    if compiled:
        carry, (flat, losses) = _traced_segment(carry, data, key, blocks=num_steps // every, every=every, **static)
        return carry, (np.asarray(flat), np.asarray(losses))
    flat, losses, total = [], [], jnp.zeros_like(carry.loss_sum)
    for _ in range(num_steps // every):
        carry = _python_segment(carry, every, data, key, **static)
        total = total + carry.loss_sum
        flat.append(np.asarray(ravel_pytree(carry.params)[0]))
        losses.append(np.asarray(carry.loss_sum / every))
    return carry._replace(loss_sum=total), (np.stack(flat), np.stack(losses))


# ---- the npz file ------------------------------------------------------------------------
def _leaves(prefix, tree) -> dict:
    return {f"{prefix}{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}


def _rebuild(f, prefix, like):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(f[f"{prefix}{i}"], dtype=jnp.asarray(x).dtype) for i, x in enumerate(leaves)]
    )


def _save(path, config, carry, rows, kept, probe_state):
    arrays = {"config": np.asarray(json.dumps(config, sort_keys=True))}
    arrays |= _leaves("params/", carry.params) | _leaves("opt_state/", carry.opt_state)
    arrays |= _leaves("last_update/", carry.last_update)
    for name in ("steps", "times", "losses", "train_losses"):
        arrays[name] = np.asarray(rows[name])
    for pname, outputs in rows["probes"].items():
        for i, out in enumerate(outputs):
            arrays |= {f"probe/{pname}/{i}/{k}": v for k, v in out.items()}
    for pname, state in probe_state.items():
        arrays |= {f"state/{pname}/{k}": v for k, v in state.items()}
    for i, (flat, losses) in enumerate(rows.get("iterates", [])):
        arrays |= {f"iterates/{i}": flat, f"iterate_losses/{i}": losses}
    for j, (s, p) in enumerate(kept):
        arrays[f"kept_step/{j}"] = np.asarray(s)
        arrays |= _leaves(f"kept/{j}/", p)
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path, config, carry):
    with np.load(path, allow_pickle=False) as f:
        saved = json.loads(str(f["config"]))
        if saved != json.loads(json.dumps(config, sort_keys=True)):
            diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(
                f"{path} was recorded with other settings ({', '.join(diff)} differ); "
                "pass another path or delete the file"
            )
        T = f["steps"].size
        rows = {name: f[name].tolist() for name in ("steps", "times", "losses", "train_losses")}
        rows["probes"] = {p: [{} for _ in range(T)] for p in config["probes"]}
        state = {p: {} for p in config["probes"]}
        kept, iterates = {}, {}
        for key in f.files:
            parts = key.split("/")
            if parts[0] == "probe":
                rows["probes"][parts[1]][int(parts[2])]["/".join(parts[3:])] = f[key]
            elif parts[0] == "state":
                state[parts[1]]["/".join(parts[2:])] = f[key]
            elif parts[0] in ("iterates", "iterate_losses"):
                iterates.setdefault(int(parts[1]), {})[parts[0]] = f[key]
            elif parts[0] == "kept_step":
                j = int(parts[1])
                kept[j] = (int(f[key]), _rebuild(f, f"kept/{j}/", carry.params))
        carry = _Carry(
            _rebuild(f, "params/", carry.params),
            _rebuild(f, "opt_state/", carry.opt_state),
            jnp.asarray(rows["steps"][-1], carry.step.dtype),
            _rebuild(f, "last_update/", carry.params),
            carry.loss_sum,
        )
    if "iterates_every" in config:
        rows["iterates"] = [(iterates[i]["iterates"], iterates[i]["iterate_losses"]) for i in sorted(iterates)]
    return carry, rows, [kept[j] for j in sorted(kept)], state


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
    sampler: Callable | None = None,
    eval_data=None,
    probes: Mapping[str, Callable] | None = None,
    seed: int = 0,
    time_per_step: float = 1.0,
    keep_params: bool | int = False,
    path=None,
    compiled: bool = True,
    callback: Callable | None = None,
    iterates_every: int | None = None,
) -> Trajectory:
    """Train with ``optimizer`` for ``steps`` steps and record at the checkpoints.

    Args:
      loss_fn: ``(params, batch) -> scalar``, jit-traceable; hashable (a module-level
        function or a ``functools.partial`` of one), as it is a static argument of the
        compiled loop.
      params: the initial pytree.
      optimizer: any optax ``GradientTransformation`` (those with extra args, e.g. a line
        search, get ``value``, ``grad`` and ``value_fn``).
      steps: total optimiser steps.
      checkpoints: explicit checkpoint steps (sorted, distinct, in [0, steps]; ``steps`` is
        appended if missing); default `checkpoint_steps(steps, num_checkpoints, spacing)`.
      data, batch_size, sampler: the batches (module docstring); ``sampler`` must be
        hashable (a static argument) and is called with one PRNG key per step (and
        ``data``, if given).
      eval_data: the batch on which ``losses`` are evaluated (default ``data``, except in
        online mode).
      probes: ``{name: probe(params, ctx) -> dict}``, run at every checkpoint in order.
      seed: the PRNG seed of the batches.
      time_per_step: the time unit of ``times`` (δ for one-pass SGD, §D2).
      keep_params: False; True (every checkpoint); or an int n (every n-th, and the last).
      path: an ``.npz`` to write after every checkpoint and to resume from.
      compiled: False runs one jitted step per Python iteration (same result).
      callback: called as ``callback(index, step, loss)`` after each checkpoint (progress).
      iterates_every: keep the flat iterate after every this many steps, inside the
        compiled loop (module docstring); must divide every gap between checkpoints.

    Raises:
      TrainingDiverged: (a ``FloatingPointError``) when the loss at a checkpoint, or the sum
        of the batch losses of a segment, is not finite.
    """
    mode = _check_mode(data, batch_size, sampler)
    probes = dict(probes or {})
    for name, fn in probes.items():
        if not callable(fn):
            raise TypeError(f"probes[{name!r}] must be callable, got {type(fn).__name__}")
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
    if iterates_every is not None:
        if not (
            isinstance(iterates_every, (int, np.integer))
            and iterates_every >= 1
            and np.all(np.diff(marks) % iterates_every == 0)
            and marks[0] % iterates_every == 0
        ):
            raise ValueError(
                f"iterates_every must be an int >= 1 dividing every checkpoint and gap "
                f"(checkpoints {marks.tolist()}), got {iterates_every!r}"
            )
        iterates_every = int(iterates_every)
    eval_data = data if eval_data is None and mode != "online" else eval_data
    leaves = jax.tree_util.tree_leaves(params)
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

    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    carry = _Carry(
        params,
        optimizer.init(params),
        jnp.asarray(0, jnp.int32),
        jax.tree_util.tree_map(jnp.zeros_like, params),
        jnp.zeros((), dtype),
    )
    rows = {"steps": [], "times": [], "losses": [], "train_losses": [], "probes": {p: [] for p in probes}}
    if iterates_every:
        rows["iterates"] = []
    kept, probe_state = [], {p: {} for p in probes}
    if path is not None and os.path.exists(path):
        carry, rows, kept, probe_state = _load(path, config, carry)
    key = jax.random.PRNGKey(seed)
    static = dict(loss_fn=loss_fn, opt=optimizer, mode=mode, batch_size=batch_size, sampler=sampler)
    evaluate = _jitted(loss_fn)
    for index in range(len(rows["steps"]), marks.size):
        done = int(carry.step)
        n = int(marks[index]) - done
        if n > 0:
            carry, block = _run_segment(compiled, carry, n, data, key, iterates_every, **static)
            if block is not None:
                rows["iterates"].append(block)
        step = int(carry.step)
        time = step * float(time_per_step)
        loss = float(evaluate(carry.params, eval_data)) if eval_data is not None else float("nan")
        if not (np.isfinite(loss) or eval_data is None) or (n > 0 and not np.isfinite(float(carry.loss_sum))):
            raise TrainingDiverged(
                f"the loss is not finite at step {step} (checkpoint {index}): training diverged; "
                "lower the learning rate"
            )
        rows["steps"].append(step)
        rows["times"].append(time)
        rows["losses"].append(loss)
        rows["train_losses"].append(float(carry.loss_sum) / n if n > 0 else float("nan"))
        ctx_update = carry.last_update if step > 0 else None
        for name, fn in probes.items():
            prev = None
            if index > 0:
                prev = {**rows["probes"][name][-1], **probe_state[name]}
            public, state = _normalise(name, fn(carry.params, ProbeContext(step, time, index, ctx_update, prev)))
            rows["probes"][name].append(public)
            probe_state[name] = state
        if every and (index % every == 0 or index == marks.size - 1):
            kept.append((step, carry.params))
        if path is not None:
            _save(path, config, carry, rows, kept, probe_state)
        if callback is not None:
            callback(index, step, loss)
    return Trajectory(
        steps=np.asarray(rows["steps"], dtype=np.int64),
        times=np.asarray(rows["times"], dtype=np.float64),
        losses=np.asarray(rows["losses"], dtype=np.float64),
        train_losses=np.asarray(rows["train_losses"], dtype=np.float64),
        probes=rows["probes"],
        params=tuple(p for _, p in kept) if every else None,
        param_steps=np.asarray([s for s, _ in kept], dtype=np.int64) if every else None,
        final_params=carry.params,
        probe_state=probe_state,
        config=config,
        **_iterate_fields(rows, iterates_every, marks),
    )


def _iterate_fields(rows, every, marks) -> dict:
    if not every:
        return {}
    flat = [f for f, _ in rows["iterates"]]
    losses = [l for _, l in rows["iterates"]]
    return {
        "iterates": np.concatenate(flat) if flat else None,
        "iterate_steps": np.arange(every, int(marks[-1]) + 1, every, dtype=np.int64),  # from step 0
        "iterate_losses": np.concatenate(losses) if losses else None,
    }
