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
import os

import numpy as np

__all__ = [
    "COLORS",
    "ONE_COLUMN",
    "TWO_COLUMN",
    "MARKERS",
    "STYLE",
    "figure",
    "label_panels",
    "heatmap",
    "mark_value",
    "plot_spectrum",
    "savefig",
    "use_style",
]

#: Okabe–Ito palette, in the order used for successive series.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Markers for successive series, in the order of `COLORS` (distinct shapes survive greyscale print).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Widths in inches of a figure spanning one / two columns of a two-column paper.
ONE_COLUMN = 3.25
TWO_COLUMN = 6.75
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
            label_panels(fig)
            for p in out:
                fig.savefig(p)
    finally:
        log.setLevel(level)
    return out


def _panels(fig) -> list:
    """The figure's panels: its visible axes, colour bars excluded (insets are not in ``fig.axes``)."""
    return [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]


def label_panels(fig) -> None:
    """Prefix the title of each panel with its letter, (a), (b), ... in reading order.

    Idempotent, and a no-op for a one-panel figure or one whose first panel is already
    lettered; `savefig` calls it, so every multi-panel figure carries letters.
    """
    panels = _panels(fig)
    if len(panels) < 2 or any(panels[0].get_title(loc).startswith("(a)") for loc in ("center", "left")):
        return
    for i, ax in enumerate(panels):
        letter = f"({chr(ord('a') + i)})"
        # the title's Text objects (matplotlib names the left one privately); set_text keeps their font
        titles = {"center": ax.title, "left": getattr(ax, "_left_title", None)}
        loc = next((loc for loc in ("center", "left") if ax.get_title(loc)), None)
        if loc is None:
            ax.set_title(letter, loc="left")
        elif titles[loc] is not None:
            titles[loc].set_text(f"{letter} {ax.get_title(loc)}")
        else:
            ax.set_title(f"{letter} {ax.get_title(loc)}", loc=loc)


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
    if "markersize" not in kw and "ms" not in kw and vals.size > 40:  # many points: smaller markers stay apart
        kw["markersize"] = max(1.0, 3.5 * np.sqrt(40 / vals.size))
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
