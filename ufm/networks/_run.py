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

from ._analysis import RealNetworkReport, analyze, expected_outliers
from ._data import Dataset, gaussian_mixture, load_digits, load_mnist, stratified_split
from ._models import NetworkSpec, init_network
from ._train import train_network

__all__ = ["run_real", "format_table", "DEFAULTS"]

#: Per (quick, loss) defaults: samples per class, SGD steps (momentum 0.9, full batch, 200
#: warm-up steps), learning rate, λ_W, and how many top eigenpairs of the whole network.
#: The CNN runs at most 1500 steps.
DEFAULTS = {
    (False, "mse"): dict(per_class=50, steps=4000, learning_rate=0.1, lambda_W=2e-3, network_k=20),
    (False, "ce"): dict(per_class=50, steps=4000, learning_rate=0.1, lambda_W=2e-3, network_k=20),
    (True, "mse"): dict(per_class=20, steps=600, learning_rate=0.1, lambda_W=5e-3, network_k=12),
    (True, "ce"): dict(per_class=20, steps=600, learning_rate=0.1, lambda_W=5e-3, network_k=12),
}


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
    whole_network: bool = True,
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
      optimizer, batch_size: ``"sgd"`` (momentum 0.9) or ``"adam"``; ``None`` = full batch.
      whole_network, network_k, density: the whole-network Lanczos (how many eigenpairs) and SLQ
        density (default: not quick).
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
    if model == "cnn":  # convolutions cost ~5x an MLP step on CPU: fewer steps (interpolates by ~400)
        cfg["steps"] = min(cfg["steps"], 1500)
    for name, value in (("per_class", per_class), ("steps", steps), ("learning_rate", learning_rate),
                        ("lambda_W", lambda_W), ("network_k", network_k)):
        if value is not None:
            cfg[name] = value
    density = not quick if density is None else density
    t0 = time.perf_counter()
    full = _dataset(dataset, data_dir, seed)
    left = int(full.class_counts.min()) - cfg["per_class"]
    train, test = stratified_split(full, cfg["per_class"], min(test_per_class, left), seed=seed)
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
        spec, params, train, steps=int(cfg["steps"]), optimizer=optimizer, learning_rate=float(cfg["learning_rate"]),
        warmup_steps=min(200, int(cfg["steps"]) // 5), batch_size=batch_size, seed=seed, log_every=max(1, int(cfg["steps"]) // 20), checkpoint=checkpoint,
        callback=callback,
    )
    config = {
        "dataset": dataset, "model": model, "loss": loss, "quick": bool(quick), "seed": seed,
        "optimizer": optimizer, "batch_size": batch_size, **cfg,
        "train_steps": result.steps, "interpolation_step": result.interpolation_step,
        "train_seconds": result.seconds, "expected_outliers": expected_outliers(spec),
    }
    if callback is not None:
        callback({"stage": "analysing the trained head (float64: collapse, predicted and measured spectra)"})
    with jax.enable_x64(True):
        report = analyze(spec, result.params, train, test, whole_network=whole_network, network_k=int(cfg["network_k"]),
                         density=density, seed=seed, config=config)
    report.seconds["train"] = result.seconds
    report.seconds["total"] = time.perf_counter() - t0
    history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
    return report, history


def _fmt(x, spec=".3g") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def format_table(report: RealNetworkReport) -> str:
    """A plain-text summary: collapse per layer, predicted vs measured layer outliers, whole network."""
    c = report.config
    lines = [
        f"{c.get('dataset', '?')} / {c.get('model', '?')} / {c.get('loss', '?')}: "
        f"N={report.config['train']['num_samples']}, train acc {report.train_accuracy:.3f}, "
        f"test acc {_fmt(report.test_accuracy, '.3f')}, steps {c.get('train_steps', '?')} "
        f"(100% at {c.get('interpolation_step')}), train {_fmt(report.seconds.get('train'), '.1f')} s",
        "",
        "layer   NC1        NC1(unc)   OF dist    ETF dist   NC3",
    ]
    nc = report.nc
    names = [f"H~{l}" for l in range(1, nc.num_layers)] + ["Z"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<7} {_fmt(nc.nc1[i], '.3e'):<10} {_fmt(nc.nc1_uncentred[i], '.3e'):<10} "
            f"{_fmt(nc.of_distance[i], '.3f'):<10} {_fmt(nc.etf_distance[i], '.3f'):<10} {_fmt(nc.nc3[i], '.3f')}"
        )
    lines += ["", "W_l  params  expected  pred out  meas out  gap(k/k+1)  max rel err  med rel err  overlap  f(v) min  grad frac"]
    for r in report.layers:
        lines.append(
            f"W_{r.layer:<2} {r.num_params:>7} {r.expected:>9} {r.predicted_outliers:>9} {r.num_outliers:>9}  {r.gap:>10.3g}  "
            f"{r.max_rel_error:>11.3g}  {r.median_rel_error:>11.3g}  {r.overlap:>7.4f}  {r.alignment_min:>8.4f}  "
            f"{r.gradient_fraction:>9.4f}"
        )
    n = report.network
    if n is not None:
        # the outliers, or the top K eigenvectors when the gap rule finds none
        top = n.num_outliers or min(int(report.config["spec"]["num_classes"]), n.eigenvalues.size)
        mean_mass = n.inheritance[:top].mean(axis=0)
        lines += [
            "",
            f"whole network: P={n.num_params}, top {n.eigenvalues.size} by Lanczos, {n.num_outliers} outliers "
            f"(gap rule), λ_max={n.eigenvalues[0]:.4g}, max residual {np.nanmax(n.residuals):.2e}",
            f"mean squared mass of the top {top} eigenvectors: backbone " + "  ".join(
                [f"{mean_mass[0]:.3f}"] + [f"W_{l}: {m:.3f}" for l, m in enumerate(mean_mass[1:], start=1)]
            ),
        ]
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    return "\n".join(lines)
