"""The catapult experiments of [ZLRB]: GD, a learning-rate schedule and SGD on NTK MLPs.

Zhu, Liu, Radhakrishnan, Belkin, "Catapults in SGD: spikes in the training loss and their
impact on generalization through feature learning", ICML 2024 (arXiv 2306.04815);
``docs/dynamics.md`` §D4; the maths and conventions are in ``docs/catapults.md``. The model,
targets, AGOP, projected loss and catapult detection are library (`ufm.dynamics`).

* `run_gd`, `run_schedule`, `run_sgd`: the three experiments, each a `CatapultReport`
  (``to_dict()`` is the JSON of ``ufm dynamics catapult``). Training is optax SGD in jitted
  ``lax.scan`` segments (one compiled program per run shape; the learning rate is traced),
  with a probe (kernel spectrum, projected loss, AGOP alignment, test error) every
  ``probe_every`` steps and the full training loss at every step.

Loss convention (§1): ``L = (1/2n)‖f(X) − y‖²`` (``normalization="half"``) or ``(1/n)‖·‖²``
(``"mean"``); an SGD step uses the same normalisation over its batch of b samples.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..dynamics._catapult import (
    NTKMLP,
    TARGETS,
    Catapult,
    agop,
    agop_alignment,
    detect_catapults,
    make_target,
)
from ..dynamics._tangent_kernel import _check_normalization, _positive_int, critical_learning_rate, tangent_kernel
from ..results import result, to_jsonable

__all__ = [
    "CatapultConfig",
    "CatapultRun",
    "CatapultReport",
    "run_gd",
    "run_schedule",
    "run_sgd",
    "run",
    "batch_table",
    "batch_runs",
    "batch_trend",
    "batch_verdict",
    "BATCH_QUANTITIES",
    "EXPERIMENTS",
]


# ---- configuration, training segments ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CatapultConfig:
    """Settings of the catapult experiments (the CLI flags; ``docs/catapults.md`` §5).

    Data: ``samples`` n training and ``test_samples`` inputs x ~ N(0, I_dim), ``y = f*(x)``
    for ``target`` (``rank`` for ``"polynomial"``). Model: `NTKMLP` (``width``, ``depth``,
    ``activation``). Training: ``steps`` (per run; for the schedule, per segment),
    ``lr_multipliers`` c (η = c · η_crit at initialisation; for *schedule*, c · η_crit of
    the current weights at each increase), ``increases`` (schedule), ``batch_sizes`` and
    ``seeds`` (sgd; seed j uses ``seed + j`` for data, init and batches), ``probe_every``.
    Measurement: ``top`` s, ``normalization``, detection ``spike_ratio`` r and
    ``spike_window`` w.
    """

    samples: int = 128
    test_samples: int = 1000
    dim: int = 10
    width: int = 1024
    depth: int = 2
    activation: str = "relu"
    target: str = "product"
    rank: int = 2
    steps: int = 400
    seed: int = 0
    lr_multipliers: tuple[float, ...] = (0.5, 1.5, 3.0)
    increases: int = 3
    batch_sizes: tuple[int, ...] = (8, 32, 128)
    seeds: int = 3
    probe_every: int = 1
    top: int = 5
    normalization: str = "half"
    spike_ratio: float = 2.0
    spike_window: int = 20

    def __post_init__(self):
        for name in (
            "samples",
            "test_samples",
            "dim",
            "depth",
            "rank",
            "steps",
            "seeds",
            "probe_every",
            "top",
            "spike_window",
        ):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.increases, int) or self.increases < 0:
            raise ValueError(f"increases must be an int >= 0, got {self.increases!r}")
        self.model()  # validates width / depth / activation
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        _check_normalization(self.normalization)
        object.__setattr__(self, "lr_multipliers", tuple(float(c) for c in self.lr_multipliers))
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.lr_multipliers or not all(c > 0 for c in self.lr_multipliers):
            raise ValueError(f"lr_multipliers must be positive numbers, got {self.lr_multipliers}")
        if not self.batch_sizes or not all(b >= 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive ints, got {self.batch_sizes}")
        if self.top > self.samples:
            raise ValueError(f"top must be <= samples={self.samples}, got {self.top}")
        if self.steps % self.probe_every:
            raise ValueError(f"steps={self.steps} must be a multiple of probe_every={self.probe_every}")
        if not self.spike_ratio > 1:
            raise ValueError(f"spike_ratio must be > 1, got {self.spike_ratio}")

    def model(self) -> NTKMLP:
        return NTKMLP(self.dim, self.width, self.depth, 1, self.activation)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Problem:
    """Data, target AGOP and initial weights of one seed (everything derived from the seed)."""

    def __init__(self, cfg: CatapultConfig, seed: int):
        self.seed = seed
        k_data, k_test, k_target, k_init, self.key = jax.random.split(jax.random.PRNGKey(seed), 5)
        self.model = cfg.model()
        self.target = make_target(cfg.target, cfg.dim, rank=cfg.rank, key=k_target)
        self.X = jax.random.normal(k_data, (cfg.samples, cfg.dim))
        self.Xt = jax.random.normal(k_test, (cfg.test_samples, cfg.dim))
        self.y, self.yt = self.target(self.X), self.target(self.Xt)
        star = lambda p, X: self.target(X)  # noqa: E731
        self.G_star = (agop(star, None, self.Xt), agop(star, None, self.X))
        self.params = self.model.init(k_init)
        self.data = (self.X, self.y, self.Xt, self.yt, self.G_star)


def _probe(model, params, data, *, top, c):
    """Full-batch measurements at one state (dense kernel: n ≤ a few thousand)."""
    X, y, Xt, yt, G_star = data
    n = X.shape[0]
    r = model(params, X) - y
    kernel = model.tangent_kernel if isinstance(model, NTKMLP) else functools.partial(tangent_kernel, model)
    lam, U = jnp.linalg.eigh(kernel(params, X))
    total = c / n * r @ r
    ptop = c / n * jnp.sum((U[:, -top:].T @ r) ** 2)
    return {
        "loss": total,
        "top": ptop,
        "perp": total - ptop,
        "lambda_max": lam[-1],
        "agop_alignment": agop_alignment(agop(model, params, Xt), G_star[0]),
        "agop_alignment_train": agop_alignment(agop(model, params, X), G_star[1]),
        "test_mse": jnp.mean((model(params, Xt) - yt) ** 2),
    }


def _mse(model, c, params, batch):
    """``c/b ‖f(X_b) − y_b‖²`` on a batch ``(X_b, y_b)`` of b samples (§1)."""
    Xb, yb = batch
    return c / Xb.shape[0] * jnp.sum((model(params, Xb) - yb) ** 2)


def _full_mse(model, c, params, data):
    return _mse(model, c, params, (data[0], data[1]))


def _probe_metric(model, top, c, params, data):
    return _probe(model, params, data, top=top, c=c)


@functools.cache
def _functions(model, top, c):
    """The loss and the in-loop metrics of one model and measurement (cached: `record`'s loop is keyed on them)."""
    return (
        functools.partial(_mse, model, c),
        functools.partial(_probe_metric, model, top, c),
        functools.partial(_full_mse, model, c),
    )


@functools.cache
def _sgd():
    """``optax.sgd`` with its learning rate in the state (``inject_hyperparams``): one compilation for every rate."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)


_probe_jit = jax.jit(_probe, static_argnames=("model", "top", "c"))


def _train(cfg: CatapultConfig, prob: _Problem, params, lr, seed, batch_size=None):
    """One constant-rate run by `ufm.dynamics.record`: ``(params, loss (T+1,), probes {name: (T/probe_every + 1,)},
    probe steps)``. ``loss`` is the full training loss before every step and after the last (full batch: the
    step's own loss; SGD: an in-loop metric). A run whose batch loss passes ``1e12 · (L_0 + 1)`` (or is not
    finite) is a divergence (`record` with ``throw=False``): it freezes there, the rest of its curves repeat
    the loss and probes of the parameters whose loss diverged."""
    from ..dynamics._trajectory import record

    c = _check_normalization(cfg.normalization)
    loss_fn, probe, full = _functions(prob.model, cfg.top, c)
    opt = _sgd()
    state = opt.init(params)
    state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.result_type(float))})
    metrics = {"probe": probe} if batch_size is None else {"probe": probe, "loss": full}
    every = {"probe": cfg.probe_every} | ({} if batch_size is None else {"loss": 1})
    cap = 1e12 * (float(_full_mse(prob.model, c, params, prob.data)) + 1.0)
    traj = record(
        loss_fn,
        params,
        opt,
        steps=cfg.steps,
        checkpoints=[0],
        data=(prob.X, prob.y),
        batch_size=batch_size,
        metrics=metrics,
        metrics_every=every,
        metrics_data=prob.data,
        opt_state=state,
        max_loss=cap,
        seed=seed,
        throw=False,
    )
    T, M = cfg.steps + 1, cfg.steps // cfg.probe_every + 1
    frozen = {}
    if traj.stopped == "diverged":  # the curves go on at the parameters whose loss diverged (frozen there)
        frozen = {
            k: float(v) for k, v in _probe_jit(prob.model, traj.final_params, prob.data, top=cfg.top, c=c).items()
        }
    probes = {k: _padded(np.asarray(v, dtype=np.float64), M, frozen.get(k)) for k, v in traj.metrics["probe"].items()}
    if batch_size is None:
        loss = np.concatenate([traj.step_losses, probes["loss"][-1:]]) if traj.converged else traj.step_losses
        fill = traj.step_losses[-1]
    else:
        loss, fill = traj.metrics["loss"], frozen.get("loss")
    return traj.final_params, _padded(np.asarray(loss, np.float64), T, fill), probes, np.arange(0, T, cfg.probe_every)


def _padded(x, size, fill):
    """``x`` padded to ``size`` entries with ``fill`` (a diverged run's curves repeat the frozen state)."""
    return np.concatenate([x[:size], np.full(size - min(x.size, size), np.nan if fill is None else fill)])


# ---- results --------------------------------------------------------------------------------
@result(static=("label", "regime", "segments"))
class CatapultRun:
    """One training run: its curves, the catapults found and the regime (``docs/catapults.md`` §5).

    ``label`` holds ``multiplier`` (gd / schedule) or ``batch_size``, ``multiplier`` and
    ``seed`` (sgd). ``loss`` is the full training loss at every step (T + 1 values);
    ``probe_steps`` index the probe curves ``projected_top`` (P_s L), ``projected_perp``
    (P_s^⊥ L), ``lambda_max`` (λ_max(K) of the training kernel), ``agop_alignment``,
    ``test_mse``. ``learning_rates`` is the rate of every step. ``regime``: ``"diverged"``
    (non-finite, frozen, or not below the initial loss at the end), ``"catapult"`` (≥ 1
    catapult), ``"monotone"`` (``L_{t+1} ≤ L_t (1 + 1e-9)`` throughout) or ``"non-monotone"``.
    ``segments`` (schedule only): per segment its rate, η_crit at its start, the catapults
    started so far (a catapult can end in the next segment: its loss must fall below the
    pre-spike level, §4) and the AGOP alignment at its end. ``converged`` (`ufm.results`): the
    run did not diverge (``regime != "diverged"``); ``messages`` says how it diverged.
    """

    label: dict
    eta_crit: float
    learning_rates: np.ndarray
    regime: str
    catapults: tuple[Catapult, ...]
    loss: np.ndarray
    probe_steps: np.ndarray
    projected_top: np.ndarray
    projected_perp: np.ndarray
    lambda_max: np.ndarray
    agop_alignment: np.ndarray
    agop_alignment_train: np.ndarray
    test_mse: np.ndarray
    segments: tuple[dict, ...] = ()
    converged: bool | None = None  # None: regime != "diverged"
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            ok = self.regime != "diverged"
            object.__setattr__(self, "converged", ok)
            if not ok and not self.messages:
                finite = np.isfinite(np.asarray(self.loss, dtype=np.float64))
                why = (
                    f"the loss became non-finite at step {int(np.argmin(finite))}"
                    if not finite.all()
                    else "the final loss is not below the initial loss"
                )
                object.__setattr__(self, "messages", (f"run {self.label} diverged: {why}",))

    @property
    def num_catapults(self) -> int:
        return len(self.catapults)

    def to_dict(self) -> dict:
        f = np.asarray  # to_jsonable below writes non-finite values as null
        out = {
            **self.label,
            "regime": self.regime,
            "catapults": [c.to_dict() for c in self.catapults],
            "num_catapults": self.num_catapults,
            "learning_rate": float(self.learning_rates[0]),
            "eta_crit": self.eta_crit,
            "lambda_max_initial": float(self.lambda_max[0]),
            "lambda_max_final": float(self.lambda_max[-1]),
            "critical_lambda_final": _critical_lambda(self.learning_rates[-1], self),
            "agop_alignment_initial": float(self.agop_alignment[0]),
            "agop_alignment_final": float(self.agop_alignment[-1]),
            "test_mse_final": float(self.test_mse[-1]),
            "loss": f(self.loss),
            "projected_loss": {
                "steps": [int(s) for s in self.probe_steps],
                "top": f(self.projected_top),
                "perp": f(self.projected_perp),
            },
            "lambda_max": f(self.lambda_max),
            "agop_alignment": f(self.agop_alignment),
            "agop_alignment_train": f(self.agop_alignment_train),
            "test_mse": f(self.test_mse),
        }
        if self.segments:
            out["segments"] = list(self.segments)
        out.update(converged=self.converged, messages=self.messages)
        return to_jsonable(out)


def _critical_lambda(lr, run) -> float:
    """``2n/η`` (the λ_max(K) at which rate η is critical), from the run's η_crit = 2n/λ_max(0)."""
    return float(run.eta_crit * run.lambda_max[0] / lr)


@result(static=("task", "config"))
class CatapultReport:
    """``task`` (gd / schedule / sgd), its `CatapultConfig` and its runs; ``to_dict()`` is the JSON.

    ``converged`` (`ufm.results`): every run was measured (a run that diverges at a large rate is
    an outcome of the sweep, not a failure: it is named in ``messages``).
    """

    task: str
    config: CatapultConfig
    runs: tuple[CatapultRun, ...]
    converged: bool = True
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.messages:
            object.__setattr__(self, "messages", tuple(m for r in self.runs for m in r.messages))

    def to_dict(self) -> dict:
        out = {"task": self.task, "config": self.config.to_dict(), "runs": list(self.runs)}
        if self.task == "sgd":
            out["batch_table"] = batch_table(self)
        out.update(converged=self.converged, messages=self.messages)
        return to_jsonable(out)


def _regime(loss, catapults) -> str:
    if not np.all(np.isfinite(loss)) or not loss[-1] < loss[0]:
        return "diverged"
    if catapults:
        return "catapult"
    return "monotone" if np.all(loss[1:] <= loss[:-1] * (1 + 1e-9)) else "non-monotone"


def _make_run(cfg, label, eta_crit, rates, loss, probes, steps, segments=()) -> CatapultRun:
    share = probes["top"] / np.where(probes["loss"] > 0, probes["loss"], 1.0)
    cats = detect_catapults(
        loss, probes["lambda_max"], steps=steps, top_share=share, ratio=cfg.spike_ratio, window=cfg.spike_window
    )
    return CatapultRun(
        label,
        float(eta_crit),
        np.asarray(rates, dtype=np.float64),
        _regime(loss, cats),
        cats,
        loss,
        steps,
        probes["top"],
        probes["perp"],
        probes["lambda_max"],
        probes["agop_alignment"],
        probes["agop_alignment_train"],
        probes["test_mse"],
        tuple(segments),
    )


def _eta_crit(cfg, prob, params) -> float:
    """η_crit of the full training kernel at ``params``."""
    c = _check_normalization(cfg.normalization)
    lam = float(_probe_jit(prob.model, params, prob.data, top=cfg.top, c=c)["lambda_max"])
    return float(critical_learning_rate(lam, cfg.samples, cfg.normalization))


# ---- the experiments ----------------------------------------------------------------------
def _stage(callback: Callable, message: str) -> None:
    """The package's one callback signature: one dict per event (here a stage line)."""
    callback({"stage": message})


def run_gd(cfg: CatapultConfig, callback: Callable | None = None) -> CatapultReport:
    """Full-batch GD at ``η = c · η_crit(w_0)`` for each ``c`` in ``cfg.lr_multipliers``."""
    prob = _Problem(cfg, cfg.seed)
    eta_crit = _eta_crit(cfg, prob, prob.params)
    runs = []
    for c_mult in cfg.lr_multipliers:
        _, loss, probes, steps = _train(cfg, prob, prob.params, c_mult * eta_crit, prob.seed)
        runs.append(
            _make_run(cfg, {"multiplier": c_mult}, eta_crit, np.full(cfg.steps, c_mult * eta_crit), loss, probes, steps)
        )
        if callback:
            _stage(
                callback,
                f"gd: c = {c_mult:g} (η = {c_mult * eta_crit:.4g}): {runs[-1].regime}, "
                f"{runs[-1].num_catapults} catapult(s)",
            )
    return CatapultReport("gd", cfg, tuple(runs))


def run_schedule(cfg: CatapultConfig, callback: Callable | None = None) -> CatapultReport:
    """A first segment at ``½ η_crit``, then ``cfg.increases`` segments at ``c · η_crit(w)`` of the
    current weights ``w`` (each steps above the critical rate once more), ``cfg.steps`` each."""
    prob = _Problem(cfg, cfg.seed)
    runs = []
    for c_mult in cfg.lr_multipliers:
        params = prob.params
        parts, segments, rates, eta0 = [], [], [], None
        for j in range(cfg.increases + 1):
            eta_crit = _eta_crit(cfg, prob, params)
            eta0 = eta_crit if eta0 is None else eta0
            lr = (0.5 if j == 0 else c_mult) * eta_crit
            params, loss, probes, steps = _train(cfg, prob, params, lr, prob.seed + j)
            parts.append((loss, probes, steps + j * cfg.steps))
            rates.append(np.full(cfg.steps, lr))
            segments.append(
                {
                    "learning_rate": lr,
                    "eta_crit": eta_crit,
                    "end_step": (j + 1) * cfg.steps,
                    "agop_alignment": float(probes["agop_alignment"][-1]),
                    "test_mse": float(probes["test_mse"][-1]),
                }
            )
        # stitch: each segment's first point is the previous one's last
        loss = np.concatenate([parts[0][0]] + [p[0][1:] for p in parts[1:]])
        keys_ = parts[0][1].keys()
        probes = {k: np.concatenate([parts[0][1][k]] + [p[1][k][1:] for p in parts[1:]]) for k in keys_}
        steps = np.concatenate([parts[0][2]] + [p[2][1:] for p in parts[1:]])
        run = _make_run(cfg, {"multiplier": c_mult}, eta0, np.concatenate(rates), loss, probes, steps)
        for seg in segments:
            seg["catapults_so_far"] = sum(1 for cat in run.catapults if cat.start < seg["end_step"])
        runs.append(dataclasses.replace(run, segments=tuple(segments)))
        if callback:
            _stage(
                callback,
                f"schedule: c = {c_mult:g}: {run.num_catapults} catapult(s), AGOP alignment "
                + " -> ".join(f"{s['agop_alignment']:.3f}" for s in segments),
            )
    return CatapultReport("schedule", cfg, tuple(runs))


def run_sgd(cfg: CatapultConfig, callback: Callable | None = None) -> CatapultReport:
    """SGD (batches drawn without replacement, i.i.d. over steps) at ``η = c · η_crit(w_0)`` of the
    full training kernel, for every batch size, multiplier and seed ``seed + j``."""
    if not all(b <= cfg.samples for b in cfg.batch_sizes):
        raise ValueError(f"batch_sizes must be <= samples={cfg.samples}, got {cfg.batch_sizes}")
    runs = []
    for j in range(cfg.seeds):
        prob = _Problem(cfg, cfg.seed + j)
        eta_crit = _eta_crit(cfg, prob, prob.params)
        for c_mult in cfg.lr_multipliers:
            for b in cfg.batch_sizes:
                lr = c_mult * eta_crit
                _, loss, probes, steps = _train(cfg, prob, prob.params, lr, prob.seed, None if b == cfg.samples else b)
                runs.append(
                    _make_run(
                        cfg,
                        {"batch_size": b, "multiplier": c_mult, "seed": cfg.seed + j},
                        eta_crit,
                        np.full(cfg.steps, lr),
                        loss,
                        probes,
                        steps,
                    )
                )
                if callback:
                    r = runs[-1]
                    _stage(
                        callback,
                        f"sgd: seed {cfg.seed + j}, c = {c_mult:g}, b = {b}: {r.num_catapults} catapult(s), "
                        f"AGOP alignment {r.agop_alignment[-1]:.3f}, test MSE {r.test_mse[-1]:.4g}",
                    )
    return CatapultReport("sgd", cfg, tuple(runs))


def batch_table(report: CatapultReport) -> list[dict]:
    """Per (multiplier, batch size): mean ± std over seeds of catapults, final AGOP alignment, test MSE."""
    rows = []
    keys = sorted({(r.label["multiplier"], r.label["batch_size"]) for r in report.runs})
    for c_mult, b in keys:
        rs = [r for r in report.runs if r.label["multiplier"] == c_mult and r.label["batch_size"] == b]
        row = {"multiplier": c_mult, "batch_size": b, "seeds": len(rs)}
        for name, vals in (
            ("catapults", [r.num_catapults for r in rs]),
            ("agop_alignment", [r.agop_alignment[-1] for r in rs]),
            ("test_mse", [r.test_mse[-1] for r in rs]),
            ("train_loss", [r.loss[-1] for r in rs]),
        ):
            row[name] = float(np.mean(vals))
            row[name + "_std"] = float(np.std(vals))
        row["diverged"] = sum(r.regime == "diverged" for r in rs)
        rows.append(row)
    return rows


# ---- the batch-size study (docs/catapults.md §7) --------------------------------------------
BATCH_QUANTITIES = ("catapults", "agop_alignment", "test_mse")


def batch_runs(report) -> list[dict]:
    """One row per run of an SGD sweep (`run_sgd`): ``seed``, ``batch_size``, ``regime`` and the
    final ``catapults``, ``agop_alignment``, ``test_mse`` — the input of `batch_trend`."""
    return [
        {
            "seed": r.label["seed"],
            "batch_size": r.label["batch_size"],
            "regime": r.regime,
            "catapults": r.num_catapults,
            "agop_alignment": float(r.agop_alignment[-1]),
            "test_mse": float(r.test_mse[-1]),
        }
        for r in report.runs
    ]


def _t_interval(x):
    """Mean and 95 % Student-t interval of the finite values of ``x``."""
    from scipy import stats

    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    m = float(np.mean(x)) if x.size else float("nan")
    if x.size < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return m, m - h, m + h


def batch_trend(runs, batch_sizes):
    """The batch-size study's statistics (``docs/catapults.md`` §7) from ``runs`` (`batch_runs` of a
    sweep): dicts with ``seed``, ``batch_size``, ``regime`` and the final ``catapults``,
    ``agop_alignment``, ``test_mse``. Returns ``(per_batch, trend)``: per batch size the mean, 95 %
    t-interval and std of each quantity;
    per quantity Spearman's ρ against b over all runs, the per-seed least-squares slope against
    log₂ b (mean and 95 % t-interval over seeds: paired), the paired difference smallest − largest
    batch (mean, 95 % t-interval, Cohen's d_z) and its Wilcoxon signed-rank p-value.

    A diverged run (its loss blew up: no trained model) is left out of every statistic (NaN) and
    counted in ``diverged`` per batch size."""
    from scipy import stats

    seeds = sorted({r["seed"] for r in runs})

    def value(s, b, q):
        r = next(r for r in runs if r["seed"] == s and r["batch_size"] == b)
        return np.nan if r["regime"] == "diverged" else float(r[q])

    val = {q: np.array([[value(s, b, q) for b in batch_sizes] for s in seeds]) for q in BATCH_QUANTITIES}
    per_batch = []
    for i, b in enumerate(batch_sizes):
        row = {"batch_size": b, "seeds": len(seeds), "diverged": int(np.isnan(val["test_mse"][:, i]).sum())}
        for q in BATCH_QUANTITIES:
            m, lo, hi = _t_interval(val[q][:, i])
            row[q] = {"mean": m, "ci95": [lo, hi], "std": float(np.nanstd(val[q][:, i], ddof=1))}
        per_batch.append(row)
    logb = np.log2(np.asarray(batch_sizes, float))
    trend = {}
    for q in BATCH_QUANTITIES:
        x, y = np.tile(batch_sizes, len(seeds)), val[q].ravel()
        ok = np.isfinite(y)
        rho, p = stats.spearmanr(x[ok], y[ok])
        slopes = [
            np.polyfit(logb[np.isfinite(v)], v[np.isfinite(v)], 1)[0] for v in val[q] if np.isfinite(v).sum() >= 2
        ]
        m, lo, hi = _t_interval(slopes)
        diff = val[q][:, 0] - val[q][:, -1]
        diff = diff[np.isfinite(diff)]
        dm, dlo, dhi = _t_interval(diff)
        sd = float(np.std(diff, ddof=1))
        trend[q] = {
            "spearman_rho": float(rho),
            "spearman_p": float(p),
            "slope_per_doubling": {"mean": m, "ci95": [lo, hi], "seeds": len(slopes)},
            "smallest_minus_full": {
                "mean": dm,
                "ci95": [dlo, dhi],
                "pairs": int(diff.size),
                "cohen_dz": dm / sd if sd > 0 else float("nan"),
            },
            "wilcoxon_p": float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0,
        }
    return per_batch, trend


def batch_verdict(trend):
    """Reproduced: every quantity moves the claimed way (fewer catapults, lower alignment, higher test
    MSE with larger batches) with a slope CI that excludes 0; refuted: a CI excludes 0 the other way
    for alignment or test error; otherwise unresolved."""
    want = {"catapults": -1, "agop_alignment": -1, "test_mse": +1}
    signs = {}
    for q, s in want.items():
        lo, hi = trend[q]["slope_per_doubling"]["ci95"]
        signs[q] = s if (s * lo > 0 and s * hi > 0) else (-s if (s * lo < 0 and s * hi < 0) else 0)
    if all(signs[q] == want[q] for q in want):
        return "reproduced", signs
    if signs["agop_alignment"] == -want["agop_alignment"] or signs["test_mse"] == -want["test_mse"]:
        return "refuted", signs
    return "unresolved", signs


EXPERIMENTS = {"gd": run_gd, "schedule": run_schedule, "sgd": run_sgd}


def run(config: CatapultConfig, task: str = "gd", callback: Callable | None = None) -> CatapultReport:
    """The experiment ``task`` (``"gd"``, ``"schedule"`` or ``"sgd"``) with ``config``.

    ``callback({"stage": message})`` hears each run.
    """
    if task not in EXPERIMENTS:
        raise ValueError(f"task must be one of {sorted(EXPERIMENTS)}, got {task!r}")
    return EXPERIMENTS[task](config, callback)
