"""``ufm verify``: check the closed-form theory against autodiff (exit 1 if a check fails)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ._common import Progress, UsageError, console, set_precision, write_json
from ._spec import add_spec_args, check_spec_memory, spec_from_args, spec_text

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check the closed-form theory against autodiff (exit 1 if a check fails)",
        epilog="The state: trained from init_params(seed) to ‖∇L‖ <= 1e-10 within 200000 steps "
        "(ReLU: 100000), or the constructed optimum (--from-optimum); training that stops at the "
        "cap is a failed check (exit 1). Always float64 (--x32 is refused). A spec without a "
        "collapsed DNC point (MSE with b = K^(L+1)·n·λ_H·Πλ_l >= (L-1)^(L-1)/L^(2L): the "
        "minimiser is 0; CE without a critical point; softplus) is refused before training "
        "(exit 2).",
    )
    add_spec_args(p)
    p.add_argument("--from-optimum", action="store_true", help="construct the exact DNC optimum instead of training")
    p.add_argument("--grid", action="store_true", help="a small sweep over L, K, loss and activation")
    p.add_argument("--plot", metavar="PATH", help="plot each layer's spectrum with the predicted values")
    p.set_defaults(func=run)


def _fmt(x) -> str:
    """Short text for a predicted/measured value: scalars as .4g, equal arrays as 'v ×m', else 'lo…hi ×m'."""
    if isinstance(x, str):
        return x if len(x) < 40 else x[:37] + "..."
    a = np.asarray(x, dtype=float).ravel() if not isinstance(x, (int, float)) else np.array([x], float)
    if a.size == 0:
        return "-"
    if a.size == 1:
        return f"{a[0]:.4g}"
    lo, hi = a.min(), a.max()
    if hi - lo <= 1e-9 * max(abs(hi), abs(lo), 1e-300):
        return f"{a[0]:.4g} ×{a.size}"
    text = f"{lo:.3g}…{hi:.3g} ×{a.size}"
    return text if len(text) <= 19 else f"{lo:.2g}…{hi:.2g} ×{a.size}"


def report_table(report):
    """The checks, one row each, under a bold row per group; fits `WIDTH` columns (a name wraps at most once)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"ufm verify — {report.info.get('state', '')}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        expand=True,
    )
    table.add_column("check", ratio=1, min_width=30, overflow="fold")
    for col in ("predicted", "measured"):
        table.add_column(col, justify="right", max_width=19, overflow="fold")
    table.add_column("error", justify="right", no_wrap=True)
    table.add_column("tol", justify="right", no_wrap=True)
    table.add_column("", justify="center", no_wrap=True)
    last = None
    for c in report.checks:
        if c.group != last:
            table.add_row(f"[bold]{c.group}[/bold]", end_section=False)
            last = c.group
        mark = (
            ("[green]ok[/green]" if c.passed else "[bold red]FAIL[/bold red]")
            if c.required
            else ("info" if c.passed else "[yellow]off[/yellow]")
        )
        table.add_row(c.name, _fmt(c.predicted), _fmt(c.measured), f"{c.error:.1e}", f"{c.tolerance:.0e}", mark)
    return table


def _plot_report(report, path):
    import matplotlib

    matplotlib.use("Agg")
    from .. import plotting

    plotting.savefig(plotting.layer_spectra_figure(report), path)


def _refuse_without_dnc_point(spec) -> None:
    """Before any training: a spec whose closed form has no collapsed DNC point is refused (exit 2)."""
    from .. import theory

    try:
        sol = theory.dnc_solution(spec)
    except ValueError as e:  # CE without a critical point, softplus, ReLU with CE
        raise UsageError(f"nothing to verify: {e}") from None
    if sol.collapsed_to_zero:  # docs/theory.md §3
        raise UsageError(
            f"nothing to verify: b = K^(L+1)·n·λ_H·Πλ_l = {sol.b:.4g} >= (L−1)^(L−1)/L^(2L) = {sol.b_bound:.4g} "
            f"(L = {spec.depth}), so the global minimiser is 0 and there is no collapsed DNC point; "
            "lower --lambda-W / --lambda-H"
        )


def _verify_one(spec, args, progress: Progress, prefix: str = ""):
    """Build the state (train to collapse, or the constructed optimum) and verify it, stage by stage."""
    from ..verification import TRAIN_TOL, collapsed_state, training_steps, verify

    callback = None
    if args.from_optimum:
        progress.stage(f"{prefix}constructing the DNC optimum")
    else:
        steps = training_steps(spec)
        progress.stage(
            f"{prefix}training to collapse (at most {steps} steps, stops at ‖∇L‖ <= {TRAIN_TOL:g})", total=steps
        )

        def callback(rec):
            progress.update(rec["step"], f"step {rec['step']}  |∇L| {rec['grad_norm']:.1e}")

    state = collapsed_state(spec, from_optimum=args.from_optimum, seed=args.seed, callback=callback)
    progress.stage(f"{prefix}checking the closed forms against autodiff")
    return verify(spec, state)


