"""Figure 3: Papyan's split of the Gauss–Newton block, ``G = G_class + G_cross + G_within`` (``docs/theory.md`` §4).

Measured by autodiff (`ufm.curvature.papyan_decomposition`, per-sample Jacobians) at the
trained linear-MSE state: G_class has K outliers, G_cross K(K−1), both at ``λ_lγ/(1−γ)``;
G_within vanishes at collapse.
"""

import os

import numpy as np

from . import _common as C

PARTS = (("class_", r"$G_{class}$", "o"), ("cross", r"$G_{cross}$", "s"), ("within", r"$G_{within}$", "^"))


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    spec, traj, params = C.mse_final_state(out_dir, quick)
    K, L = spec.num_classes, spec.depth

    def compute():
        model = lambda p: ufm.model.forward(spec, p).output  # noqa: E731
        out = {}
        for l in range(1, L + 1):
            dec = ufm.curvature.papyan_decomposition(model, params, spec.class_index, loss="mse", leaves=[l])
            for key, _, _ in PARTS:
                out[f"{key}{l}"] = ufm.Spectrum.from_dense(getattr(dec, key), vectors=False).eigenvalues
            pred = ufm.theory.gn_decomposition(spec, params, l, vectors=False)
            out[f"rank_class{l}"], out[f"rank_cross{l}"] = pred.G_class.eigenvalues.size, pred.G_cross.eigenvalues.size
        return out

    data = C.cached(out_dir, "fig03", {"spec": spec.to_dict(), "steps": int(traj["steps"][-1])}, compute)
    sol = ufm.theory.dnc_solution(spec)
    show = K * K + 3
    with plotting.use_style():
        fig, axes = plotting.figure(1, L, columns=2, height=2.1, sharey=True)
        for l, ax in enumerate(axes, start=1):
            top = max(data[f"class_{l}"][0], data[f"cross{l}"][0])
            for i, (key, name, marker) in enumerate(PARTS):
                vals = data[f"{key}{l}"]
                rank = int(np.sum(vals > 1e-10 * top))
                want = {"class_": K, "cross": K * (K - 1), "within": 0}[key]
                floor = plotting.plot_spectrum(
                    ax,
                    vals[:show],
                    floor=1e-14 * top,
                    marker=marker,
                    offset=0.22 * (i - 1),
                    color=plotting.COLORS[i],
                    label=f"{name}: rank {rank} (theory {want})",
                )
            pred = sol.layer_outliers[l - 1][0]
            plotting.mark_value(ax, pred, r"$\lambda_l\gamma/(1-\gamma)$", color="0.25", where=0.98)
            ax.set_ylim(floor / 5, pred * 8)
            ax.set_title(rf"Gauss–Newton block of $W_{l}$")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("index")
            if l == 1:
                ax.legend(loc="center right", bbox_to_anchor=(1.0, 0.55))
        axes[0].set_ylabel("eigenvalue (hollow: ≤ 1e-14·max)")
        files = plotting.savefig(fig, os.path.join(out_dir, "fig03_gauss_newton"))
    caption = (
        f"Gauss–Newton split at the trained state of figure 1 ({C.describe(spec)}). Papyan's decomposition "
        "measured by autodiff: G_class has K outliers, G_cross K(K−1), both at the layer-wise outlier "
        f"λ_lγ/(1−γ) = {', '.join(f'{v[0]:.4g}' for v in sol.layer_outliers)} (dashed), "
        "and G_within is zero at collapse; together the K² outliers of "
        f"figure 1."
    )
    return C.FigureResult(files, caption)
