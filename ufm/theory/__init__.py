"""Deep-neural-collapse theory: the closed-form DNC point and its spectra (``docs/theory.md`` §3–§6).

* `dnc_solution`, `construct_optimum`: the point itself (scale γ or α, singular values, the
  layer-wise outliers with each layer's λ, the full-Hessian levels) — ``_solution.py``.
* the tail recursion (how a layer's input reaches the loss) — ``_tail.py``.
* layer-wise blocks: `layer_hessian_spectrum`, `feature_hessian_spectrum` and the
  array-level `collapsed_layer_hessian` used for real networks — ``_layer.py``.
* the parts of a layer: `gn_decomposition`, `gradient_spectrum`, `weight_spectrum` — ``_split.py``.
* the full Hessian at the linear-MSE optimum: `full_hessian_spectrum` — ``_full.py``; at any
  collapsed point of a head (any weights, biases, ReLU, CE): `collapsed_full_hessian` — ``_head_full.py``.
* `kron_eigh`, `kron_sum_spectrum`: Kronecker eigenproblems, one memory limit
  `MAX_DENSE_ENTRIES` — ``_kron.py``.
* `symbolic` (sympy, imported on first use): the derivations and `latex_report`.
"""

import importlib

from ..spectrum import GaussNewtonSplit, GradientSpectra, SingularValues
from ._class_averaged import LayerBlockSplit, class_averaged_layer_hessian, layer_block_split, softmax_curvature
from ._full import full_hessian_spectrum
from ._head_full import collapsed_full_hessian, collapsed_full_hessian_matvec
from ._kron import MAX_DENSE_ENTRIES, kron_eigh, kron_sum_spectrum
from ._layer import collapsed_layer_hessian, feature_hessian_spectrum, layer_hessian_spectrum
from ._solution import DNCSolution, FullHessianLevels, construct_optimum, dnc_solution, mse_threshold
from ._split import gn_decomposition, gradient_spectrum, weight_spectrum

__all__ = [
    "DNCSolution",
    "FullHessianLevels",
    "GaussNewtonSplit",
    "GradientSpectra",
    "MAX_DENSE_ENTRIES",
    "SingularValues",
    "collapsed_layer_hessian",
    "construct_optimum",
    "dnc_solution",
    "feature_hessian_spectrum",
    "full_hessian_spectrum",
    "gn_decomposition",
    "gradient_spectrum",
    "kron_eigh",
    "kron_sum_spectrum",
    "latex_report",
    "layer_hessian_spectrum",
    "mse_threshold",
    "symbolic",
    "weight_spectrum",
]
__all__ += ["collapsed_full_hessian", "collapsed_full_hessian_matvec"]
__all__ += ["LayerBlockSplit", "class_averaged_layer_hessian", "layer_block_split", "softmax_curvature"]


def latex_report() -> str:
    """All derived formulas as LaTeX (see `ufm.theory.symbolic.latex_report`)."""
    return importlib.import_module(".symbolic", __name__).latex_report()


def __getattr__(name):
    if name == "symbolic":
        return importlib.import_module(".symbolic", __name__)
    raise AttributeError(f"module 'ufm.theory' has no attribute {name!r}")
