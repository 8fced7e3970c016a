"""One style for every ufm figure: fonts, paper sizes, a colour-blind-safe palette, savefig.

Nothing here touches global state: ``import ufm.plotting`` does not import matplotlib, and
the style is applied only inside `use_style` (a ``matplotlib.rc_context``). Figures are
built as ``matplotlib.figure.Figure`` objects rendered by the Agg / PDF canvases, so no
pyplot, no GUI backend and no figure registry are involved.

Conventions of the helpers:

* spectra are drawn as eigenvalue (descending) against its index, on a log axis; values
  below ``floor`` (rounding-level zeros of the bulk, or negative values) are drawn at
  ``floor`` with hollow markers, and the floor is said in the legend;
* predicted values are dashed horizontal lines in the colour of what they predict, each
  with a short label at its right end (`mark_value`);
* palette: Okabe & Ito (2008), "Color Universal Design" — distinguishable under the
  common colour-vision deficiencies; sequential maps are ``cividis`` (CVD-safe).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

import numpy as np

__all__ = [
    "COLORS",
    "ONE_COLUMN",
    "TWO_COLUMN",
    "STYLE",
    "figure",
    "heatmap",
    "layer_spectra_figure",
    "mark_value",
    "plot_spectrum",
    "savefig",
    "use_style",
]

#: Okabe–Ito palette, in the order used for successive series.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Widths in inches of a figure spanning one / two columns of a two-column paper.
ONE_COLUMN = 3.4
TWO_COLUMN = 7.0
#: Predicted values are drawn in this dash pattern.
PREDICTED_STYLE = {"linestyle": (0, (4, 2)), "linewidth": 1.0}

STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "image.cmap": "cividis",
    "figure.dpi": 150,
    "savefig.dpi": 300,
    "savefig.pad_inches": 0.02,  # layout is "constrained": no bbox="tight" (an extra draw per file)
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
    "ps.fonttype": 42,
}


def _rc() -> dict:
    """`STYLE` plus the colour cycle (built here: it needs matplotlib's ``cycler``)."""
    from cycler import cycler

    return {**STYLE, "axes.prop_cycle": cycler(color=COLORS)}


@contextlib.contextmanager
def use_style():
    """Context manager applying the ufm style (``matplotlib.rc_context``); restores on exit."""
    import matplotlib

    with matplotlib.rc_context(_rc()):
        yield


def figure(nrows: int = 1, ncols: int = 1, *, columns: int = 1, height: float | None = None, **subplots_kw):
    """A new ``Figure`` with a grid of axes, sized for a one- or two-column paper.

    Args:
      nrows, ncols: the grid (``Figure.subplots``; ``squeeze`` as usual).
      columns: 1 (``ONE_COLUMN`` wide) or 2 (``TWO_COLUMN`` wide).
      height: inches; default: 2.3 per row (one column) or 2.0 per row (two columns).

    Call inside `use_style` so the axes pick the style up. Layout is ``constrained``.
    """
    from matplotlib.figure import Figure

    if columns not in (1, 2):
        raise ValueError(f"columns must be 1 or 2, got {columns!r}")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMN
    if height is None:
        height = (2.3 if columns == 1 else 2.0) * nrows
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplots_kw)
    return fig, axes


def savefig(fig, path) -> tuple[str, str]:
    """Write ``fig`` as PDF and PNG next to each other; returns the two paths.

    ``path`` may end in ``.pdf`` / ``.png`` (the extension is replaced) or have none.
    Parent folders are created.
    """
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    if ext.lower() not in (".pdf", ".png"):
        root = path
    parent = os.path.dirname(root)
    if parent:
        os.makedirs(parent, exist_ok=True)
    out = (root + ".pdf", root + ".png")
    # fontTools (TrueType subsetting for the PDF) warns about DejaVu's font timestamps; quiet it here only
    log = logging.getLogger("fontTools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with use_style():
            for p in out:
                fig.savefig(p)
    finally:
        log.setLevel(level)
    return out


def mark_value(
    ax,
    value: float,
    label: str | None = None,
    *,
    color="0.25",
    axis: str = "y",
    where: float = 0.99,
    va: str = "bottom",
    legend: str | None = None,
    **line_kw,
):
    """A predicted value: a dashed line across ``ax`` with ``label`` written at its end.

    ``axis="y"``: horizontal line at ``y = value`` (label at the right, above the line);
    ``axis="x"``: vertical line. ``where`` is the label position along the line in axes
    fraction. ``legend`` labels the line for ``ax.legend`` instead (where text would collide).
    """
    kw = {**PREDICTED_STYLE, "color": color, "label": legend, **line_kw}
    if axis == "y":
        line = ax.axhline(value, **kw)
        if label:
            ax.text(
                where,
                value,
                label,
                transform=ax.get_yaxis_transform(),
                ha="right",
                va=va,
                color=color,
                fontsize="x-small",
            )
    elif axis == "x":
        line = ax.axvline(value, **kw)
        if label:
            ax.text(
                value,
                where,
                " " + label,
                transform=ax.get_xaxis_transform(),
                ha="left",
                va="top",
                color=color,
                fontsize="x-small",
                rotation=90,
            )
    else:
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    return line


def plot_spectrum(
    ax,
    eigenvalues,
    *,
    label: str | None = None,
    color=None,
    floor: float | None = None,
    marker: str = "o",
    offset: float = 0.0,
    max_points: int | None = None,
    floor_label: str | None = None,
    **kw,
):
    """Eigenvalues (sorted descending) against their index on a log y-axis.

    Values ``<= floor`` (default ``1e-14 · max``) — the zero bulk at rounding level, or
    negative values — are drawn at ``floor`` with hollow markers (legend entry
    ``floor_label``). ``offset`` shifts the x positions (to interleave several spectra).
    Returns ``floor``.
    """
    vals = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    if max_points is not None:
        vals = vals[:max_points]
    top = float(np.max(np.abs(vals), initial=0.0))
    if floor is None:
        floor = 1e-14 * top if top > 0 else 1e-16
    idx = np.arange(1, vals.size + 1) + offset
    big = vals > floor
    line = ax.plot(idx[big], vals[big], marker, color=color, label=label, linestyle="none", **kw)[0]
    if np.any(~big):
        ax.plot(
            idx[~big],
            np.full(np.sum(~big), floor),
            marker,
            linestyle="none",
            markerfacecolor="none",
            color=line.get_color(),
            label=floor_label,
            **kw,
        )
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)  # indices
    return floor


def heatmap(
    ax,
    M,
    *,
    vmin=None,
    vmax=None,
    cmap="cividis",
    annotate: bool | None = None,
    fmt: str = "{:.2f}",
    colorbar: bool = True,
    labels=None,
):
    """A matrix as an image with square cells (class × class tables: Grams, alignments).

    ``annotate`` writes each value in its cell (default: matrices up to 6 × 6).
    """
    M = np.asarray(M, dtype=np.float64)
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    if annotate is None:
        annotate = max(M.shape) <= 6
    if annotate:
        for (i, j), v in np.ndenumerate(M):
            r, g, b, _ = im.cmap(im.norm(v))
            dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5  # relative luminance of the cell
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
    ticks = np.arange(M.shape[0])
    ax.set_xticks(np.arange(M.shape[1]))
    ax.set_yticks(ticks)
    if labels is not None:
        ax.set_xticklabels(labels)
        ax.set_yticklabels(labels)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
    return im


# ---- the figure behind `ufm verify --plot` ----------------------------------------------------
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
