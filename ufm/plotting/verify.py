"""The figure of `ufm.verification.Report` (``ufm verify --plot``): measured layer spectra and predictions."""

from __future__ import annotations

import math

import numpy as np

from ._style import COLORS, figure, mark_value, plot_spectrum, use_style

__all__ = ["report_figure", "layer_spectra_figure"]


def layer_spectra_figure(report):
    """Each layer's measured data-Hessian spectrum with the predicted outliers (`ufm.verification.Report`).

    Reads ``report.spectra`` (per layer a `ufm.verification.LayerSpectra`: the predicted and
    measured `Spectrum`) and draws every measured eigenvalue (descending; the zero bulk hollow
    at its floor) with the predicted outliers as dashed lines at their distinct levels, each
    labelled with its value and multiplicity; the log y ticks always reach above the largest
    outlier. Returns a ``Figure``.
    """
    spectra = {s.layer: s for s in report.spectra}
    if not spectra:
        raise ValueError("report.spectra is empty: the report measured no layer spectrum")
    layers = sorted(spectra)
    ncols = min(len(layers), 4)
    nrows = math.ceil(len(layers) / ncols)
    spec = report.spec
    tops = [
        max(np.max(spectra[l].measured.eigenvalues, initial=0.0), np.max(spectra[l].predicted.eigenvalues, initial=0.0))
        for l in layers
    ]
    floor = 1e-14 * max(max(tops), 1e-300)  # one floor for the shared y axis: the zero bulk at rounding level
    # many more eigenvalues than outliers in some layer: a log index axis (every panel) keeps the outliers apart
    log_index = any(
        spectra[l].measured.eigenvalues.size > 4 * max(spectra[l].predicted.eigenvalues.size, 1) for l in layers
    )
    with use_style():
        fig, axes = figure(nrows, ncols, columns=1 if ncols == 1 else 2, height=2.2 * nrows, squeeze=False, sharey=True)
        for ax, l in zip(axes.flat, layers, strict=False):  # a grid may have a spare axis
            pred, meas = spectra[l].predicted, spectra[l].measured
            vals = meas.eigenvalues
            bulk = int(np.sum(vals <= floor))
            plot_spectrum(
                ax,
                vals,
                floor=floor,
                label="measured (autodiff)",
                color=COLORS[0],
                markersize=1.8,
                floor_label=r"$\leq 10^{-14}\lambda_{max}$ (zero bulk), drawn at that floor",
            )
            for v, m in zip(*pred.levels(rtol=1e-6), strict=True):
                mark_value(ax, v, f"predicted {v:.4g} ×{m}", color=COLORS[1], where=0.98)
            if log_index:
                ax.set_xscale("log")
            shown = f"all {vals.size}" if vals.size >= meas.dim else f"top {vals.size} of {meas.dim}"
            ax.set_title(f"layer {l}: block of $W_{l}$ ({shown}; {bulk} in the bulk)", fontsize="small")
            ax.set_xlabel("eigenvalue index")
        # log ticks from the floor to a decade above the largest outlier, at most ~7 of them
        lo, hi = math.floor(math.log10(floor / 3)), math.ceil(math.log10(3 * max(max(tops), 1e-300)))
        stride = max(1, math.ceil((hi - lo) / 6))
        axes[0, 0].set_yticks(10.0 ** np.arange(hi, lo - 1, -stride))
        axes[0, 0].set_ylim(10.0**lo, 10.0**hi)
        for ax in axes.flat[len(layers) :]:
            ax.set_visible(False)
        axes[0, 0].set_ylabel("eigenvalue (data Hessian)")
        fig.legend(handles=axes[0, 0].get_legend_handles_labels()[0], loc="outside lower center", ncols=2)
        fig.suptitle(
            f"K={spec.num_classes}, n={spec.per_class}, L={spec.depth}, {spec.activation}, {spec.loss}; "
            f"{report.info.get('state', '')}",
            fontsize=7,
        )
    return fig


#: The one name of "the figure of a report" in every `ufm.plotting` module.
report_figure = layer_spectra_figure
