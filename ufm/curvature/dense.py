"""Dense curvature matrices: full Hessian, layer and cross-layer blocks, G/H split,
gradient moments and Papyan's class / cross-class / within decomposition of the GGN.

Conventions (``docs/theory.md`` §1, §4):

* A dense matrix acts on the flat vector of the chosen ``leaves`` (indices into
  ``jax.tree_util.tree_leaves(params)``, concatenated row-major in the order given; for
  ``UFMParams`` index 0 is H_1 and l is W_l, so ``leaves=[1, ..., L, 0]`` is
  "W_1..W_L then H_1"). Other leaves are held fixed.
* Matrices are built column-by-column from Hessian-vector products (vmapped over a chunk
  of unit vectors, ``lax.map`` over chunks), never with ``jax.hessian``: the peak memory
  is the P×P result plus one chunk. A matrix larger than ``max_bytes`` is refused; use the
  matrix-free route (`top_eigenpairs`, `spectral_density`, `trace`) instead.
* The result types are registered pytrees (they pass through ``jax.tree`` functions); the
  ones whose object the closed forms also compute turn into the shared spectra types:
  `PapyanDecomposition.spectra` -> `ufm.spectrum.GaussNewtonSplit` (as
  `ufm.theory.gn_decomposition`), `GradientMoments.spectra` -> `ufm.spectrum.GradientSpectra`
  (as `ufm.theory.gradient_spectrum`).
* 1/N factors are those of the loss you pass. ufm's MSE data term ``(1/2N)‖Z − Y‖²`` has
  per-sample output Hessian I and ``G = (1/N) Σ_i J_iᵀ J_i``; the mean cross-entropy has
  ``G = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..results import result
from ..spectrum import GaussNewtonSplit, GradientSpectra, Spectrum
from ._checks import check_count, raise_nonfinite
from ._operator import Operator, flat_view
from .hvp import ggn_operator, hessian_operator, residual_operator

__all__ = [
    "DEFAULT_MAX_BYTES",
    "materialize",
    "hessian",
    "hessian_block",
    "ggn",
    "hessian_split",
    "HessianSplit",
    "gradient_moments",
    "GradientMoments",
    "papyan_decomposition",
    "PapyanDecomposition",
]

DEFAULT_MAX_BYTES = 2**30  # 1 GiB: a float64 P×P matrix up to P ≈ 11.5k


def _check_bytes(shape, dtype, max_bytes, what="matrix"):
    need = int(np.prod(shape)) * jnp.dtype(dtype).itemsize
    if need > max_bytes:
        raise ValueError(
            f"the dense {what} of shape {tuple(shape)} ({jnp.dtype(dtype).name}) needs "
            f"{need / 2**30:.2f} GiB > max_bytes={max_bytes / 2**30:.2f} GiB; use the matrix-free "
            "route (ufm.curvature.top_eigenpairs / spectral_density / trace), restrict leaves=, "
            "or raise max_bytes"
        )


def _chunk(dim, chunk_size):
    if chunk_size is None:
        return int(min(dim, 128))
    return int(min(dim, check_count("chunk_size", chunk_size, 1)))


@functools.partial(jax.jit, static_argnames=("make", "dim", "dtype", "chunk", "col_start", "num_cols"))
def _columns(make, args, *, dim, dtype, chunk, col_start, num_cols):
    """``A[:, col_start:col_start+num_cols]ᵀ`` (rows are ``A e_j``) via chunked vmapped products,
    and whether every entry is finite (checked per chunk while it is in cache).

    Each chunk of ``chunk <= num_cols`` products is written in place into the one
    (num_cols × dim) result (``fori_loop`` + ``dynamic_update_slice``); the last chunk is
    shifted back to end at ``num_cols`` and recomputes a few columns instead of padding, so
    the peak memory is the result plus one chunk's products — no stacked copy of the result
    (issue 21 item 2: the old ``lax.map`` + slice held the result twice).
    """
    A = jax.vmap(make(args))
    num_chunks = -(-num_cols // chunk)
    eye_row = jnp.arange(dim)

    def block(i, carry):
        out, finite = carry
        start = jnp.minimum(i * chunk, num_cols - chunk)
        j = col_start + start + jnp.arange(chunk)
        cols = A((j[:, None] == eye_row[None, :]).astype(dtype))
        out = jax.lax.dynamic_update_slice_in_dim(out, cols, start, axis=0)
        return out, finite & jnp.all(jnp.isfinite(cols))

    init = (jnp.zeros((num_cols, dim), dtype), jnp.array(True))
    return jax.lax.fori_loop(0, num_chunks, block, init)


def _materialize(operator, chunk_size, max_bytes, route, leaves=None):
    """`materialize` that names ``route`` and ``leaves`` when a product is NaN / inf."""
    _check_bytes((operator.dim, operator.dim), operator.dtype, max_bytes)
    M, finite = _columns(
        operator.make,
        operator.args,
        dim=operator.dim,
        dtype=jnp.dtype(operator.dtype),
        chunk=_chunk(operator.dim, chunk_size),
        col_start=0,
        num_cols=operator.dim,
    )
    if not bool(finite):
        raise_nonfinite(route, operator, "a column of the dense matrix (a product A e_j)", leaves)
    return M


def materialize(operator: Operator, *, chunk_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> jax.Array:
    """The dense (dim × dim) matrix of an `Operator` (row j is ``A e_j``; symmetric A)."""
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be an Operator, got {type(operator).__name__}")
    return _materialize(operator, chunk_size, max_bytes, "materialize")


def hessian(
    loss_fn: Callable,
    params,
    leaves=None,
    *,
    chunk_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> jax.Array:
    """Dense Hessian (P × P) of ``loss_fn`` over the chosen ``leaves`` (flat, row-major).

    ``leaves=[l]`` is layer l's block of a `UFMParams`; ``leaves=[l, m]`` is the 2×2 block
    matrix with the cross-layer blocks off the diagonal (see `hessian_block`). ``data=``,
    ``batch_size=``, ``mesh=``: a loss ``loss_fn(params, batch)`` streamed / sharded as in
    `hessian_operator`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from ufm.curvature import hessian
      >>> H = hessian(lambda p: 0.5 * jnp.sum((p["w"] @ jnp.array([1.0, 2.0])) ** 2), {"w": jnp.zeros(2)})
      >>> H.tolist()                                      # x xᵀ for x = (1, 2)
      [[1.0, 2.0], [2.0, 4.0]]
    """
    op = hessian_operator(loss_fn, params, leaves=leaves, data=data, batch_size=batch_size, mesh=mesh, devices=devices)
    return _materialize(op, chunk_size, max_bytes, "hessian", leaves)


def hessian_block(
    loss_fn: Callable, params, rows, cols, *, chunk_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> jax.Array:
    """The block ``∂²L / ∂θ_rows ∂θ_cols`` (P_rows × P_cols) for two lists of leaf indices.

    Costs P_cols products; e.g. ``hessian_block(loss, params, [1], [2])`` is the cross block
    between W_1 and W_2 of a `UFMParams`. ``rows == cols`` gives a diagonal block.
    """
    rows, cols = _as_list(rows, "rows"), _as_list(cols, "cols")
    if rows == cols:
        return hessian(loss_fn, params, rows, chunk_size=chunk_size, max_bytes=max_bytes)
    if set(rows) & set(cols):
        raise ValueError(f"rows and cols must be equal or disjoint, got {rows} and {cols}")
    op = hessian_operator(loss_fn, params, leaves=cols + rows)
    view, _ = flat_view(params, cols + rows)
    n_cols = sum(int(np.prod(s)) for s in view.shapes[: len(cols)])
    _check_bytes((op.dim, n_cols), op.dtype, max_bytes)
    M, finite = _columns(
        op.make,
        op.args,
        dim=op.dim,
        dtype=jnp.dtype(op.dtype),
        chunk=_chunk(n_cols, chunk_size),
        col_start=0,
        num_cols=n_cols,
    )
    if not bool(finite):
        raise_nonfinite("hessian_block", op, "a column of the block (a product A e_j)", cols + rows)
    return M[:, n_cols:].T


def _as_list(x, name):
    if isinstance(x, (int, np.integer)):
        return [int(x)]
    try:
        return [int(i) for i in x]
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {x!r}") from None


def ggn(
    model_fn: Callable,
    output_loss: Callable,
    params,
    leaves=None,
    *,
    chunk_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> jax.Array:
    """Dense Gauss–Newton matrix ``Jᵀ ∇²ℓ J`` of ``output_loss ∘ model_fn`` over ``leaves``.

    ``data=`` / ``batch_size=`` / ``mesh=`` as in `hessian`.
    """
    op = ggn_operator(
        model_fn, output_loss, params, leaves=leaves, data=data, batch_size=batch_size, mesh=mesh, devices=devices
    )
    return _materialize(op, chunk_size, max_bytes, "ggn", leaves)


@result
class HessianSplit:
    """``hessian = ggn + residual`` over the same leaves (dense, P × P); a dense result is always converged."""

    hessian: jax.Array
    ggn: jax.Array
    residual: jax.Array
    converged: bool = True
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        def fro(A):
            return float(jnp.linalg.norm(A))

        return {
            "dim": int(self.hessian.shape[0]),
            "fro_hessian": fro(self.hessian),
            "fro_ggn": fro(self.ggn),
            "fro_residual": fro(self.residual),
            "converged": self.converged,
            "messages": list(self.messages),
        }


def hessian_split(
    model_fn: Callable,
    output_loss: Callable,
    params,
    leaves=None,
    *,
    chunk_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> HessianSplit:
    """Dense H, G and the residual H − G of ``output_loss ∘ model_fn`` (each from its own products)."""
    kw = dict(chunk_size=chunk_size, max_bytes=max_bytes)
    H = hessian(lambda p: output_loss(model_fn(p)), params, leaves, **kw)
    G = ggn(model_fn, output_loss, params, leaves, **kw)
    R = materialize(residual_operator(model_fn, output_loss, params, leaves=leaves), **kw)
    return HessianSplit(H, G, R)


# ---- per-sample gradients ---------------------------------------------------------
@result
class GradientMoments:
    """Per-sample gradients ``g_i`` (N × P), their mean, second moment and covariance.

    ``second_moment = (1/N) Σ g_i g_iᵀ``, ``covariance = (1/N) Σ (g_i − ḡ)(g_i − ḡ)ᵀ``
    (population normalisation, ``docs/theory.md`` §4).
    """

    per_sample: jax.Array
    mean: jax.Array
    second_moment: jax.Array
    covariance: jax.Array
    converged: bool = True
    messages: tuple[str, ...] = ()

    def spectra(self) -> GradientSpectra:
        """The mean gradient and the spectra of the two moment matrices (`Spectrum.from_dense`)."""
        return GradientSpectra(
            np.asarray(self.mean), Spectrum.from_dense(self.second_moment), Spectrum.from_dense(self.covariance)
        )

    def to_dict(self) -> dict:
        return {
            "num_samples": int(self.per_sample.shape[0]),
            "dim": int(self.per_sample.shape[1]),
            "mean_norm": float(jnp.linalg.norm(self.mean)),
            "trace_second_moment": float(jnp.trace(self.second_moment)),
            "trace_covariance": float(jnp.trace(self.covariance)),
            "converged": self.converged,
            "messages": list(self.messages),
        }


def gradient_moments(
    per_sample_loss_fn: Callable,
    params,
    leaves=None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    data=None,
    batch_size=None,
    mesh=None,
    devices=None,
) -> GradientMoments:
    """Per-sample gradients of ``per_sample_loss_fn(params) -> (N,)`` and their moments.

    The total loss is taken to be the mean of the N per-sample losses (so ``mean`` is its
    gradient). Gradients are one vmapped VJP per sample (``jax.jacrev``) over the chosen
    ``leaves``. With ``data=``, ``per_sample_loss_fn(params, batch) -> (n_b,)`` and the
    per-sample gradients are computed batch by batch (``batch_size``, ``mesh``; see
    `ufm.curvature.hessian_operator`).
    """
    view, all_leaves = flat_view(params, leaves)
    x0 = view.flatten(all_leaves)
    if data is not None:
        return _moments(
            _streamed_grads(per_sample_loss_fn, params, leaves, view, x0, data, batch_size, mesh, devices, max_bytes)
        )

    def f(x):
        return per_sample_loss_fn(view.unflatten(all_leaves, x))

    losses = jax.eval_shape(f, x0)
    if len(losses.shape) != 1:
        raise ValueError(f"per_sample_loss_fn must return a vector (N,), got shape {losses.shape}")
    _check_bytes((view.dim, view.dim), x0.dtype, max_bytes, "second moment")
    return _moments(_per_sample_grads(f, x0))


def _moments(g):
    N = g.shape[0]
    mean = g.mean(axis=0)
    second = g.T @ g / N
    centred = g - mean
    return GradientMoments(g, mean, second, centred.T @ centred / N)


@functools.partial(jax.jit, static_argnums=0)
def _per_sample_grads(f, x0):
    return jax.jacrev(f)(x0)


def _streamed_grads(per_sample_loss_fn, params, leaves, view, x0, data, batch_size, mesh, devices, max_bytes):
    """Per-sample gradients over ``data``, batch by batch (routed through ``_data.data_rows``)."""
    from ._data import data_rows, data_spec, place_data

    spec = data_spec(data, batch_size, mesh, devices)
    _check_bytes((view.dim, view.dim), x0.dtype, max_bytes, "second moment")
    _, all_leaves = flat_view(params, leaves)

    def batch_grads(batch, ops):
        leaves_, x = ops
        return jax.jacrev(lambda y: per_sample_loss_fn(view.unflatten(leaves_, y), batch))(x)

    run = jax.jit(lambda placed, ops: data_rows(batch_grads, placed, spec, ops))
    return run(place_data(data, spec), (all_leaves, x0))


# ---- Papyan's decomposition -------------------------------------------------------
@result
class PapyanDecomposition:
    """``G = class_ + cross + within`` (Papyan 2020, ``docs/theory.md`` §4), dense P × P each.

    ``class_vectors`` v_c (C × P) and ``pair_vectors`` v_{cc'} (C × K × P) are the class and
    class-pair means of the per-sample, per-output vectors v_{icc'}.
    """

    class_: jax.Array
    cross: jax.Array
    within: jax.Array
    class_vectors: jax.Array
    pair_vectors: jax.Array
    converged: bool = True
    messages: tuple[str, ...] = ()

    @property
    def ggn(self) -> jax.Array:
        return self.class_ + self.cross + self.within

    def spectra(self, *, vectors: bool = True) -> GaussNewtonSplit:
        """The three parts' spectra (`Spectrum.from_dense`), the type `ufm.theory.gn_decomposition` returns."""
        return GaussNewtonSplit(
            *(Spectrum.from_dense(G, vectors=vectors) for G in (self.class_, self.cross, self.within))
        )

    def to_dict(self) -> dict:
        def tr(A):
            return float(jnp.trace(A))

        return {
            "dim": int(self.class_.shape[0]),
            "trace_class": tr(self.class_),
            "trace_cross": tr(self.cross),
            "trace_within": tr(self.within),
        }


def papyan_decomposition(
    model_fn: Callable,
    params,
    labels,
    *,
    loss: str,
    leaves=None,
    sample_axis: int = 1,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PapyanDecomposition:
    """Split the GGN of a classifier into class, cross-class and within-class parts.

    ``model_fn(params)`` returns the outputs with samples along ``sample_axis`` (ufm's
    convention: columns, K × N) and K outputs along the other axis; ``labels`` (N,) are
    ints in ``[0, C)``. The per-sample output Hessian is written as a sum of rank-one terms
    ``Σ_{c'} w_{c'} u_{c'} u_{c'}ᵀ`` — ``loss="mse"``: ``u = e_{c'}``, ``w = 1`` (ufm's
    ``(1/2N)‖Z − Y‖²``); ``loss="ce"``: ``u = e_{c'} − p``, ``w = p_{c'}`` (mean
    cross-entropy; ``Σ p_{c'}(e_{c'} − p)(·)ᵀ = diag p − ppᵀ``) — and
    ``v_{icc'} = √w J_iᵀ u`` for sample i of class c. With class sizes n_c:

      G_class  = Σ_c (K n_c / N) v_c v_cᵀ,
      G_cross  = Σ_c (n_c / N) Σ_{c'} (v_{cc'} − v_c)(v_{cc'} − v_c)ᵀ,
      G_within = (1/N) Σ_{c, i∈c, c'} (v_{icc'} − v_{cc'})(v_{icc'} − v_{cc'})ᵀ,

    with v_{cc'} = mean_i v_{icc'} and v_c = mean_{c'} v_{cc'}; for balanced classes these
    are ``docs/theory.md`` §4's Σ_c v_c v_cᵀ and (1/K) Σ_{cc'}(·). The weights are absorbed into
    the vectors, so the three parts sum to G exactly.
    """
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    view, all_leaves = flat_view(params, leaves)
    x0 = view.flatten(all_leaves)

    def f(x):
        return jnp.moveaxis(model_fn(view.unflatten(all_leaves, x)), sample_axis, 0)

    Z = f(x0)
    if Z.ndim != 2:
        raise ValueError(f"model_fn must return a 2-d (outputs × samples) array, got shape {Z.shape}")
    N, K = Z.shape
    labels = np.asarray(labels)
    if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({N},), got {labels.dtype} {labels.shape}")
    classes = np.unique(labels)
    _check_bytes((N * K, view.dim), x0.dtype, max_bytes, "per-sample Jacobian")
    J = jax.jacrev(f)(x0)  # (N, K, P): J[i, o] = ∂z_{i,o}/∂θ
    if loss == "mse":
        V = J  # v_{i c'} = J_iᵀ e_{c'}
    else:
        p = jax.nn.softmax(Z, axis=1)  # (N, K)
        JTp = jnp.einsum("nk,nkp->np", p, J)
        V = jnp.sqrt(p)[:, :, None] * (J - JTp[:, None, :])  # √p_{c'} J_iᵀ(e_{c'} − p_i)
    class_vecs, pair_vecs = [], []
    G_class = G_cross = G_within = 0.0
    for c in classes:
        Vc = V[labels == c]  # (n_c, K, P)
        n_c = Vc.shape[0]
        v_cc = Vc.mean(axis=0)  # (K, P)
        v_c = v_cc.mean(axis=0)  # (P,)
        D = v_cc - v_c
        W = (Vc - v_cc).reshape(-1, view.dim)
        G_class = G_class + (K * n_c / N) * jnp.outer(v_c, v_c)
        G_cross = G_cross + (n_c / N) * D.T @ D
        G_within = G_within + W.T @ W / N
        class_vecs.append(v_c)
        pair_vecs.append(v_cc)
    return PapyanDecomposition(G_class, G_cross, G_within, jnp.stack(class_vecs), jnp.stack(pair_vecs))
