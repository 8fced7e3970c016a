"""`ufm` command line: ``ufm train | verify | theory | real | figures``.

Flags mirror `UFMSpec`'s field names. Exit status: 0 success, 1 a check failed, 2 bad
arguments (one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"ufm: error: {message}\n")


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (UFMSpec)")
    g.add_argument("--num-classes", "-K", type=int, default=4, help="K, number of classes (default 4)")
    g.add_argument("--per-class", "-n", type=int, default=5, help="n, samples per class (default 5)")
    g.add_argument("--depth", "-L", type=int, default=3, help="L, weight layers (default 3)")
    g.add_argument("--width", "-d", type=int, nargs="+", default=[16], help="d, one value or one per layer (default 16)")
    g.add_argument("--activation", choices=["linear", "relu", "softplus"], default="linear")
    g.add_argument("--relu-grad0", type=float, choices=[0.0, 1.0], default=0.0,
                   help="ReLU derivative at 0 (MATH §6); 1 reproduces the linear spectra")
    g.add_argument("--softplus-beta", type=float, default=20.0, help="sharpness of softplus(βx)/β")
    g.add_argument("--loss", choices=["mse", "ce"], default="mse")
    g.add_argument("--lambda-W", type=float, nargs="+", default=[1e-3], help="λ_W, one value or one per layer")
    g.add_argument("--lambda-H", type=float, default=1e-3, help="λ_H (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    x = p.add_mutually_exclusive_group()
    x.add_argument("--x64", dest="x64", action="store_true", default=True, help="float64 (default)")
    x.add_argument("--x32", dest="x64", action="store_false", help="float32")


def _spec_from_args(args):
    from .spec import UFMSpec

    one = lambda v: v[0] if len(v) == 1 else tuple(v)  # noqa: E731
    try:
        return UFMSpec(
            num_classes=args.num_classes, per_class=args.per_class, depth=args.depth,
            width=one(args.width), activation=args.activation, loss=args.loss,
            lambda_H=args.lambda_H, lambda_W=one(args.lambda_W),
            relu_grad0=args.relu_grad0, softplus_beta=args.softplus_beta,
        )
    except (TypeError, ValueError) as e:
        raise _ArgumentError(str(e)) from None


def _console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, no_color=not tty, width=None if tty else 120)


def _progress(total: int, description: str):
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.console import Console

    console = Console(stderr=True)
    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)


def _nc_table(nc, title):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("layer")
    columns = {"nc1": "NC1", "nc1_uncentred": "NC1 (uncentred)", "of_distance": "NC2 OF",
               "etf_distance": "NC2 ETF", "equinorm": "equinorm", "nc3": "NC3", "duality": "duality", "nc4": "NC4"}
    for header in columns.values():
        table.add_column(header, justify="right")
    fmt = lambda x: "-" if x != x else f"{x:.2e}"  # noqa: E731
    for i in range(nc.num_layers):
        label = f"H~{i + 1}" if i < nc.num_layers - 1 else "Z"
        table.add_row(label, *(fmt(getattr(nc, n)[i]) for n in columns))
    return table


def _cmd_train(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", args.x64)
    import ufm

    spec = _spec_from_args(args)
    params = ufm.init_params(spec, seed=args.seed)
    with _progress(args.steps, "training") as bar:
        task = bar.add_task("train", total=args.steps, info="")

        def callback(rec):
            bar.update(task, completed=rec["step"], info=f"loss {rec['loss']:.6g} |∇| {rec['grad_norm']:.1e}")

        result = ufm.train(spec, params, steps=args.steps, log_every=args.log_every, callback=callback)
    nc = ufm.collapse.metrics(spec, result.params)
    console = _console()
    h = result.history
    console.print(f"{spec}")
    console.print(f"steps {result.steps}  loss {h['loss'][-1]:.12g}  |∇L| {h['grad_norm'][-1]:.2e}  "
                  f"converged {result.converged}")
    console.print(_nc_table(nc, "deep neural collapse per layer (0 = collapsed)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"spec": spec.to_dict(), "train": result.to_dict(), "collapse": nc.to_dict()}, f, indent=1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ufm", description="Deep unconstrained feature models: collapse, spectra, figures.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a deep UFM to collapse and print NC1-NC4 per layer")
    _add_spec_args(p)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--log-every", type=int, default=1_000)
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _ArgumentError as e:
        print(f"ufm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
