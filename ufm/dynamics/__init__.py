"""Spectra along training (``docs/dynamics.md``, from the project notes ``DYNAMICS.md``).

One module per concept: trajectory recording with spectral probes at checkpoints, the data
models of the neighbouring papers, and one experiment module per phenomenon (outlier
alignment, the SGD ODE on anisotropic mixtures, catapults and AGOP, diffusion maps).

Each experiment module that has a command line defines ``add_cli(subparsers)``, which adds
its ``ufm dynamics <task>`` parser and sets ``func`` (see ``ufm.cli``).
"""

from ._anisotropic import COVARIANCES, AnisotropicMixture, anisotropic_mixture
from .sgd_ode import (
    LOSSES,
    ODEResult,
    PhaseDiagram,
    SGDResult,
    TrajectoryGap,
    gaussian_expectations,
    ode_sgd_gap,
    phase_diagram,
    simulate_sgd,
    solve_sgd_ode,
    time_grid,
)

__all__ = [
    "COVARIANCES",
    "LOSSES",
    "AnisotropicMixture",
    "ODEResult",
    "PhaseDiagram",
    "SGDResult",
    "TrajectoryGap",
    "anisotropic_mixture",
    "gaussian_expectations",
    "ode_sgd_gap",
    "phase_diagram",
    "simulate_sgd",
    "solve_sgd_ode",
    "time_grid",
]
