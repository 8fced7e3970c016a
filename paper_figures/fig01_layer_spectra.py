"""Figure 1: layer-wise data-Hessian spectra of a trained linear deep UFM (``docs/theory.md`` §4).

Each block ``∇²_{W_l}Φ`` measured by dense autodiff at the end of training: K² outliers at
the predicted ``λ_lγ/(1−γ)``, the rest a zero bulk (rounding level, drawn hollow at the floor).
"""

import os

import numpy as np

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    spec, traj, params = C.mse_final_state(out_dir, quick)

    data = C.cached(
        out_dir,
        "fig01",
        {"spec": spec.to_dict(), "steps": int(traj["steps"][-1])},
        lambda: C.layer_eigenvalues(spec, params),
    )
    sol = ufm.theory.dnc_solution(spec)
    K = spec.num_classes
    with plotting.use_style():
        fig, axes = plotting.figure(1, spec.depth, columns=2, height=2.1, sharey=True)
        for l, ax in enumerate(axes, start=1):
            vals = data[f"eig{l}"]
            pred = sol.layer_outliers[l - 1][0]
            floor = plotting.plot_spectrum(
                ax,
                vals,
                color=plotting.COLORS[0],
                label="autodiff",
                floor_label=r"$\leq 10^{-14}\lambda_{max}$ (zero bulk)",
            )
            plotting.mark_value(ax, pred, rf"$\lambda_{l}\gamma/(1-\gamma)$ ×{K * K}", color=plotting.COLORS[1])
            ax.set_title(rf"layer {l}: $\nabla^2_{{W_{l}}}\Phi$, {vals.size} eigenvalues")
            ax.set_xlabel("index")
            ax.set_ylim(floor / 5, pred * 8)
            n_out = int(ufm.curvature.count_outliers(vals))
            ax.text(
                0.97,
                0.45,
                f"{n_out} outliers\nmax rel. err {np.max(np.abs(vals[: K * K] - pred)) / pred:.0e}",
                transform=ax.transAxes,
                ha="right",
                va="center",
                fontsize="x-small",
            )
        axes[0].set_ylabel("eigenvalue")
        axes[0].legend(loc="center left", bbox_to_anchor=(0.0, 0.7))
        files = plotting.savefig(fig, os.path.join(out_dir, "fig01_layer_spectra"))
    steps = int(traj["steps"][-1])
    caption = (
        f"Layer-wise data-Hessian spectra of a trained linear deep UFM ({C.describe(spec)}; trained "
        f"{steps} steps of line-search GD from `init_params(seed=0)`, ‖∇L‖ = {traj['grad_norm'][-1]:.1e}). "
        f"Every block has K² = {K * K} outliers at the predicted λ_lγ/(1−γ) = "
        f"{', '.join(f'{v[0]:.4g}' for v in sol.layer_outliers)} (γ = {sol.scale:.4f}, dashed) and a zero "
        f"bulk."
    )
    return C.FigureResult(files, caption)
