"""Curvature of any ``loss_fn(params) -> scalar`` over a pytree, for a block or the whole model.

* `hvp`: Hessian-, Gauss–Newton- and residual-vector products, flat `Operator` s.
* `dense`: dense Hessian / blocks / G-H split / gradient moments / Papyan decomposition.
* `lanczos`: top eigenpairs (restarted block Krylov), Hutchinson trace, SLQ density.
* `subspace`: principal angles, overlaps, alignment, gradient fraction, outlier count.

``leaves`` everywhere indexes ``jax.tree_util.tree_leaves(params)`` (for ``UFMParams``:
0 is H_1, l is W_l) and flattens the chosen leaves row-major in the order given.
"""

from . import dense, lanczos, subspace
from ._operator import Operator
from .dense import (
    GradientMoments,
    HessianSplit,
    PapyanDecomposition,
    ggn,
    gradient_moments,
    hessian,
    hessian_block,
    hessian_split,
    materialize,
    papyan_decomposition,
)
from .hvp import ggn_operator, ggn_vp, hessian_operator, linearized_hvp, residual_operator, residual_vp
from .hvp import hvp as hvp  # noqa: PLC0414  (the function shadows the submodule on purpose)
from .lanczos import SpectralDensity, TraceEstimate, spectral_density, top_eigenpairs, trace
from .lanczos import ConvergenceWarning, NotConvergedError
from .hvp import gradient
from ._data import data_mesh
from .subspace import alignment, count_outliers, gradient_fraction, principal_angles, projector_overlap

__all__ = [
    "Operator",
    "hvp",
    "linearized_hvp",
    "ggn_vp",
    "residual_vp",
    "hessian_operator",
    "ggn_operator",
    "residual_operator",
    "hessian",
    "hessian_block",
    "ggn",
    "hessian_split",
    "HessianSplit",
    "materialize",
    "gradient_moments",
    "GradientMoments",
    "papyan_decomposition",
    "PapyanDecomposition",
    "top_eigenpairs",
    "trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    "principal_angles",
    "projector_overlap",
    "alignment",
    "gradient_fraction",
    "count_outliers",
    "ConvergenceWarning",
    "NotConvergedError",
    "gradient",
    "data_mesh",
    "dense",
    "lanczos",
    "subspace",
]
