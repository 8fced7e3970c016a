"""``ufm theory``: print the derived closed forms (plain text, or LaTeX)."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("theory", help="print the derived closed forms (plain text; --latex for LaTeX)")
    p.add_argument("--latex", action="store_true", help="as a LaTeX align* block")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..theory import symbolic

    print(symbolic.latex_report() if args.latex else symbolic.text_report())
    return 0
