"""Figure 11: SGD aligns with the emerging outlier eigenspaces (``docs/dynamics.md`` §D2, ``docs/alignment.md``).

(a) k-GMM, one-pass SGD of softmax regression: alignment of each class block x^c with the
top-k eigenspace of its Hessian block H_cc and G-matrix block G_cc, at a high and a low SNR
λ; (b) the top eigenvalues of H_11 over time at both SNRs (k outliers leave the bulk only
at high SNR); (c) XOR, 2-layer net: first-layer alignment ‖W P_{μν}‖/‖W‖ per seed, the
rank-deficient seeds (< 4 second-layer G outliers) in orange; (d) per seed the final
second-layer outlier count against the test loss; (e, f) deep UFM under GD: the fraction of
each layer's data gradient in the top-K² Hessian space and in the closed-form outlier space
at the current class means, against NC1 and against the step.
"""

import json
import os

import numpy as np

from . import _common as C


def _settings(quick: bool) -> dict:
    if quick:
        return {
            "kgmm": dict(num_classes=3, dim=24, time=8.0, checkpoints=3, test_samples=60),
            "snrs": (200.0, 2.0),
            "xor": dict(dim=16, width=5, time=30.0, seeds=6, checkpoints=3, test_samples=200),
            "ufm": dict(num_classes=3, per_class=2, depth=2, width=6, steps=300, lr=0.2, checkpoints=4),
        }
    return {
        "kgmm": dict(num_classes=4, dim=200, time=20.0, checkpoints=10),
        "snrs": (200.0, 2.0),
        "xor": dict(dim=50, width=5, time=100.0, seeds=10, checkpoints=8),
        "ufm": dict(steps=3000, checkpoints=12),
    }


