"""``ufm real``: a real network on real data — collapse and Hessian outliers of a deep-UFM head."""

from __future__ import annotations

import sys

from ._common import POSITIVE, Progress, UsageError, add_precision_args, add_seed, set_precision, write_json

__all__ = ["add_parser", "run", "emit_network_report"]


#: The exit rule of ``ufm real`` and ``ufm analyze`` (their ``--help`` and README state it).
EXIT_RULE = (
    "Exit status: 0 when the verdict holds (every head layer collapsed within class, every measurement "
    "converged, the predictions within the threshold); 1 when it does not (not collapsed, not converged, or "
    "the predictions miss: the verdict line says which); 2 on a user's mistake (one line on stderr)."
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "real",
        help="real networks on real data: collapse and Hessian outliers of a deep-UFM head",
        description="Train a network on real data and analyse its head as a deep UFM: collapse per head layer, "
        "predicted vs measured data-Hessian outliers, the whole-network spectrum, with a verdict.",
        epilog=EXIT_RULE,
    )
    p.add_argument("--dataset", choices=["mnist", "digits", "gmm"], default="mnist")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--loss", choices=["mse", "ce"], default="mse")
    p.add_argument("--depth", "-L", type=POSITIVE, default=3, help="head depth L (default 3)")
    p.add_argument("--width", "-d", type=POSITIVE, default=32, help="head width d (default 32)")
    p.add_argument("--activation", choices=["linear", "relu"], default="linear", help="head activation")
    p.add_argument("--steps", type=POSITIVE, default=None, help="training steps (default: the run's preset)")
    p.add_argument(
        "--per-class",
        type=POSITIVE,
        default=None,
        help="training samples per class (default: the preset, 50; at or above the smallest class, 892 on the "
        "shipped MNIST split, every image up to balance and no test set)",
    )
    p.add_argument(
        "--batch-size",
        type=POSITIVE,
        default=None,
        help="train on mini-batches of this size and stream the whole-network analysis in batches of it, so "
        "memory stays bounded (default: full batch up to 2000 samples, batches of 1000 past it)",
    )
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--data-dir", default=None, help="another directory with the MNIST IDX files")
    p.add_argument("--checkpoint", default=None, help="npz checkpoint path: resume from / save to")
    add_seed(p)
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (its directory must exist)")
    p.add_argument("--plot", metavar="PATH", help="figure of predicted vs measured layer spectra")
    add_precision_args(p, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    set_precision(args.x64)  # default None: untouched (training in float32, analysis in a local x64 context)
    from .. import networks

    try:
        with Progress() as progress:
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
                per_class=args.per_class,
                batch_size=args.batch_size,
                data_dir=args.data_dir,
                checkpoint=args.checkpoint,
                callback=callback,
            )
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    return emit_network_report(report, args)


def emit_network_report(report, args) -> int:
    """The table on stdout, ``--json`` / ``--plot`` files, and the exit status of ``ufm real`` /
    ``ufm analyze`` (`EXIT_RULE`): 0 when the verdict holds, 1 when it does not (the not-collapsed,
    not-converged or missed verdict repeated on stderr in one line)."""
    from .. import networks

    print(networks.format_table(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from .. import plotting

        plotting.savefig(plotting.real_network_figure(report), args.plot)
    verdict = report.verdict
    if verdict["passed"] and report.converged:
        return 0
    if verdict["passed"]:  # every layer and the network converged by the verdict, yet the report did not
        print("ufm: verdict: a measurement did NOT CONVERGE (see --json messages)", file=sys.stderr)
    else:
        print(f"ufm: verdict: {verdict['status']}: {verdict['summary']}", file=sys.stderr)
    return 1
