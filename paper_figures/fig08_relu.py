"""Figure 8: ReLU deep UFMs — the derivative-at-0 convention decides the spectrum (``docs/theory.md`` §6).

At the constructed MSE optimum (non-negative frames, exact zeros in the features):
σ'(0) = 1 reproduces the linear K² outliers; σ'(0) = 0 (``jax.nn.relu``) leaves only K for
l < L; the smooth limit softplus(βx)/β (trained from that point) gives K² unequal outliers.
Last panel: a ReLU deep UFM trained from random init.
"""

import os

import numpy as np

from . import _common as C

RELU_SEED = 2


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    base = C.mse_spec(quick).replace(activation="relu")
    K, L = base.num_classes, base.depth
    beta = 20.0 if quick else 100.0
    cases = []
    opt = ufm.theory.construct_optimum(base, C.SEED)
    for g0 in (1.0, 0.0):
        spec = base.replace(relu_grad0=g0)
        cases.append((rf"ReLU $\sigma'(0)={g0:g}$, optimum", spec, opt, None))
    soft = base.replace(activation="softplus", softplus_beta=beta)
    p_soft, i_soft = C.trained_state(
        out_dir, soft, steps=1_500 if quick else 30_000, init="optimum", name="softplus-state"
    )
    cases.append((rf"softplus, $\beta={beta:g}$", soft, p_soft, i_soft))
    relu = base.replace(relu_grad0=0.0)
    # seed 0 of the quick model trains into a degenerate state (dead units: 1 outlier in layers 1–2);
    # RELU_SEED is the first seed that reaches a collapsed critical point, said in the caption
    p_relu, i_relu = C.trained_state(out_dir, relu, steps=1_500 if quick else 30_000, seed=RELU_SEED, name="relu-state")
    cases.append((r"ReLU $\sigma'(0)=0$, trained", relu, p_relu, i_relu))
    data = [
        C.cached(
            out_dir,
            f"fig08-{i}",
            {"spec": spec.to_dict(), "info": info},
            lambda s=spec, p=params: C.layer_eigenvalues(s, p),
        )
        for i, (_, spec, params, info) in enumerate(cases)
    ]
    sol = ufm.theory.dnc_solution(base)
    pred = max(v[0] for v in sol.layer_outliers)  # the linear value (equal λ: one value)
    show = K * K + 4
    with plotting.use_style():
        fig, axes = plotting.figure(1, 4, columns=2, height=2.2, sharey=True)
        for ax, (title, _spec, _, _info), d in zip(axes, cases, data, strict=True):
            counts = []
            for l in range(1, L + 1):
                vals = d[f"eig{l}"]
                plotting.plot_spectrum(
                    ax,
                    vals[:show],
                    floor=1e-6 * pred,
                    color=plotting.COLORS[l - 1],
                    offset=0.25 * (l - 2),
                    label=f"layer {l}",
                    markersize=2.8,
                )
                counts.append(int(np.sum(vals > 1e-6 * pred)))
            predicted = plotting.mark_value(
                ax, pred, color="0.25", legend=r"linear prediction $\lambda\gamma/(1-\gamma)$"
            )
            ax.set_title(title + "\nnonzero per layer " + ", ".join(map(str, counts)), fontsize=6.5)
            ax.set_xlabel("index")
            ax.set_ylim(1e-6 * pred / 4, pred * 6)
        axes[0].set_ylabel("eigenvalue (data Hessian)")
        # one legend below the panels: the layers, the prediction (no text on the points) and the hollow markers
        layers = axes[0].get_legend_handles_labels()[0][:L]
        hollow = axes[0].plot(
            [],
            [],
            "o",
            color="0.4",
            markerfacecolor="none",
            markersize=2.8,
            linestyle="none",
            label=r"$<10^{-6}\times$ prediction (zero), drawn at that floor",
        )[0]
        fig.legend(handles=layers + [predicted, hollow], loc="outside lower center", ncols=L + 2)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig08_relu"))
    caption = (
        f"ReLU conventions ({C.describe(base)}). Top eigenvalues of each layer's data Hessian (dense "
        f"autodiff; "
        "'nonzero' counts eigenvalues above 1e-6 × the prediction per layer, hollow markers are below it). "
        "The constructed optimum "
        "(`construct_optimum`, non-negative frames) with σ'(0) = 1: K² = "
        f"{K * K} outliers at the linear value; σ'(0) = 0: only K = {K} for l < L. Softplus(βx)/β, β = "
        f"{beta:g}, "
        f"{C.train_note(i_soft)} from the ReLU optimum: K large and K(K−1) smaller, layer-dependent outliers "
        "(the smallest are not resolved while ‖∇L‖ is not tiny). Last: ReLU (σ'(0) = 0) "
        f"{C.train_note(i_relu)} from `init_params(seed={RELU_SEED})` (seed 0 of the quick model ends in a "
        f"degenerate "
        "state with dead units): separated, unequal outliers."
    )
    return C.FigureResult(files, caption)
