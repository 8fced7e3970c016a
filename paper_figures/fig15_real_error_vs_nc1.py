"""Figure 15: the prediction error of a real network's layer-wise Hessian outliers falls with NC1.

An MLP with a linear deep-UFM head on MNIST (quick: a 4-class Gaussian mixture, a smaller model) is trained
once with MSE and once with cross-entropy; at checkpoints along training (`ufm.networks.
train_snapshots`) every head layer's data-Hessian block is measured and compared with the
class-mean prediction and, for CE, the class-averaged-curvature prediction
(`ufm.networks.analyze`, ``docs/real_networks.md`` §2–§5). Each point is one layer at one
checkpoint: x = NC1 of the layer's input, y = the max relative error of the top outliers.
"""

import os

import numpy as np

from . import _common as C

DEPTH = 3


def _config(quick: bool, loss: str) -> dict:
    import ufm.networks as nets

    if quick:
        return dict(  # long enough that MSE collapses (NC1 ~1e-3 at the end), five checkpoints
            dataset="gmm",
            per_class=8,
            hidden=(16,),
            width=5,
            depth=2,
            steps=1600,
            learning_rate=0.05,
            lambda_W=5e-3,
            marks=(100, 200, 400, 800, 1600),
        )
    cfg = nets.DEFAULTS[(False, loss)]
    return dict(
        dataset="mnist",
        per_class=cfg["per_class"],
        hidden=(128, 128),
        width=32,
        depth=DEPTH,
        steps=cfg["steps"],
        learning_rate=cfg["learning_rate"],
        lambda_W=cfg["lambda_W"],
        marks=(250, 500, 1000, 2000, 4000),
    )


def _trajectory(loss: str, cfg: dict) -> dict:
    import ufm.networks as nets

    if cfg["dataset"] == "mnist":
        train = nets.subsample(nets.load_mnist(), cfg["per_class"], seed=C.SEED)
    else:  # quick: 4 Gaussian classes in 12 dimensions
        train = nets.gaussian_mixture(4, cfg["per_class"], 12, separation=4.0, noise=0.5, seed=C.SEED)
    spec = nets.NetworkSpec(
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        hidden=cfg["hidden"],
        width=cfg["width"],
        depth=cfg["depth"],
        loss=loss,
        lambda_W=float(cfg["lambda_W"]),
    )
    params = nets.init_network(spec, C.SEED, dtype=np.float32)
    rows = []
    for step, res in nets.train_snapshots(
        spec,
        params,
        train,
        cfg["marks"],
        learning_rate=cfg["learning_rate"],
        warmup_steps=min(200, cfg["steps"] // 5),
        seed=C.SEED,
        log_every=max(1, cfg["steps"] // 20),
    ):
        rep = nets.analyze(spec, res.params, train, whole_network=False, head_full=False)
        for c in rep.layers:
            rows.append(
                [
                    step,
                    c.layer,
                    c.nc1,
                    c.max_rel_error,
                    c.class_averaged_max_rel_error,
                    c.median_rel_error,
                    c.class_averaged_median_rel_error,
                    c.num_outliers,
                    c.split.get("within_class", np.nan),
                    rep.train_accuracy,
                ]
            )
    return {"rows": np.array(rows, dtype=float), "num_classes": train.num_classes}


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ufm import plotting

    data = {}
    for loss in ("mse", "ce"):
        cfg = _config(quick, loss)
        data[loss] = C.cached(out_dir, f"fig15-{loss}", cfg, lambda loss=loss, cfg=cfg: _trajectory(loss, cfg))
    cfg = _config(quick, "mse")
    fits = {}
    with plotting.use_style():
        fig, axes = plotting.figure(1, 2, columns=2, height=2.4)
        for ax, loss in zip(axes, ("mse", "ce"), strict=True):
            rows = data[loss]["rows"]
            # points, not lines: NC1 is not monotone in the step, and joined points crossed each other
            series = [(3, "o", "class-mean")] + ([(4, "x", "class-averaged")] if loss == "ce" else [])
            for l in range(1, int(rows[:, 1].max()) + 1):
                r = rows[rows[:, 1] == l]
                for col, marker, name in series:
                    ax.scatter(
                        r[:, 2],
                        r[:, col],
                        marker=marker,
                        s=10 if marker == "o" else 14,
                        color=plotting.COLORS[l - 1],
                        facecolors="none" if marker == "o" else None,
                        linewidths=0.8,
                        label=f"$W_{l}$ {name}",
                    )
            # the law error ≈ c·NC1^p fitted over every layer and checkpoint (log–log least squares)
            for col, _marker, name in series:
                ok = (rows[:, 2] > 0) & (rows[:, col] > 0)
                x, y = np.log(rows[ok, 2]), np.log(rows[ok, col])
                if x.size >= 2 and np.ptp(x) > 0:
                    p, a = np.polyfit(x, y, 1)
                    fits[(loss, name)] = (p, np.exp(a))
                    grid = np.geomspace(rows[ok, 2].min(), rows[ok, 2].max(), 20)
                    ax.plot(
                        grid,
                        np.exp(a) * grid**p,
                        color="0.3",
                        linewidth=0.8,
                        linestyle="-" if name == "class-mean" else "--",
                        label=f"fit {name}: ∝ NC1$^{{{p:.2f}}}$",
                    )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="NC1 of the layer's input",
                title=f"{loss.upper()}: {'class-mean' if loss == 'mse' else 'both'} predictions",
            )
            # y from the data (a decade of headroom above for the legend), not from a fixed factor
            vals = rows[:, [c for c, _, _ in series]]
            vals = vals[np.isfinite(vals) & (vals > 0)]
            ax.set_ylim(vals.min() / 2, vals.max() * 30)
            ax.legend(loc="upper left", fontsize=5.5, ncol=2)
            # a narrow NC1 range would otherwise label every minor tick
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        axes[0].set_ylabel("max rel. error of the top outliers")
        files = plotting.savefig(fig, os.path.join(out_dir, "fig15_real_error_vs_nc1"))
    K = int(data["mse"]["num_classes"])
    marks = ", ".join(str(m) for m in cfg["marks"])
    caption = (
        f"{'a 4-class Gaussian mixture in 12 dimensions' if cfg['dataset'] == 'gmm' else 'MNIST (shipped t10k split)'}"
        f", {cfg['per_class']} training samples per class (K = {K}), MLP backbone {cfg['hidden']} with a linear "
        f"deep-UFM head of depth {cfg['depth']}, width {cfg['width']}, λ_W = {cfg['lambda_W']:g}, SGD "
        f"(momentum 0.9, full batch), checkpoints at steps {marks}, seed {C.SEED}. Each point is one head layer "
        "at one checkpoint: the max relative error of the predicted top K² (MSE) / (K−1)² (CE) outliers of its "
        "data-Hessian block against autodiff, vs NC1 of the layer's input (uncentred for MSE, centred for CE). "
        "MSE: the class-mean prediction (for a linear head it equals the class-averaged one). CE: the paper's "
        "class-mean prediction (ρ at the class-mean logits, circles) and the class-averaged-curvature prediction "
        "(crosses). Lines: the law error ≈ c·NC1^p fitted (log–log least squares) over every layer and "
        "checkpoint of the panel: "
        + "; ".join(f"{loss.upper()} {name} p = {p:.2f}" for (loss, name), (p, _) in fits.items())
        + "."
    )
    return C.FigureResult(files, caption)
