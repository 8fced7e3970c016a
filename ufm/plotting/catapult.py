"""Figures of `ufm.experiments.catapult.CatapultReport` (``ufm dynamics catapult --plot``, fig13).

`report_figure` takes the typed report; the panel helpers draw from its JSON form
(``report.to_dict()``), so a saved report re-plots.
"""

from __future__ import annotations

import numpy as np

from . import _style

__all__ = [
    "report_figure",
    "plot_run",
    "plot_alignment_vs_catapults",
    "plot_batch_sweep",
    "plot_schedule_loss",
    "uncounted_spikes",
]


def _critical_lambda_curve(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """Steps and ``2n/η`` (the λ_max(K) at which the current rate is critical), piecewise per segment."""
    lam_per_rate = run["eta_crit"] * run["lambda_max_initial"]  # 2n (or n for "mean")
    segs = run.get("segments") or [{"learning_rate": run["learning_rate"], "end_step": len(run["loss"]) - 1}]
    x, y, start = [], [], 0
    for seg in segs:
        x += [start, seg["end_step"]]
        y += [lam_per_rate / seg["learning_rate"]] * 2
        start = seg["end_step"]
    return np.array(x), np.array(y)


def plot_run(axes, run: dict, *, title: str | None = None):
    """Two axes for one run (``CatapultRun.to_dict()``): L, P_s L, P_s^⊥ L vs step (log y) with
    the catapults shaded, and λ_max(K) with ``2n/η`` dashed."""
    ax, bx = axes
    pl = run["projected_loss"]
    nan = lambda v: np.array([np.nan if x is None else x for x in v], dtype=float)  # noqa: E731
    ax.semilogy(np.arange(len(run["loss"])), nan(run["loss"]), color=_style.COLORS[7], label="$L$")
    ax.semilogy(pl["steps"], nan(pl["top"]), color=_style.COLORS[1], linestyle="--", label="$P_sL$")
    ax.semilogy(pl["steps"], nan(pl["perp"]), color=_style.COLORS[0], linestyle=":", label=r"$P_s^\perp L$")
    for cat in run["catapults"]:
        ax.axvspan(cat["start"], cat["end"], color=_style.COLORS[3], alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    bx.plot(pl["steps"], nan(run["lambda_max"]), color=_style.COLORS[2], label=r"$\lambda_{\max}(K)$")
    bx.plot(*_critical_lambda_curve(run), color="0.3", linestyle=(0, (4, 2)), linewidth=1.0, label=r"$2n/\eta$")
    bx.set_xlabel("step")
    bx.set_ylabel(r"$\lambda_{\max}(K)$")
    lam = nan(run["lambda_max"])
    if np.nanmax(lam) > 100 * np.nanmin(lam):  # a divergence: λ_max grows by orders of magnitude
        bx.set_yscale("log")
    for a in (ax, bx):  # linear for the first steps (where a catapult happens), logarithmic after
        a.set_xscale("symlog", linthresh=20, linscale=0.6)
        a.set_xlim(0, len(run["loss"]) - 1)
    if title:
        ax.set_title(title, loc="left")
    return ax, bx


def plot_alignment_vs_catapults(ax, report: dict):
    """AGOP alignment at the end of each schedule segment against the catapults so far."""
    for i, run in enumerate(report["runs"]):
        x = [seg["catapults_so_far"] for seg in run["segments"]]
        y = [seg["agop_alignment"] for seg in run["segments"]]
        ax.plot(x, y, "o-", color=_style.COLORS[i % 8], label=f"c = {run['multiplier']:g}")
    ax.set_xlabel("number of catapults")
    ax.set_ylabel("AGOP alignment")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return ax


def plot_batch_sweep(axes, report: dict):
    """Three axes vs batch size: catapults, final AGOP alignment, test MSE (mean ± std over seeds)."""
    table = report["batch_table"]
    for i, c_mult in enumerate(sorted({row["multiplier"] for row in table})):
        rows = [row for row in table if row["multiplier"] == c_mult]
        b = [row["batch_size"] for row in rows]
        for ax, name in zip(axes, ("catapults", "agop_alignment", "test_mse"), strict=True):
            ax.errorbar(
                b,
                [r[name] for r in rows],
                yerr=[r[name + "_std"] for r in rows],
                marker="o",
                capsize=2,
                color=_style.COLORS[i % 8],
                label=f"c = {c_mult:g}",
            )
    sizes = sorted({row["batch_size"] for row in table})
    for ax, label in zip(axes, ("catapults", "AGOP alignment", "test MSE"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
    return axes


def _figure_from_dict(report: dict):
    """The CLI's ``--plot`` from ``CatapultReport.to_dict()``: two panels per run (gd), plus
    alignment vs catapults (schedule), or the batch-size sweep (sgd)."""
    with _style.use_style():
        if report["task"] == "sgd":
            fig, axes = _style.figure(1, 3, columns=2, height=2.2)
            plot_batch_sweep(axes, report)
            axes[0].legend()
            return fig
        runs = report["runs"]
        rows = len(runs) + (report["task"] == "schedule")
        fig, axes = _style.figure(rows, 2, columns=2, squeeze=False, height=1.9 * rows)
        for row, run in zip(axes, runs, strict=True):
            plot_run(row, run, title=f"c = {run['multiplier']:g}: {run['regime']}")
        axes[0, 0].legend(ncols=3)
        axes[0, 1].legend()
        if report["task"] == "schedule":
            plot_alignment_vs_catapults(axes[-1, 0], report)
            axes[-1, 1].set_axis_off()
        return fig


def report_figure(report):
    """Two panels per run (gd), plus alignment vs catapults (schedule), or the batch-size sweep (sgd)."""
    return _figure_from_dict(report.to_dict())


def uncounted_spikes(run: dict, *, ratio: float = 2.0, window: int = 20) -> list[int]:
    """Steps where the loss rises above ``ratio`` × its running minimum over ``window`` steps (the
    start test of ``docs/catapults.md`` §4) outside every counted catapult — spikes that the rule
    does not count (no return below the pre-spike level before the run ends, or no λ_max drop).
    One step per cluster: the largest loss within ``window`` steps of its first rise."""
    L = np.array([np.nan if x is None else x for x in run["loss"]], dtype=float)
    inside = np.zeros(L.size, bool)
    for cat in run["catapults"]:
        inside[cat["start"] : cat["end"] + 1] = True
    out, last = [], -(10**9)
    for t in range(1, L.size):
        m = np.nanmin(L[max(0, t - window) : t + 1])
        if np.isfinite(L[t]) and L[t] > ratio * m and not inside[t]:
            if t - last > window:
                seg = L[t : t + window + 1]
                out.append(t + int(np.nanargmax(seg)))  # the spike's local peak
            last = t
    return out


def plot_schedule_loss(ax, run: dict, *, ratio: float = 2.0, window: int = 20):
    """The schedule run's training loss (log y) with its segment boundaries (dotted), the counted
    catapults (shaded, numbered) and the spikes the rule does not count (×)."""
    L = np.array([np.nan if x is None else x for x in run["loss"]], dtype=float)
    ax.semilogy(np.arange(L.size), L, color=_style.COLORS[7], linewidth=0.8, label="$L$")
    for seg in run.get("segments", [])[:-1]:
        ax.axvline(seg["end_step"], color="0.5", linestyle=":", linewidth=0.7)
    for i, cat in enumerate(run["catapults"], start=1):
        ax.axvspan(cat["start"], cat["end"], color=_style.COLORS[3], alpha=0.3, linewidth=0)
        ax.annotate(str(i), (cat["peak"], cat["peak_loss"]), textcoords="offset points", xytext=(3, 2), fontsize=6)
    spikes = uncounted_spikes(run, ratio=ratio, window=window)
    if spikes:
        ax.plot(spikes, L[spikes], "x", color=_style.COLORS[1], markersize=5, label="spike, not counted")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    return spikes
