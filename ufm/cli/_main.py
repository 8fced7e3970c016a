"""`ufm` command line: ``ufm train | verify | theory | real | analyze | figures | dynamics``.

Spec flags are generated from `UFMSpec`'s fields (``--num-classes``, ``--lambda-W``, ...).
Exit status: 0 success, 1 a check failed, 2 bad arguments (one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

__all__ = ["main"]


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"ufm: error: {message}\n")


def _int_at_least(low: int):
    """An argparse type: an int >= ``low`` (argparse turns the ValueError into one line, exit 2)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's message: "invalid integer value: 'x'"
    return parse


_SEED = _int_at_least(0)
_POSITIVE = _int_at_least(1)


def _check_outputs(args) -> None:
    """Refuse, before any work, an output path (``--json``, ``--plot``) that cannot be written."""
    for flag in ("json", "plot"):
        path = getattr(args, flag, None)
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise _ArgumentError(f"--{flag} {path}: the directory {folder} does not exist")
        if os.path.isdir(path):
            raise _ArgumentError(f"--{flag} {path}: is a directory, expected a file path")
        if not os.access(folder, os.W_OK):
            raise _ArgumentError(f"--{flag} {path}: the directory {folder} is not writable")


#: Help text and short flag of each `UFMSpec` field; the flags themselves (name, type,
#: default, choices, one value or one per layer) are generated from the dataclass.
_SPEC_HELP = {
    "num_classes": ("-K", "K, number of classes"),
    "per_class": ("-n", "n, samples per class"),
    "depth": ("-L", "L, weight layers"),
    "width": ("-d", "d, one value or one per layer"),
    "activation": (None, "after W_1..W_{L-1} (docs/theory.md §1)"),
    "loss": (None, "the data term"),
    "lambda_H": (None, "λ_H, ridge on the free features"),
    "lambda_W": (None, "λ_W, one value or one per layer"),
    "relu_grad0": (
        None,
        "ReLU derivative at 0, a value in [0, 1] (docs/theory.md §6); 1 reproduces the linear spectra",
    ),
    "softplus_beta": (None, "sharpness β of softplus(βx)/β"),
}


def _spec_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from .spec import ACTIVATIONS, LOSSES, UFMSpec

    choices = {"activation": ACTIVATIONS, "loss": LOSSES}
    g = p.add_argument_group("model (UFMSpec)")
    for f in dataclasses.fields(UFMSpec):
        short, text = _SPEC_HELP[f.name]
        kw = {"dest": f.name, "default": f.default, "help": f"{text} (default {f.default})"}
        if f.name in choices:
            kw["choices"] = choices[f.name]
        else:
            kw["type"] = type(f.default)
        if "tuple" in str(f.type):  # one value for every layer, or one per layer
            kw.update(nargs="+", default=[f.default])
        g.add_argument(*([_spec_flag(f.name)] + ([short] if short else [])), **kw)
    p.add_argument("--seed", type=_SEED, default=0, help="PRNG seed, an integer >= 0 (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (its directory must exist)")
    _add_precision_args(p, default=True)


def _add_precision_args(p: argparse.ArgumentParser, default: bool | None) -> None:
    """``--x64`` / ``--x32``: one switch, two spellings; ``default`` None leaves the process's setting."""
    x = p.add_mutually_exclusive_group()
    x.add_argument(
        "--x64",
        dest="x64",
        action="store_const",
        const=True,
        help="float64" + (" (default)" if default is True else ""),
    )
    x.add_argument(
        "--x32",
        dest="x64",
        action="store_const",
        const=False,
        help="float32" + (" (default)" if default is False else ""),
    )
    p.set_defaults(x64=default)


def _spec_from_args(args):
    import dataclasses

    from .spec import UFMSpec

    one = lambda v: (v[0] if len(v) == 1 else tuple(v)) if isinstance(v, list) else v  # noqa: E731
    try:
        return UFMSpec(**{f.name: one(getattr(args, f.name)) for f in dataclasses.fields(UFMSpec)})
    except (TypeError, ValueError) as e:
        raise _ArgumentError(str(e)) from None


def _console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, no_color=not tty, width=None if tty else _WIDTH)


