"""Data as an argument: exact means over a data set streamed in batches and sharded over devices.

A loss that takes its data, ``loss_fn(params, batch) -> scalar``, is the *mean* over the
samples of ``batch`` (a pytree whose leaves share a leading sample axis). The full loss is
the mean over all N samples, so every product (HVP, GGN-vector, gradient) is the exact
weighted mean of per-batch results (``docs/curvature.md`` §3):

    L(θ) = (1/N) Σ_b n_b L_b(θ),    H v = (1/N) Σ_b n_b H_b v,

with ``n_b`` the size of batch b. Batches are the consecutive slices of ``batch_size``
samples, scanned with ``lax.scan`` (peak memory is set by one batch, not by N); a last
partial batch of ``N mod batch_size`` samples is evaluated once more with its own weight
(no padding, no masking).

With a ``jax.sharding.Mesh`` (its first axis, or ``axis=``, splits the data), the first
``D·⌊N/D⌋`` samples are split evenly over the D devices of that axis with `jax.shard_map`;
each device streams its shard in batches of ``batch_size / D`` (so ``batch_size`` is the
global batch and must be divisible by D) and the weighted partial sums meet in *one*
``psum`` per product. The ``N mod D`` leftover samples (N need not be divisible by D) are
evaluated replicated with their own weight. Parameters and Krylov bases are replicated on
every device (sharding along P is not done). The same code runs on several hosts after
``jax.distributed.initialize()`` with a mesh over ``jax.devices()`` (not testable here).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as PS

__all__ = ["DataSpec", "data_spec", "place_data", "data_mean", "data_rows", "data_mesh"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """How a data pytree is traversed (hashable: a static argument of the solvers)."""

    num_samples: int
    batch_size: int | None = None
    mesh: Mesh | None = None
    axis: str | None = None

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.shape[self.axis])


def data_mesh(devices=None, axis: str = "data") -> Mesh:
    """A one-axis `Mesh` over ``devices`` (default: all of ``jax.devices()``) named ``axis``."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.array(devices), (axis,))


def data_spec(data, batch_size=None, mesh=None, devices=None) -> DataSpec:
    """Validate ``data`` / ``batch_size`` / ``mesh`` (or ``devices``) into a `DataSpec`."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must be a pytree with at least one array leaf (leading axis = samples)")
    sizes = {tuple(np.shape(x))[:1] for x in leaves}
    if any(np.ndim(x) == 0 for x in leaves):
        raise ValueError("data leaves must have a leading sample axis; got a scalar leaf")
    if len(sizes) != 1:
        shapes = [tuple(np.shape(x)) for x in leaves]
        raise ValueError(f"data leaves must share one leading (sample) axis, got shapes {shapes}")
    N = int(np.shape(leaves[0])[0])
    if N < 1:
        raise ValueError("data must hold at least one sample")
    if devices is not None:
        if mesh is not None:
            raise ValueError("pass mesh= or devices=, not both")
        mesh = data_mesh(devices)
    axis = None
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        axis = mesh.axis_names[0]
    if batch_size is not None:
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = int(min(batch_size, N))
        D = 1 if mesh is None else int(mesh.shape[axis])
        if batch_size % D:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the {D} devices of the mesh's data "
                f"axis {axis!r} (each device streams batch_size / {D} samples per step)"
            )
    return DataSpec(N, batch_size, mesh, axis)


def _tree_add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _tree_scale(c, a):
    return jax.tree_util.tree_map(lambda x: c * x, a)


def _weighted_sum(fn, data, operands, batch_size):
    """``Σ_b n_b fn(batch_b, operands)`` over consecutive batches of ``data`` (scan + tail)."""
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    if n == 0:
        return None
    bs = n if batch_size is None else min(batch_size, n)
    num_full, tail = divmod(n, bs)
    total = None
    if num_full == 1:
        total = _tree_scale(bs, fn(jax.tree_util.tree_map(lambda x: x[:bs], data), operands))
    elif num_full > 1:
        full = jax.tree_util.tree_map(lambda x: x[: num_full * bs].reshape(num_full, bs, *x.shape[1:]), data)
        zero = jax.tree_util.tree_map(
            jnp.zeros_like, jax.eval_shape(fn, jax.tree_util.tree_map(lambda x: x[0], full), operands)
        )

        def step(acc, batch):
            return (_tree_add(acc, _tree_scale(bs, fn(batch, operands))), None)

        total = jax.lax.scan(step, zero, full)[0]
    if tail:
        rest = _tree_scale(tail, fn(jax.tree_util.tree_map(lambda x: x[num_full * bs :], data), operands))
        total = rest if total is None else _tree_add(total, rest)
    return total


def place_data(data, spec: DataSpec):
    """Put ``data`` where `data_mean` reads it: as is, or, with a mesh, ``(head, tail)`` with
    the first ``D·⌊N/D⌋`` samples split over the data axis and the rest replicated (done
    once, outside the solvers' loops)."""
    if spec.mesh is None:
        return data
    cut = spec.num_samples // spec.num_devices * spec.num_devices
    head = jax.device_put(
        jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:cut], data), NamedSharding(spec.mesh, PS(spec.axis))
    )
    tail = jax.device_put(jax.tree_util.tree_map(lambda x: jnp.asarray(x)[cut:], data), NamedSharding(spec.mesh, PS()))
    return head, tail


