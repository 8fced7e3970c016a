"""Spectra along training (``docs/dynamics.md``).

One module per concept; each experiment module (`align`, `sgd_ode`, `catapult`, `dmap`) defines
``add_cli(subparsers)`` for its ``ufm dynamics <task>`` command (see ``ufm.cli``).

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
"""

from . import (
    _anisotropic,
    _diffusion_map,
    _mixtures,
    _model_probes,
    _models,
    _probes,
    _tangent_kernel,
    _trajectory,
    catapult,
    sgd_ode,
)
from ._anisotropic import *  # noqa: F403  (re-exports _anisotropic.__all__)
from ._diffusion_map import *  # noqa: F403  (re-exports _diffusion_map.__all__)
from ._mixtures import *  # noqa: F403  (re-exports _mixtures.__all__)
from ._model_probes import *  # noqa: F403  (re-exports _model_probes.__all__)
from ._models import *  # noqa: F403  (re-exports _models.__all__)
from ._probes import *  # noqa: F403  (re-exports _probes.__all__)
from ._tangent_kernel import *  # noqa: F403  (re-exports _tangent_kernel.__all__)
from ._trajectory import *  # noqa: F403  (re-exports _trajectory.__all__)
from .catapult import *  # noqa: F403  (re-exports catapult.__all__)
from .sgd_ode import *  # noqa: F403  (re-exports sgd_ode.__all__)

__all__ = [
    *_trajectory.__all__,
    *_probes.__all__,
    *_model_probes.__all__,
    *_mixtures.__all__,
    *_models.__all__,
    *_anisotropic.__all__,
    *sgd_ode.__all__,
    *_tangent_kernel.__all__,
    *catapult.__all__,
    *_diffusion_map.__all__,
]
