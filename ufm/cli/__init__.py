"""The ``ufm`` command line: the only part of the package that parses arguments, writes to
stderr, chooses exit codes, switches JAX's precision and writes result files.

One module per command (`train`, `verify`, `theory`, `real`, `analyze`, `figures`,
`dynamics`), each with ``add_parser(subparsers)`` and its runner; `main` parses and
runs one command and returns its exit status; `run` is the console script ``ufm`` and
``python -m ufm``.
"""

from ._main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
