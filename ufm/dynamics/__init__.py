"""Spectra along training (``docs/dynamics.md``).

One module per concept; each experiment module (`ufm.dynamics.align`, `ufm.dynamics.sgd_ode`, `ufm.dynamics.catapult`, `ufm.dynamics.dmap`)
defines ``add_cli(subparsers)`` for its ``ufm dynamics <task>`` command (see ``ufm.cli``).

* Trajectory recording with probes at checkpoints (``docs/alignment.md``).
* Probes: top-k blocks, G-matrix, alignment, overlaps, outlier counts, NC (``docs/dynamics.md`` §D1).
* k-GMM and XOR-GMM data (``docs/alignment.md``).
* 1-layer softmax regression and the 2-layer ReLU–sigmoid net (``docs/alignment.md``).
* Anisotropic Gaussian mixtures (``docs/sgd_ode.md``).
* One-pass SGD and its exact ODE (``docs/sgd_ode.md``).
* Tangent kernels and η_crit (``docs/catapults.md``).
* NTK MLPs, projected loss, AGOP, catapult detection (``docs/catapults.md``).
* Diffusion maps of trajectories (``docs/diffusion_maps.md``).
"""

from ._trajectory import (
    ProbeContext,
    Trajectory,
    checkpoint_steps,
    record,
)
from ._probes import (
    Counts,
    TopSpace,
    Overlap,
    alignment,
    top_fraction,
    subspace_overlap,
    spectrum_counts,
    top_space,
    hessian_top_space,
    per_sample_grads,
    g_top_space,
    collapse_probe,
    spectral_probe,
)
from ._mixtures import (
    KGMM,
    XORGMM,
    orthonormal_means,
)
from ._models import (
    TwoLayerParams,
    init_softmax,
    softmax_loss,
    softmax_hessian,
    softmax_per_sample_grads,
    init_two_layer,
    two_layer_hidden,
    two_layer_logits,
    two_layer_loss,
)
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
    "ProbeContext",
    "Trajectory",
    "checkpoint_steps",
    "record",
    "Counts",
    "TopSpace",
    "Overlap",
    "alignment",
    "top_fraction",
    "subspace_overlap",
    "spectrum_counts",
    "top_space",
    "hessian_top_space",
    "per_sample_grads",
    "g_top_space",
    "collapse_probe",
    "spectral_probe",
    "KGMM",
    "XORGMM",
    "orthonormal_means",
    "TwoLayerParams",
    "init_softmax",
    "softmax_loss",
    "softmax_hessian",
    "softmax_per_sample_grads",
    "init_two_layer",
    "two_layer_hidden",
    "two_layer_logits",
    "two_layer_loss",
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
