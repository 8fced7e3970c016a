"""ufm — deep unconstrained feature models, deep neural collapse and their spectra.

Import is light: sympy, matplotlib and the real-network code load on first use of the
submodule that needs them (``ufm.theory``, ``ufm.plotting``, ``ufm.networks``).
float64 is never switched on here; entry points that verify do it explicitly.
"""

import importlib

from . import collapse, model
from .model import UFMParams, init_params
from .spec import UFMSpec
from .training import TrainingDiverged, TrainResult, train

__version__ = "0.1.0"

_LAZY = ("theory", "curvature", "networks", "plotting", "verification", "dynamics", "experiments", "results", "cli")
_LAZY_NAMES = {
    "verify": "verification",
    "collapsed_state": "verification",
    "Report": "verification",
    "Spectrum": "spectrum",
}

__all__ = [
    "UFMSpec",
    "UFMParams",
    "init_params",
    "train",
    "TrainResult",
    "TrainingDiverged",
    "collapse",
    "model",
    *_LAZY,
    *_LAZY_NAMES,
]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'ufm' has no attribute {name!r}")
