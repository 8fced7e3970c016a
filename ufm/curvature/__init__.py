"""Curvature of any ``loss_fn(params) -> scalar`` over a pytree, for a block or the whole model.

* `spectrum`: THE measurement of a block's spectrum (dense ``eigh`` or block Krylov), a `Spectrum`.
* `hvp`: Hessian-, Gauss–Newton- and residual-vector products, flat `Operator` s.
* `dense`: dense Hessian / blocks / G-H split / gradient moments / Papyan decomposition.
* `eigensolver`: top eigenpairs (thick-restarted block Krylov–Schur).
* `stochastic`: Hutchinson trace, SLQ spectral density.
* `subspace`: principal angles, overlaps, alignment, gradient fraction, outlier count.

``leaves`` everywhere indexes ``jax.tree_util.tree_leaves(params)`` (for ``UFMParams``:
0 is H_1, l is W_l) and flattens the chosen leaves row-major in the order given.
"""

from . import dense as dense
from . import eigensolver as eigensolver
from . import lanczos as lanczos  # compatibility: eigensolver + stochastic
from . import stochastic as stochastic
from . import subspace as subspace
from ._checks import NonFiniteError
from ._data import data_mesh
from ._operator import Operator
from ._spectrum import DEFAULT_DENSE_MAX, spectrum
from .dense import (
    GradientMoments,
    HessianSplit,
    PapyanDecomposition,
    ggn,
    gradient_moments,
    hessian,
    hessian_block,
    hessian_split,
    papyan_decomposition,
)
from .dense import (
    materialize as materialize,
)
from .eigensolver import ConvergenceWarning, NotConvergedError, top_eigenpairs
from .hvp import ggn_operator, gradient, hessian_operator, residual_operator
from .hvp import ggn_vp as ggn_vp
from .hvp import hvp as hvp
from .hvp import linearized_hvp as linearized_hvp
from .hvp import residual_vp as residual_vp
from .stochastic import SpectralDensity, TraceEstimate, spectral_density, trace
from .subspace import alignment, count_outliers, gradient_fraction, principal_angles, projector_overlap

# What a user needs (the lower-level pieces — `materialize`, `linearized_hvp`, `ggn_vp`,
# `residual_vp` — stay importable from here and their submodules).
__all__ = [
    # measure a block's spectrum (dense or matrix-free), the one entry
    "spectrum",
    "DEFAULT_DENSE_MAX",
    # operators over the chosen leaves
    "Operator",
    "hessian_operator",
    "ggn_operator",
    "residual_operator",
    "hvp",
    # dense objects
    "hessian",
    "hessian_block",
    "ggn",
    "hessian_split",
    "HessianSplit",
    "gradient_moments",
    "GradientMoments",
    "papyan_decomposition",
    "PapyanDecomposition",
    # matrix-free estimators
    "top_eigenpairs",
    "trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    # subspaces
    "principal_angles",
    "projector_overlap",
    "alignment",
    "gradient_fraction",
    "count_outliers",
    # data as an argument (streamed / sharded) and failure made loud
    "gradient",
    "data_mesh",
    "ConvergenceWarning",
    "NotConvergedError",
    "NonFiniteError",
]