class _Progress:
    """Progress on stderr that follows the stage actually running.

    On a terminal: one live rich line (label, bar or spinner, info, elapsed), replaced at each
    `stage`. Elsewhere (a pipe, a CI log): one line when a stage starts, one when it ends with
    its time, and a heartbeat line at most every ``heartbeat`` seconds in between, so a log is
    never silent for long. ``with _Progress() as p: p.stage("training", total=n); p.update(i, info)``.
    """

    def __init__(self, console=None, heartbeat: float = 15.0):
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True, highlight=False)
        self.heartbeat = heartbeat
        self.label = None
        self._bar = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        self._end(failed=exc[0] is not None)
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False

    def _log(self, text: str) -> None:
        self.console.print(f"ufm: {text}", markup=False, soft_wrap=True)

    def _end(self, failed: bool = False) -> None:
        if self.label is None:
            return
        if self._bar is not None:
            self._bar.remove_task(self._task)
        else:
            seconds = time.perf_counter() - self._t0
            info = f"; {self._info}" if self._info else ""
            self._log(f"{self.label}: {'stopped' if failed else 'done'} after {seconds:.1f} s{info}")
        self.label = None

    def stage(self, label: str, total: int | None = None) -> None:
        """End the running stage (if any) and start ``label`` (``total`` steps, or open-ended)."""
        self._end()
        self.label, self._info, self._t0 = label, "", time.perf_counter()
        self._beat = self._t0
        if self._bar is not None:
            self._task = self._bar.add_task(label, total=total, info="")
        else:
            self._log(f"{label} ...")

    def update(self, completed: int | None = None, info: str = "") -> None:
        """Report progress within the running stage."""
        self._info = info
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, info=info)
        elif time.perf_counter() - self._beat >= self.heartbeat:
            self._beat = time.perf_counter()
            self._log(f"{self.label}: {info} ({self._beat - self._t0:.0f} s)")


def _nc_table(nc, title):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("layer")
    columns = {
        "nc1": "NC1",
        "nc1_uncentred": "NC1 (uncentred)",
        "of_distance": "NC2 OF",
        "etf_distance": "NC2 ETF",
        "equinorm": "equinorm",
        "nc3": "NC3",
        "duality": "duality",
        "nc4": "NC4",
    }
    for header in columns.values():
        table.add_column(header, justify="right")
    fmt = lambda x: "-" if x != x else f"{x:.2e}"  # noqa: E731
    for i in range(nc.num_layers):
        label = f"H~{i + 1}" if i < nc.num_layers - 1 else "Z"
        table.add_row(label, *(fmt(getattr(nc, n)[i]) for n in columns))
    return table


#: `ufm.train`'s default stopping tolerance on ‖∇L‖ (float64, float32); `ufm verify` trains to 1e-10.
_TRAIN_TOL = {True: 1e-9, False: 1e-4}


