"""``ufm train``: train a deep UFM to collapse and print NC1–NC4 per layer."""

from __future__ import annotations

import sys

from ._common import POSITIVE, Progress, console, set_precision, write_json
from ._spec import add_spec_args, check_spec_memory, spec_from_args, spec_text

__all__ = ["add_parser", "run"]

#: `ufm.train`'s default stopping tolerance on ‖∇L‖ (float64, float32); `ufm verify` trains to 1e-10.
TRAIN_TOL = {True: 1e-9, False: 1e-4}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a deep UFM to collapse and print NC1-NC4 per layer",
        epilog="Line-search gradient descent from init_params(seed); stops at ‖∇L‖ <= 1e-9 (1e-4 with "
        "--x32) or after --steps, with a warning when it did not converge. `ufm verify` trains "
        "further, to ‖∇L‖ <= 1e-10, always in float64.",
    )
    add_spec_args(p)
    p.add_argument("--steps", type=POSITIVE, default=100_000, help="the most optimiser steps (default 100000)")
    p.add_argument("--log-every", type=POSITIVE, default=1_000, help="steps between progress records")
    p.set_defaults(func=run)


def nc_table(nc, title):
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


def run(args) -> int:
    set_precision(args.x64)
    import ufm

    spec = spec_from_args(args)
    check_spec_memory(spec)
    params = ufm.init_params(spec, seed=args.seed)
    with Progress() as progress:
        progress.stage(
            f"training (at most {args.steps} steps, stops at ‖∇L‖ <= {TRAIN_TOL[args.x64]:g})", total=args.steps
        )

        def callback(rec):
            progress.update(rec["step"], f"step {rec['step']}  loss {rec['loss']:.6g}  |∇L| {rec['grad_norm']:.1e}")

        result = ufm.train(
            spec, params, steps=args.steps, tol=TRAIN_TOL[args.x64], log_every=args.log_every, callback=callback
        )
    nc = ufm.collapse.metrics(spec, result.params)
    out = console()
    h = result.history
    out.print(spec_text(spec, out.width), soft_wrap=True, markup=False)
    out.print(
        f"steps {result.steps}  loss {h['loss'][-1]:.12g}  |∇L| {h['grad_norm'][-1]:.2e}  converged {result.converged}"
    )
    if not result.converged:
        print(
            f"ufm: warning: training stopped at --steps {args.steps} with ‖∇L‖ = {h['grad_norm'][-1]:.2g} > "
            f"{TRAIN_TOL[args.x64]:g}: not converged (raise --steps)",
            file=sys.stderr,
        )
    out.print(nc_table(nc, "deep neural collapse per layer (0 = collapsed)"))
    if args.json:
        write_json({"spec": spec, "train": result, "collapse": nc}, args.json)
    return 0
