"""Figure 10: a real network (``ufm.networks``): MLP on MNIST with a deep-UFM head.

Left panels: each head layer's data-Hessian block, measured (autodiff at the trained
network) against the class-mean closed form from the network's own head features
(``ufm.networks.analyze``). Right: NC1 of every head layer's features over training
(``ufm.collapse.nc_metrics``), at snapshots of one run (``ufm.networks.train_snapshots``).
"""

import os

import numpy as np

from . import _common as C

WIDTH, DEPTH = 32, 3


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import jax
    import jax.numpy as jnp

    import ufm
    import ufm.networks as nets
    from ufm import plotting

    cfg = dict(nets.DEFAULTS[(bool(quick), "mse")])
    steps = int(cfg["steps"])
    marks = sorted({max(1, steps // 2**k) for k in range(3 if quick else 6)})

    def compute():
        full = nets.load_mnist()
        left = int(full.class_counts.min()) - cfg["per_class"]
        train, test = nets.stratified_split(full, cfg["per_class"], min(100, left), seed=C.SEED)
        spec = nets.NetworkSpec(
            input_shape=train.input_shape,
            num_classes=train.num_classes,
            backbone="mlp",
            width=WIDTH,
            depth=DEPTH,
            activation="linear",
            loss="mse",
            lambda_W=float(cfg["lambda_W"]),
            lambda_H=0.0,
        )
        params = nets.init_network(spec, C.SEED, dtype=np.float32)
        nc1, acc = [], []
        for _s, res in nets.train_snapshots(
            spec,
            params,
            train,
            marks,
            optimizer="sgd",
            learning_rate=float(cfg["learning_rate"]),
            warmup_steps=min(200, steps // 5),
            seed=C.SEED,
            log_every=max(1, steps // 20),
        ):
            p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), res.params)
            feats = nets.head_features(spec, p64, nets.backbone_features(spec, p64, jnp.asarray(train.X, jnp.float64)))
            met = ufm.collapse.nc_metrics([np.asarray(f) for f in feats], train.labels, geometry="of")
            nc1.append(met.nc1_uncentred)
            acc.append(float(np.mean(np.asarray(feats[-1]).argmax(axis=0) == train.labels)))
        report = nets.analyze(spec, res.params, train, test, whole_network=False, head_full=False, seed=C.SEED)
        out = {
            "steps": np.array(marks),
            "nc1": np.array(nc1),
            "train_accuracy": np.array(acc),
            "test_accuracy": report.test_accuracy if report.test_accuracy is not None else np.nan,
            "num_classes": train.num_classes,
            "per_class": cfg["per_class"],
        }
        for c in report.layers:
            out[f"pred{c.layer}"], out[f"meas{c.layer}"] = c.predicted, c.measured
            out[f"err{c.layer}"], out[f"expected{c.layer}"] = c.max_rel_error, c.expected
            out[f"med{c.layer}"], out[f"nc1in{c.layer}"] = c.median_rel_error, c.nc1
        return out

    data = C.cached(out_dir, "fig10", {"cfg": cfg, "marks": marks, "width": WIDTH, "depth": DEPTH}, compute)
    K = int(data["num_classes"])
    with plotting.use_style():
        fig, axes = plotting.figure(1, DEPTH + 1, columns=2, height=2.2, width_ratios=[1] * DEPTH + [1.2])
        for l, ax in enumerate(axes[:DEPTH], start=1):
            meas, k = data[f"meas{l}"], int(data[f"expected{l}"])
            pred = data[f"pred{l}"][:k]  # the prediction's bulk is exactly 0: only its outliers are drawn
            floor = 1e-8 * meas[0]
            plotting.plot_spectrum(ax, meas, color=plotting.COLORS[0], label="measured (autodiff)", floor=floor)
            plotting.plot_spectrum(
                ax, pred, color=plotting.COLORS[1], marker="x", label="class-mean formula", floor=floor
            )
            ax.axvline(int(data[f"expected{l}"]) + 0.5, color="0.5", linewidth=0.6, linestyle=":")
            ax.set_title(
                f"$W_{l}$: NC1 of input {float(data[f'nc1in{l}']):.2g}\nrel. err max "
                f"{float(data[f'err{l}']):.1e}, med {float(data[f'med{l}']):.1e}",
                fontsize=6,
            )
            ax.set_xlabel("index")
        axes[0].set_ylabel("eigenvalue (data Hessian)")
        axes[0].legend(loc="lower left")
        ax = axes[-1]
        x = data["steps"]
        for l in range(DEPTH + 1):
            ax.plot(
                x,
                data["nc1"][:, l],
                marker="o",
                markersize=2.5,
                color=plotting.COLORS[l],
                label=f"$\\tilde H_{l + 1}$" if l < DEPTH else "output Z",
            )
        # a log step axis only when the checkpoints span a decade (else it shows no tick labels)
        xscale = "log" if x.max() >= 10 * max(x.min(), 1) else "linear"
        ax.set(xscale=xscale, yscale="log", xlabel="SGD step", ylabel="NC1 (uncentred)", title="collapse over training")
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        if xscale == "log":  # label 1, 2, 5 × 10^k (1 and 3 past a decade and a half: 1000 and 2000 would collide)
            subs_x = (1.0, 2.0, 5.0) if x.max() < 30 * max(x.min(), 1) else (1.0, 3.0)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs_x))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        # NC1 may span less than a decade: label 1, 2, 5 × 10^k, or every digit when that leaves fewer than
        # three ticks (a plain log axis labelled a single tick)
        lo, hi = float(np.min(data["nc1"])), float(np.max(data["nc1"]))
        subs = (1.0, 2.0, 5.0) if hi / lo > 5 else tuple(float(d) for d in range(1, 10))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-")))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(loc="lower left")
        files = plotting.savefig(fig, os.path.join(out_dir, "fig10_real_networks"))
    caption = (
        f"MLP (784-128-128-{WIDTH}) on MNIST (the shipped t10k split, {int(data['per_class'])} training "
        f"images per "
        f"class, K = {K}) with a linear deep-UFM head of depth {DEPTH}, width {WIDTH}, MSE, λ_W = "
        f"{cfg['lambda_W']:g}; "
        f"SGD (momentum 0.9, full batch) {steps} steps, seed {C.SEED}; train accuracy "
        f"{float(data['train_accuracy'][-1]):.3f}, test {float(data['test_accuracy']):.3f}. Left: the top "
        "eigenvalues of each head layer's data Hessian measured by autodiff (circles) and predicted from the "
        "network's own class means (crosses; `ufm.networks.analyze`); dotted: K² expected outliers. Right: "
        "NC1 of "
        "each head layer over training."
    )
    return C.FigureResult(files, caption)