def _worst(report):
    """The check to name: a failed state row first (the rest is then moot), else the worst other check
    (a converged run's 'training reached' row sits at ratio ~1 by construction)."""
    state = [c for c in report.failed if c.group == "state"]
    others = tuple(c for c in report.checks if c.group != "state")
    return state[0] if state or not others else dataclasses.replace(report, checks=others).worst()


def _grid_specs(base):
    """A small sweep: L = 1..4, K = 2..6, MSE/CE, linear and ReLU (σ'(0) = 1)."""
    rows = [
        (1, 2, "mse", "linear"),
        (2, 3, "mse", "linear"),
        (3, 4, "mse", "linear"),
        (4, 6, "mse", "linear"),
        (2, 5, "mse", "linear"),
        (1, 3, "ce", "linear"),
        (2, 4, "ce", "linear"),
        (3, 5, "ce", "linear"),
        (4, 2, "ce", "linear"),
        (2, 3, "mse", "relu"),
        (3, 4, "mse", "relu"),
    ]
    for L, K, loss, act in rows:
        # ReLU: narrow layers (d = 2K) trap GD in non-collapsed critical points; d = 16 collapses
        width = 16 if act == "relu" else max(2 * K, 4)
        yield base.replace(
            depth=L, num_classes=K, width=width, loss=loss, activation=act, relu_grad0=1.0, lambda_W=1e-3, lambda_H=1e-3
        )


def run(args) -> int:
    if args.x64 is False:
        raise UsageError(
            "--x32: verify checks in float64 (its tolerances, down to 1e-8, are below float32's "
            "rounding 6e-8) whatever the flag; drop --x32 (`ufm train --x32` trains in float32)"
        )
    spec = spec_from_args(args)
    check_spec_memory(spec, extra_bytes=3 * 8 * 4096**2)  # + the dense blocks (DEFAULT_DENSE_MAX) of the checks
    set_precision(True)
    out = console()
    if args.grid:
        results, specs = [], list(_grid_specs(spec))
        for i, s in enumerate(specs):
            with Progress() as progress:
                r = _verify_one(
                    s, args, progress, f"[{i + 1}/{len(specs)}] L={s.depth} K={s.num_classes} {s.loss} {s.activation}: "
                )
            w = _worst(r)
            results.append(
                {"spec": s, "passed": r.passed, "worst": w, "seconds": r.info["seconds"], "failed": r.failed}
            )
            out.print(
                f"{'ok  ' if r.passed else 'FAIL'} L={s.depth} K={s.num_classes} d={s.width} {s.loss:3s} "
                f"{s.activation:6s} worst: {w.group} / {w.name} err {w.error:.1e} (tol {w.tolerance:.0e}) "
                f"[{r.info['seconds']:.1f} s]"
            )
        passed = all(r["passed"] for r in results)
        if args.json:
            write_json({"passed": passed, "converged": passed, "grid": results}, args.json)
        return 0 if passed else 1
    _refuse_without_dnc_point(spec)
    with Progress() as progress:
        report = _verify_one(spec, args, progress)
    out.print(spec_text(spec, out.width), soft_wrap=True, markup=False)
    info = report.info
    if info.get("train_converged") is False:  # said before the table, and a FAIL row in it
        out.print(
            f"[bold red]not converged:[/bold red] training stopped at its {info['train_step_cap']}-step cap "
            f"with ‖∇L‖ = {info['grad_norm']:.2g} > {info['train_tol']:g}; the checks compare the theory "
            "with a state that is not a verified optimum"
        )
    out.print(report_table(report))
    if any(not c.required for c in report.checks):
        out.print("info / off: informational checks (not counted in the verdict) that match / do not match")
    extra = f"{info.get('train_steps', 0)} training steps, " if "train_steps" in info else ""
    out.print(f"{len(report.checks)} checks, {len(report.failed)} failed; {extra}{info['seconds']:.1f} s")
    for what, why in info.get("skipped", {}).items():
        out.print(f"skipped {what}: {why}")
    if args.json:
        write_json(report, args.json)
    if args.plot:
        _plot_report(report, args.plot)
    if not report.passed:
        w = _worst(report)
        print(
            f"ufm: {len(report.failed)} check(s) failed, {'first' if w.group == 'state' else 'worst'}: {w.group} / "
            f"{w.name}: error {w.error:.3g} > tolerance {w.tolerance:.3g}",
            file=sys.stderr,
        )
        return 1
    if not report.converged:  # every check passed but a measurement's solver missed its tolerance
        print(f"ufm: a measurement did not converge: {report.messages[0]}", file=sys.stderr)
        return 1
    return 0
