"""The figure of `ufm.networks.RealNetworkReport` (``ufm real`` / ``ufm analyze --plot``)."""

from __future__ import annotations

import numpy as np

from ._style import COLORS, figure, plot_spectrum, use_style

__all__ = ["report_figure", "real_network_figure"]


def real_network_figure(report):
    """Predicted vs measured outliers of each head layer of a real network
    (`ufm.networks.RealNetworkReport`, the `ufm real --plot` figure). Returns a ``Figure``."""
    layers = list(report.layers)
    if not layers:
        raise ValueError("the report compares no head layer")
    with use_style():
        fig, axes = figure(1, len(layers), columns=2, height=2.2, squeeze=False, sharey=True)
        for ax, c in zip(axes.flat, layers, strict=True):
            plot_spectrum(ax, c.measured, label="measured (autodiff)", color=COLORS[0])
            k = c.expected  # the predictions' bulk is exactly 0: draw their outliers only
            plot_spectrum(ax, c.predicted[:k], label="predicted (class means)", color=COLORS[1], marker="x")
            err = c.median_rel_error
            if not np.allclose(c.predicted_class_averaged, c.predicted, rtol=1e-9, atol=0):  # e.g. CE
                plot_spectrum(
                    ax,
                    c.predicted_class_averaged[:k],
                    label="predicted (class-averaged curvature)",
                    color=COLORS[2],
                    marker="+",
                )
                err = min(err, c.class_averaged_median_rel_error)
            ax.set_title(f"$W_{c.layer}$: {c.num_outliers} outliers, NC1 {c.nc1:.1e}, median err {err:.1e}")
            ax.set_xlabel("eigenvalue index")
        axes[0, 0].set_ylabel("eigenvalue (data Hessian)")
        axes[0, 0].legend(loc="lower left")
        cfg = report.config
        fig.suptitle(
            f"{cfg.get('dataset', '')} {cfg.get('model', '')} {cfg.get('loss', '')}: "
            f"train acc {report.train_accuracy:.3f}",
            fontsize=7,
        )
    return fig


#: The one name of "the figure of a report" in every `ufm.plotting` module.
report_figure = real_network_figure
