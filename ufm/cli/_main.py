"""`ufm` command line: ``ufm train | verify | theory | real | analyze | figures | dynamics``.

Spec flags are generated from `UFMSpec`'s fields (``--num-classes``, ``--lambda-W``, ...).
Exit status: 0 success, 1 a check failed / a solver did not converge / the run diverged,
2 a user mistake (one line on stderr, before any work), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import sys
import threading

from . import analyze, figures, real, theory, train, verify
from ._common import Parser, UsageError, check_outputs

__all__ = ["build_parser", "main", "run"]


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


@contextlib.contextmanager
def _ctrl_c_not_lost():
    """While a command runs, a Ctrl-C that Python raised where it ignores exceptions is sent again.

    Python raises KeyboardInterrupt in whatever Python code runs next in the main thread. When
    that is a gc callback (JAX registers one, ``jax._src.lib._xla_gc_callback``) or a
    ``__del__``, the exception goes to `sys.unraisablehook`, which printed a traceback and
    dropped it, and training went on (1 Ctrl-C in 60). Here the hook has the interrupt sent
    again, 10 ms later from a timer thread (sent at once, it would be raised inside the hook,
    and lost there), so KeyboardInterrupt lands in ordinary Python code; other unraisable
    exceptions go to the previous hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Timer(0.01, _thread.interrupt_main).start()
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv=None) -> int:
    with _ctrl_c_not_lost():
        return _main(argv)


def _main(argv) -> int:
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


def run() -> None:
    """The console script ``ufm`` and ``python -m ufm``: `main`, then exit with its status.

    After Ctrl-C the interpreter's teardown is skipped (``os._exit`` once stdout and stderr
    are flushed): the interrupted XLA computation may still be running on the runtime's own
    threads, and finalising the runtime under them crashed the process with SIGSEGV after
    the one line was printed (once in CI, in `tests/test_cli_errors.py`).
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
