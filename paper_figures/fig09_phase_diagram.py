"""Figure 9: the (λ_W, λ_H) phase diagram of the linear MSE deep UFM (``docs/theory.md`` §3).

``b = K^{L+1} n λ_H λ_W^L``: the DNC point is the global minimiser iff ``b < (L−1)^{L−1}/L^{2L}``
(L = 1: ``K²nλ_Wλ_H < 1``), with ``Z* = γY``, γ the largest root of ``γ^{L−1}(1−γ)^{L+1} = b``;
above the boundary the minimiser is 0 ("collapse to zero"). Full build: trained models on
the diagonal λ_H = λ_W, coloured by the measured ``γ̂ = ⟨Z, Y⟩/‖Y‖²``.
"""

import os

import numpy as np

from . import _common as C

DEPTHS = (1, 2, 3)
CONTOURS = (0.7, 0.9, 0.99)
TRAINED = (0.01, 0.02, 0.03, 0.04, 0.06, 0.1)  # λ_H = λ_W, depth 3 (full build only)


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import ufm
    from ufm import plotting

    K, n = 4, 5
    num = 200 if quick else 400

    def grid_for(L):
        # centre the λ_W range on where the boundary crosses λ_H = λ_W
        c = (ufm.theory.mse_threshold(L) / (K ** (L + 1) * n)) ** (1 / (L + 1))
        return np.logspace(np.log10(c) - 1.5, np.log10(c) + 1, num), np.logspace(np.log10(c) - 2, np.log10(c) + 2, num)

    def compute():
        out = {}
        for L in DEPTHS:
            lw, lh = grid_for(L)
            # γ depends on the λ's only through b = K^{L+1} n λ_H λ_W^L: solve on a fine 1-d grid of b
            # (λ_W = 1, λ_H = b / (K^{L+1} n)) and interpolate in log b onto the 2-d grid
            logb = np.log10(K ** (L + 1) * n) + np.log10(lh)[:, None] + L * np.log10(lw)[None, :]
            b_line = np.linspace(logb.min(), logb.max(), 300 if quick else 1000)
            g_line = np.array(
                [
                    ufm.theory.dnc_solution(
                        ufm.UFMSpec(
                            num_classes=K,
                            per_class=n,
                            depth=L,
                            width=K,
                            lambda_W=1.0,
                            lambda_H=float(10**b / (K ** (L + 1) * n)),
                        )
                    ).scale
                    for b in b_line
                ]
            )
            bound = np.log10(ufm.theory.mse_threshold(L))
            gam = np.interp(logb, b_line, g_line)
            gam[logb >= bound] = 0.0  # the jump at the boundary is not interpolated across
            out[f"gamma{L}"], out[f"lw{L}"], out[f"lh{L}"] = gam, lw, lh
        if not quick:
            meas, theo, gnorm = [], [], []
            for lam in TRAINED:
                spec = ufm.UFMSpec(num_classes=K, per_class=n, depth=3, width=8, lambda_H=lam, lambda_W=lam)
                r = ufm.train(spec, ufm.init_params(spec, C.SEED), steps=20_000, log_every=5_000)
                Z = np.asarray(ufm.model.forward(spec, r.params).output)
                Y = spec.targets
                meas.append(float(np.sum(Z * Y) / np.sum(Y * Y)))
                theo.append(ufm.theory.dnc_solution(spec).scale)
                gnorm.append(float(r.history["grad_norm"][-1]))
            out["trained_lambda"], out["trained_gamma"], out["theory_gamma"] = np.array(TRAINED), meas, theo
            out["trained_grad_norm"] = gnorm
        return out

    data = C.cached(out_dir, "fig09", {"K": K, "n": n, "num": num, "quick": quick, "trained": TRAINED, "v": 2}, compute)
    with plotting.use_style():
        fig, axes = plotting.figure(1, len(DEPTHS), columns=2, height=2.3)
        for ax, L in zip(axes, DEPTHS, strict=True):
            lw, lh, gam = data[f"lw{L}"], data[f"lh{L}"], data[f"gamma{L}"]
            im = ax.pcolormesh(
                lw,
                lh,
                np.ma.masked_where(gam <= 0, gam),
                cmap="cividis",
                vmin=0,
                vmax=1,
                shading="auto",
                rasterized=True,
            )
            ax.set_facecolor("0.85")
            cs = ax.contour(lw, lh, gam, levels=CONTOURS, colors="white", linewidths=0.6)
            bound = ufm.theory.mse_threshold(L) / (K ** (L + 1) * n)
            ax.plot(lw, bound / lw**L, color=plotting.COLORS[1], linewidth=1.4, label="collapse-to-zero boundary")
            ax.set(
                xscale="log",
                yscale="log",
                xlim=(lw[0], lw[-1]),
                ylim=(lh[0], lh[-1]),
                xlabel=r"$\lambda_W$",
                title=f"L = {L}",
            )
            ax.text(0.95, 0.92, "minimiser = 0", transform=ax.transAxes, ha="right", fontsize="x-small", color="0.2")
            if L == 3 and "trained_lambda" in data:
                ax.scatter(
                    data["trained_lambda"],
                    data["trained_lambda"],
                    c=data["trained_gamma"],
                    cmap="cividis",
                    vmin=0,
                    vmax=1,
                    edgecolors=plotting.COLORS[4],
                    linewidths=1.0,
                    s=18,
                    zorder=3,
                )
                ax.plot(
                    [],
                    [],
                    "o",
                    markerfacecolor="0.6",
                    markeredgecolor=plotting.COLORS[4],
                    label=r"trained: $\hat\gamma=\langle Z,Y\rangle/\|Y\|^2$",
                )
        for ax in axes:  # each panel has its own λ_H range (the boundary moves with L)
            ax.set_ylabel(r"$\lambda_H$")
        axes[0].legend(loc="upper right", bbox_to_anchor=(1.0, 0.88), fontsize=5.5)
        if "trained_lambda" in data:
            axes[-1].legend(loc="upper right", bbox_to_anchor=(1.0, 0.88), fontsize=5.5)
        cbar = fig.colorbar(im, ax=axes, shrink=0.85, label=r"$\gamma$ ($Z^* = \gamma Y$); white: contours")
        cbar.add_lines(cs)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig09_phase_diagram"))
    trained = ""
    if "trained_lambda" in data:
        pairs = ", ".join(
            f"λ={a:g}: γ̂={b:.3f} (γ={c:.3f}, ‖∇L‖={g:.0e})"
            for a, b, c, g in zip(
                data["trained_lambda"],
                data["trained_gamma"],
                data["theory_gamma"],
                data["trained_grad_norm"],
                strict=True,
            )
        )
        trained = (
            f" Circles (L = 3): models with width 8 trained from `init_params(seed=0)` at λ_H = λ_W, coloured "
            f"by "
            f"the measured γ̂ after at most 20,000 line-search GD steps — {pairs}; next to the boundary "
            f"training "
            "slows down and the cap is reached before convergence."
        )
    caption = (
        f"Phase diagram of the linear MSE deep UFM (K = {K}, n = {n}; closed form `dnc_solution` on a "
        f"{num}×{num} "
        "log grid per depth, interpolated in log b from 300 (quick) / 1000 exact solutions). Colour: γ with "
        "Z* = γY; grey: the global minimiser is 0. Orange: the boundary "
        "K^{L+1} n λ_H λ_W^L = (L−1)^{L−1}/L^{2L}; white: γ contours at 0.7, 0.9, 0.99 (marked on the colour "
        "bar). For L ≥ 2 γ jumps from (L−1)/L to 0 at the boundary." + trained
    )
    return C.FigureResult(files, caption)
