"""Figures of `ufm.experiments.dmap.DiffusionReport` (``ufm dynamics dmap --plot``, fig14)."""

from __future__ import annotations

import numpy as np

from . import _style

__all__ = ["report_figure", "diffusion_figure"]


def diffusion_figure(reports, *, color_by=None):
    """One row per report: the diffusion spectrum (gap marked), ψ_1 vs ψ_2 coloured by SGD
    step or mini-batch loss (``color_by``: one of "step" / "loss" per report, default
    "step"), and the kernel-sum slope curve with both bandwidths and the dimension."""
    reports = [reports] if hasattr(reports, "analysis") else list(reports)
    color_by = ["step"] * len(reports) if color_by is None else ([color_by] if isinstance(color_by, str) else color_by)
    with _style.use_style():
        fig, axes = _style.figure(len(reports), 3, columns=2, height=2.2 * len(reports), squeeze=False)
        for row, report, how in zip(axes, reports, color_by, strict=True):
            _draw_row(fig, row, report, how)
    return fig


def _draw_row(fig, axes, report, color_by: str) -> None:
    a = report.analysis
    ax0, ax1, ax2 = axes
    lam = a.diffusion.eigenvalues[1:]
    idx = np.arange(1, lam.size + 1)
    q = a.n_coords
    if q:
        ax0.plot(idx[:q], lam[:q], "o", color=_style.COLORS[0], label=f"slow modes (q = {q})")
    ax0.plot(idx[q:], lam[q:], "o", color="0.6", markerfacecolor="none", label="rest" if q else "no gap (q = 0)")
    if q:
        ax0.axvline(q + 0.5, color="0.3", linestyle=":", linewidth=0.8)
        ax0.text(
            q + 0.6,
            0.6,
            f"τ gap ×{a.gap_ratio:.2f}",
            transform=ax0.get_xaxis_transform(),
            va="top",
            fontsize="x-small",
            color="0.3",
        )
    ax0.set_xlabel("index $l$")
    ax0.set_ylabel(r"diffusion eigenvalue $\lambda_l$")
    ax0.set_title(report.task, fontsize="small", loc="left")
    ax0.set_ylim(0, 1.05)
    ax0.legend(loc="upper right")
    ax0.xaxis.get_major_locator().set_params(integer=True)
    c = a.steps if color_by == "step" or a.losses is None else a.losses
    psi = a.diffusion.psi
    sc = ax1.scatter(psi[:, 1], psi[:, 2], c=c, s=2, cmap="cividis", linewidths=0, rasterized=True)
    fig.colorbar(sc, ax=ax1, label="SGD step" if c is a.steps else "mini-batch loss", shrink=0.9)
    ax1.set_xlabel(r"$\psi_1$")
    ax1.set_ylabel(r"$\psi_2$")
    cu = a.curve
    dims = 2 * cu.slopes
    ax2.semilogx(cu.epsilons, dims, color=_style.COLORS[1], label=r"$2\,d\log S/d\log\varepsilon$")
    ax2.plot(
        [cu.epsilon],
        [np.interp(np.log(cu.epsilon), np.log(cu.epsilons), dims)],
        "v",
        color=_style.COLORS[1],
        label="kernel-sum ε",
    )
    ax2.axvline(a.diffusion.epsilon, color=_style.COLORS[0], linewidth=0.8, label=r"$\varepsilon$ used")
    m = a.hessian_outliers
    shown = m is not None and m <= 3 * dims.max()
    top = 1.7 * max(dims.max(), m if shown else 0)  # room for the legend above the lines
    if shown:
        _style.mark_value(ax2, m, f"{m} Hessian outliers", color=_style.COLORS[2], where=0.99)
    elif m is not None:
        ax2.text(
            0.98,
            0.98,
            f"{m} Hessian outliers\n(off scale)",
            transform=ax2.transAxes,
            ha="right",
            va="top",
            fontsize="x-small",
            color=_style.COLORS[2],
        )
    _style.mark_value(ax2, a.dimension_estimate, f"dim ≈ {a.dimension_estimate:.2f}", where=0.99, va="top")
    ax2.set_xlabel(r"bandwidth $\varepsilon$")
    ax2.set_ylabel("dimension (2 × slope)")
    ax2.set_ylim(0, top)
    ax2.legend(loc="upper left")


def report_figure(report):
    """The figure of one `DiffusionReport` (a row of `diffusion_figure`)."""
    return diffusion_figure([report])
