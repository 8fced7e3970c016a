"""`ufm` command line: ``ufm train | verify | theory | real | analyze | figures | dynamics``.

Spec flags are generated from `UFMSpec`'s fields (``--num-classes``, ``--lambda-W``, ...).
Exit status: 0 success, 1 a check failed / a solver did not converge / the run diverged,
2 a user mistake (one line on stderr, before any work), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys

from . import analyze, figures, real, theory, train, verify
from ._common import Parser, UsageError, check_outputs

__all__ = ["build_parser", "main"]


def _add_dynamics(sub, load: bool) -> None:
    """The ``dynamics`` parser; its task modules (JAX, experiments) load only when ``load``."""
    if load:
        from . import dynamics

        dynamics.add_parser(sub)
    else:
        p = sub.add_parser("dynamics", help="spectra along training: dmap, ode, catapult, align")
        p.add_subparsers(dest="task", required=True, parser_class=Parser)


def build_parser(argv=None):
    from .. import __version__

    parser = Parser(
        prog="ufm",
        description="Deep unconstrained feature models: collapse, spectra, figures.",
        epilog="`ufm COMMAND --help` describes a command's flags. Exit status: 0 success, "
        "1 a check failed or a solver did not converge, 2 bad arguments, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"ufm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (train, verify, real, analyze, figures, theory):
        module.add_parser(sub)
    argv = sys.argv[1:] if argv is None else argv
    _add_dynamics(sub, load="dynamics" in argv)
    return parser


def _interrupted(args) -> str:
    """The one line of a Ctrl-C: what stopped, and how to resume where a checkpoint path is used."""
    what = " ".join(x for x in (args.command, getattr(args, "task", None)) if isinstance(x, str))
    checkpoint = getattr(args, "checkpoint", None)
    resume = f"; rerun the same command to resume from {checkpoint}" if checkpoint else ""
    return f"ufm: interrupted: {what} stopped (Ctrl-C){resume}"


def main(argv=None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ufm`: the usage and the command list
        parser.print_help(sys.stderr)
        return 2
    try:
        check_outputs(args)
        return args.func(args)
    except UsageError as e:
        print(f"ufm: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # ufm.TrainingDiverged and friends: the run diverged
        print(f"ufm: error: the run diverged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ufm theory | head`: the reader left; no traceback (Python docs, signal.SIGPIPE note)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
