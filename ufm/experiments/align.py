"""SGD aligning with the emerging outlier eigenspaces: four experiments and ``ufm dynamics align``.

``docs/dynamics.md`` §D2 ([BGHJ] Ben Arous, Gheissari, Huang, Jagannath 2024; [GRD] Gur-Ari,
Roberts, Dyer 2018); the derivations and conventions are in ``docs/alignment.md``.

* `kgmm`: one-pass SGD (δ = c_δ/d) of 1-layer softmax regression with ridge on the k-GMM;
  per class block c the outliers of H_cc and G_cc on M fresh test samples, the alignment of
  x^c with each top-k space, how far those spaces are from span(μ_1..μ_k); the full data
  Hessian's outliers and the alignment of the whole iterate (§3).
* `xor`: one-pass SGD of the 2-layer ReLU–sigmoid net on the XOR mixture over several
  seeds: first-layer rows against span(μ, ν), the second layer's G outlier space against
  span{ReLU(W·±μ), ReLU(W·±ν)} (which moves with W), its rank, and the test accuracy (§4).
* `deep_ufm` (task ``ufm``): GD / SGD on a deep UFM from random init: per layer the fraction of the data
  gradient and of the update inside the top-K² Hessian space, inside the closed-form
  outlier space of `ufm.theory.layer_hessian_spectrum` at the current class means, and
  inside its K "diagonal" directions, with NC1 (§5).
* `mnist`: a small MLP on the shipped MNIST split (CE, SGD): the gradient fraction in the
  top-K Hessian space and that space's overlap between checkpoints [GRD] (§5).

Each returns an `AlignmentReport` (``config``, ``checkpoints``: one dict per checkpoint with
``step``, ``time``, ``loss`` and the probe values, ``summary``: the final values).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import collapse, model, theory
from ..dynamics._mixtures import KGMM, XORGMM
from ..dynamics._models import (
    init_softmax,
    init_two_layer,
    softmax_hessian,
    softmax_loss,
    softmax_per_sample_grads,
    two_layer_hidden,
    two_layer_logits,
    two_layer_loss,
)
from ..dynamics._probes import (
    g_top_space,
    hessian_top_space,
    per_sample_grads,
    spectral_probe,
    subspace_alignment,
    subspace_overlap,
    top_fraction,
    top_space,
)
from ..dynamics._trajectory import Trajectory, record
from ..results import all_converged, result, to_jsonable
from ..spec import UFMSpec
from ._config import call_task

__all__ = ["AlignConfig", "AlignmentReport", "run", "kgmm", "xor", "deep_ufm", "mnist", "TASKS"]


@result(static=("task", "config", "checkpoints", "summary"))
class AlignmentReport:
    """One experiment: ``task``, ``config`` (its settings), ``checkpoints`` (a list of
    dicts, one per checkpoint — per seed for xor: ``checkpoints[i]["seeds"]``) and
    ``summary`` (the final values).

    ``converged`` / ``messages`` (`ufm.results`): every eigensolve of the probes reached its
    tolerance (each checkpoint's ``"converged"``); the checkpoints where one did not.
    """

    task: str
    config: dict
    checkpoints: list
    summary: dict
    converged: bool | None = None  # None: from the checkpoints' "converged"
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            bad = [row for row in _flat_rows(self.checkpoints) if row.get("converged") is False]
            object.__setattr__(self, "converged", not bad)
            if bad and not self.messages:
                steps = sorted({int(row.get("step", -1)) for row in bad})
                msg = f"{self.task}: a Krylov eigensolve in the probes missed its tolerance at steps {steps}"
                object.__setattr__(self, "messages", (msg,))

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "task": self.task,
                "config": self.config,
                "checkpoints": self.checkpoints,
                "summary": self.summary,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


def _flat_rows(rows):
    for row in rows:
        yield row
        for sub in row.get("seeds", ()) if isinstance(row, dict) else ():
            if isinstance(sub, dict):
                yield {"step": row.get("step"), **sub}


def _rows(traj: Trajectory, name: str) -> list[dict]:
    """The trajectory's checkpoints as JSON-able dicts: step, time, loss, then the probe's values."""
    return [
        to_jsonable({"step": int(s), "time": float(t), "loss": l, **row})
        for s, t, l, row in zip(traj.steps, traj.times, traj.losses, traj.probes[name], strict=True)
    ]


def _check_positive(**values):
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v!r}")


def _check_int(name, v, low):
    if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low):
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


@functools.partial(jax.jit, static_argnums=2)
def _sample(mixture, key, n):
    return mixture.sample(key, n)


def _one_sample(key, mixture):
    return mixture.sample(key, 1)


_JIT = {f.__name__: jax.jit(f) for f in (softmax_hessian, softmax_per_sample_grads, two_layer_hidden, two_layer_logits)}


@functools.cache
def _loss(fn, ridge: float):
    """One ``loss_fn(params, batch)`` object per (model, ridge): `record`'s compiled loop is
    keyed on it, so repeated runs (seeds, SNRs) compile once."""
    return functools.partial(fn, ridge=ridge)


@functools.cache
def _ufm_loss_fn(spec, regularized: bool):
    return functools.partial(_ufm_loss, spec, regularized=regularized)


def _online(mixture, *, dim, lr_scale, time, seed, test_samples, num_checkpoints):
    """Shared set-up of the one-pass experiments: δ = c_δ/d, steps = T/δ, M test samples."""
    _check_positive(lr_scale=lr_scale, time=time)
    delta = lr_scale / dim
    steps = max(int(round(time / delta)), 1)
    test = _sample(mixture, jax.random.PRNGKey(10_000 + seed), _check_int("test_samples", test_samples, 2))
    return (
        delta,
        steps,
        test,
        dict(
            sampler=_one_sample,
            data=mixture,
            eval_data=test,
            time_per_step=delta,
            num_checkpoints=_check_int("checkpoints", num_checkpoints, 1),
        ),
    )


# ---- kgmm (docs/alignment.md §3) ---------------------------------------------------------------
def _kgmm_probe(test, means_basis, ridge, k, d):
    Y, labels = test
    hess, grads = _JIT["softmax_hessian"], _JIT["softmax_per_sample_grads"]
    n_full = k * (k - 1)  # rank of (diag π − ππᵀ) ⊗ (span of the means): the expected outliers (§3)

    def in_means(U):  # min over the top eigenvectors u of ‖P_means u‖
        return float(np.min(np.linalg.norm(means_basis.T @ U, axis=0)))

    def probe(params, ctx):
        H = np.asarray(hess(params, Y, 0.0))  # data Hessian on the test samples, no ridge
        J = np.asarray(grads(params, Y, labels, ridge))  # per-sample gradients, ridge included (ℓ of §D2)
        full = top_space(H, n_full)
        out = {
            "full_hessian_outliers": full.counts().outliers,
            "full_hessian_null": full.counts().null,
            "full_hessian_eigenvalues": full.eigenvalues[: 2 * n_full],
            "full_alignment": subspace_alignment(params, full.space(n_full)),
        }
        rows = {
            key: []
            for key in (
                "block_outliers_hessian",
                "block_alignment_hessian",
                "block_eigenvalues_hessian",
                "top_space_in_means",
                "block_outliers_g",
                "block_alignment_g",
                "block_eigenvalues_g",
                "top_space_in_means_g",
                "block_overlap_prev_hessian",
            )
        }
        spaces, solved = [], [full]
        for c in range(k):
            sl = slice(c * d, (c + 1) * d)
            Hc = top_space(H[sl, sl], k)  # + β I would shift every eigenvalue, not the vectors
            Gc = g_top_space(J[:, sl], k)
            solved += [Hc, Gc]
            prev = ctx.previous["_spaces"][c] if ctx.previous else None
            for key, v in (
                ("block_outliers_hessian", Hc.counts().outliers),
                ("block_alignment_hessian", subspace_alignment(params[c], Hc.space(k))),
                ("block_eigenvalues_hessian", Hc.eigenvalues[: 2 * k]),
                ("top_space_in_means", in_means(Hc.space(k))),
                ("block_outliers_g", Gc.counts().outliers),
                ("block_alignment_g", subspace_alignment(params[c], Gc.space(k))),
                ("block_eigenvalues_g", Gc.eigenvalues[: 2 * k]),
                ("top_space_in_means_g", in_means(Gc.space(k))),
                (
                    "block_overlap_prev_hessian",
                    float("nan") if prev is None else subspace_overlap(Hc.space(k), prev).overlap,
                ),
            ):
                rows[key].append(v)
            spaces.append(Hc.space(k))
        out |= {key: np.array(v) for key, v in rows.items()}
        pred = np.argmax(Y @ np.stack(params).T, axis=1)
        return out | {
            "test_accuracy": float(np.mean(pred == np.asarray(labels))),
            "converged": all_converged(solved),
            "_spaces": np.stack(spaces),
        }

    return probe


def kgmm(
    *,
    num_classes: int = 4,
    dim: int = 400,
    snr: float = 200.0,
    ridge: float = 0.1,
    lr_scale: float = 2.0,
    time: float = 20.0,
    test_samples: int | None = None,
    seed: int = 0,
    checkpoints: int = 10,
    probs=None,
    callback=None,
) -> AlignmentReport:
    """One-pass SGD on the k-GMM with 1-layer softmax regression + ridge (``docs/alignment.md`` §3).

    Args:
      num_classes, dim, snr: k, d and λ of the mixture (orthonormal means, seeded).
      ridge: β of ``(β/2)‖θ‖²``.
      lr_scale: c_δ; the step is δ = c_δ/d, the time t = steps · δ.
      time: the final time T (T/δ steps, one fresh sample each).
      test_samples: M fresh samples for the probe matrices (default 2.5 d).
      checkpoints: number of (linear) checkpoints after t = 0.
      probs: class probabilities (default uniform).
      callback: ``callback(event: dict)`` after each checkpoint (`ufm.dynamics.record`'s).
    """
    k, d = _check_int("num_classes", num_classes, 2), _check_int("dim", dim, 2)
    _check_positive(snr=snr)
    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    M = int(2.5 * d) if test_samples is None else test_samples
    gmm = KGMM.create(k, d, snr, probs=probs, seed=seed)
    delta, steps, test, kw = _online(
        gmm, dim=d, lr_scale=lr_scale, time=time, seed=seed, test_samples=M, num_checkpoints=checkpoints
    )
    means_basis = np.linalg.qr(np.asarray(gmm.means).T)[0]
    loss = _loss(softmax_loss, float(ridge))
    params = init_softmax(seed, k, d)
    traj = record(
        loss,
        params,
        optax.sgd(delta),
        steps=steps,
        seed=seed,
        callback=callback,
        probes={"kgmm": _kgmm_probe(test, means_basis, float(ridge), k, d)},
        **kw,
    )
    rows = _rows(traj, "kgmm")
    keys = (
        "block_alignment_hessian",
        "block_alignment_g",
        "block_outliers_hessian",
        "block_outliers_g",
        "top_space_in_means",
        "top_space_in_means_g",
        "full_hessian_outliers",
        "full_alignment",
        "test_accuracy",
    )
    config = {
        "num_classes": k,
        "dim": d,
        "snr": float(snr),
        "ridge": float(ridge),
        "lr_scale": float(lr_scale),
        "delta": delta,
        "time": float(time),
        "steps": steps,
        "test_samples": M,
        "seed": seed,
        "checkpoints": checkpoints,
        "probs": np.asarray(gmm.probs).tolist(),
    }
    return AlignmentReport("kgmm", config, rows, {key: rows[-1][key] for key in keys})


# ---- xor (docs/alignment.md §4) -------------------------------------------------------------------
def _numerical_rank(A, rtol=1e-2) -> int:
    s = np.linalg.svd(np.asarray(A, dtype=np.float64), compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0


def _xor_probe(xor_gmm, test, ridge):
    Y, labels = test
    span = np.linalg.qr(np.stack([np.asarray(xor_gmm.mu), np.asarray(xor_gmm.nu)]).T)[0]  # d × 2
    cluster_means = np.asarray(xor_gmm.cluster_means)
    loss = _loss(two_layer_loss, ridge)
    hidden, logits = _JIT["two_layer_hidden"], _JIT["two_layer_logits"]

    def probe(params, ctx):
        W = np.asarray(params.W)
        J = np.asarray(per_sample_grads(loss, params, test, leaves=[1]))  # ∇_v ℓ_i: M × K
        Gv = g_top_space(J, 1)
        r = max(Gv.counts().outliers, 1)
        predicted = np.asarray(hidden(params, jnp.asarray(cluster_means))).T  # K × 4: ReLU(W·±μ), ReLU(W·±ν)
        pred_rank = _numerical_rank(predicted)
        Gv = g_top_space(J, r)
        ov = subspace_overlap(Gv.space(r), predicted) if pred_rank else None
        J1 = np.asarray(per_sample_grads(loss, params, test, leaves=[0]))
        k1 = min(2 * W.shape[0], *J1.shape)
        G1 = g_top_space(J1, k1)  # R^K ⊗ span(μ, ν) has dimension 2K (§4)
        acc = np.mean((np.asarray(logits(params, Y)) > 0) == (np.asarray(labels) == 1))
        return {
            "first_layer_alignment": float(np.linalg.norm(W @ span) / np.linalg.norm(W)),
            "first_layer_row_alignment": np.linalg.norm(W @ span, axis=1) / np.linalg.norm(W, axis=1),
            "first_layer_g_outliers": G1.counts().outliers,
            "first_layer_g_alignment": subspace_alignment(W.ravel(), G1.space(k1)),
            "second_layer_rank": Gv.counts().outliers,
            "second_layer_eigenvalues": Gv.eigenvalues,
            "predicted_rank": pred_rank,
            "second_layer_overlap": float("nan") if ov is None else ov.overlap,
            "second_layer_alignment": subspace_alignment(params.v, Gv.space(r)),
            "test_accuracy": float(acc),
            "converged": all_converged(Gv, G1),
        }

    return probe


def xor(
    *,
    dim: int = 50,
    width: int = 5,
    snr: float = 50.0,
    ridge: float = 1e-3,
    lr_scale: float = 4.0,
    time: float = 100.0,
    test_samples: int = 1000,
    seeds: int = 10,
    seed: int = 0,
    checkpoints: int = 10,
    callback=None,
) -> AlignmentReport:
    """One-pass SGD of the 2-layer ReLU–sigmoid net on XOR-GMM over ``seeds`` seeds (``docs/alignment.md`` §4).

    The mixture (μ, ν) and the test samples are fixed by ``seed``; seed ``seed + s`` draws
    the initialisation and the SGD samples of run s. Per checkpoint ``checkpoints[i]["seeds"]``
    lists each run's values; ``summary["seeds"]`` the final ones (``second_layer_rank``,
    ``test_accuracy``, ``first_layer_alignment``, ...).
    """
    d, K = _check_int("dim", dim, 2), _check_int("width", width, 1)
    n_seeds = _check_int("seeds", seeds, 1)
    _check_positive(snr=snr)
    gmm = XORGMM.create(d, snr, seed=seed)
    delta, steps, test, kw = _online(
        gmm, dim=d, lr_scale=lr_scale, time=time, seed=seed, test_samples=test_samples, num_checkpoints=checkpoints
    )
    loss = _loss(two_layer_loss, float(ridge))
    probe = _xor_probe(gmm, test, float(ridge))
    runs = []
    for s in range(n_seeds):
        params = init_two_layer(seed + s, K, d)
        cb = None if callback is None else functools.partial(_labelled, callback, f"seed {seed + s}")
        traj = record(
            loss, params, optax.sgd(delta), steps=steps, seed=seed + s, callback=cb, probes={"xor": probe}, **kw
        )
        runs.append(_rows(traj, "xor"))
    rows = [
        {
            "step": runs[0][i]["step"],
            "time": runs[0][i]["time"],
            "loss": float(np.mean([r[i]["loss"] for r in runs])),
            "seeds": [r[i] for r in runs],
        }
        for i in range(len(runs[0]))
    ]
    keys = (
        "second_layer_rank",
        "predicted_rank",
        "second_layer_overlap",
        "test_accuracy",
        "first_layer_alignment",
        "first_layer_g_alignment",
    )
    per_seed = [{"seed": seed + s, **{key: r[-1][key] for key in keys}} for s, r in enumerate(runs)]
    acc = np.array([p["test_accuracy"] for p in per_seed])
    summary = {
        "seeds": per_seed,
        "rank_deficient_fraction": float(np.mean([p["second_layer_rank"] < 4 for p in per_seed])),
        "mean_test_accuracy": float(acc.mean()),
    }
    config = {
        "dim": d,
        "width": K,
        "snr": float(snr),
        "ridge": float(ridge),
        "lr_scale": float(lr_scale),
        "delta": delta,
        "time": float(time),
        "steps": steps,
        "test_samples": test_samples,
        "seeds": n_seeds,
        "seed": seed,
        "checkpoints": checkpoints,
    }
    return AlignmentReport("xor", config, rows, summary)


# ---- deep UFM (docs/alignment.md §5) -----------------------------------------------------------------
def _ufm_loss(spec, params, batch, regularized=True):
    """The deep-UFM loss on the columns ``batch`` of H_1 (all columns: ``batch = ()``)."""
    columns = None if isinstance(batch, tuple) and not batch else batch
    return model.column_loss(spec, params, columns, regularized=regularized)


def _ufm_probe(spec):
    K, L = spec.num_classes, spec.depth
    data_grad = jax.jit(jax.grad(model.loss_fn(spec, regularized=False)))
    unit = lambda X: X / np.maximum(np.linalg.norm(X, axis=0), np.finfo(float).tiny)  # noqa: E731
    batch_loss = _ufm_loss_fn(spec, False)

    def probe(params, ctx):
        grad = data_grad(params)
        acts = model.forward(spec, params)
        nc = collapse.metrics(spec, params)
        out = {
            key: []
            for key in (
                "grad_fraction_top",
                "grad_fraction_predicted",
                "grad_fraction_diagonal",
                "update_fraction_top",
                "update_fraction_predicted",
                "predicted_overlap",
            )
        }
        solved = []
        for l in range(1, L + 1):
            top = hessian_top_space(batch_loss, params, (), K * K, leaves=[l])
            solved.append(top)
            pred = theory.layer_hessian_spectrum(spec, params, l, collapse_tol=None, allow_zero=True, vectors=True)
            Up = np.asarray(pred.eigenvectors)[:, : K * K]
            h_in = np.asarray(acts.post[l - 1])
            mi = unit(collapse.class_means(h_in, spec.class_index, K))
            mo = unit(collapse.class_means(np.asarray(params.Ws[l - 1]) @ h_in, spec.class_index, K))
            diag = np.stack([np.outer(mo[:, c], mi[:, c]).ravel() for c in range(K)], axis=1)
            g = np.asarray(grad.Ws[l - 1]).ravel()
            upd = None if ctx.last_update is None else np.asarray(ctx.last_update.Ws[l - 1]).ravel()
            nan = float("nan")
            for key, v in (
                ("grad_fraction_top", top_fraction(g, top.space(K * K))),
                ("grad_fraction_predicted", top_fraction(g, Up) if Up.shape[1] else nan),
                ("grad_fraction_diagonal", top_fraction(g, diag)),
                ("update_fraction_top", nan if upd is None else top_fraction(upd, top.space(K * K))),
                ("update_fraction_predicted", nan if upd is None or not Up.shape[1] else top_fraction(upd, Up)),
                ("predicted_overlap", subspace_overlap(top.space(K * K), Up).overlap if Up.shape[1] else nan),
            ):
                out[key].append(v)
        return {k: np.array(v) for k, v in out.items()} | {
            "nc1": np.asarray(nc.nc1_uncentred if spec.loss == "mse" else nc.nc1),
            "converged": all_converged(solved),
        }

    return probe


def deep_ufm(
    *,
    num_classes: int = 4,
    per_class: int = 5,
    depth: int = 3,
    width: int = 16,
    lambda_W: float = 2e-2,
    lambda_H: float = 2e-2,
    loss: str = "mse",
    lr: float = 0.1,
    steps: int = 3000,
    batch_size: int | None = None,
    seed: int = 0,
    checkpoints: int = 12,
    callback=None,
) -> AlignmentReport:
    """GD (or SGD with ``batch_size`` columns) on a deep UFM from random init (``docs/alignment.md`` §5).

    Per checkpoint and layer l = 1..L: the fraction of the data gradient ``∇_{W_l}Φ`` (and of
    the last update) in the top-K² data-Hessian eigenspace of W_l, in the closed-form
    outlier space of `ufm.theory.layer_hessian_spectrum` evaluated at the current class
    means, and in the K diagonal directions μ̂_c^{(l+1)} ⊗ μ̂_c^{(l)}; their overlap; and
    NC1 at H̃_1..H̃_L and the output. Checkpoints are log spaced.
    """
    spec = UFMSpec(
        num_classes=num_classes,
        per_class=per_class,
        depth=depth,
        width=width,
        loss=loss,
        lambda_W=lambda_W,
        lambda_H=lambda_H,
    )
    _check_positive(lr=lr)
    params = model.init_params(spec, seed=seed)
    kw = dict(data=()) if batch_size is None else dict(data=jnp.arange(spec.num_samples), batch_size=batch_size)
    traj = record(
        _ufm_loss_fn(spec, True),
        params,
        optax.sgd(lr),
        steps=_check_int("steps", steps, 1),
        num_checkpoints=_check_int("checkpoints", checkpoints, 1),
        spacing="log",
        seed=seed,
        eval_data=(),
        probes={"ufm": _ufm_probe(spec)},
        callback=callback,
        **kw,
    )
    rows = _rows(traj, "ufm")
    keys = (
        "grad_fraction_top",
        "grad_fraction_predicted",
        "grad_fraction_diagonal",
        "update_fraction_top",
        "predicted_overlap",
        "nc1",
    )
    config = {
        "spec": spec.to_dict(),
        "lr": float(lr),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "checkpoints": checkpoints,
        "optimizer": "gd" if batch_size is None else "sgd",
    }
    return AlignmentReport("ufm", config, rows, {key: rows[-1][key] for key in keys} | {"loss": rows[-1]["loss"]})


# ---- mnist (docs/alignment.md §5) -----------------------------------------------------------------------
def _mnist_loss(spec, params, batch):
    from ..networks import network_loss

    X, labels = batch
    return network_loss(spec, params, X, labels)


def _pool(X, factor):
    N, C, H, W = X.shape
    return X.reshape(N, C, H // factor, factor, W // factor, factor).mean(axis=(3, 5)).reshape(N, -1)


def mnist(
    *,
    train_samples: int = 4000,
    hessian_samples: int = 500,
    pool: int = 2,
    hidden: int = 32,
    width: int = 16,
    lr: float = 0.1,
    batch_size: int = 32,
    steps: int = 1500,
    k: int = 10,
    lambda_W: float = 1e-4,
    seed: int = 0,
    checkpoints: int = 8,
    callback=None,
) -> AlignmentReport:
    """A small MLP on the shipped MNIST split, CE + SGD: [GRD]'s gradient in the top-k Hessian space.

    Images are average-pooled by ``pool`` (28 → 14 by default) and flattened; the model is
    `ufm.networks` ' MLP (one ReLU layer of ``hidden`` units, an affine map to ``width``, a
    linear head to 10 classes). At log-spaced checkpoints, on ``hessian_samples`` training
    samples: the top-k Hessian eigenvalues (block Krylov), the fraction of the full-batch
    gradient and of the last SGD update in the top-k space, and that space's overlap with
    the previous checkpoint's. Also the test accuracy on the held-out samples.
    """
    from .. import networks

    data = networks.load_mnist()
    n_train = _check_int("train_samples", train_samples, 10)
    n_h = _check_int("hessian_samples", hessian_samples, 10)
    rng = np.random.default_rng(seed)
    order = rng.permutation(data.num_samples)
    if n_train >= data.num_samples:
        raise ValueError(f"train_samples must be < {data.num_samples} (the rest is the test set), got {n_train}")
    dtype = jnp.zeros(()).dtype
    X = jnp.asarray(_pool(data.X, pool), dtype)
    y = jnp.asarray(data.labels)
    train = (X[order[:n_train]], y[order[:n_train]])
    test = (X[order[n_train:]], y[order[n_train:]])
    spec = networks.NetworkSpec(
        input_shape=(X.shape[1],), num_classes=10, hidden=(hidden,), width=width, depth=1, loss="ce", lambda_W=lambda_W
    )
    params = networks.init_network(spec, seed=seed)
    loss = functools.partial(_mnist_loss, spec)
    hbatch = (train[0][:n_h], train[1][:n_h])
    probes = {
        "hessian": spectral_probe(loss, hbatch, _check_int("k", k, 1), kind="hessian", method="krylov", tol=1e-4),
        "accuracy": lambda p, ctx: {"test_accuracy": networks.accuracy(spec, p, test[0], test[1])},
    }
    traj = record(
        loss,
        params,
        optax.sgd(lr),
        steps=_check_int("steps", steps, 1),
        data=train,
        batch_size=batch_size,
        num_checkpoints=_check_int("checkpoints", checkpoints, 1),
        spacing="log",
        eval_data=train,
        probes=probes,
        seed=seed,
        callback=callback,
    )
    rows = [{**a, **b} for a, b in zip(_rows(traj, "hessian"), _rows(traj, "accuracy"), strict=True)]
    keys = ("f_top_grad", "align_update", "overlap_prev", "test_accuracy")
    config = {
        "train_samples": n_train,
        "hessian_samples": n_h,
        "pool": pool,
        "hidden": hidden,
        "width": width,
        "lr": float(lr),
        "batch_size": batch_size,
        "steps": steps,
        "k": k,
        "lambda_W": lambda_W,
        "seed": seed,
        "checkpoints": checkpoints,
        "num_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
    }
    summary = {key: rows[-1][key] for key in keys}
    summary["f_top_update"] = None if rows[-1]["align_update"] is None else rows[-1]["align_update"] ** 2
    return AlignmentReport("mnist", config, rows, summary)


TASKS = {"kgmm": kgmm, "xor": xor, "ufm": deep_ufm, "mnist": mnist}


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """Settings of an alignment experiment (``ufm dynamics align``): ``task`` (``"kgmm"``, ``"xor"``,
    ``"ufm"``, ``"mnist"``) and its settings; ``None`` takes the task's default (`kgmm`, `xor`,
    `deep_ufm`, `mnist` document them). A setting the task does not take is refused by `run`."""

    task: str = "kgmm"
    seed: int = 0
    num_classes: int | None = None
    dim: int | None = None
    snr: float | None = None
    ridge: float | None = None
    lr_scale: float | None = None
    time: float | None = None
    test_samples: int | None = None
    seeds: int | None = None
    width: int | None = None
    depth: int | None = None
    per_class: int | None = None
    lambda_W: float | None = None
    lambda_H: float | None = None
    loss: str | None = None
    lr: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    train_samples: int | None = None
    hessian_samples: int | None = None
    hidden: int | None = None
    pool: int | None = None
    k: int | None = None
    checkpoints: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _labelled(callback, label: str, event: dict) -> None:
    callback({"label": label, **event})


def run(config: AlignConfig, callback=None) -> AlignmentReport:
    """The experiment of ``config``; ``callback`` is `ufm.dynamics.record`'s (after each checkpoint)."""
    return call_task(config, TASKS, callback=callback)
