"""The figure of `ufm.networks.RealNetworkReport` (``ufm real`` / ``ufm analyze --plot``)."""

from __future__ import annotations

import numpy as np

from ._style import COLORS, figure, plot_spectrum, use_style

__all__ = ["report_figure", "real_network_figure", "checkpoint_series_figure"]


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
            # two short lines: three panels side by side leave ~2.3 in of title width each
            ax.set_title(f"$W_{c.layer}$: {c.num_outliers} outliers, NC1 {c.nc1:.1e}\nmedian err {err:.1e}")
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


def checkpoint_series_figure(entries):
    """A checkpoint series (``ufm analyze A.npz B.npz ... --plot``): NC1 of each head layer's input
    and the max relative error of the better prediction (per layer and for the full head) along
    the series (left), and the error against NC1 (right). ``entries``: ``[(file, step, report), ...]``
    in series order (step ``None``: the position is used). Returns a ``Figure``."""
    if not entries:
        raise ValueError("the series is empty")
    xs = [i if step is None else step for i, (_, step, _) in enumerate(entries)]
    reports = [r for _, _, r in entries]
    L = len(reports[0].layers)

    def err(c):
        return min(c.max_rel_error, c.class_averaged_max_rel_error)

    with use_style():
        fig, (a0, a1) = figure(1, 2, columns=2, height=2.4)
        for l in range(L):
            color = COLORS[l % len(COLORS)]
            nc1 = [r.layers[l].nc1 for r in reports]
            e = [err(r.layers[l]) for r in reports]
            a0.plot(xs, nc1, "o-", color=color, label=f"NC1 of $\\tilde H_{l + 1}$")
            a0.plot(xs, e, "s--", color=color, label=f"error $W_{l + 1}$", mfc="none")
            a1.plot(nc1, e, "o-", color=color, label=f"$W_{l + 1}$")
        if all(r.head_full is not None for r in reports):
            e = [err(r.head_full) for r in reports]
            a0.plot(xs, e, "^:", color=COLORS[7], label="error, full head")
            a1.plot([max(c.nc1 for c in r.layers) for r in reports], e, "^:", color=COLORS[7], label="full head")
        a0.set_yscale("log")
        a0.set_xlabel("step" if all(s is not None for _, s, _ in entries) else "checkpoint")
        a0.set_ylabel("NC1 / max rel. error")
        a0.legend(fontsize="x-small", ncols=2)
        a1.set_xscale("log")
        a1.set_yscale("log")
        a1.set_xlabel("NC1 of the layer's input")
        a1.set_ylabel("max rel. error (better prediction)")
        a1.legend(fontsize="x-small")
        a0.set_title("along the series")
        a1.set_title("error against NC1")
    return fig
