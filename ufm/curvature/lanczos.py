"""Compatibility module: the names that lived here before the split (issue 21 item 3).

The Krylov–Schur eigensolver and its driver (`top_eigenpairs`) are in
`ufm.curvature.eigensolver`; the stochastic estimators (`trace`, `spectral_density`) in
`ufm.curvature.stochastic` — as matfree separates ``eig`` / ``decomp`` / ``stochtrace``.
``from ufm.curvature.lanczos import ...`` keeps working for the public names.
"""

from .eigensolver import ConvergenceWarning, NotConvergedError, top_eigenpairs
from .stochastic import SpectralDensity, TraceEstimate, spectral_density, trace

__all__ = [
    "top_eigenpairs",
    "ConvergenceWarning",
    "NotConvergedError",
    "trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
]
