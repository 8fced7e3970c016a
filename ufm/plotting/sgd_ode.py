"""Figures of the ODE-vs-SGD comparison (`ufm.experiments.sgd_ode.SGDODEReport`, ``ufm dynamics ode --plot``, fig12)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _style

if TYPE_CHECKING:
    from ..dynamics.sgd_ode import ODEResult, SGDResult

__all__ = ["report_figure", "comparison_figure", "plot_ode_sgd"]


def plot_ode_sgd(
    ax,
    ode: ODEResult,
    sgd: SGDResult,
    quantity: str = "risk",
    index: tuple = (),
    *,
    color=None,
    label: str | None = None,
    band: float = 2.0,
    band_label: str | None = None,
):
    """On ``ax``: the ODE as a line over the SGD mean (dots) ± ``band`` standard errors (shaded).
    Legend entries: ``label`` for the ODE line if given (else "ODE" and the band's, ``band_label``
    or "SGD mean ± 2 s.e. (S runs)")."""
    color = _style.COLORS[0] if color is None else color
    o = np.asarray(getattr(ode, quantity))[(Ellipsis, *index)]
    m, se = (v[(Ellipsis, *index)] for v in sgd.estimate(quantity))  # overlaps: ratios of run means
    runs = sgd.risk.shape[0]
    ax.fill_between(
        sgd.times,
        m - band * se,
        m + band * se,
        color=color,
        alpha=0.25,
        linewidth=0,
        label=(band_label or f"SGD mean ± {band:g} s.e. ({runs} runs)") if label is None else None,
    )
    ax.plot(sgd.times, m, "o", color=color, markersize=2.0, markerfacecolor="none", markeredgewidth=0.6)
    ax.plot(ode.times, o, "-", color=color, linewidth=1.0, label="ODE" if label is None else label)


def comparison_figure(ode: ODEResult, sgd: SGDResult, title: str = ""):
    """Risk and ``cos(x, μ_1)`` against time: ODE over the SGD mean ± 2 s.e. (`ufm dynamics ode --plot`)."""
    with _style.use_style():
        fig, axes = _style.figure(1, 2, columns=2, height=2.6)
        plot_ode_sgd(axes[0], ode, sgd, "risk")
        axes[0].set(xlabel="time t = steps / d", ylabel="population risk")
        plot_ode_sgd(axes[1], ode, sgd, "overlap", (0, 0), label=r"$\cos(x, \mu_1)$")
        if np.any(np.isfinite(ode.clean_overlap[:, 0, 0])):
            plot_ode_sgd(
                axes[1],
                ode,
                sgd,
                "clean_overlap",
                (0, 0),
                color=_style.COLORS[1],
                label=r"$\cos(x, P_{clean}\,\mu_1)$",
            )
        axes[1].set(xlabel="time t = steps / d", ylabel="overlap (lines: ODE)", ylim=(0, 1.02))
        # one legend below both panels (the layout makes room for it), never on the data
        handles, labels = [], []
        for ax in axes:
            h, lab = ax.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
        fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
        if title:
            fig.suptitle(title, fontsize=7)
    return fig


def report_figure(report):
    """`comparison_figure` of an `SGDODEReport`."""
    title = f"{report.mixture.name}; {report.config.loss}, γ={report.config.lr:g}"
    return comparison_figure(report.ode, report.sgd, title)