def _cmd_train(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", args.x64)
    import ufm

    spec = _spec_from_args(args)
    params = ufm.init_params(spec, seed=args.seed)
    with _Progress() as progress:
        progress.stage(
            f"training (at most {args.steps} steps, stops at ‖∇L‖ <= {_TRAIN_TOL[args.x64]:g})", total=args.steps
        )

        def callback(rec):
            progress.update(rec["step"], f"step {rec['step']}  loss {rec['loss']:.6g}  |∇L| {rec['grad_norm']:.1e}")

        result = ufm.train(
            spec, params, steps=args.steps, tol=_TRAIN_TOL[args.x64], log_every=args.log_every, callback=callback
        )
    nc = ufm.collapse.metrics(spec, result.params)
    console = _console()
    h = result.history
    console.print(_spec_text(spec, console.width), soft_wrap=True, markup=False)
    console.print(
        f"steps {result.steps}  loss {h['loss'][-1]:.12g}  |∇L| {h['grad_norm'][-1]:.2e}  converged {result.converged}"
    )
    if not result.converged:
        print(
            f"ufm: warning: training stopped at --steps {args.steps} with ‖∇L‖ = {h['grad_norm'][-1]:.2g} > "
            f"{_TRAIN_TOL[args.x64]:g}: not converged (raise --steps)",
            file=sys.stderr,
        )
    console.print(_nc_table(nc, "deep neural collapse per layer (0 = collapsed)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"spec": spec.to_dict(), "train": result.to_dict(), "collapse": nc.to_dict()}, f, indent=1)
    return 0


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


#: The width of the tables and the spec line when stdout is not a terminal (logs, pipes).
_WIDTH = 100


def _spec_text(spec, width: int = _WIDTH) -> str:
    """``UFMSpec(...)`` wrapped between fields, never inside a value."""
    items = [f"{k}={v!r}" for k, v in spec.to_dict().items()]
    lines, line = [], "UFMSpec("
    for i, item in enumerate(items):
        item += ")" if i == len(items) - 1 else ","
        if len(line) + 1 + len(item) > width and line.strip() not in ("UFMSpec(", ""):
            lines.append(line)
            line = "    " + item
        else:
            line += ("" if line.endswith("(") else " ") + item
    return "\n".join(lines + [line])


def _report_table(report):
    """The checks, one row each, under a bold row per group; fits `_WIDTH` columns (a name wraps at most once)."""
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
    from . import plotting

    fig = plotting.layer_spectra_figure(report)
    plotting.savefig(fig, path)


def _refuse_without_dnc_point(spec) -> None:
    """Before any training: a spec whose closed form has no collapsed DNC point is refused (exit 2)."""
    from . import theory

    try:
        sol = theory.dnc_solution(spec)
    except ValueError as e:  # CE without a critical point, softplus, ReLU with CE
        raise _ArgumentError(f"nothing to verify: {e}") from None
    if sol.collapsed_to_zero:  # docs/theory.md §3
        raise _ArgumentError(
            f"nothing to verify: b = K^(L+1)·n·λ_H·Πλ_l = {sol.b:.4g} >= (L−1)^(L−1)/L^(2L) = {sol.b_bound:.4g} "
            f"(L = {spec.depth}), so the global minimiser is 0 and there is no collapsed DNC point; "
            "lower --lambda-W / --lambda-H"
        )


def _verify_one(spec, args, progress: _Progress, prefix: str = ""):
    """Build the state (train to collapse, or the constructed optimum) and verify it, stage by stage."""
    from .verification import TRAIN_TOL, collapsed_state, training_steps, verify

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
    import dataclasses

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


def _cmd_verify(args) -> int:
    import jax

    if args.x64 is False:
        raise _ArgumentError(
            "--x32: verify checks in float64 (its tolerances, down to 1e-8, are below float32's "
            "rounding 6e-8) whatever the flag; drop --x32 (`ufm train --x32` trains in float32)"
        )
    jax.config.update("jax_enable_x64", True)
    spec = _spec_from_args(args)
    console = _console()
    if args.grid:
        results, specs = [], list(_grid_specs(spec))
        for i, s in enumerate(specs):
            with _Progress() as progress:
                r = _verify_one(
                    s, args, progress, f"[{i + 1}/{len(specs)}] L={s.depth} K={s.num_classes} {s.loss} {s.activation}: "
                )
            w = _worst(r)
            results.append(
                {
                    "spec": s.to_dict(),
                    "passed": r.passed,
                    "worst": w.to_dict(),
                    "seconds": r.info["seconds"],
                    "failed": [c.to_dict() for c in r.failed],
                }
            )
            console.print(
                f"{'ok  ' if r.passed else 'FAIL'} L={s.depth} K={s.num_classes} d={s.width} {s.loss:3s} "
                f"{s.activation:6s} worst: {w.group} / {w.name} err {w.error:.1e} (tol {w.tolerance:.0e}) "
                f"[{r.info['seconds']:.1f} s]"
            )
        passed = all(r["passed"] for r in results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"passed": passed, "grid": results}, f, indent=1)
        return 0 if passed else 1
    _refuse_without_dnc_point(spec)
    with _Progress() as progress:
        report = _verify_one(spec, args, progress)
    console.print(_spec_text(spec, console.width), soft_wrap=True, markup=False)
    info = report.info
    if info.get("train_converged") is False:  # said before the table, and a FAIL row in it
        console.print(
            f"[bold red]not converged:[/bold red] training stopped at its {info['train_step_cap']}-step cap "
            f"with ‖∇L‖ = {info['grad_norm']:.2g} > {info['train_tol']:g}; the checks compare the theory "
            "with a state that is not a verified optimum"
        )
    console.print(_report_table(report))
    if any(not c.required for c in report.checks):
        console.print("info / off: informational checks (not counted in the verdict) that match / do not match")
    extra = f"{info.get('train_steps', 0)} training steps, " if "train_steps" in info else ""
    console.print(f"{len(report.checks)} checks, {len(report.failed)} failed; {extra}{info['seconds']:.1f} s")
    for what, why in info.get("skipped", {}).items():
        console.print(f"skipped {what}: {why}")
    if args.json:
        report.to_json(args.json)
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
    return 0


def _cmd_theory(args) -> int:
    from .theory import symbolic

    print(symbolic.latex_report() if args.latex else symbolic.text_report())
    return 0


def _cmd_real(args) -> int:
    import jax

    if args.x64 is not None:  # default: untouched (training in float32, analysis in a local x64 context)
        jax.config.update("jax_enable_x64", args.x64)
    from . import networks

    try:
        with _Progress() as progress:
            progress.stage(f"training {args.model} on {args.dataset}")

            def callback(rec):
                if "stage" in rec:  # run_real's training is over: the next stage starts
                    progress.stage(rec["stage"])
                else:
                    progress.update(
                        rec.get("step"),
                        " ".join(
                            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in rec.items()
                            if not hasattr(v, "__len__")
                        ),
                    )

            report, _history = networks.run_real(
                dataset=args.dataset,
                model=args.model,
                loss=args.loss,
                quick=args.quick,
                seed=args.seed,
                depth=args.depth,
                width=args.width,
                activation=args.activation,
                steps=args.steps,
                data_dir=args.data_dir,
                checkpoint=args.checkpoint,
                callback=callback,
            )
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise _ArgumentError(str(e)) from None
    return _emit_network_report(report, args)


def _emit_network_report(report, args) -> int:
    """The table on stdout, ``--json`` / ``--plot`` files, and the verdict on stderr when the head
    did not collapse (``ufm real`` and ``ufm analyze``); exit 1 when a Krylov measurement did not
    converge."""
    from . import networks

    print(networks.format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from . import plotting

        plotting.savefig(plotting.real_network_figure(report), args.plot)
    unconverged = not all(report.verdict["converged"]) or (report.network is not None and not report.network.converged)
    if unconverged:  # a measurement that missed its tolerance is a failed run, not a warning
        print(
            "ufm: a Krylov measurement did not converge (see the table); its eigenvalues are not trustworthy",
            file=sys.stderr,
        )
        return 1
    if not report.verdict["all_collapsed"]:
        print(f"ufm: warning: {report.verdict['summary']}", file=sys.stderr)
    return 0


def _cmd_analyze(args) -> int:
    """``ufm analyze PATH.npz``: a head saved from any framework (format: ``ufm.networks._saved``)."""
    from . import networks

    if args.dense_max < 1:
        raise _ArgumentError(f"--dense-max must be >= 1, got {args.dense_max}")
    try:
        arrays = networks.load_features(args.path)
        report = networks.analyze_features(**arrays, dense_max=args.dense_max, config={"source": str(args.path)})
    except (TypeError, ValueError) as e:
        raise _ArgumentError(f"{args.path}: {e}") from None
    return _emit_network_report(report, args)


def _figure_names() -> list[str]:
    from paper_figures import FIGURES

    return list(FIGURES)


def _cmd_figures(args) -> int:
    import paper_figures

    try:
        paper_figures.select(args.only)
    except ValueError as e:
        raise _ArgumentError(f"--{e}") from None
    for name, seconds, files in paper_figures.build(args.out, quick=args.quick, only=args.only):
        print(f"{name:28s} {seconds:7.1f} s  {', '.join(str(f) for f in files) or 'skipped'}")
    return 0


#: ``ufm dynamics <task>``: task -> the module of ``ufm.dynamics`` whose ``add_cli(subparsers)``
#: adds that task's parser (imported only when ``ufm dynamics`` is parsed).
DYNAMICS_TASKS = {
    "dmap": "ufm.dynamics.dmap",
    "ode": "ufm.dynamics.sgd_ode",
    "catapult": "ufm.dynamics.catapult",
    "align": "ufm.dynamics.align",
}


def _add_dynamics(sub, load: bool) -> None:
    """The ``dynamics`` parser; its task modules (JAX, experiments) load only when ``load``."""
    import importlib

    p = sub.add_parser("dynamics", help="spectra along training: " + ", ".join(DYNAMICS_TASKS))
    tasks = p.add_subparsers(dest="task", required=True, parser_class=_Parser)
    if load:
        for module in DYNAMICS_TASKS.values():
            importlib.import_module(module).add_cli(tasks)


def build_parser(argv=None) -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="ufm",
        description="Deep unconstrained feature models: collapse, spectra, figures.",
        epilog="`ufm COMMAND --help` describes a command's flags. Exit status: 0 success, "
        "1 a check failed, 2 bad arguments.",
    )
    parser.add_argument("--version", action="version", version=f"ufm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a deep UFM to collapse and print NC1-NC4 per layer",
        epilog="Line-search gradient descent from init_params(seed); stops at ‖∇L‖ <= 1e-9 (1e-4 with "
        "--x32) or after --steps, with a warning when it did not converge. `ufm verify` trains "
        "further, to ‖∇L‖ <= 1e-10, always in float64.",
    )
    _add_spec_args(p)
    p.add_argument("--steps", type=_POSITIVE, default=100_000, help="the most optimiser steps (default 100000)")
    p.add_argument("--log-every", type=_POSITIVE, default=1_000, help="steps between progress records")
    p.set_defaults(func=_cmd_train)

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
    _add_spec_args(p)
    p.add_argument("--from-optimum", action="store_true", help="construct the exact DNC optimum instead of training")
    p.add_argument("--grid", action="store_true", help="a small sweep over L, K, loss and activation")
    p.add_argument("--plot", metavar="PATH", help="plot each layer's spectrum with the predicted values")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("real", help="real networks on real data: collapse and Hessian outliers of a deep-UFM head")
    p.add_argument("--dataset", choices=["mnist", "digits", "gmm"], default="mnist")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--loss", choices=["mse", "ce"], default="mse")
    p.add_argument("--depth", "-L", type=int, default=3, help="head depth L (default 3)")
    p.add_argument("--width", "-d", type=int, default=32, help="head width d (default 32)")
    p.add_argument("--activation", choices=["linear", "relu"], default="linear", help="head activation")
    p.add_argument("--steps", type=_POSITIVE, default=None, help="training steps (default: the run's preset)")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--data-dir", default=None, help="another directory with the MNIST IDX files")
    p.add_argument("--checkpoint", default=None, help="npz checkpoint path: resume from / save to")
    p.add_argument("--seed", type=_SEED, default=0, help="PRNG seed, an integer >= 0 (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (its directory must exist)")
    p.add_argument("--plot", metavar="PATH", help="figure of predicted vs measured layer spectra")
    _add_precision_args(p, default=None)
    p.set_defaults(func=_cmd_real)

    p = sub.add_parser(
        "analyze",
        help="analyse a network's head saved from any framework (.npz: H1, labels, W1..WL, ...)",
        description="Collapse (NC1-NC4) per head layer, the class-mean and class-averaged predictions of each head "
        "layer's data-Hessian outliers, the measured blocks (autodiff on the head alone, float64) and "
        "their comparison, with a verdict. File format: README 'Analyse your own network'.",
        epilog="A legend under the table explains every column and states the thresholds of the verdict "
        "(ufm.networks.NC1_THRESHOLD, REL_ERROR_THRESHOLD).",
    )
    p.add_argument(
        "path",
        metavar="PATH.npz",
        help="H1 (N×d or d×N), labels, W1..WL (d_out×d_in), optional b1..bL and H2..HL, activation, loss",
    )
    p.add_argument("--json", metavar="PATH", help="write the report (the schema of `ufm real --json`)")
    p.add_argument("--plot", metavar="PATH", help="figure of predicted vs measured layer spectra (PDF + PNG)")
    p.add_argument(
        "--dense-max",
        type=int,
        default=4096,
        help="blocks up to this many parameters are measured densely, larger ones by Lanczos",
    )
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "figures",
        help="regenerate every paper figure (PDF + PNG + index.md)",
        epilog="figures: " + ", ".join(_figure_names()),
    )
    p.add_argument("--out", default="figs", help="output directory (default figs/)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (smoke test)")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="build only these figures (names or prefixes such as fig01; listed below)",
    )
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("theory", help="print the derived closed forms (plain text; --latex for LaTeX)")
    p.add_argument("--latex", action="store_true", help="as a LaTeX align* block")
    p.set_defaults(func=_cmd_theory)

    argv = sys.argv[1:] if argv is None else argv
    _add_dynamics(sub, load="dynamics" in argv)
    return parser


def _run_checking_convergence(args) -> int:
    """Run a ``ufm dynamics`` task; a Krylov solve in its probes that missed its tolerance
    (`ufm.curvature.ConvergenceWarning`) is a failed run: a line on stderr, ``"converged": false``
    with the solver's messages in the ``--json`` report, and exit 1 — never only a warning."""
    import warnings

    from .curvature import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        code = args.func(args)
    missed = sorted({str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)})
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            report = json.load(f)
        report.update(converged=not missed, convergence_warnings=missed)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not missed:
        return code
    print(
        f"ufm: {len(missed)} Krylov solve(s) in the probes did not converge; their spectra are not trustworthy: "
        f"{missed[0]}",
        file=sys.stderr,
    )
    return code or 1


def main(argv=None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ufm`: the usage and the command list
        parser.print_help(sys.stderr)
        return 2
    try:
        _check_outputs(args)
        if args.command == "dynamics":
            return _run_checking_convergence(args)
        return args.func(args)
    except _ArgumentError as e:
        print(f"ufm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ufm theory | head`: the reader left; no traceback (Python docs, signal.SIGPIPE note)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
