"""The experiments: each study of the seeds (and the real-network run) as a typed recipe over the
library (`ufm.dynamics`, `ufm.networks`, `ufm.curvature`, ...), returning a typed report that
follows the result protocol (`ufm.results`: a pytree with ``converged`` / ``messages``, strict JSON).

* `align` — SGD aligning with the outlier eigenspaces (kgmm, xor, deep_ufm, mnist): `AlignmentReport`.
* `sgd_ode` — one-pass SGD against its high-dimensional ODE: `run(SGDODEConfig) -> SGDODEReport`.
* `catapult` — catapults in GD / SGD of NTK MLPs: `run(CatapultConfig, task) -> CatapultReport`.
* `dmap` — diffusion maps of SGD trajectories: `run(task, ...) -> DiffusionReport`.
* `real` — a real network on real data, its head as a deep UFM: `run_real(...) -> RealNetworkReport`.

Submodules load on first use (``ufm.experiments.align`` ...); nothing here parses arguments,
prints or switches precision (that is `ufm.cli`).
"""

import importlib

__all__ = ["align", "sgd_ode", "catapult", "dmap", "real"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ufm.experiments' has no attribute {name!r}")
