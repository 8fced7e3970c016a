"""``ufm figures``: regenerate the paper figures (PDF + PNG + index.md)."""

from __future__ import annotations

from ._common import Progress, UsageError

__all__ = ["add_parser", "run"]


def figure_names() -> list[str]:
    from paper_figures import FIGURES

    return list(FIGURES)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="regenerate every paper figure (PDF + PNG + index.md)",
        epilog="figures: " + ", ".join(figure_names()),
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
    p.add_argument(
        "--gallery",
        default=None,
        metavar="PATH",
        help="also write the gallery page (captions, commands, PNGs) to PATH, e.g. docs/figures.md",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import paper_figures

    try:
        paper_figures.select(args.only)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    with Progress() as progress:

        def stage(event):
            progress.stage(f"{event['stage']} ({event['index'] + 1}/{event['total']})")

        built = paper_figures.build(args.out, quick=args.quick, only=args.only, callback=stage, gallery=args.gallery)
    for name, seconds, files in built:
        print(f"{name:28s} {seconds:7.1f} s  {', '.join(str(f) for f in files) or 'skipped'}")
    print(f"total {sum(seconds for _, seconds, _ in built):.1f} s; gallery: {args.out}/index.md")
    return 0
