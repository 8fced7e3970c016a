"""Spectra along training (``docs/dynamics.md``, from the project notes ``DYNAMICS.md``).

One module per concept: trajectory recording with spectral probes at checkpoints, the data
models of the neighbouring papers, and one experiment module per phenomenon (outlier
alignment, the SGD ODE on anisotropic mixtures, catapults and AGOP, diffusion maps).

Each experiment module that has a command line defines ``add_cli(subparsers)``, which adds
its ``ufm dynamics <task>`` parser and sets ``func`` (see ``ufm.cli``).
"""

from . import catapult
from ._tangent_kernel import (
    NORMALIZATIONS,
    batch_tangent_kernels,
    critical_learning_rate,
    kernel_spectrum,
    tangent_kernel,
    tangent_kernel_operator,
)
from .catapult import (
    Catapult,
    CatapultConfig,
    CatapultReport,
    CatapultRun,
    NTKMLP,
    Target,
    agop,
    agop_alignment,
    detect_catapults,
    make_target,
    projected_loss,
    run_gd,
    run_schedule,
    run_sgd,
)

__all__: list[str] = [
    # tangent kernels (docs/catapults.md §1)
    "tangent_kernel_operator",
    "tangent_kernel",
    "batch_tangent_kernels",
    "kernel_spectrum",
    "critical_learning_rate",
    "NORMALIZATIONS",
    # catapults and AGOP (docs/catapults.md §2-§5)
    "catapult",
    "NTKMLP",
    "Target",
    "make_target",
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
]
