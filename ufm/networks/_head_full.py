"""The head's full Hessian: all head layers jointly, cross-layer blocks included.

Measured: the data Hessian of the mean loss (no ridge, as the layer blocks) over every head
parameter ``W_1..W_L`` (then ``b_1..b_L`` when the head has biases), each row-major, on the
head alone with H_1 fixed — dense up to ``ufm.curvature.DEFAULT_DENSE_MAX`` parameters, the top
``k`` by the Krylov solver past it (`_measure._eig`).

Predicted (``docs/real_networks.md`` §9, ``docs/theory.md`` §4.8): the closed form
``ufm.theory.collapsed_full_hessian`` at the head's class means of H_1 and its weights —
*class-mean* with ``Q_c``, ``g_c`` at the class-mean logits, *class-averaged* with the class
averages of the per-sample ``∇²_z ℓ`` and ``∇_z ℓ`` at the measured logits. Dense (``eigh`` of the
closed-form matrix) up to the same threshold, Krylov on its closed-form products past it.
The errors are over the prediction's own outliers (gap rule, as for the layers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..collapse import class_means
from ..curvature._spectrum import DEFAULT_DENSE_MAX
from ..model import output_loss
from ..results import result
from ..spectrum import Spectrum
from . import _measure
from ._head import _Head
from ._layers import REL_ERROR_THRESHOLD
from ._measure import _count, _curvature, _errors, _expected, _theory

__all__ = ["HeadFullComparison"]


@result(static=("num_params", "expected", "num_outliers", "predicted_outliers", "holds", "source"))
class HeadFullComparison:
    """Predicted vs measured full data Hessian of the head (``docs/real_networks.md`` §9).

    Fields:
      num_params: P of the head (weights, then biases).
      expected: K² (MSE) or (K − 1)² (CE), for reference; num_outliers: gap rule on the measured top.
      predicted_outliers: m = the class-mean prediction's outliers by the same gap rule over its
        top 2·expected (``expected`` when it finds no gap); the errors and the overlap are over the top m.
      predicted, predicted_class_averaged, measured: the top ``m + 10`` eigenvalues, descending.
      max_rel_error, median_rel_error: ``|meas − pred| / pred`` of the class-mean prediction;
      class_averaged_max_rel_error, class_averaged_median_rel_error: the class-averaged one's.
      overlap: ``Tr(P_pred P_meas) / m`` of the two top-m eigenspaces (class-mean prediction).
      holds: the better prediction within `REL_ERROR_THRESHOLD`, the measured count = the predicted
        count (both by the gap rule), converged.
      source: ``"dense"`` / ``"krylov"``; converged, messages: of the measurement and the prediction.
    """

    num_params: int
    expected: int
    num_outliers: int
    predicted_outliers: int
    predicted: np.ndarray
    predicted_class_averaged: np.ndarray
    measured: np.ndarray
    max_rel_error: float
    median_rel_error: float
    class_averaged_max_rel_error: float
    class_averaged_median_rel_error: float
    overlap: float
    holds: bool
    source: str
    converged: bool
    messages: tuple[str, ...] = ()


def _leaves(head: _Head) -> list[int]:
    """The head's parameter leaves in the prediction's order: W_1..W_L, then b_1..b_L."""
    b = [i for i, a in enumerate(head.arrays) if np.ndim(a) == 1] if head.biases else []
    return [*head.w_leaves, *b]


def _output_statistics(head: _Head):
    """Class averages of ``∇_z ℓ_i`` (K × K, row c) and ``∇²_z ℓ_i`` (K × K × K) at the measured logits."""
    Z = jnp.asarray(head.features[-1], jnp.float64).T  # N × K
    ell = lambda z, c: output_loss(head.loss, z[:, None], c[None])  # noqa: E731
    g = np.asarray(jax.jit(jax.vmap(jax.grad(ell)))(Z, jnp.asarray(head.labels)))
    Q = head.curvatures(head.L, head.features[-1], head.labels)  # the last layer's tail is the loss alone
    lab = head.labels
    return (
        np.stack([g[lab == c].mean(axis=0) for c in range(head.K)]),
        np.stack([Q[lab == c].mean(axis=0) for c in range(head.K)]),
    )


def _predicted(head: _Head, M, *, k: int, dense_max: int, seed: int, **stats) -> Spectrum:
    th, curv = _theory(), _curvature()
    args = ([np.asarray(W) for W in head.weights], M, [np.asarray(b) for b in head.biases])
    kw = dict(activation=head.activation, loss=head.loss, **stats)
    matvec, dim = th.collapsed_full_hessian_matvec(*args, **kw)
    if dim <= dense_max:
        return curv.spectrum(th.collapsed_full_hessian(*args, **kw, max_dim=dim), method="dense")
    op = curv.Operator.from_matvec(matvec, dim)
    return curv.spectrum(op, k=k, method="krylov", seed=seed, throw=False)


def compare_head_full(head: _Head, *, dense_max: int = DEFAULT_DENSE_MAX, seed: int = 0) -> HeadFullComparison:
    """`HeadFullComparison` of a head (module docstring)."""
    sub = _curvature().subspace
    K = head.K
    expected = _expected(head.loss, K)
    k = 2 * K * K + 10  # past every GN outlier (rank ≤ K·K) and their gap
    M = class_means(head.features[0], head.labels, K)
    g, Q = _output_statistics(head)
    pred = _predicted(head, M, k=k, dense_max=dense_max, seed=seed)
    avg = _predicted(head, M, k=k, dense_max=dense_max, seed=seed, gradients=g, curvatures=Q)
    meas, _ = _measure._eig(head.loss_fn, head.arrays, leaves=_leaves(head), k=k, dense_max=dense_max, seed=seed)
    # the Gauss-Newton part has rank ≤ K·K; the residual part adds small ± eigenvalues (zero at
    # an interpolating MSE optimum), so the outliers are counted by the gap rule over the top
    # 2·expected (past them, a step to the exact zeros of the prediction would always be the largest)
    top = 2 * expected
    counted = _count(np.asarray(pred.eigenvalues)[:top])
    m, rel, _ = _errors(pred, meas, counted or expected)  # no gap: the errors over the top `expected`
    _, rel_avg, _ = _errors(avg, meas, _count(np.asarray(avg.eigenvalues)[:top]) or expected)
    vals = np.asarray(meas.eigenvalues)
    n_out = _count(vals[:top])
    converged = bool(meas.converged and pred.converged and avg.converged)
    Up, Um = np.asarray(pred.eigenvectors)[:, :m], np.asarray(meas.eigenvectors)[:, :m]
    n = m + 10
    pad = lambda v: np.concatenate([v, np.zeros(max(0, n - v.size))])[:n]  # noqa: E731
    return HeadFullComparison(
        num_params=int(meas.dim),
        expected=expected,
        num_outliers=n_out,
        predicted_outliers=m,
        predicted=pad(np.asarray(pred.eigenvalues)),
        predicted_class_averaged=pad(np.asarray(avg.eigenvalues)),
        measured=pad(vals),
        max_rel_error=float(rel.max()),
        median_rel_error=float(np.median(rel)),
        class_averaged_max_rel_error=float(rel_avg.max()),
        class_averaged_median_rel_error=float(np.median(rel_avg)),
        overlap=float(sub.projector_overlap(Up, Um)),
        holds=bool(min(rel.max(), rel_avg.max()) <= REL_ERROR_THRESHOLD and n_out == counted and converged),
        source=meas.source,
        converged=converged,
        messages=tuple(meas.messages) + tuple(pred.messages) + tuple(avg.messages),
    )
