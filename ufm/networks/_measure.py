"""The one measurement route of the real-network analysis, and how a prediction is scored.

* `_eig`: eigenpairs of a Hessian through ``ufm.curvature.spectrum`` — dense (all pairs, the
  matrix kept for the exact split) up to ``ufm.curvature.DEFAULT_DENSE_MAX`` parameters,
  else the top ``k`` by the Krylov solver with ``throw=False`` (the status is reported).
* `_count`: outliers by ``ufm.curvature.count_outliers`` (its gap rule).
* `_errors`: a prediction's outlier count and ``|measured − predicted| / predicted`` over it.
* `expected_outliers`: K² for MSE, (K − 1)² for CE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..curvature._spectrum import DEFAULT_DENSE_MAX
from ..spectrum import Spectrum
from ._models import NetworkSpec

__all__ = ["expected_outliers"]


def _curvature():
    from .. import curvature  # lazy: heavy

    return curvature


def _theory():
    from .. import theory

    return theory


def _expected(loss: str, K: int) -> int:
    return K * K if loss == "mse" else (K - 1) ** 2


def default_network_k(loss: str, K: int) -> int:
    """The whole network's default number of eigenpairs: past the expected outliers by K
    (K² + K for MSE, (K − 1)² + K for CE), so that a gap after them can be seen."""
    return _expected(loss, K) + K


def expected_outliers(spec: NetworkSpec) -> int:
    """K² for MSE, (K − 1)² for CE (``docs/theory.md`` §4, §5)."""
    return _expected(spec.loss, spec.num_classes)


def _as_f64(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _count(vals) -> int:
    return int(_curvature().count_outliers(np.asarray(vals)))


# ---- the one eigendecomposition route: ufm.curvature.spectrum ------------------------------------
def _eig(
    fn,
    params,
    *,
    leaves=None,
    k: int | None = None,
    dense_max: int = DEFAULT_DENSE_MAX,
    seed: int = 0,
    data=None,
    batch_size: int | None = None,
):
    """Eigenpairs of the Hessian of ``fn`` over ``leaves`` through ``ufm.curvature.spectrum``:
    dense (all pairs, residuals measured) when the block has at most ``dense_max`` parameters —
    the matrix is kept for the exact class-mean / within-class split —, else the top ``k`` by
    the Krylov solver (with ``data``: ``fn(params, batch)`` streamed in batches of ``batch_size``,
    Krylov only). Returns ``(Spectrum, dense matrix or None)``."""
    curv = _curvature()
    sel = jax.tree_util.tree_leaves(params)
    P = sum(sel[i].size for i in leaves) if leaves is not None else sum(x.size for x in sel)
    if data is not None:
        return (
            curv.spectrum(
                fn,
                params,
                leaves=leaves,
                k=k,
                method="krylov",
                seed=seed,
                throw=False,
                data=data,
                batch_size=batch_size,
            ),
            None,
        )
    if P <= dense_max:
        Hm = np.asarray(curv.hessian(fn, params, leaves=leaves), np.float64)
        Hm = 0.5 * (Hm + Hm.T)
        return curv.spectrum(Hm, method="dense"), Hm
    # throw=False: a missed tolerance is reported in the table, the verdict and the JSON
    return curv.spectrum(fn, params, leaves=leaves, k=k, method="krylov", seed=seed, throw=False), None


def _errors(pred: Spectrum, meas: Spectrum, k: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``m`` = the prediction's outliers by the gap rule (≤ k; fewer when the means or the tail are
    numerically rank deficient) and ``|meas − pred| / pred`` over the top m."""
    if not pred.eigenvalues.size or not pred.eigenvalues[0] > 0:
        raise ValueError("the prediction is zero: the class means or the tail vanish")
    m = min(k, _count(np.concatenate([pred.eigenvalues, [0.0]])) or int(np.sum(pred.eigenvalues > 0)))
    pv, mv = pred.eigenvalues[:m], meas.eigenvalues[:m]
    return m, np.abs(mv - pv) / np.abs(pv), pv
