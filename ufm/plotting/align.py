"""The figure of `ufm.experiments.align.AlignmentReport` (``ufm dynamics align --plot``, fig11)."""

from __future__ import annotations

import numpy as np

from . import _style

__all__ = ["report_figure"]


def report_figure(report):
    """A one-row figure of a report's alignment measurements over training (``ufm.plotting`` style)."""
    rows = report.checkpoints
    with _style.use_style():
        fig, axes = _style.figure(1, 2, columns=2, height=2.2)
        if report.task == "kgmm":
            t = [r["time"] for r in rows]
            A = np.array([r["block_alignment_hessian"] for r in rows])
            G = np.array([r["block_alignment_g"] for r in rows])
            for c in range(A.shape[1]):
                col = _style.COLORS[c % len(_style.COLORS)]
                axes[0].plot(t, A[:, c], color=col, label=f"$x^{c + 1}$ vs top-k($H_{{{c + 1}{c + 1}}}$)")
                axes[0].plot(t, G[:, c], color=col, linestyle=(0, (2, 1)), linewidth=0.9)
            axes[0].plot([], [], color="0.4", linestyle=(0, (2, 1)), label="vs top-k($G_{cc}$)")
            axes[0].set(xlabel="time t = steps · δ", ylabel=r"$\|P_U x^c\| / \|x^c\|$", ylim=(0, 1.02))
            E = np.array([r["block_eigenvalues_hessian"][0] for r in rows])
            for j in range(E.shape[1]):
                axes[1].plot(
                    t, E[:, j], color=_style.COLORS[0] if j < report.config["num_classes"] else "0.6", linewidth=0.9
                )
            axes[1].set(xlabel="time t", ylabel=r"top eigenvalues of $H_{11}$ (data)", yscale="log")
        elif report.task == "xor":
            t = [r["time"] for r in rows]
            for s in range(len(rows[0]["seeds"])):
                first = [r["seeds"][s]["first_layer_alignment"] for r in rows]
                rank = [r["seeds"][s]["second_layer_rank"] for r in rows]
                col = _style.COLORS[s % len(_style.COLORS)]
                axes[0].plot(t, first, color=col, linewidth=0.9)
                axes[1].plot(t, rank, color=col, linewidth=0.9, marker="o", markersize=2)
            axes[0].set(xlabel="time t", ylabel=r"$\|W P_{\mu\nu}\|_F / \|W\|_F$", ylim=(0, 1.02))
            axes[1].set(xlabel="time t", ylabel="second-layer G outliers (gap rule)")
            axes[1].yaxis.get_major_locator().set_params(integer=True)
        else:
            x = [r["step"] + 1 for r in rows]
            key = "grad_fraction_top" if report.task == "ufm" else "f_top_grad"
            F = np.array([np.atleast_1d(r[key]) for r in rows], dtype=float)
            for l in range(F.shape[1]):
                axes[0].plot(x, F[:, l], color=_style.COLORS[l], label=f"layer {l + 1}" if F.shape[1] > 1 else None)
            axes[0].set(xscale="log", xlabel="step + 1", ylabel=r"$\|P_{top} g\|^2/\|g\|^2$", ylim=(0, 1.02))
            if report.task == "ufm":
                N = np.array([r["nc1"] for r in rows], dtype=float)
                for l in range(F.shape[1]):
                    axes[1].loglog(N[:, l], F[:, l], color=_style.COLORS[l], marker="o", markersize=2)
                axes[1].set(xlabel="NC1", ylabel=r"$\|P_{top} g\|^2/\|g\|^2$")
            else:
                axes[1].plot(x, [r["overlap_prev"] for r in rows], color=_style.COLORS[0])
                axes[1].set(xscale="log", xlabel="step + 1", ylabel="top-k overlap with previous", ylim=(0, 1.02))
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="lower right")
    return fig
