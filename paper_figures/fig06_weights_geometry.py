"""Figure 6: weights' singular values per layer and the class-mean geometry (``docs/theory.md`` §2, §3, §5).

MSE: each W_l has K equal singular values ``σ_l² = γ(1−γ)/(Kλ_l)``, class means form an
orthogonal frame (``MᵀM ∝ I_K``). CE: K−1 equal singular values ``σ_l² = (1−p)α/((K−1)λ_l)``,
centred class means a simplex ETF (``∝ I − 11ᵀ/K``).
"""

import os

import numpy as np

from . import _common as C


def _gram(M, centred: bool):
    if centred:
        M = M - M.mean(axis=1, keepdims=True)
    G = M.T @ M
    return G / np.max(np.abs(np.diag(G)))


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    mse, _, p_mse = C.mse_final_state(out_dir, quick)
    ce = C.ce_spec(quick)
    p_ce, ce_info = C.trained_state(out_dir, ce, steps=20_000, name="ce-state")
    cases = []
    for spec, params, centred, geo in ((mse, p_mse, False, "of_distance"), (ce, p_ce, True, "etf_distance")):
        ws = ufm.theory.weight_spectrum(spec, params)
        nc = ufm.collapse.metrics(spec, params)
        acts = ufm.model.forward(spec, params)
        M = ufm.collapse.class_means(np.asarray(acts.post[-1]), spec.class_index, spec.num_classes)
        cases.append((spec, ws, _gram(M, centred), float(getattr(nc, geo)[spec.depth - 1]), geo))
    with plotting.use_style():
        fig, axes = plotting.figure(1, 4, columns=2, height=2.0, width_ratios=[1.2, 1.2, 1, 1])
        for ax, (spec, ws, _, _, _), name in zip(axes[:2], cases, ("MSE", "CE"), strict=True):
            for l, s in enumerate(ws, start=1):
                c = plotting.COLORS[l - 1]
                plotting.plot_spectrum(
                    ax,
                    s.values,
                    color=c,
                    offset=0.2 * (l - 1) - 0.1 * (spec.depth - 1),
                    label=f"$W_{l}$",
                    floor=1e-7 * s.values[0],
                )
                plotting.mark_value(ax, s.predicted, None, color=c)
            k = ws[0].multiplicity
            ax.set_title(f"{name}: " + (f"K = {k}" if name == "MSE" else f"K−1 = {k}") + " equal σ")
            ax.set_xlabel("index")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(1e-7 * max(s.values[0] for s in ws) / 3, 3 * max(s.values[0] for s in ws))
        axes[0].set_ylabel(r"singular value $\sigma_i(W_l)$")
        axes[0].legend(loc="center right")
        for ax, (spec, _, G, dist, _geo), name in zip(axes[2:], cases, ("MSE", "CE"), strict=True):
            plotting.heatmap(
                ax,
                G,
                vmin=-1,
                vmax=1,
                cmap="PuOr_r",
                labels=[str(c + 1) for c in range(G.shape[0])],
                colorbar=name == "CE",
                fmt="{:.2f}",
            )
            kind = r"$M^\top M$, OF" if name == "MSE" else r"centred $M^\top M$, ETF"
            ax.set_title(f"{name}: {kind}\nlayer {spec.depth}, dist. {dist:.0e}", fontsize=7)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig06_weights_geometry"))
    caption = (
        f"Weights and geometry. MSE: the trained state of figure 1 ({C.describe(mse)}); CE: {C.describe(ce)}, "
        f"{C.train_note(ce_info)}. Singular values of every W_l against the predicted σ_l (dashed, same "
        f"colour): "
        "K equal ones for MSE, K−1 for CE, the rest zero (hollow: ≤ 1e-7·σ₁). Right: the normalised Gram of "
        "the last layer's class "
        "means — the identity (orthogonal frame) for MSE, the simplex ETF I − 11ᵀ/K (off-diagonal −1/(K−1)) for "
        "CE; the title gives the distance to the nearest frame (`ufm.collapse.metrics`)."
    )
    return C.FigureResult(files, caption)
