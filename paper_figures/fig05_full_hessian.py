"""Figure 5: the full data Hessian over W_1..W_L against the layer-wise one (``docs/theory.md`` §4).

At the linear-MSE optimum the cross-layer blocks carry the residual term (``Z − Y = (γ−1)Y``).
The closed form (`ufm.theory.full_hessian_spectrum`): K(K−1)/2 antisymmetric outliers
(matrix T) and K(K+1)/2 symmetric ones (matrix S), near L × the layer-wise outlier, and
±√(λ_lλ_{l+1}) pairs; the top eigenvectors spread their mass uniformly over the layers.
"""

import os

import numpy as np

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    spec, traj, params = C.mse_final_state(out_dir, quick)
    K, L = spec.num_classes, spec.depth
    sizes = [a * b for a, b in spec.weight_shapes]

    def compute():
        meas = ufm.curvature.spectrum(C.loss_fns(spec)[0], params, leaves=list(range(1, L + 1)), method="dense")
        vals, vecs = meas.eigenvalues, meas.eigenvectors
        mass = np.stack([np.sum(v**2, axis=0) for v in np.split(vecs, np.cumsum(sizes)[:-1], axis=0)])
        pred = ufm.theory.full_hessian_spectrum(spec)
        return {"vals": vals, "mass": mass[:, : K * K], "pred": pred.all_eigenvalues()}

    data = C.cached(out_dir, "fig05", {"spec": spec.to_dict(), "steps": int(traj["steps"][-1])}, compute)
    sol = ufm.theory.dnc_solution(spec)
    lam = spec.lambdas[0]  # the symlog scale
    layerwise = sol.layer_outliers[0][0]
    top_T, top_S = sol.full_levels.antisymmetric[0], sol.full_levels.symmetric[0]  # docs/theory.md §4
    vals, pred = data["vals"], np.sort(data["pred"])[::-1]
    err = np.max(np.abs(vals - pred)) / np.max(np.abs(pred))
    with plotting.use_style():
        fig, axes = plotting.figure(1, 2, columns=2, height=2.3, width_ratios=[1.6, 1])
        ax = axes[0]
        idx = np.arange(1, vals.size + 1)
        ax.plot(idx, vals, "o", color=plotting.COLORS[0], label="autodiff (full data Hessian)", markersize=2.5)
        ax.plot(idx, pred, "x", color=plotting.COLORS[1], label="closed form (S, T, ±√(λλ'), 0)", markersize=3)
        ax.set_yscale("symlog", linthresh=lam / 10, linscale=0.5)
        # the levels T and S are close (0.708 vs 0.628 here), hard to tell apart on symlog: short marks here,
        # an inset on a linear scale (in the empty upper right) names them with their values
        for value in (top_T, top_S):
            plotting.mark_value(ax, value, color="0.2", xmax=0.14)
        plotting.mark_value(
            ax,
            layerwise,
            r"layer-wise outlier $\lambda\gamma/(1-\gamma)$",
            color=plotting.COLORS[2],
            where=0.55,
            linestyle=":",
        )  # left of the inset's title
        ax.set(
            xlabel="index",
            ylabel="eigenvalue (symlog)",
            title=f"full data Hessian over $W_1,\\dots,W_{L}$: {vals.size} eigenvalues, max rel. err {err:.0e}",
        )
        inset = ax.inset_axes([0.56, 0.47, 0.41, 0.29])
        top = np.arange(1, K * K + 1)
        inset.plot(top, vals[: K * K], "o", color=plotting.COLORS[0], markersize=2.5)
        inset.plot(top, pred[: K * K], "x", color=plotting.COLORS[1], markersize=3)
        plotting.mark_value(inset, top_T, color="0.2", legend=f"T (antisym.) ×{K * (K - 1) // 2}: {top_T:.4g}")
        plotting.mark_value(
            inset, top_S, color="0.2", linestyle=(0, (1.5, 1.5)), legend=f"S (sym.) ×{K * (K + 1) // 2}: {top_S:.4g}"
        )
        gap = top_T - top_S
        inset.set(xlim=(0.3, K * K + 0.7), ylim=(top_S - 2.8 * gap, top_T + 0.5 * gap))
        inset.legend(loc="lower left", fontsize="x-small", frameon=False, borderpad=0.2, handlelength=2.5)
        inset.set_title(f"top K² = {K * K} (linear scale)", fontsize="x-small", pad=2)
        inset.tick_params(labelsize="x-small")
        inset.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="lower left")
        ax = axes[1]
        mass = data["mass"]
        bottom = np.zeros(mass.shape[1])
        pos = np.arange(1, mass.shape[1] + 1)
        for l in range(L):
            ax.bar(pos, mass[l], bottom=bottom, color=plotting.COLORS[l], label=f"$W_{l + 1}$", width=0.8)
            bottom += mass[l]
        for q in np.arange(1, L) / L:
            ax.axhline(q, color="0.2", linewidth=0.6, linestyle=(0, (4, 2)))
        ax.set(
            xlabel="eigenvector (top K²)",
            ylabel="mass per layer",
            ylim=(0, 1),
            title="top eigenvectors: mass per layer",
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        files = plotting.savefig(fig, os.path.join(out_dir, "fig05_full_hessian"))
    caption = (
        f"Full vs layer-wise Hessian at the trained state of figure 1 ({C.describe(spec)}). Left: all "
        f"{vals.size} eigenvalues of the full data Hessian over W_1..W_L (dense autodiff) against the closed "
        f"form "
        f"(max relative error {err:.1e}): K(K−1)/2 = {K * (K - 1) // 2} antisymmetric outliers at "
        f"{top_T:.4g} and K(K+1)/2 = {K * (K + 1) // 2} symmetric ones at {top_S:.4g}, about L = {L} times the "
        f"layer-wise outlier {layerwise:.4g} (dotted), then ±λ-sized pairs and zeros; the inset shows the top "
        f"K² on a linear scale, where the two outlier levels separate. Right: the squared norm "
        f"of each "
        "top-K² eigenvector in each layer — uniform 1/L (dashed), the full Hessian inherits the layer "
        "structure."
    )
    return C.FigureResult(files, caption)
