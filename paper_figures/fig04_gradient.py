"""Figure 4: the data gradient in the outlier eigenbasis, over training (``docs/theory.md`` §4).

At the MSE optimum ``∇_{W_l}Φ = −λ_l W_l ∝ Σ_c μ_c^{(l+1)} ⊗ μ_c^{(l)}``: squared coefficients
1/K on the K "diagonal" eigenvectors ``μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}``, 0 on the K(K−1) others, and
the whole gradient inside the K²-dimensional outlier space (Gur-Ari et al. 2018).
"""

import os

import numpy as np

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    from ufm import plotting

    spec = C.mse_spec(quick)
    traj = C.trajectory(out_dir, quick)
    K, L = spec.num_classes, spec.depth
    layer = 2 if L >= 2 else 1
    T = traj["steps"].size
    snaps = [0, T // 2, T - 1]
    diag = np.eye(K, dtype=bool).ravel()
    x = traj["steps"] + 1
    with plotting.use_style():
        fig, axes = plotting.figure(1, len(snaps) + 1, columns=2, height=2.0, width_ratios=[1] * len(snaps) + [1.4])
        pos = np.arange(K * K)
        for ax, i in zip(axes[: len(snaps)], snaps, strict=True):
            c2 = traj["coef2"][i, layer - 1]
            ax.bar(pos[diag], c2[diag], color=plotting.COLORS[0], label="c = c'")
            ax.bar(pos[~diag], c2[~diag], color=plotting.COLORS[1], label="c ≠ c'")
            plotting.mark_value(ax, 1 / K, "1/K", color="0.25", where=0.98)
            ax.set_xticks(
                pos, [f"{a + 1}{b + 1}" for a in range(K) for b in range(K)], fontsize=5, rotation=90 if K > 3 else 0
            )
            ax.set_ylim(0, max(1.25 / K, 1.1 * c2.max()))
            ax.set_title(f"layer {layer}, step {int(traj['steps'][i])}")
            ax.set_xlabel("(c, c')")
        axes[0].set_ylabel(r"$\langle \hat g, \hat\mu_c^{(l+1)}\otimes\hat\mu_{c'}^{(l)}\rangle^2$")
        ax = axes[-1]
        top = 1.3  # the sums exceed 1 early on, while the class means are far from orthogonal
        for l in range(1, L + 1):
            c = plotting.COLORS[l - 1]
            c2 = traj["coef2"][:, l - 1]
            ax.plot(x, c2[:, diag].sum(axis=1), color=c, label=f"layer {l}")
            ax.plot(x, c2[:, ~diag].sum(axis=1), color=c, linestyle=(0, (1, 1)), linewidth=0.8)
            top = max(top, 1.05 * c2[:, diag].sum(axis=1).max(), 1.05 * c2[:, ~diag].sum(axis=1).max())
            ax.plot(x, traj["grad_fraction"][:, l - 1], color=c, linestyle=(0, (5, 1, 1, 1)), linewidth=0.8)
        ax.plot([], [], color="0.4", label="Σ diagonal coef²")
        ax.plot([], [], color="0.4", linestyle=(0, (1, 1)), linewidth=0.8, label="Σ off-diagonal coef²")
        ax.plot([], [], color="0.4", linestyle=(0, (5, 1, 1, 1)), linewidth=0.8, label="‖P_top g‖²/‖g‖²")
        ax.set(xscale="log", xlabel="step + 1", ylim=(-0.02, top))
        ax.set_title("over training")
        handles = axes[0].get_legend_handles_labels()[0] + ax.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="outside lower center", ncols=(len(handles) + 1) // 2)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig04_gradient"))
    caption = (
        f"The data gradient ĝ = ∇_{{W_l}}Φ/‖·‖ on the predicted outlier eigenvectors μ̂_c^{{(l+1)}} ⊗ "
        f"μ̂_{{c'}}^{{(l)}} "
        f"over training ({C.describe(spec)}; the run of figure 2). Bars: squared coefficients for layer "
        f"{layer} at "
        f"three checkpoints; at convergence K = {K} equal bars 1/K on the diagonal pairs, 0 elsewhere. Right: "
        "the diagonal / off-diagonal sums per layer and the fraction of ‖ĝ‖² in the measured top-K² Hessian "
        "eigenspace (→ 1)."
    )
    return C.FigureResult(files, caption)
