"""Deep-neural-collapse theory: the closed-form DNC point and its spectra (``MATH.md`` §3–§6).

* `dnc_solution`, `construct_optimum`: the point itself (scale γ or α, singular values).
* `layer_hessian_spectrum`, `gn_decomposition`, `gradient_spectrum`, `weight_spectrum`,
  `feature_hessian_spectrum`, `full_hessian_spectrum`: numeric closed forms from class means.
* `collapsed_layer_hessian`, `kron_eigh`: the array-level routes used for real networks.
* `symbolic` (sympy, imported on first use): the derivations and `latex_report`.
"""

import importlib

from ._class_averaged import LayerBlockSplit, class_averaged_layer_hessian, layer_block_split, softmax_curvature
from ._kron import kron_eigh, kron_sum_spectrum
from ._solution import DNCSolution, construct_optimum, dnc_solution, mse_threshold
from .spectra import (
    GNDecomposition,
    GradientSpectrum,
    collapsed_layer_hessian,
    feature_hessian_spectrum,
    full_hessian_spectrum,
    gn_decomposition,
    gradient_spectrum,
    layer_hessian_spectrum,
    weight_spectrum,
)

__all__ = [
    "DNCSolution",
    "GNDecomposition",
    "GradientSpectrum",
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
__all__ += ["LayerBlockSplit", "class_averaged_layer_hessian", "layer_block_split", "softmax_curvature"]


def latex_report() -> str:
    """All derived formulas as LaTeX (see `ufm.theory.symbolic.latex_report`)."""
    return importlib.import_module(".symbolic", __name__).latex_report()


def __getattr__(name):
    if name == "symbolic":
        return importlib.import_module(".symbolic", __name__)
    raise AttributeError(f"module 'ufm.theory' has no attribute {name!r}")
