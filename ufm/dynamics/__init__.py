"""Spectra along training (``docs/dynamics.md``, from the project notes ``DYNAMICS.md``).

One module per concept: trajectory recording with spectral probes at checkpoints, the data
models of the neighbouring papers, and one experiment module per phenomenon (outlier
alignment, the SGD ODE on anisotropic mixtures, catapults and AGOP, diffusion maps).

Each experiment module that has a command line defines ``add_cli(subparsers)``, which adds
its ``ufm dynamics <task>`` parser and sets ``func`` (see ``ufm.cli``).

* Diffusion maps (``DYNAMICS.md`` §D5, ``docs/diffusion_maps.md``): `diffusion_map`,
  `squared_distances`, `kernel_sum_curve`, `spectral_gap`, `analyze_trajectory`,
  `quadratic_r2`; experiments in `ufm.dynamics.dmap` (``ufm dynamics dmap``).
"""

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

__all__: list[str] = [
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
