"""Figure 7: cross-entropy layer-wise spectra, (K−1)² outliers in three levels (``docs/theory.md`` §5).

At the CE DNC point (simplex ETF, ``p = e^α/(e^α+K−1)``) each block ``∇²_{W_l}Φ`` has rank
(K−1)²: ``αλ_l p`` (×1), ``(αλ_l/K)[1+(Kp−1)(K−2)/(K−1)]`` (×(K−1)) and ``αλ_l/K``
(×(K²−3K+1), the mini-bulk).
"""

import os

import numpy as np

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    spec = C.ce_spec(quick)
    params, info = C.trained_state(out_dir, spec, steps=20_000, name="ce-state")
    K, L = spec.num_classes, spec.depth

    data = C.cached(
        out_dir, "fig07", {"spec": spec.to_dict(), "steps": info["steps"]}, lambda: C.layer_eigenvalues(spec, params)
    )
    sol = ufm.theory.dnc_solution(spec)
    mults = sol.layer_multiplicities[0]
    names = [
        r"$\alpha\lambda p$",
        r"$\frac{\alpha\lambda}{K}[1+\frac{(Kp-1)(K-2)}{K-1}]$",
        r"$\alpha\lambda/K$ (mini-bulk)",
    ]
    show = (K - 1) ** 2 + 4
    with plotting.use_style():
        fig, axes = plotting.figure(1, L, columns=2 if L > 1 else 1, height=2.3, sharey=True)
        axes = np.atleast_1d(axes)
        for l, ax in enumerate(axes, start=1):
            levels = sol.layer_outliers[l - 1]  # docs/theory.md §5, this layer's λ_l
            vals = data[f"eig{l}"]
            ax.plot(np.arange(1, show + 1), vals[:show], "o", color=plotting.COLORS[0], label="autodiff")
            for i, (v, m, nm) in enumerate(zip(levels, mults, names, strict=True)):
                plotting.mark_value(ax, v, color=plotting.COLORS[i + 1], legend=f"{nm} ×{m}")
            err = np.max(np.abs(vals[: (K - 1) ** 2] - np.repeat(levels, mults))) / levels[0]
            ax.set_title(f"layer {l}: {(K - 1) ** 2} outliers, max rel. err {err:.0e}")
            ax.set_xlabel("index")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(-0.05 * levels[0], levels[0] * 1.25)
        axes[0].set_ylabel("eigenvalue (data Hessian, linear)")
        fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="outside lower center", ncols=4)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig07_cross_entropy"))
    caption = (
        f"Cross-entropy ({C.describe(spec)}; {C.train_note(info)}; the DNC point has α = {sol.scale:.4f}, "
        f"p = {sol.p:.4f}). Each layer's data-Hessian block has (K−1)² = {(K - 1) ** 2} outliers in three "
        f"levels, "
        f"with multiplicities 1, K−1 = {K - 1}, K²−3K+1 = {K * K - 3 * K + 1}, on the predicted values "
        f"(dashed); the rest are zero (linear axis, so the close levels separate)."
    )
    return C.FigureResult(files, caption)
