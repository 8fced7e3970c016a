"""Spectra along training (``docs/dynamics.md``, from the project notes ``DYNAMICS.md``).

One module per concept: trajectory recording with spectral probes at checkpoints, the data
models of the neighbouring papers, and one experiment module per phenomenon (outlier
alignment, the SGD ODE on anisotropic mixtures, catapults and AGOP, diffusion maps).

Each experiment module that has a command line defines ``add_cli(subparsers)``, which adds
its ``ufm dynamics <task>`` parser and sets ``func`` (see ``ufm.cli``).
"""

__all__: list[str] = []
