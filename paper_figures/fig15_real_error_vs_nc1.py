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
        return dict(
            dataset="gmm",
            per_class=8,
            hidden=(16,),
            width=5,
            depth=2,
            steps=300,
            learning_rate=0.02,
            lambda_W=5e-3,
            marks=(100, 300),
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
        rep = nets.analyze(spec, res.params, train, whole_network=False)
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
    with plotting.use_style():
        fig, axes = plotting.figure(1, 2, columns=2, height=2.4, sharey=True)
        for ax, loss in zip(axes, ("mse", "ce"), strict=True):
            rows = data[loss]["rows"]
            for l in range(1, int(rows[:, 1].max()) + 1):
                r = rows[rows[:, 1] == l]
                ax.plot(
                    r[:, 2],
                    r[:, 3],
                    marker="o",
                    markersize=3,
                    color=plotting.COLORS[l - 1],
                    linewidth=0.8,
                    label=f"$W_{l}$ class-mean",
                )
                if loss == "ce":
                    ax.plot(
                        r[:, 2],
                        r[:, 4],
                        marker="x",
                        markersize=4,
                        color=plotting.COLORS[l - 1],
                        linewidth=0.8,
                        linestyle="--",
                        label=f"$W_{l}$ class-averaged",
                    )
            lo, hi = rows[:, 2].min(), rows[:, 2].max()
            grid = np.geomspace(lo, hi, 20)
            ax.plot(grid, grid, color="0.6", linewidth=0.6, linestyle=":", label="error = NC1")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="NC1 of the layer's input",
                title=f"{loss.upper()}: {'class-mean' if loss == 'mse' else 'both'} predictions",
            )
            ax.legend(loc="upper left", fontsize=5.5, ncol=1 if loss == "mse" else 2)
            # a narrow NC1 range would otherwise label every minor tick
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        axes[0].set_ylabel("max rel. error of the top outliers")
        top = max(np.nanmax(data[loss]["rows"][:, 3:5]) for loss in ("mse", "ce"))
        axes[0].set_ylim(top=top * 1e4)  # headroom: the legends sit above the data
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
        "(crosses). Dotted: error = NC1."
    )
    return C.FigureResult(files, caption)
