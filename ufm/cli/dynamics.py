"""``ufm dynamics {align,ode,catapult,dmap}``: the four along-training experiments.

Each task parses its flags, refuses a user mistake before any work (one line, exit 2), runs the
experiment of `ufm.dynamics` (a typed report), prints a short summary and a *verdict* (what was
compared with what, the criterion, held or not), writes ``--json`` (strict JSON) / ``--plot``,
and exits 1 when the report says it did not converge (``report.converged``; a Krylov solve in
the probes or the ODE solver that missed its tolerance). The verdict is information: it never
changes the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math

from .. import plotting
from ._common import (
    POSITIVE,
    SEED,
    Parser,
    UsageError,
    add_precision_args,
    check_memory,
    finish,
    finite_float,
    positive_float,
    say,
    set_precision,
    unit_float,
)

__all__ = ["TASKS", "add_parser"]

_F64 = 8  # bytes per float64


def add_parser(sub) -> None:
    p = sub.add_parser("dynamics", help="spectra along training: " + ", ".join(TASKS))
    tasks = p.add_subparsers(dest="task", required=True, parser_class=Parser)
    for add in TASKS.values():
        add(tasks)


def _held(ok: bool) -> str:
    return "held" if ok else "NOT held"


def _plot(fig_fn, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .. import plotting

    plotting.savefig(fig_fn(), path)


# ---- align -------------------------------------------------------------------------------------------
_ALIGN_FLAGS = {  # flag -> (keyword, type, help); each task takes the keywords its function has
    "--num-classes": ("num_classes", POSITIVE, "k (kgmm) or K (ufm)"),
    "--dim": ("dim", POSITIVE, "input dimension d (kgmm, xor)"),
    "--snr": ("snr", positive_float, "λ, the signal-to-noise ratio (kgmm, xor)"),
    "--ridge": ("ridge", finite_float, "β of (β/2)‖θ‖² (kgmm, xor)"),
    "--lr-scale": ("lr_scale", positive_float, "c_δ: step δ = c_δ/d (kgmm, xor)"),
    "--time": ("time", positive_float, "final time T = steps·δ (kgmm, xor)"),
    "--test-samples": ("test_samples", POSITIVE, "M fresh samples of the probe matrices (kgmm, xor)"),
    "--seeds": ("seeds", POSITIVE, "number of seeds (xor)"),
    "--width": ("width", POSITIVE, "hidden width (xor, ufm: d; mnist: head width)"),
    "--depth": ("depth", POSITIVE, "L (ufm)"),
    "--per-class": ("per_class", POSITIVE, "n (ufm)"),
    "--lr": ("lr", positive_float, "learning rate (ufm, mnist)"),
    "--steps": ("steps", POSITIVE, "optimiser steps (ufm, mnist)"),
    "--batch-size": ("batch_size", POSITIVE, "mini-batch size (ufm: SGD instead of GD; mnist)"),
    "--train-samples": ("train_samples", POSITIVE, "MNIST training samples (mnist)"),
    "--hessian-samples": ("hessian_samples", POSITIVE, "samples of the Hessian probe (mnist)"),
    "--checkpoints": ("checkpoints", POSITIVE, "checkpoints after step 0"),
}


def _add_align(tasks) -> None:
    """``ufm dynamics align --task {kgmm,xor,ufm,mnist} ... --json PATH [--plot PATH]``."""
    from ..experiments import align

    p = tasks.add_parser(
        "align",
        help="SGD aligning with the outlier eigenspaces (kgmm, xor, ufm, mnist)",
        description="Outlier-alignment experiments (docs/dynamics.md §D2, docs/alignment.md). "
        "Unset flags take each task's defaults.",
    )
    p.add_argument("--task", choices=list(align.TASKS), default="kgmm")
    for flag, (_, typ, text) in _ALIGN_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed, an integer >= 0 (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--plot", metavar="PATH", help="a figure of the run (PDF + PNG)")
    add_precision_args(p, default=True)
    p.set_defaults(func=_run_align)


def _align_memory(task: str, fn, kw: dict) -> None:
    """The largest dense object of an align task: the kgmm data Hessian (kd)², the ufm per-layer block."""
    defaults = {k: v.default for k, v in inspect.signature(fn).parameters.items()}
    get = lambda name: kw.get(name, defaults.get(name))  # noqa: E731
    if task == "kgmm":
        side = get("num_classes") * get("dim")
        check_memory(3 * side**2 * _F64, f"kgmm with k·d = {side}", "lower --dim or --num-classes")
    elif task == "xor":
        check_memory(2 * get("test_samples") * get("width") * get("dim") * _F64, "xor", "lower --test-samples")


def _align_verdict(report) -> str:
    s, task = report.summary, report.task
    if task == "kgmm":
        k = report.config.get("num_classes")
        blocks, full = s.get("block_outliers_hessian"), s.get("full_hessian_outliers")
        ok = k is not None and blocks == [k] * k and full == k * (k - 1)
        return (
            f"final Hessian outliers per class block {blocks} and of the full Hessian {full} vs the predicted "
            f"k = {k} per block and k(k−1) = {None if k is None else k * (k - 1)} (docs/alignment.md §3): {_held(ok)}"
        )
    if task == "xor":
        seeds = s.get("seeds", [])
        ok = bool(seeds) and all(p["second_layer_rank"] == p["predicted_rank"] for p in seeds)
        ranks = [(p["second_layer_rank"], p["predicted_rank"]) for p in seeds]
        return (
            f"second-layer G outlier rank vs predicted rank per seed {ranks} (equal, docs/alignment.md §4): {_held(ok)}"
        )
    key = "grad_fraction_top" if task == "ufm" else "f_top_grad"
    vals = [v for v in _as_list(s.get(key)) if v is not None]
    ok = bool(vals) and min(vals) >= 0.5
    shown = ", ".join(f"{v:.3f}" for v in vals)
    return f"final fraction of the gradient in the top Hessian space [{shown}] vs ≥ 0.5 ([GRD] 2018): {_held(ok)}"


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _run_align(args) -> int:
    from ..experiments import align

    fn = align.TASKS[args.task]
    accepted = inspect.signature(fn).parameters
    kwargs = {"seed": args.seed}
    for flag, (name, _, _) in _ALIGN_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            raise UsageError(f"{flag} does not apply to --task {args.task}")
        kwargs[name] = value
    _align_memory(args.task, fn, kwargs)
    set_precision(args.x64)

    def progress(event):
        label = event.get("label")
        say(
            f"align {args.task}: {label + ' ' if label else ''}checkpoint {event['index']} step {event['step']} "
            f"loss {event['loss']:.4g}"
        )

    try:
        report = align.run(align.AlignConfig(task=args.task, **kwargs), callback=progress)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    summary = [f"{key}: {json.dumps(value)}" for key, value in report.summary.items()]
    code = finish(report, args, summary=summary, verdict=_align_verdict(report))
    if args.plot:
        _plot(lambda: plotting.align.report_figure(report), args.plot)
    return code


# ---- ode ---------------------------------------------------------------------------------------------


def _add_ode(tasks) -> None:
    """``ufm dynamics ode``: SGD runs against the ODE on one covariance model (``docs/sgd_ode.md`` §8)."""
    from ..dynamics import COVARIANCES, ODE_LOSSES
    from ..experiments.sgd_ode import MIN_RUNS, ODE_GAP_STDERRS

    p = tasks.add_parser(
        "ode",
        help="one-pass SGD on an anisotropic Gaussian mixture vs its high-dimensional ODE",
        description="One-pass SGD runs against the high-dimensional ODE on one covariance model, with a verdict.",
        epilog=f"Verdict: the ODE risk within {ODE_GAP_STDERRS:g} standard errors of the mean of the SGD runs at "
        f"every time point; with fewer than {MIN_RUNS} runs the standard error is too uncertain to judge and the "
        "verdict is UNDECIDED. The verdict is information: exit 0 whatever it says (holds, NOT held, "
        "UNDECIDED), 1 when the ODE solver did not converge, 2 on bad arguments.",
    )
    p.add_argument(
        "--covariance", choices=COVARIANCES, default="power-law", help="covariance model (default power-law)"
    )
    p.add_argument(
        "--loss", choices=ODE_LOSSES, default="logistic", help="logistic / lsq (one output) or softmax (k outputs)"
    )
    p.add_argument("--num-classes", type=POSITIVE, default=2, help="k (default 2: labels 1, 0, means ±μ)")
    p.add_argument("--dim", type=int, default=1000, help="d >= 1 (default 1000)")
    p.add_argument("--lr", type=positive_float, default=1.0, help="γ; SGD step γ/d (default 1)")
    p.add_argument("--time", type=positive_float, default=10.0, help="T = steps / d (default 10)")
    p.add_argument("--points", type=POSITIVE, default=41, help="time-grid points (default 41)")
    p.add_argument(
        "--sgd-runs", type=POSITIVE, default=8, help="S independent SGD runs (default 8; fewer: an undecided verdict)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="SGD runs (and the random basis / signs) seed, >= 0")
    p.add_argument(
        "--exponents",
        type=finite_float,
        nargs="+",
        default=[1.5, 2.5],
        metavar="A",
        help="power-law exponents a_j, one or one per class (default 1.5 2.5)",
    )
    p.add_argument("--mean-decay", type=finite_float, default=0.0, help="b: <μ,u_ρ> ∝ d^-1/2 (ρ/d)^b (default 0)")
    p.add_argument("--mean-scale", type=finite_float, default=1.0, help="c: ‖μ‖ = c at b = 0 (default 1)")
    p.add_argument(
        "--zero-fraction",
        type=finite_float,
        default=0.1,
        help="f: the clean modes (zero variance in zero-one) are the first f·d (default 0.1)",
    )
    p.add_argument("--basis", choices=["identity", "random"], default="identity")
    p.add_argument("--init-scale", type=finite_float, default=0.0, help="σ: X_0 ~ N(0, σ²/d) (default 0: X_0 = 0)")
    p.add_argument(
        "--mean-noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ODE noise with E a_ρ² = λ_ρ + μ_ρ² (default), or the leading order λ_ρ only (--no-mean-noise); "
        "an O(1/d) term, docs/sgd_ode.md §5",
    )
    p.add_argument(
        "--rule",
        choices=["auto", "hermite", "qmc"],
        default="auto",
        help="quadrature of the Gaussian expectations (default auto: closed form for lsq, Gauss-Hermite for "
        "logistic and softmax with k <= 3, randomised QMC for softmax with k >= 4)",
    )
    p.add_argument(
        "--order",
        type=POSITIVE,
        default=None,
        help="Gauss-Hermite order (implies --rule hermite under auto; default 40 logistic, 12 per dimension softmax)",
    )
    p.add_argument("--qmc-points", type=POSITIVE, default=256, help="RQMC: Sobol points per set, a power of 2 (256)")
    p.add_argument(
        "--qmc-reps", type=POSITIVE, default=8, help="RQMC: independent scrambles (8); the error estimate is their s.e."
    )
    p.add_argument("--rtol", type=positive_float, default=1e-7, help="ODE relative tolerance (> 0)")
    p.add_argument("--atol", type=positive_float, default=1e-9, help="ODE absolute tolerance (> 0)")
    p.add_argument("--json", metavar="PATH", help="write config, times, ode, sgd, sgd_stderr, summary as JSON")
    p.add_argument("--plot", metavar="PATH", help="risk and overlaps vs time (PDF + PNG)")
    add_precision_args(p, default=True)
    p.set_defaults(func=_run_ode)


def _run_ode(args) -> int:
    from ..experiments.sgd_ode import SGDODEConfig, run

    if args.dim < 1:
        raise UsageError(f"--dim must be an integer >= 1, got {args.dim}")
    q = args.num_classes if args.loss == "softmax" else 1
    # the ODE state V (d × q × q) over the solver's stages, per-mode work arrays of d × q (one buffer of
    # 27·d float64 was measured at q = 1, d = 5e7: 32 · d · q covers it), the SGD runs' iterates, and
    # the RQMC nodes (one class at a time per run when recording)
    nodes = args.qmc_points * args.qmc_reps * q
    need = (12 * args.dim * q * q + 32 * args.dim * q + 4 * args.sgd_runs * (args.dim * q + 3 * nodes)) * _F64
    check_memory(need, f"the ODE with d = {args.dim} and {args.points} points", "lower --dim or --points")
    names = [f.name for f in dataclasses.fields(SGDODEConfig)]
    config = SGDODEConfig(**{n: tuple(v) if isinstance(v, list) else v for n, v in vars(args).items() if n in names})
    try:
        config.check()
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    set_precision(args.x64)
    report = run(config, callback=lambda event: say(f"ode: {event['stage']}"))
    lines = [
        f"{g.quantity:>14}: max |ODE − SGD| = {g.max_abs_gap:.2e} at t = {g.time:.3g} "
        f"(SGD s.e. there {g.stderr_at:.1e}; max |gap|/s.e. {g.max_ratio:.2f}); final ODE {g.final_ode:.5f}, "
        f"SGD {g.final_sgd:.5f} ± {g.final_stderr:.1e}"
        for g in report.gaps
    ]
    ode = report.ode
    lines.append(
        f"{'quadrature':>14}: {ode.rule}; error estimate (max over t) risk ±{ode.err('risk').max():.1e}, "
        f"cos(x_1, μ_1) ±{ode.err('overlap')[:, 0, 0].max():.1e}, ‖x_1‖² ±{ode.err('norm2')[:, 0].max():.1e}"
        + (
            " (s.e. over the independent scrambles; added to the SGD s.e. in the ratios)"
            if ode.rule.startswith("scr")
            else ""
        )
    )
    code = finish(report, args, summary=lines, verdict=report.verdict["summary"])
    if args.plot:
        _plot(lambda: plotting.sgd_ode.report_figure(report), args.plot)
    return code


# ---- catapult ----------------------------------------------------------------------------------------
_CATAPULT_TASK_DEFAULTS = {"gd": (0.5, 1.5, 3.0), "schedule": (1.5,), "sgd": (0.5,)}


def _add_catapult(tasks) -> None:
    """``ufm dynamics catapult --task {gd,schedule,sgd}``: catapults and AGOP (``docs/catapults.md``)."""
    from ..dynamics import NTK_ACTIVATIONS, TARGETS
    from ..experiments import catapult

    d = catapult.CatapultConfig()
    p = tasks.add_parser(
        "catapult",
        help="catapults in GD / SGD of NTK MLPs and the AGOP alignment (docs/catapults.md)",
        description=catapult.__doc__.splitlines()[0],
    )
    p.add_argument("--task", choices=sorted(catapult.EXPERIMENTS), default="gd")
    p.add_argument(
        "--lr-multipliers",
        type=positive_float,
        nargs="+",
        default=None,
        metavar="C",
        help="η = C·η_crit (default: gd 0.5 1.5 3; schedule 1.5; sgd 0.5)",
    )
    p.add_argument("--samples", type=POSITIVE, default=d.samples, help=f"n training samples (default {d.samples})")
    p.add_argument("--test-samples", type=POSITIVE, default=d.test_samples)
    p.add_argument("--dim", type=POSITIVE, default=d.dim, help=f"input dimension d (default {d.dim})")
    p.add_argument("--width", type=POSITIVE, default=d.width, help=f"hidden width (default {d.width})")
    p.add_argument("--depth", type=POSITIVE, default=d.depth, help=f"weight layers (default {d.depth})")
    p.add_argument("--activation", choices=sorted(NTK_ACTIVATIONS), default=d.activation)
    p.add_argument("--target", choices=sorted(TARGETS), default=d.target)
    p.add_argument("--rank", type=POSITIVE, default=d.rank, help="rank r of the polynomial target (<= --dim)")
    p.add_argument(
        "--steps", type=POSITIVE, default=d.steps, help=f"steps per run / schedule segment (default {d.steps})"
    )
    p.add_argument("--increases", type=int, default=d.increases, help="schedule: rate increases (default 3)")
    p.add_argument("--batch-sizes", type=POSITIVE, nargs="+", default=list(d.batch_sizes))
    p.add_argument("--seeds", type=POSITIVE, default=d.seeds, help="sgd: seeds per batch size (default 3)")
    p.add_argument("--seed", type=SEED, default=d.seed, help="PRNG seed, an integer >= 0 (default 0)")
    p.add_argument("--top", type=POSITIVE, default=d.top, help="s of the projected loss P_s L (default 5)")
    p.add_argument("--probe-every", type=POSITIVE, default=d.probe_every)
    p.add_argument(
        "--normalization",
        choices=["half", "mean"],
        default=d.normalization,
        help="MSE (1/2n)||f-y||^2 (half, η_crit = 2n/λ) or (1/n)||f-y||^2 (mean, η_crit = n/λ)",
    )
    p.add_argument("--spike-ratio", type=positive_float, default=d.spike_ratio)
    p.add_argument("--spike-window", type=POSITIVE, default=d.spike_window)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", help="figure (PDF + PNG)")
    add_precision_args(p, default=True)
    p.set_defaults(func=_run_catapult)


def _catapult_verdict(report) -> str:
    from ..experiments import catapult

    if report.task == "sgd":
        table = catapult.batch_table(report)
        means = [row["catapults"] for row in sorted(table, key=lambda r: r["batch_size"])]
        ok = all(a >= b for a, b in zip(means, means[1:], strict=False))
        return (
            f"mean catapults per run by growing batch size {[round(m, 2) for m in means]} do not increase: {_held(ok)}"
        )
    wrong = []
    for r in report.runs:
        c = r.label.get("multiplier", float("nan"))
        if c < 1 and r.num_catapults:
            wrong.append(f"c = {c:g} (below η_crit) has {r.num_catapults}")
        elif c > 1 and r.regime not in ("catapult", "diverged"):
            wrong.append(f"c = {c:g} (above η_crit) has none ({r.regime})")
    return (
        "catapults (a loss spike that returns below its start, docs/catapults.md §4) only above η_crit "
        f"and in every non-diverging run above it: {_held(not wrong)}" + (f" ({'; '.join(wrong)})" if wrong else "")
    )


def _run_catapult(args) -> int:
    from ..experiments import catapult

    try:
        cfg = catapult.CatapultConfig(
            samples=args.samples,
            test_samples=args.test_samples,
            dim=args.dim,
            width=args.width,
            depth=args.depth,
            activation=args.activation,
            target=args.target,
            rank=args.rank,
            steps=args.steps,
            seed=args.seed,
            lr_multipliers=tuple(args.lr_multipliers or _CATAPULT_TASK_DEFAULTS[args.task]),
            increases=args.increases,
            batch_sizes=tuple(args.batch_sizes),
            seeds=args.seeds,
            probe_every=args.probe_every,
            top=args.top,
            normalization=args.normalization,
            spike_ratio=args.spike_ratio,
            spike_window=args.spike_window,
        )
        if args.task == "sgd" and max(cfg.batch_sizes) > cfg.samples:
            raise ValueError(f"--batch-sizes must be <= --samples={cfg.samples}, got {list(cfg.batch_sizes)}")
        if args.target == "polynomial" and args.rank > args.dim:
            raise ValueError(f"--rank {args.rank} is above the input dimension --dim {args.dim}")
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    # the tangent kernel (n × n) and its Jacobian (n × P) per probe, P = the NTK MLP's parameters
    P = cfg.model().num_params
    check_memory(
        (2 * cfg.samples * P + 2 * cfg.samples**2 + 4 * P) * _F64,
        f"an NTK MLP with {P} parameters and n = {cfg.samples}",
        "lower --width, --depth or --samples",
    )
    set_precision(args.x64)
    say(
        f"catapult {args.task}: n={cfg.samples}, d={cfg.dim}, width {cfg.width}, depth {cfg.depth}, "
        f"{cfg.activation}, target {cfg.target}, {cfg.steps} steps"
    )
    report = catapult.EXPERIMENTS[args.task](cfg, callback=lambda event: say(f"catapult {args.task}: {event['stage']}"))
    code = finish(report, args, summary=[format_catapult_report(report)], verdict=_catapult_verdict(report))
    if args.plot:
        _plot(lambda: plotting.catapult.report_figure(report), args.plot)
    return code


def format_catapult_report(report) -> str:
    """A plain-text table of the runs (sgd: the batch-size table)."""
    from ..experiments import catapult

    if report.task == "sgd":
        lines = [f"{'c':>5} {'batch':>6} {'catapults':>12} {'AGOP align':>16} {'test MSE':>18} {'diverged':>8}"]
        for r in catapult.batch_table(report):
            lines.append(
                f"{r['multiplier']:5g} {r['batch_size']:6d} {r['catapults']:6.2f} ± {r['catapults_std']:4.2f} "
                f"{r['agop_alignment']:8.4f} ± {r['agop_alignment_std']:.4f} "
                f"{r['test_mse']:9.4g} ± {r['test_mse_std']:.2g} {r['diverged']:8d}"
            )
        return "\n".join(lines)
    lines = [
        f"{'c':>5} {'regime':>12} {'#cat':>4} {'peak L':>10} {'share top':>9} {'λmax 0':>9} {'λmax T':>9} "
        f"{'2n/η':>9} {'AGOP 0':>7} {'AGOP T':>7} {'test MSE':>9}"
    ]
    for r in report.runs:
        d = r.to_dict()
        peak = max(r.catapults, key=lambda c: c.peak_loss) if r.catapults else None
        lines.append(
            f"{d['multiplier']:5g} {r.regime:>12} {r.num_catapults:4d} "
            f"{peak.peak_loss if peak else float('nan'):10.4g} "
            f"{peak.peak_share_top if peak else float('nan'):9.4f} {d['lambda_max_initial']:9.4g} "
            f"{d['lambda_max_final']:9.4g} {d['critical_lambda_final']:9.4g} "
            f"{d['agop_alignment_initial']:7.4f} {d['agop_alignment_final']:7.4f} {d['test_mse_final']:9.4g}"
        )
    return "\n".join(lines)


# ---- dmap --------------------------------------------------------------------------------------------
def _add_dmap(tasks) -> None:
    """``ufm dynamics dmap --task {quadratic,ufm,mnist} [--dim --rank] --steps --seed --json [--plot]``."""
    from ..experiments import dmap

    p = tasks.add_parser("dmap", help="diffusion maps of SGD trajectories vs Hessian outliers (docs/dynamics.md §D5)")
    p.add_argument("--task", choices=dmap.TASKS, default="quadratic")
    p.add_argument("--dim", type=POSITIVE, default=None, help="quadratic: ambient dimension m (default 50)")
    p.add_argument("--rank", type=POSITIVE, default=None, help="quadratic: Hessian rank r <= m (default 3)")
    p.add_argument("--steps", type=POSITIVE, default=None, help="SGD steps (default: the task's preset)")
    p.add_argument("--lr", type=positive_float, default=None, help="SGD learning rate (default: the task's 0.05)")
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed, an integer >= 0 (default 0)")
    p.add_argument(
        "--alpha", type=unit_float, default=0.5, help="α normalisation in [0, 1] (default 1/2, Fokker–Planck)"
    )
    p.add_argument(
        "--epsilon",
        default="median",
        help="bandwidth: 'median' (default), 'kernel-sum' (upper linear region) or a number > 0",
    )
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--plot", metavar="PATH", help="figure: spectrum, first coordinates, slope curve (PDF + PNG)")
    add_precision_args(p, default=True)
    p.set_defaults(func=_run_dmap)


def _parse_epsilon(text: str):
    if text in ("median", "kernel-sum"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--epsilon must be 'median', 'kernel-sum' or a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"--epsilon must be a finite number > 0, got {text}")
    return value


def _run_dmap(args) -> int:
    from ..experiments import dmap

    kw = {"seed": args.seed, "alpha": args.alpha, "epsilon": _parse_epsilon(args.epsilon)}
    if args.task != "quadratic" and (args.dim is not None or args.rank is not None):
        raise UsageError("--dim and --rank apply to --task quadratic only")
    if args.task == "quadratic":
        dim = 50 if args.dim is None else args.dim
        rank = 3 if args.rank is None else args.rank
        if rank > dim:
            raise UsageError(f"--rank {rank} is above the dimension --dim {dim}")
        kw.update(dim=dim, rank=rank)
        steps = 40_000 if args.steps is None else args.steps
        # the kept iterates (steps / 20 rows of dim) and their N × N distance and kernel matrices
        rows = steps // 20 + 1
        check_memory((rows * dim + 4 * rows**2) * _F64, f"{rows} iterates", "lower --steps")
    if args.steps is not None:
        kw["steps"] = args.steps
    if args.lr is not None:
        kw["learning_rate"] = args.lr
    set_precision(args.x64)
    try:
        config = dmap.DmapConfig(task=args.task, **kw)
        report = dmap.run(config, callback=lambda event: say(f"dmap {args.task}: {event['stage']}"))
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    a = report.analysis
    lam = ", ".join(f"{v:.3f}" for v in a.diffusion.eigenvalues[1:8])
    lines = [
        f"dmap {args.task}: {a.diffusion.psi.shape[0]} iterates, ε = {a.diffusion.epsilon:.3g} "
        f"(median {a.curve.median_epsilon:.3g}, kernel-sum {a.curve.epsilon:.3g}), α = {a.diffusion.alpha:g}",
        f"  diffusion eigenvalues λ_1.. = {lam}",
        f"  coordinates by the gap q = {a.n_coords} (τ ratio {a.gap_ratio:.2f}); "
        f"dimension estimate 2·max slope = {a.dimension_estimate:.2f}; Hessian outliers = {a.hessian_outliers}",
        f"  R² of ψ_1..ψ_{a.r2.size} on the top-Hessian projections (quadratic fit): "
        + ", ".join(f"{v:.3f}" for v in a.r2),
        f"  PCA participation ratio {a.participation_ratio:.2f}; drift (Spearman ψ_1 vs step) "
        f"{float('nan') if a.drift is None else a.drift:+.2f}   [{report.info['seconds']:.1f} s]",
    ]
    m = a.hessian_outliers
    verdict = (
        f"diffusion coordinates by the spectral gap q = {a.n_coords} vs Hessian outliers {m} "
        f"(equal: the iterates fluctuate in the outlier space, docs/diffusion_maps.md §6): {_held(a.n_coords == m)}"
    )
    code = finish(report, args, summary=lines, verdict=verdict)
    if args.plot:
        _plot(lambda: plotting.dmap.report_figure(report), args.plot)
    return code


#: ``ufm dynamics <task>`` -> the function adding its parser.
TASKS = {"dmap": _add_dmap, "ode": _add_ode, "catapult": _add_catapult, "align": _add_align}
