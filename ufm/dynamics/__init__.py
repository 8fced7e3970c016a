"""Spectra along training (``docs/dynamics.md``).

One module per concept; each experiment module (`ufm.dynamics.sgd_ode`, `ufm.dynamics.catapult`, `ufm.dynamics.dmap`)
defines ``add_cli(subparsers)`` for its ``ufm dynamics <task>`` command (see ``ufm.cli``).

* Anisotropic Gaussian mixtures (``docs/sgd_ode.md``).
* One-pass SGD and its exact ODE (``docs/sgd_ode.md``).
* Tangent kernels and η_crit (``docs/catapults.md``).
* NTK MLPs, projected loss, AGOP, catapult detection (``docs/catapults.md``).
* Diffusion maps of trajectories (``docs/diffusion_maps.md``).
"""

from ._anisotropic import (
    COVARIANCES,
    AnisotropicMixture,
    anisotropic_mixture,
)
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
from ._tangent_kernel import (
    tangent_kernel_operator,
    tangent_kernel,
    batch_tangent_kernels,
    kernel_spectrum,
    critical_learning_rate,
    NORMALIZATIONS,
)
from .catapult import (
    NTKMLP,
    Target,
    make_target,
    TARGETS,
    agop,
    agop_alignment,
    projected_loss,
    Catapult,
    detect_catapults,
    CatapultConfig,
    CatapultRun,
    CatapultReport,
    run_gd,
    run_schedule,
    run_sgd,
)
from ._diffusion_map import (
    DiffusionMap,
    KernelSumCurve,
    TrajectoryDiffusion,
    analyze_trajectory,
    diffusion_map,
    kernel_sum_curve,
    quadratic_r2,
    spectral_gap,
    squared_distances,
)

__all__ = [
    "COVARIANCES",
    "AnisotropicMixture",
    "anisotropic_mixture",
    "LOSSES",
    "ODEResult",
    "PhaseDiagram",
    "SGDResult",
    "TrajectoryGap",
    "gaussian_expectations",
    "ode_sgd_gap",
    "phase_diagram",
    "simulate_sgd",
    "solve_sgd_ode",
    "time_grid",
    "tangent_kernel_operator",
    "tangent_kernel",
    "batch_tangent_kernels",
    "kernel_spectrum",
    "critical_learning_rate",
    "NORMALIZATIONS",
    "NTKMLP",
    "Target",
    "make_target",
    "TARGETS",
    "agop",
    "agop_alignment",
    "projected_loss",
    "Catapult",
    "detect_catapults",
    "CatapultConfig",
    "CatapultRun",
    "CatapultReport",
    "run_gd",
    "run_schedule",
    "run_sgd",
    "DiffusionMap",
    "KernelSumCurve",
    "TrajectoryDiffusion",
    "analyze_trajectory",
    "diffusion_map",
    "kernel_sum_curve",
    "quadratic_r2",
    "spectral_gap",
    "squared_distances",
]
