"""Figure 12: one-pass SGD on anisotropic Gaussian mixtures against its exact ODE
(``docs/sgd_ode.md``; [CWS] Collins-Woodfin & Seroussi, arXiv 2510.14074).

Top: the population risk of binary logistic regression against time t = steps/d for the three
covariance models, the ODE as a line over the mean of S seeded SGD runs; middle: SGD mean − ODE
with its ±2 s.e. band. Bottom: the phase diagram (the ODE risk's late-time decay rate −d log R/d log t
over power-law exponent a and mean decay b, with the predicted boundary a = 1 + 2b), the risk against a at
several times (b = 0), and the clean-direction alignment cos(x, P_clean μ) against the raw
cos(x, μ) over long times.
"""

import os

import numpy as np

from . import _common as C

GRID = 21  # every time grid has GRID points: one ODE compilation serves every panel


def _models(d, quick):
    from ufm.dynamics import anisotropic_mixture

    return {
        "isotropic": anisotropic_mixture(d, "isotropic", zero_fraction=0.1),
        "zero-one": anisotropic_mixture(d, "zero-one", zero_fraction=0.1),
        "power-law": anisotropic_mixture(d, "power-law", exponents=(1.5, 2.5), zero_fraction=0.1),
    }


def _multiclass(d, K):
    from ufm.dynamics import anisotropic_mixture

    return anisotropic_mixture(d, "zero-one", num_classes=K, zero_fraction=0.2, mean_scale=2.0, seed=3)


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    from ufm import dynamics, plotting
    from ufm.plotting.sgd_ode import plot_ode_sgd

    d, runs, T = (200, 8, 5.0) if quick else (1000, 16, 10.0)
    K = 10  # the multi-class panels: softmax on a K-class zero-one mixture (docs/sgd_ode.md §3.1)
    ex = np.linspace(0.0, 3.0, 4 if quick else 13)
    de = np.array([0.0, 0.5]) if quick else np.linspace(-0.25, 1.0, 6)
    long = np.concatenate([[0.0], np.logspace(-1, 3 if quick else 4, GRID - 1)])
    cfg = {"d": d, "runs": runs, "T": T, "ex": ex.tolist(), "de": de.tolist(), "long": long.tolist(), "v": 4, "K": K}

    def compute():
        out = {}
        for i, (name, mix) in enumerate(_models(d, quick).items()):  # independent runs per model
            sgd = dynamics.simulate_sgd(mix, "logistic", 1.0, time=T, num_points=GRID, runs=runs, seed=C.SEED + i)
            ode = dynamics.solve_sgd_ode(mix, "logistic", 1.0, sgd.times)
            out.update({f"{name}/sgd/{k}": getattr(sgd, k) for k in SGD_FIELDS})
            out.update({f"{name}/ode/{k}": getattr(ode, k) for k in ("risk", "overlap", "clean_overlap")})
            lo = dynamics.solve_sgd_ode(mix, "logistic", 1.0, long)
            out[f"{name}/long/overlap"], out[f"{name}/long/clean"] = lo.overlap[:, 0, 0], lo.clean_overlap[:, 0, 0]
        pd = dynamics.phase_diagram(ex, de, long, dim=d, loss="logistic", lr=1.0)
        out["phase/risk"], out["phase/critical"] = pd.risk, pd.critical
        # many classes: softmax, K classes, zero-one (f = 0.2), RQMC expectations with their error estimate
        mix = _multiclass(d, K)
        sgd = dynamics.simulate_sgd(mix, "softmax", 1.0, time=T, num_points=GRID, runs=runs, seed=C.SEED + 3)
        ode = dynamics.solve_sgd_ode(mix, "softmax", 1.0, sgd.times, rtol=1e-6)
        lo = dynamics.solve_sgd_ode(mix, "softmax", 1.0, long, rtol=1e-6, qmc_reps=4)
        out.update({f"mc/sgd/{k}": getattr(sgd, k) for k in SGD_FIELDS})
        out.update({f"mc/ode/{k}": getattr(ode, k) for k in ("risk", "overlap", "clean_overlap")})
        out.update({f"mc/ode/{k}_err": ode.err(k) for k in ("risk", "overlap", "clean_overlap")})
        out.update({f"mc/long/{k}": getattr(lo, k) for k in ("risk", "overlap", "clean_overlap")})
        out["mc/rule"] = np.asarray(ode.rule)
        return out

    data = C.cached(out_dir, "fig12", cfg, compute)
    names = ["isotropic", "zero-one", "power-law"]
    gaps, drawn = {}, {}
    with plotting.use_style():
        fig, axes = plotting.figure(4, 3, columns=2, height=8.2, height_ratios=[1.25, 0.7, 1.25, 1.25])
        for i, name in enumerate(names):
            sgd, ode = _results(data, name)
            ax = axes[0, i]
            plot_ode_sgd(ax, ode, sgd, "risk", band_label="SGD mean ± 2 s.e.")
            ax.set_title(
                f"({'abc'[i]}) "
                + name
                + (", a = 1.5/2.5" if name == "power-law" else " (f = 0.1)" if name == "zero-one" else ""),
                loc="left",
            )
            res = axes[1, i]
            res.sharex(ax)
            m, se = sgd.mean("risk"), sgd.stderr("risk")
            res.fill_between(
                sgd.times, -2 * se, 2 * se, color=plotting.COLORS[0], alpha=0.25, linewidth=0, label="±2 s.e."
            )
            res.plot(
                sgd.times,
                m - ode.risk,
                "o-",
                color=plotting.COLORS[1],
                markersize=2,
                linewidth=0.7,
                label="SGD mean − ODE",
            )
            res.axhline(0, color="0.3", linewidth=0.5)
            res.set(xlabel="t = steps / d")
            gap = dynamics.ode_sgd_gap(ode, sgd)
            gaps[name] = gap
            pos = se > 1e-12 * np.maximum(1.0, np.abs(m))  # X_0 = 0: no spread at t = 0 (as ode_sgd_gap)
            z = np.where(pos, np.abs(m - ode.risk) / np.where(pos, se, 1.0), 0.0)
            j = int(np.argmax(z))
            res.plot(sgd.times[j], (m - ode.risk)[j], "o", color="k", markersize=5, markerfacecolor="none")
            res.set_title(f"({'def'[i]}) max |gap| = {z[j]:.1f} s.e. (○)", loc="left", fontsize=6.5)
            drawn[name] = (z[j], sgd.times[j], abs((m - ode.risk)[j]), se[j])
            if i == 0:
                ax.set_ylabel("population risk")
                ax.legend(loc="upper right")
                res.set_ylabel("SGD − ODE")
                res.set_ylabel("SGD − ODE (band ±2 s.e.)")
        # phase diagram
        risk = data["phase/risk"]
        ax = axes[2, 0]
        slope = np.log(risk[:, :, -1] / risk[:, :, -2]) / np.log(long[-1] / long[-2])  # d log R / d log t
        im = ax.pcolormesh(ex, de, -slope.T, cmap="cividis", shading="nearest", rasterized=True, vmin=0)
        ax.plot(data["phase/critical"], de, color=plotting.COLORS[1], linewidth=1.4, label=r"$a_c = 1 + 2b$")
        ax.set(
            xlabel="power-law exponent a",
            ylabel="mean decay b",
            xlim=(ex[0] - 0.125, ex[-1] + 0.125),
        )
        ax.set_title(f"(g) risk decay, t = {long[-1]:.0e} (line: a = 1 + 2b)", loc="left", fontsize=6)
        fig.colorbar(im, ax=ax, label=r"$-\,d\log R/d\log t$", shrink=0.9, pad=0.02)
        ax = axes[2, 1]
        b0 = int(np.argmin(np.abs(de)))
        for c, k in enumerate(np.linspace(GRID // 3, GRID - 1, 4).astype(int)):
            ax.plot(ex, risk[:, b0, k], "o-", markersize=2.5, color=plotting.COLORS[c], label=f"t = {long[k]:.3g}")
        plotting.mark_value(ax, 1.0, axis="x", color="0.3", legend="$a_c = 1$ (b = 0)", ymin=0.4)
        ax.set(
            yscale="log", xlabel="power-law exponent a (b = 0)", ylabel="ODE risk", title="(h) risk → 0 iff a ≥ 1 + 2b"
        )
        lo_, hi_ = ax.get_ylim()
        ax.set_ylim(lo_, hi_ * 1e3)  # room above the curves: the legend sits there, not on the data
        ax.legend(loc="upper right", fontsize=5)
        # clean-direction alignment
        ax = axes[2, 2]
        for c, name in enumerate(["zero-one", "power-law"]):
            col = plotting.COLORS[1 + c]
            ax.plot(long[1:], data[f"{name}/long/clean"][1:], color=col, label=rf"{name}: $\cos(x, P_{{clean}}\mu)$")
            ax.plot(
                long[1:], data[f"{name}/long/overlap"][1:], color=col, linestyle="--", label=rf"{name}: $\cos(x, \mu)$"
            )
            sgd = _results(data, name)[0]
            ax.plot(
                sgd.times[1:],
                sgd.estimate("clean_overlap")[0][1:, 0, 0],
                "o",
                color=col,
                markersize=2,
                markerfacecolor="none",
                markeredgewidth=0.6,
            )
            ax.plot(
                sgd.times[1:],
                sgd.estimate("overlap")[0][1:, 0, 0],
                "o",
                color=col,
                markersize=2,
                markerfacecolor="none",
                markeredgewidth=0.6,
            )
        ax.set(
            xscale="log",
            ylim=(0, 1.8),
            yticks=np.linspace(0, 1, 6),
            xlabel="t = steps / d",
            ylabel="alignment (lines: ODE, o: SGD)",
            title="(i) clean alignment",
        )
        ax.legend(loc="upper left", fontsize=5.0, handlelength=1.6)
        mc = _multiclass_panels(axes[3], data, long, K)
        files = plotting.savefig(fig, os.path.join(out_dir, "fig12_sgd_ode"))
    gap_text = "; ".join(
        f"{n}: {z:.1f} s.e. at t = {t:.2g} (|gap| {g:.1e}, s.e. {e:.1e})" for n, (z, t, g, e) in drawn.items()
    )
    caption = (
        f"One-pass SGD (step γ/d, γ = 1, x₀ = 0) for binary logistic regression on a two-class mixture "
        f"(means ±μ, labels 1/0, flat unit mean b = 0, d = {d}; {runs} runs per model, seed "
        f"{C.SEED}, {C.SEED + 1}, {C.SEED + 2} for the three models) against the high-dimensional ODE "
        f"(docs/sgd_ode.md §3, diffrax Tsit5, Gauss–Hermite order 40). Exact population risk of each iterate "
        f"(z | class is Gaussian). (d–f) SGD mean − ODE with ±2 s.e.; the largest |gap|/s.e. (○): "
        f"{gap_text}. (g) The decay rate −d log R/d log t of the ODE's risk at t = {long[-1]:.0e} (0: the "
        f"risk has settled at a positive value) over a {ex.size}×{de.size} grid of (a, b) — power-law "
        "covariance (ρ/d)^a, mean (ρ/d)^b — with the predicted boundary a = 1 + 2b (where μᵀK⁻¹μ diverges); "
        "the risk against a at four times (b = 0: it settles for a < 1 and keeps falling for a > 1); the "
        "alignment with the mean projected on the clean (lowest-variance 10%) modes rises to ≈ 1 in the "
        f"zero-one model while cos(x, μ) falls. (j–l) The same for K = {K} classes (softmax, zero-one with "
        f"f = 0.2, random-sign means ‖μ_j‖ = 2, {runs} runs, seed {C.SEED + 3}; expectations by {mc['rule']}, "
        f"band: ±2 √(s.e.² + e²) with e the ODE's error estimate): the mean over classes of cos(X_j, P_clean μ_j) "
        f"reaches {mc['clean_final']:.3f} at t = {long[-1]:.0e} while cos(X_j, μ_j) falls to {mc['raw_final']:.3f} "
        f"(√f = {np.sqrt(0.2):.3f}); largest |SGD − ODE| of the clean alignment {mc['z']:.1f} combined s.e."
    )
    return C.FigureResult(files, caption)


SGD_FIELDS = ("times", "risk", "overlap", "clean_overlap", "M", "S", "norm2", "modes")


def _results(data, name):
    """Rebuild the `SGDResult` / `ODEResult` pieces the plots need from the cached arrays."""
    from ufm.dynamics import ODEResult, SGDResult

    g = lambda k: data[f"{name}/{k}"]  # noqa: E731
    sgd = SGDResult(
        g("sgd/times"),
        g("sgd/risk"),
        g("sgd/M"),
        g("sgd/S"),
        g("sgd/norm2"),
        g("sgd/overlap"),
        g("sgd/clean_overlap"),
        g("sgd/modes"),
        0,
    )
    ode = ODEResult(
        g("sgd/times"), g("ode/risk"), None, None, None, g("ode/overlap"), g("ode/clean_overlap"), None, None, 0
    )
    return sgd, ode


def _multiclass_panels(axes, data, long, K):
    """(j) risk, (k) clean vs raw alignment (mean over classes) to long times, (l) SGD − ODE of the
    clean alignment — the K-class softmax ODE (RQMC) against its SGD runs."""
    from ufm import plotting

    diag = lambda x: np.mean(np.diagonal(x, axis1=-2, axis2=-1), axis=-1)  # noqa: E731
    sgd = _results(data, "mc")[0]
    t = sgd.times
    ax = axes[0]
    m, se = sgd.estimate("risk")
    band = 2 * np.sqrt(se**2 + data["mc/ode/risk_err"] ** 2)
    ax.fill_between(t, m - band, m + band, color=plotting.COLORS[0], alpha=0.25, linewidth=0, label="SGD ± 2 s.e.")
    ax.plot(t, m, "o", color=plotting.COLORS[0], markersize=2, markerfacecolor="none", markeredgewidth=0.6)
    ax.plot(t, data["mc/ode/risk"], color=plotting.COLORS[0], linewidth=1.0, label="ODE (RQMC)")
    ax.set(xlabel="t = steps / d", ylabel="population risk")
    ax.set_title(f"(j) K = {K} classes, zero-one (f = 0.2)", loc="left")
    ax.legend(loc="upper right")
    ax = axes[1]
    for c, (key, lab, ls) in enumerate(
        (("clean_overlap", r"$\cos(X_j, P_{clean}\mu_j)$", "-"), ("overlap", r"$\cos(X_j, \mu_j)$", "--"))
    ):
        col = plotting.COLORS[1 + c]
        ax.plot(long[1:], diag(data[f"mc/long/{key}"])[1:], color=col, linestyle=ls, label=lab + " (ODE)")
        ax.plot(
            t[1:],
            sgd.estimate(key, diag)[0][1:],
            "o",
            color=col,
            markersize=2,
            markerfacecolor="none",
            markeredgewidth=0.6,
        )
    ax.axhline(np.sqrt(0.2), color="0.5", linewidth=0.5, linestyle=":")
    ax.set(xscale="log", ylim=(0, 1.45), xlabel="t = steps / d", ylabel="mean over classes (o: SGD)")
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title("(k) multi-class clean alignment", loc="left")
    ax.legend(loc="upper left", fontsize=5.5)
    ax = axes[2]
    m, se = sgd.estimate("clean_overlap", diag)  # ratios of run means, as the ODE computes them
    o, e = diag(data["mc/ode/clean_overlap"]), diag(data["mc/ode/clean_overlap_err"])
    comb = np.sqrt(se**2 + e**2)
    ax.fill_between(t, -2 * comb, 2 * comb, color=plotting.COLORS[1], alpha=0.25, linewidth=0)
    ax.plot(t, m - o, "o-", color=plotting.COLORS[1], markersize=2, linewidth=0.7, label="SGD − ODE")
    ax.axhline(0, color="0.3", linewidth=0.5)
    pos = comb > 1e-12 * np.maximum(1.0, np.abs(m))
    z = np.where(pos, np.abs(m - o) / np.where(pos, comb, 1.0), 0.0)
    j = int(np.argmax(z))
    ax.plot(t[j], (m - o)[j], "o", color="k", markersize=5, markerfacecolor="none")
    ax.set(xlabel="t = steps / d", ylabel="clean alignment: SGD − ODE\n(band ±2 √(s.e.² + e²))")
    ax.set_title(f"(l) max |gap| = {z[j]:.1f} s.e. (○)", loc="left", fontsize=6.5)
    lo = diag(data["mc/long/clean_overlap"])
    return {
        "rule": str(data["mc/rule"]),
        "clean_final": float(lo[-1]),
        "raw_final": float(diag(data["mc/long/overlap"])[-1]),
        "z": float(z[j]),
    }
