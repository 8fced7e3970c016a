"""Figures: one style (`ufm.plotting._style`) and one module per experiment, each drawing a typed
report (never a dict) with the one name ``report_figure(report)``.

* `verify` — `ufm.verification.Report` (``layer_spectra_figure``);
* `real` — `ufm.networks.RealNetworkReport` (``real_network_figure``);
* `align`, `sgd_ode`, `catapult`, `dmap` — the reports of `ufm.experiments`.

``import ufm.plotting`` does not import matplotlib; the style applies only inside `use_style`.
"""

from . import align, catapult, dmap, real, sgd_ode, verify
from ._style import (
    COLORS,
    MARKERS,
    ONE_COLUMN,
    PREDICTED_STYLE,
    STYLE,
    TWO_COLUMN,
    figure,
    heatmap,
    label_panels,
    mark_value,
    plot_spectrum,
    savefig,
    use_style,
)
from .real import real_network_figure
from .verify import layer_spectra_figure

__all__ = [
    "COLORS",
    "MARKERS",
    "ONE_COLUMN",
    "TWO_COLUMN",
    "STYLE",
    "PREDICTED_STYLE",
    "figure",
    "heatmap",
    "label_panels",
    "mark_value",
    "plot_spectrum",
    "savefig",
    "use_style",
    "layer_spectra_figure",
    "real_network_figure",
    "align",
    "catapult",
    "dmap",
    "real",
    "sgd_ode",
    "verify",
]