def _reports(out_dir, quick: bool) -> dict:
    from ufm.experiments import align

    cfg = _settings(quick)

    def compute():
        runs = {f"kgmm_{snr:g}": align.kgmm(snr=snr, seed=C.SEED, **cfg["kgmm"]) for snr in cfg["snrs"]}
        runs["xor"] = align.xor(seed=C.SEED, **cfg["xor"])
        runs["ufm"] = align.deep_ufm(seed=C.SEED, **cfg["ufm"])
        return {name: np.asarray(json.dumps(r.to_dict())) for name, r in runs.items()}

    data = C.cached(out_dir, "alignment", {**cfg, "seed": C.SEED}, compute)
    return {name: json.loads(str(v)) for name, v in data.items()}


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    from ufm import plotting

    reps = _reports(out_dir, quick)
    cfg = _settings(quick)
    hi, lo = (reps[f"kgmm_{s:g}"] for s in cfg["snrs"])
    k = hi["config"]["num_classes"]
    with plotting.use_style():
        fig, axes = plotting.figure(2, 3, columns=2, height=4.4)
        (a, b, c), (d, e, f) = axes
        for rep, style in ((hi, "-"), (lo, (0, (3, 1.5)))):
            t = [r["time"] for r in rep["checkpoints"]]
            snr = rep["config"]["snr"]
            for key, col, _name in (
                ("block_alignment_hessian", plotting.COLORS[0], "$H_{cc}$"),
                ("block_alignment_g", plotting.COLORS[1], "$G_{cc}$"),
                ("top_space_in_means", plotting.COLORS[2], r"top-$k(H_{cc})$ in span($\mu$)"),
            ):
                A = np.array([r[key] for r in rep["checkpoints"]], dtype=float)
                a.plot(t, A.mean(axis=1), color=col, linestyle=style)
                a.fill_between(t, A.min(axis=1), A.max(axis=1), color=col, alpha=0.15, linewidth=0)
            E = np.array([r["block_eigenvalues_hessian"][0] for r in rep["checkpoints"]], dtype=float)
            for j in range(E.shape[1]):
                b.plot(
                    t,
                    E[:, j],
                    color=plotting.COLORS[0 if snr == hi["config"]["snr"] else 1],
                    linestyle="-" if j < k else (0, (1, 1)),
                    linewidth=1.0 if j < k else 0.7,
                )
        a.set(
            xlabel="time t = steps · δ",
            ylabel=r"alignment $\|P_U x^c\|/\|x^c\|$",
            ylim=(0, 1.55),
            yticks=np.linspace(0, 1, 6),
        )
        a.set_title(f"(a) k-GMM, k={k}, d={hi['config']['dim']}")
        handles = [
            a.plot([], [], color=col, label=name)[0]
            for col, name in (
                (plotting.COLORS[0], "$x^c$ vs top-k($H_{cc}$)"),
                (plotting.COLORS[1], "$x^c$ vs top-k($G_{cc}$)"),
                (plotting.COLORS[2], r"top-k($H_{cc}$) in span($\mu$)"),
            )
        ]
        handles += [
            a.plot([], [], color="0.4", linestyle=st, label=f"λ = {r['config']['snr']:g}")[0]
            for r, st in ((hi, "-"), (lo, (0, (3, 1.5))))
        ]
        a.legend(handles=handles, loc="upper center", ncols=2, fontsize=5)
        b.plot([], [], color=plotting.COLORS[0], label=f"λ={hi['config']['snr']:g}")
        b.plot([], [], color=plotting.COLORS[1], label=f"λ={lo['config']['snr']:g}")
        b.plot([], [], color="0.4", linestyle=(0, (1, 1)), linewidth=0.7, label=f"eigenvalues {k + 1}..{2 * k}")
        b.set(xlabel="time t", ylabel=r"top eigenvalues of $H_{11}$ (data)", yscale="log")
        b.set_title("(b) outliers of the class block")
        b.legend(loc="lower right", bbox_to_anchor=(1.0, 0.1))

        xr = reps["xor"]
        t = [r["time"] for r in xr["checkpoints"]]
        final = xr["summary"]["seeds"]
        for s, fs in enumerate(final):
            deficient = fs["second_layer_rank"] < 4
            col = plotting.COLORS[1] if deficient else plotting.COLORS[0]
            c.plot(t, [r["seeds"][s]["first_layer_alignment"] for r in xr["checkpoints"]], color=col, linewidth=0.8)
        c.plot([], [], color=plotting.COLORS[0], label="4 second-layer outliers")
        c.plot([], [], color=plotting.COLORS[1], label="rank deficient (< 4)")
        c.set(xlabel="time t", ylabel=r"$\|W P_{\mu\nu}\|_F/\|W\|_F$", ylim=(0, 1.02))
        c.set_title(f"(c) XOR: first layer, K={xr['config']['width']}")
        c.legend(loc="lower right")
        ranks = np.array([fs["second_layer_rank"] for fs in final])
        losses = np.array([xr["checkpoints"][-1]["seeds"][s]["loss"] for s in range(len(final))])
        acc = np.array([fs["test_accuracy"] for fs in final])
        jitter = np.linspace(-0.12, 0.12, len(final))
        sc = d.scatter(ranks + jitter, losses, c=acc, cmap="cividis", vmin=0.5, vmax=1.0, s=12)
        fig.colorbar(sc, ax=d, label="test accuracy", shrink=0.8)
        d.set(
            xlabel="second-layer G outliers (gap rule)", ylabel="test loss", xticks=range(0, xr["config"]["width"] + 1)
        )
        d.set_title("(d) XOR: final state per seed")

        ur = reps["ufm"]
        rows = ur["checkpoints"]
        steps = np.array([r["step"] for r in rows]) + 1
        F = np.array([r["grad_fraction_top"] for r in rows], dtype=float)
        P = np.array([r["grad_fraction_predicted"] for r in rows], dtype=float)
        N = np.array([r["nc1"] for r in rows], dtype=float)
        for l in range(F.shape[1]):
            col = plotting.COLORS[l]
            e.plot(N[:, l], F[:, l], color=col, marker="o", markersize=2, label=f"layer {l + 1}")
            e.plot(N[:, l], P[:, l], color=col, linestyle=(0, (3, 1.5)), linewidth=0.8)
            f.plot(steps, F[:, l], color=col, label=f"layer {l + 1}")
            f.plot(steps, P[:, l], color=col, linestyle=(0, (3, 1.5)), linewidth=0.8)
        e.plot([], [], color="0.4", label="top-K² Hessian space")
        e.plot([], [], color="0.4", linestyle=(0, (3, 1.5)), linewidth=0.8, label="predicted outlier space")
        e.set(
            xscale="log", xlabel=r"NC1 of the layer input $\tilde H_l$", ylabel=r"$\|P g\|^2/\|g\|^2$", ylim=(0, 1.02)
        )
        e.invert_xaxis()
        e.set_title("(e) deep UFM (GD): gradient vs NC1")
        # below the bottom row: inside (e) or (f) it would cover the dip of the curves
        handles = e.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="outside lower right", ncols=len(handles))
        f.set(xscale="log", xlabel="step + 1", ylabel=r"$\|P g\|^2/\|g\|^2$", ylim=(0, 1.02))
        f.set_title("(f) deep UFM: over training")
        files = plotting.savefig(fig, os.path.join(out_dir, "fig11_alignment"))
    kc, xc, uc = hi["config"], xr["config"], ur["config"]
    fin = {key: np.round(hi["summary"][key], 3).tolist() for key in ("block_alignment_hessian", "block_alignment_g")}
    caption = (
        f"SGD aligns with the emerging outlier eigenspaces (Ben Arous et al. 2024; docs/dynamics.md §D2). (a, b) k-GMM "
        f"k={kc['num_classes']}, d={kc['dim']}, ridge β={kc['ridge']:g}, δ={kc['lr_scale']:g}/d, M="
        f"{kc['test_samples']} test samples, λ = {kc['snr']:g} (solid) and {lo['config']['snr']:g} (dashed); "
        f"bands: min–max over classes. Final alignment at λ={kc['snr']:g}: H {fin['block_alignment_hessian']}, "
        f"G {fin['block_alignment_g']}; at λ={lo['config']['snr']:g}: H "
        f"{np.round(lo['summary']['block_alignment_hessian'], 3).tolist()}. (c, d) XOR-GMM d={xc['dim']}, "
        f"width K={xc['width']}, λ={xc['snr']:g}, T={xc['time']:g}: "
        f"{int(round(xr['summary']['rank_deficient_fraction'] * len(final)))}/{len(final)} seeds end rank "
        f"deficient. (e, f) deep UFM {uc['spec']['num_classes']} classes, L={uc['spec']['depth']}, GD lr "
        f"{uc['lr']:g}. Seed {C.SEED}."
    )
    return C.FigureResult(files, caption)
