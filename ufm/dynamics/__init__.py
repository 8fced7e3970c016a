"""Spectra along training (``docs/dynamics.md``): library primitives and the four experiments.

Library (pure functions and typed results, no argparse, no printing, no precision switch):
* Trajectory recording with probes at checkpoints (``docs/alignment.md``).
* Probes: top-k blocks, G-matrix, alignment, overlaps, outlier counts, NC (``docs/dynamics.md`` §D1).
* Probes for any model (NC of features, tangent-kernel spectrum) and trajectory analyses
  (catapults, diffusion map of the kept iterates).
* k-GMM and XOR-GMM data (``docs/alignment.md``).
* 1-layer softmax regression and the 2-layer ReLU–sigmoid net (``docs/alignment.md``).
* Anisotropic Gaussian mixtures (``docs/sgd_ode.md``).
* One-pass SGD and its exact ODE (``docs/sgd_ode.md``).
* Tangent kernels and η_crit (``docs/catapults.md``).
* NTK MLPs, projected loss, AGOP, catapult detection (``docs/catapults.md``).
* Diffusion maps of trajectories (``docs/diffusion_maps.md``).

The experiments built on them (align, sgd_ode, catapult, dmap) are `ufm.experiments`; their
figures `ufm.plotting`, their command lines `ufm.cli.dynamics`. Every name below is re-exported explicitly.
``ODE_LOSSES`` is `sgd_ode.LOSSES` (the ODE's losses; `ufm.spec.LOSSES` are the deep UFM's).
"""

from ..spectrum import Counts, spectrum_counts  # the gap rule lives with Spectrum (Spectrum.counts)
from . import sgd_ode
from ._anisotropic import (
    COVARIANCES,
    AnisotropicMixture,
    anisotropic_mixture,
)
from ._catapult import (
    NTK_ACTIVATIONS,
    NTKMLP,
    TARGETS,
    Catapult,
    Target,
    agop,
    agop_alignment,
    detect_catapults,
    make_target,
    projected_loss,
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
from ._mixtures import (
    KGMM,
    XORGMM,
    orthonormal_means,
)
from ._model_probes import (
    kernel_probe,
    nc_probe,
    trajectory_catapults,
    trajectory_diffusion,
)
from ._models import (
    TwoLayerParams,
    init_softmax,
    init_two_layer,
    softmax_hessian,
    softmax_loss,
    softmax_per_sample_grads,
    two_layer_hidden,
    two_layer_logits,
    two_layer_loss,
)
from ._probes import (
    Overlap,
    collapse_probe,
    g_top_space,
    hessian_top_space,
    per_sample_grads,
    spectral_probe,
    subspace_alignment,
    subspace_overlap,
    top_fraction,
    top_space,
)
from ._tangent_kernel import (
    NORMALIZATIONS,
    batch_tangent_kernels,
    critical_learning_rate,
    kernel_spectrum,
    tangent_kernel,
    tangent_kernel_operator,
)
from ._trajectory import (
    ProbeContext,
    Trajectory,
    checkpoint_steps,
    minibatch_indices,
    record,
)
from .sgd_ode import (
    LOSSES as ODE_LOSSES,
)
from .sgd_ode import (
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
    "ProbeContext",
    "Trajectory",
    "checkpoint_steps",
    "minibatch_indices",
    "record",
    "nc_probe",
    "kernel_probe",
    "trajectory_catapults",
    "trajectory_diffusion",
    "Counts",
    "Overlap",
    "subspace_alignment",
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
    "ODE_LOSSES",
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
    "NTK_ACTIVATIONS",
    "Target",
    "make_target",
    "TARGETS",
    "agop",
    "agop_alignment",
    "projected_loss",
    "Catapult",
    "detect_catapults",
    "DiffusionMap",
    "KernelSumCurve",
    "TrajectoryDiffusion",
    "analyze_trajectory",
    "diffusion_map",
    "kernel_sum_curve",
    "quadratic_r2",
    "spectral_gap",
    "squared_distances",
    "sgd_ode",
]