def data_mean(fn, data, spec: DataSpec, operands=()):
    """``(1/N) Σ_b n_b fn(batch_b, operands)``: the exact mean over all samples of ``data``
    (as returned by `place_data`).

    ``fn(batch, operands)`` returns a pytree (the per-batch *mean* of something linear in
    the per-sample terms: a loss, a gradient, an HVP). ``operands`` (parameters, tangent
    vectors) are passed explicitly so that the sharded route can replicate them.
    """
    N = spec.num_samples
    if spec.mesh is None:
        return _tree_scale(1.0 / N, _weighted_sum(fn, data, operands, spec.batch_size))
    D, axis = spec.num_devices, spec.axis
    per_device = N // D
    local_bs = None if spec.batch_size is None else spec.batch_size // D
    head, tail = data  # from place_data
    total = None
    if per_device:

        def local(shard, ops):
            return jax.lax.psum(_weighted_sum(fn, shard, ops, local_bs), axis)  # the one all-reduce

        total = jax.shard_map(local, mesh=spec.mesh, in_specs=(PS(axis), PS()), out_specs=PS(), check_vma=False)(
            head, operands
        )
    if N - per_device * D:
        rest = _weighted_sum(fn, tail, operands, local_bs)
        total = rest if total is None else _tree_add(total, rest)
    return _tree_scale(1.0 / N, total)


def _stacked(fn, data, operands, batch_size):
    """``fn(batch_b, operands)`` (rows = the batch's samples) for consecutive batches, concatenated."""
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    bs = n if batch_size is None else min(batch_size, n)
    num_full, tail = divmod(n, bs)
    parts = []
    if num_full:
        full = jax.tree_util.tree_map(lambda x: x[: num_full * bs].reshape(num_full, bs, *x.shape[1:]), data)
        rows = jax.lax.map(lambda batch: fn(batch, operands), full)
        parts.append(rows.reshape(num_full * bs, *rows.shape[2:]))
    if tail:
        parts.append(fn(jax.tree_util.tree_map(lambda x: x[num_full * bs :], data), operands))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def data_rows(fn, data, spec: DataSpec, operands=()):
    """Per-sample results ``fn(batch, operands)`` (one row per sample) for all N samples, in order.

    Streamed and sharded like `data_mean` (each device maps its shard batch by batch; the
    shards come back in sample order, then the replicated leftover samples).
    """
    if spec.mesh is None:
        return _stacked(fn, data, operands, spec.batch_size)
    head, tail = data
    local_bs = None if spec.batch_size is None else spec.batch_size // spec.num_devices
    parts = []
    if spec.num_samples // spec.num_devices:
        parts.append(
            jax.shard_map(
                lambda shard, ops: _stacked(fn, shard, ops, local_bs),
                mesh=spec.mesh,
                in_specs=(PS(spec.axis), PS()),
                out_specs=PS(spec.axis),
                check_vma=False,
            )(head, operands)
        )
    if spec.num_samples % spec.num_devices:
        parts.append(_stacked(fn, tail, operands, local_bs))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]
