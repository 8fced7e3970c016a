"""Figure 2: training dynamics of the layer-wise outliers (``docs/theory.md`` §4).

Along line-search GD from random init: the K² top eigenvalues of each block ``∇²_{W_l}Φ``
converge to ``λ_lγ/(1−γ)``, and the alignment ``f(v) = (vᵀHv)²/(‖v‖²‖Hv‖²)`` of the predicted
eigenvectors ``v = μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (built from the current class means) rises to 1.
"""

import os

import numpy as np

from . import _common as C

#: line styles: each means one thing in the whole figure (the alignment's mean is dotted)
BULK = (0, (5, 1.5, 1, 1.5))  # dash-dot: λ_{K²+1}, the top of the bulk


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    spec = C.mse_spec(quick)
    traj = C.trajectory(out_dir, quick)
    sol = ufm.theory.dnc_solution(spec)
    K, L = spec.num_classes, spec.depth
    x = traj["steps"] + 1
    early = int(np.argmin(np.abs(traj["alignment"].min(axis=2).mean(axis=1) - 0.5)))  # mid-way checkpoint
    with plotting.use_style():
        fig, axes = plotting.figure(1, 4, columns=2, height=2.0, width_ratios=[1.35, 1.35, 1, 1])
        ax = axes[0]
        for l in range(1, L + 1):
            c = plotting.COLORS[l - 1]
            top = traj["top"][:, l - 1]
            ax.fill_between(x, top[:, K * K - 1], top[:, 0], color=c, alpha=0.25, linewidth=0)
            ax.plot(x, top[:, 0], color=c, label=f"layer {l}")
            ax.plot(x, top[:, K * K - 1], color=c, linewidth=0.7)
            ax.plot(x, np.maximum(top[:, K * K], 1e-17), color=c, linestyle=BULK, linewidth=0.8)
        # the prediction is named in the legend: any text next to the line would sit on the converged curves
        predicted = [
            plotting.mark_value(
                ax, value, color="0.2", legend=r"predicted $\lambda_l\gamma/(1-\gamma)$" if i == 0 else None
            )
            for i, value in enumerate(sorted({v[0] for v in sol.layer_outliers}, reverse=True))
        ]  # per λ_l
        extra = [
            predicted[0],
            ax.fill_between(
                [], [], [], color="0.6", alpha=0.4, linewidth=0, label=r"band $\lambda_1 \ldots \lambda_{K^2}$"
            ),
            ax.plot([], [], color="0.4", linestyle=BULK, linewidth=0.8, label=r"$\lambda_{K^2+1}$ (bulk)")[0],
        ]
        ax.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="data-Hessian eigenvalue")
        ax.set_ylim(1e-4, None)
        layer_handles = ax.get_legend_handles_labels()[0][:L]
        ax.set_title("outliers → prediction")

        ax = axes[1]
        for l in range(1, L + 1):
            f = traj["alignment"][:, l - 1]
            ax.plot(x, f.min(axis=1), color=plotting.COLORS[l - 1])
            ax.plot(x, f.mean(axis=1), color=plotting.COLORS[l - 1], linewidth=0.7, linestyle=(0, (1, 1)))
        extra += [
            ax.plot([], [], color="0.4", label="f: min over the K² vectors")[0],
            ax.plot([], [], color="0.4", linewidth=0.7, linestyle=(0, (1, 1)), label="f: mean")[0],
        ]
        ax.axvline(x[early], color="0.6", linewidth=0.6)
        ax.set(
            xscale="log", xlabel="step + 1", ylabel=r"alignment $f(\mu_c^{(l+1)}\otimes\mu_{c'}^{(l)})$", ylim=(0, 1.05)
        )
        ax.set_title("predicted eigenvectors align")

        labels = [str(c + 1) for c in range(K)]
        for ax, i, what in (
            (axes[2], early, f"step {int(traj['steps'][early])}"),
            (axes[3], -1, f"final (step {int(traj['steps'][-1])})"),
        ):
            plotting.heatmap(
                ax, traj["alignment"][i, 0].reshape(K, K), vmin=0, vmax=1, labels=labels, colorbar=ax is axes[3]
            )
            ax.set_title(f"layer 1, {what}")
            ax.set_xlabel("c'  (input mean)")
            ax.set_ylabel("c  (output mean)")
        handles = layer_handles + extra
        fig.legend(handles=handles, loc="outside lower center", ncols=(len(handles) + 1) // 2)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig02_training_dynamics"))
    caption = (
        f"Training dynamics ({C.describe(spec)}; line-search GD from `init_params(seed=0)`, measured at "
        f"{x.size} geometric checkpoints up to convergence at step {int(traj['steps'][-1])}). Left: the K² = "
        f"{K * K} "
        "top eigenvalues of each layer's data Hessian (band between λ₁ and λ_{K²}; dash-dotted: λ_{K²+1}) "
        "converge "
        "to "
        f"λ_lγ/(1−γ) = {', '.join(f'{v[0]:.4g}' for v in sol.layer_outliers)} (dashed). Middle: alignment f of "
        f"the "
        "predicted eigenvectors μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)} (current class means; solid: min over the K² "
        "vectors, dotted: mean) rises to 1. Right: f for all "
        "(c, c') pairs of layer 1 mid-way (grey line) and at the end."
    )
    return C.FigureResult(files, caption)
