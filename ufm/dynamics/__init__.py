"""Spectra along training (``docs/dynamics.md``, from the project notes ``DYNAMICS.md``).

One module per concept: trajectory recording with spectral probes at checkpoints, the data
models of the neighbouring papers, and one experiment module per phenomenon (outlier
alignment, the SGD ODE on anisotropic mixtures, catapults and AGOP, diffusion maps).

* `record` → `Trajectory`: any optax optimiser on any ``loss_fn(params, batch)``, one
  compiled loop per segment between checkpoints, probes in between, resumable ``.npz``.
* probes (``DYNAMICS.md`` §D1): `top_space`, `hessian_top_space`, `g_top_space`,
  `per_sample_grads`, `alignment`, `top_fraction`, `subspace_overlap`, `spectrum_counts`,
  `collapse_probe`, and `spectral_probe` (a ready-made probe for `record`).
* data and models of §D2: `KGMM`, `XORGMM`; softmax regression and the 2-layer
  ReLU–sigmoid net with their closed forms.
* `align` (``ufm dynamics align``): the outlier-alignment experiments kgmm / xor / ufm / mnist.

Each experiment module that has a command line defines ``add_cli(subparsers)``, which adds
its ``ufm dynamics <task>`` parser and sets ``func`` (see ``ufm.cli``).
"""

from ._mixtures import KGMM, XORGMM, orthonormal_means
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
    Counts,
    Overlap,
    TopSpace,
    alignment,
    collapse_probe,
    g_top_space,
    hessian_top_space,
    per_sample_grads,
    spectral_probe,
    spectrum_counts,
    subspace_overlap,
    top_fraction,
    top_space,
)
from ._trajectory import ProbeContext, Trajectory, checkpoint_steps, record

__all__ = [
    "record", "Trajectory", "ProbeContext", "checkpoint_steps",
    "top_space", "hessian_top_space", "g_top_space", "per_sample_grads", "alignment", "top_fraction",
    "subspace_overlap", "spectrum_counts", "collapse_probe", "spectral_probe", "TopSpace", "Counts", "Overlap",
    "KGMM", "XORGMM", "orthonormal_means",
    "init_softmax", "softmax_loss", "softmax_hessian", "softmax_per_sample_grads",
    "TwoLayerParams", "init_two_layer", "two_layer_hidden", "two_layer_logits", "two_layer_loss",
]
