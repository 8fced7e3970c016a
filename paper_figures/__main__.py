"""``python -m paper_figures [--quick] [--only NAME ...] --out DIR``."""

import argparse
import sys

from . import FIGURES, build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (PDF + PNG per figure, index.md, cache/)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes: every figure in seconds (CI)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help=f"figures to build (names or prefixes): {list(FIGURES)}"
    )
    args = parser.parse_args(argv)
    try:
        results = build(args.out, quick=args.quick, only=args.only)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, seconds, files in results:
        print(f"{name:28s} {seconds:7.1f} s  {files[-1]}")
    print(f"gallery: {args.out}/index.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
