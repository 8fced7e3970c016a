"""Figure 11: neighbouring phenomena (``MATH.md`` §7) — not built.

The outlier-alignment, catapult / AGOP, diffusion-map and anisotropic-mixture experiments
need a ``ufm.dynamics`` module, which this version of ufm does not have.
"""

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    raise C.Skipped("neighbouring phenomena (MATH.md §7: outlier alignment, catapults/AGOP, diffusion maps, "
                    "anisotropic mixtures) need `ufm.dynamics`, which does not exist in this version; no figure.")
