"""One call from a dataset name to a trained network and its `RealNetworkReport`.

`run_real` is what ``ufm real --dataset {mnist,digits,gmm} --model {mlp,cnn} --loss
{mse,ce} [--quick]`` calls. Training runs in float32 (speed), the analysis in float64
inside a local ``jax.enable_x64`` context (no global switch). The defaults are sized so
that ``quick=False`` finishes in a few minutes on 2 CPU cores and ``quick=True`` in well
under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np

from ..networks._data import Dataset, gaussian_mixture, load_digits, load_mnist, stratified_split, subsample
from ..networks._layers import NC1_THRESHOLD, REL_ERROR_THRESHOLD
from ..networks._measure import expected_outliers
from ..networks._models import NetworkSpec, init_network
from ..networks._report import RealNetworkReport, analyze
from ..networks._train import train_network

__all__ = ["run_real", "format_table", "series_table", "DEFAULTS", "LEGEND"]

#: Per (quick, loss) defaults: samples per class, SGD steps (momentum 0.9, full batch, 200
#: warm-up steps), learning rate, λ_W, and how many top eigenpairs of the whole network
#: (``None``: `ufm.networks.analyze`'s default, K² + K for MSE and (K − 1)² + K for CE, past the
#: expected outliers; the quick runs take 12, too few to see a gap, to stay quick).
DEFAULTS = {
    (False, "mse"): dict(per_class=50, steps=4000, learning_rate=0.1, lambda_W=2e-3, network_k=None),
    (False, "ce"): dict(per_class=50, steps=4000, learning_rate=0.1, lambda_W=2e-3, network_k=None),
    (True, "mse"): dict(per_class=20, steps=600, learning_rate=0.1, lambda_W=5e-3, network_k=12),
    (True, "ce"): dict(per_class=20, steps=600, learning_rate=0.1, lambda_W=5e-3, network_k=12),
}


#: Above this many training samples a run without ``batch_size`` trains on mini-batches of `AUTO_BATCH`
#: and streams the whole-network products in batches of it (``ufm real --per-class 1000``).
AUTO_BATCH_ABOVE = 2000
AUTO_BATCH = 1000


def _dataset(name: str, data_dir, seed: int) -> Dataset:
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "digits":
        return load_digits()
    if name == "gmm":
        return gaussian_mixture(10, 300, 64, separation=4.0, noise=1.0, seed=seed)
    raise ValueError(f"dataset must be 'mnist', 'digits' or 'gmm', got {name!r}")


def run_real(
    dataset: str = "mnist",
    model: str = "mlp",
    loss: str = "mse",
    *,
    quick: bool = False,
    seed: int = 0,
    per_class: int | None = None,
    test_per_class: int = 100,
    depth: int = 3,
    width: int = 32,
    hidden: tuple[int, ...] = (128, 128),
    channels: tuple[int, ...] = (8, 16),
    activation: str = "linear",
    lambda_W: float | None = None,
    lambda_H: float = 0.0,
    steps: int | None = None,
    learning_rate: float | None = None,
    optimizer: str = "sgd",
    batch_size: int | None = None,
    whole_network: bool | None = None,
    network_k: int | None = None,
    density: bool | None = None,
    data_dir=None,
    checkpoint=None,
    callback: Callable[[dict], None] | None = None,
) -> tuple[RealNetworkReport, dict]:
    """Train a network with a deep-UFM head on real data, then `analyze` it.

    Args:
      dataset: ``"mnist"`` (the shipped 10,000-image split, or ``data_dir``), ``"digits"``
        (scikit-learn) or ``"gmm"`` (10 Gaussians in 64 dimensions).
      model: backbone, ``"mlp"`` (input-128-128-d) or ``"cnn"`` (channels 8, 16, then affine to d).
      loss: ``"mse"`` or ``"ce"``.
      quick: a smaller run (fewer samples and steps, no SLQ density) for smoke tests.
      seed: split, initialisation and mini-batch seed.
      per_class, steps, learning_rate, lambda_W: override `DEFAULTS`.
      test_per_class: held-out samples per class (capped by what the split leaves).
      depth, width, activation: the head (L, d, σ); hidden / channels: the MLP / CNN backbone.
      lambda_H: feature penalty (``_models`` docstring).
      optimizer, batch_size: ``"sgd"`` (momentum 0.9) or ``"adam"``; ``batch_size``: training on
        mini-batches of this size and the whole-network products streamed in batches of it, so
        memory is bounded by one batch (``None`` = full batch up to `AUTO_BATCH_ABOVE` samples,
        batches of `AUTO_BATCH` past it).
      per_class: at or above the smallest class's count (892 on the shipped MNIST split) every
        image up to balance is trained on and analysed (``config["per_class_asked"]``), no test set.
      whole_network, network_k, density: the whole-network Lanczos (default: for the MLP, not the
        CNN; how many eigenpairs) and SLQ density (default: not quick).
      checkpoint: npz path to resume training from / save to.
      callback: training progress records, then ``{"stage": ...}`` when the analysis starts.

    Returns:
      ``(report, history)`` with the training history (lists) from `train_network`.
    """
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    if model not in ("mlp", "cnn"):
        raise ValueError(f"model must be 'mlp' or 'cnn', got {model!r}")
    cfg = dict(DEFAULTS[(bool(quick), loss)])
    skipped = None if whole_network is not None else "off by default for the CNN; run_real(whole_network=True)"
    if whole_network is None:
        # the CNN's whole-network Lanczos (top 20 of 28 736 parameters) alone took 411 s of a 698 s run
        # (docs/real_networks.md §6): off by default for the CNN, on for the MLP
        whole_network = model == "mlp"
    for name, value in (
        ("per_class", per_class),
        ("steps", steps),
        ("learning_rate", learning_rate),
        ("lambda_W", lambda_W),
        ("network_k", network_k),
    ):
        if value is not None:
            cfg[name] = value
    density = not quick if density is None else density
    t0 = time.perf_counter()
    full = _dataset(dataset, data_dir, seed)
    smallest = int(full.class_counts.min())
    if not (isinstance(cfg["per_class"], (int, np.integer)) and cfg["per_class"] >= 1):
        raise ValueError(f"per_class must be a positive int, got {cfg['per_class']!r}")
    if cfg["per_class"] >= smallest:
        # every image up to balance (the collapsed formulas weight classes equally): the smallest
        # class's count (892 on the shipped MNIST split); nothing is left for a test set
        cfg["per_class_asked"], cfg["per_class"] = cfg["per_class"], smallest
        train, test = subsample(full, smallest, seed=seed), None
    else:
        left = smallest - cfg["per_class"]
        train, test = stratified_split(full, cfg["per_class"], min(test_per_class, left), seed=seed)
    if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if batch_size is None and train.num_samples > AUTO_BATCH_ABOVE:
        batch_size = AUTO_BATCH  # memory bounded by one batch, in training and in the whole-network products
    if batch_size is not None:
        batch_size = min(batch_size, train.num_samples)
    spec = NetworkSpec(
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        backbone=model,
        hidden=hidden,
        channels=channels,
        width=width,
        depth=depth,
        activation=activation,
        loss=loss,
        lambda_W=float(cfg["lambda_W"]),
        lambda_H=float(lambda_H),
    )
    params = init_network(spec, seed, dtype=np.float32)
    result = train_network(
        spec,
        params,
        train,
        steps=int(cfg["steps"]),
        optimizer=optimizer,
        learning_rate=float(cfg["learning_rate"]),
        warmup_steps=min(200, int(cfg["steps"]) // 5),
        batch_size=batch_size,
        seed=seed,
        log_every=max(1, int(cfg["steps"]) // 20),
        checkpoint=checkpoint,
        callback=callback,
    )
    config = {
        "dataset": dataset,
        "model": model,
        "loss": loss,
        "quick": bool(quick),
        "seed": seed,
        "optimizer": optimizer,
        "batch_size": batch_size,
        **cfg,
        "train_steps": result.steps,
        "interpolation_step": result.interpolation_step,
        "train_seconds": result.seconds,
        "expected_outliers": expected_outliers(spec),
        "whole_network_skipped": None if whole_network else (skipped or "whole_network=False"),
    }
    if callback is not None:
        callback({"stage": "analysing the trained head (float64: collapse, predicted and measured spectra)"})
    with jax.enable_x64(True):
        report = analyze(
            spec,
            result.params,
            train,
            test,
            whole_network=whole_network,
            network_k=None if cfg["network_k"] is None else int(cfg["network_k"]),
            batch_size=batch_size,
            density=density,
            seed=seed,
            config=config,
        )
    report.seconds["train"] = result.seconds
    report.seconds["total"] = time.perf_counter() - t0
    history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
    return report, history


def _fmt(x, spec=".3g") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


#: The column legend printed under the tables (also in ``ufm real --help`` / ``ufm analyze --help``).
LEGEND = (
    "columns: NC1 = tr(Σ_W Σ_B†)/K of the layer's input (uncentred Σ_B for MSE, centred for CE); 'coll' = NC1 <= "
    f"{NC1_THRESHOLD:g} (within-class collapse, what the predictions need and the verdict judges; OF / ETF dist "
    "(NC2, distance of the means' Gram to the frame), NC3 = ‖W(I − P_M)‖/‖W‖ and self-dual = ‖W/‖W‖ − Mᵀ/‖M‖‖ "
    "are reported, not judged); out = outliers by the gap rule (expected K² MSE, (K−1)² CE); gap = λ_k/λ_(k+1) at the "
    "expected k; mean err / avg err = max (median) |measured − predicted|/predicted over the top outliers for the "
    "class-mean prediction (curvature at the class-mean logits) and the class-averaged-curvature prediction; "
    "within = ‖within-class part‖/‖block‖ (features' covariance + curvature spread + joint); "
    f"holds = the better prediction within {REL_ERROR_THRESHOLD:g} and the measured outlier count = the predicted one; "
    "overlap = Tr(P_pred P_meas)/k; blocks = data Hessian (mean loss, no ridge) of each head weight W_l; "
    "'head' = the head's full data Hessian over every head parameter (cross-layer blocks included) against the "
    "closed form at its class means (docs/theory.md §4.8), 'pred' = the prediction's outlier count."
)


def format_table(report: RealNetworkReport) -> str:
    """A plain-text summary: verdict, collapse per layer, predicted vs measured layer outliers, whole network."""
    c = report.config
    if "dataset" in c:
        head = (
            f"{c.get('dataset', '?')} / {c.get('model', '?')} / {c.get('loss', '?')}: "
            f"N={c['train']['num_samples']}, train acc {report.train_accuracy:.3f}, "
            f"test acc {_fmt(report.test_accuracy, '.3f')}, steps {c.get('train_steps', '?')} "
            f"(100% at {_fmt(c.get('interpolation_step'), 'd')}), train {_fmt(report.seconds.get('train'), '.1f')} s"
        )
    else:
        head = (
            f"{c.get('source', 'saved head')}: N={c.get('num_samples')} ({c.get('per_class')} per class"
            f"{', balanced subsample' if c.get('balanced_subsample') else ''}), K={c.get('num_classes')}, "
            f"L={c.get('depth')}, {c.get('activation')}, {c.get('loss')}, accuracy {report.train_accuracy:.3f}"
        )
    lines = [
        head,
        "verdict: " + report.verdict["summary"],
        "",
        "layer   NC1        NC1(unc)   OF dist    ETF dist   NC3        self-dual",
    ]
    nc = report.nc
    names = [f"H~{l}" for l in range(1, nc.num_layers)] + ["Z"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<7} {_fmt(nc.nc1[i], '.3e'):<10} {_fmt(nc.nc1_uncentred[i], '.3e'):<10} "
            f"{_fmt(nc.of_distance[i], '.3f'):<10} {_fmt(nc.etf_distance[i], '.3f'):<10} {_fmt(nc.nc3[i], '.3f'):<10} "
            f"{_fmt(nc.duality[i], '.3f')}"
        )
    lines += [
        "",
        "W_l  params  NC1(in)  coll  expect  out   gap(k)    mean err (med)      avg err (med)     within  "
        "holds  overlap",
    ]
    for r in report.layers:
        within = r.split.get("within_class", float("nan"))
        lines.append(
            f"W_{r.layer:<2} {r.num_params:>7}  {r.nc1:>7.2g}  {'yes' if r.collapsed else 'NO':>4}  {r.expected:>6} "
            f"{r.num_outliers:>4}  {r.gap:>8.3g}  {r.max_rel_error:>8.3g} ({r.median_rel_error:>7.2g})  "
            f"{r.class_averaged_max_rel_error:>8.3g} ({r.class_averaged_median_rel_error:>7.2g})  "
            f"{_fmt(within, '.3f'):>6}  {'yes' if r.holds else 'NO':>5}  {r.overlap:>7.4f}"
            + ("" if r.converged else "  (Krylov NOT CONVERGED)")
        )
        if r.levels:
            lv = r.levels
            lines.append(
                f"     CE levels (1, K−1, K²−3K+1): {lv['levels'][0]:.3g}, {lv['levels'][1]:.3g}, "
                f"{lv['levels'][2]:.3g}; gaps {lv['gaps'][0]:.3g}, {lv['gaps'][1]:.3g}; "
                f"{'identified' if lv['identified'] else 'not identified'}"
            )
    f = report.head_full
    if f is not None:
        lines.append(
            f"head {f.num_params:>6}  (all layers jointly)  {f.num_outliers:>4}  pred {f.predicted_outliers:>3}  "
            f"{f.max_rel_error:>8.3g} ({f.median_rel_error:>7.2g})  "
            f"{f.class_averaged_max_rel_error:>8.3g} ({f.class_averaged_median_rel_error:>7.2g})          "
            f"{'yes' if f.holds else 'NO':>5}  {f.overlap:>7.4f}" + ("" if f.converged else "  (Krylov NOT CONVERGED)")
        )
    n = report.network
    if n is not None:
        count = (
            f"{n.num_outliers} outliers (gap rule; expected {n.expected})"
            if n.resolved
            else f"{n.num_outliers} outliers counted, but k={n.eigenvalues.size} <= {n.expected} expected: "
            "k was too small to see a gap"
        )
        ms = n.masses
        lines += [
            "",
            f"whole network: P={n.num_params}, top {n.eigenvalues.size} by Krylov"
            + (f" (streamed in batches of {n.batch_size})" if n.batch_size else "")
            + f", {count}, λ_max={n.eigenvalues[0]:.4g}, λ_k={n.eigenvalues[-1]:.4g}, "
            f"max residual {np.nanmax(n.residuals):.2e}" + ("" if n.converged else " — Krylov did NOT CONVERGE"),
            f"mean squared mass of the top {ms['over']} eigenvectors"
            + (" (the outliers)" if n.num_outliers else " (no gap: the top expected)")
            + f": backbone {ms['backbone']:.3f}  "
            + "  ".join(f"{key}: {v:.3f}" for key, v in ms.items() if key.startswith("W_")),
        ]
        if n.ratio_to_head.size:
            r = n.ratio_to_head
            lines.append(
                f"λ_i(network) / λ_i(head's full prediction) over its top {r.size}: first {r[0]:.3g}, "
                f"median {np.median(r):.3g}, last {r[-1]:.3g} (1 = the head alone carries the curvature)"
            )
    elif "dataset" in c:
        lines += [
            "",
            "whole network: skipped" + (f" ({c['whole_network_skipped']})" if c.get("whole_network_skipped") else ""),
        ]
    lines += ["", LEGEND, "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())]
    return "\n".join(lines)


def series_table(entries) -> str:
    """One row per checkpoint and head layer (and the full head) of a series ``[(file, step, report), ...]``
    (``ufm analyze A.npz B.npz ...``): NC1 of the layer's input, the measured outliers, max (median)
    relative error of the class-mean and the class-averaged predictions, holds; then the last
    checkpoint's verdict, which decides the exit status."""
    lines = [
        "checkpoint             step     layer  NC1(in)    out  mean err (med)       avg err (med)       holds",
    ]
    for file, step, rep in entries:
        name = str(file)[-22:]
        rows = [(f"W_{c.layer}", c.nc1, c) for c in rep.layers]
        if rep.head_full is not None:
            rows.append(("head", max(c.nc1 for c in rep.layers), rep.head_full))
        for label, nc1, c in rows:
            lines.append(
                f"{name:<22} {_fmt(step, 'd') if step is not None else '—':>6}  {label:>6}  {nc1:>8.3g}  "
                f"{c.num_outliers:>4}  {c.max_rel_error:>8.3g} ({c.median_rel_error:>8.2g})  "
                f"{c.class_averaged_max_rel_error:>8.3g} ({c.class_averaged_median_rel_error:>8.2g})  "
                f"{'yes' if c.holds else 'NO':>5}" + ("" if c.converged else "  (Krylov NOT CONVERGED)")
            )
        if rep.network is not None and not rep.network.converged:
            lines.append(f"{name:<22} {'':>6}  whole network: Krylov did NOT CONVERGE")
    last = entries[-1]
    lines += [
        "",
        f"verdict of the last checkpoint ({last[0]}; it decides the exit status): " + last[2].verdict["summary"],
        "columns: NC1(in) = NC1 of the layer's input (the full head: the largest over its layers); out = measured "
        "outliers (gap rule); mean / avg err = max (median) |measured − predicted|/predicted of the class-mean / "
        "class-averaged prediction; see `ufm analyze --help` and the single-file table's legend.",
    ]
    return "\n".join(lines)
