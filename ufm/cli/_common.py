"""What every command shares: the parser class, argument types, precision, progress, JSON files.

The CLI is the only place in ``ufm`` that parses arguments, writes to stderr, chooses exit codes,
switches JAX's precision and writes result files (``docs/DESIGN``: library / experiments / cli).
Exit status: 0 success, 1 a check failed or a solver missed its tolerance, 2 a user mistake (one
line on stderr, before any work), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

__all__ = [
    "UsageError",
    "Parser",
    "int_at_least",
    "SEED",
    "POSITIVE",
    "positive_float",
    "finite_float",
    "unit_float",
    "add_seed",
    "add_precision_args",
    "set_precision",
    "check_outputs",
    "check_memory",
    "write_json",
    "console",
    "Progress",
    "say",
    "finish",
    "WIDTH",
]

#: The width of the tables and the spec line when stdout is not a terminal (logs, pipes).
WIDTH = 100


class UsageError(Exception):
    """A user mistake: `ufm.cli.main` prints ``ufm: error: <message>`` on stderr and exits 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"ufm: error: {message}\n")


# ---- argument types: argparse turns their ArgumentTypeError into one line, exit 2 -----------------
def int_at_least(low: int):
    """An argparse type: an int >= ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's message: "invalid integer value: 'x'"
    return parse


#: ``--seed``, the one rule of every command: an integer >= 0, default 0, the root of every PRNG key
#: and data draw of the command.
SEED = int_at_least(0)
#: Counts (steps, samples, classes, checkpoints, ...): integers >= 1.
POSITIVE = int_at_least(1)


def finite_float(text: str) -> float:
    """An argparse type: a finite float (no NaN, no ±inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


finite_float.__name__ = "number"


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0 (learning rates, tolerances, scales)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


positive_float.__name__ = "number"


def unit_float(text: str) -> float:
    """An argparse type: a float in [0, 1]."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


unit_float.__name__ = "number"


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed, an integer >= 0 (default 0)")


def add_precision_args(p: argparse.ArgumentParser, default: bool | None) -> None:
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


def set_precision(x64: bool | None) -> None:
    """The one place ``ufm`` switches JAX's precision process-wide (None: leave it)."""
    if x64 is None:
        return
    import jax

    jax.config.update("jax_enable_x64", bool(x64))


# ---- files and resources -------------------------------------------------------------------------
def check_outputs(args) -> None:
    """Refuse, before any work, an output path (``--json``, ``--plot``) that cannot be written."""
    for flag in ("json", "plot"):
        path = getattr(args, flag, None)
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UsageError(f"--{flag} {path}: the directory {folder} does not exist")
        if os.path.isdir(path):
            raise UsageError(f"--{flag} {path}: is a directory, expected a file path")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"--{flag} {path}: the directory {folder} is not writable")


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


#: Refuse a run whose estimated peak memory exceeds this fraction of the available memory.
MEMORY_FRACTION = 0.8


def check_memory(nbytes: float, what: str, hint: str) -> None:
    """Refuse (before allocating) a run whose largest object, ``nbytes``, would not fit in memory."""
    avail = available_memory()
    if nbytes > MEMORY_FRACTION * avail:
        raise UsageError(
            f"{what} needs about {nbytes / 2**30:.3g} GiB, more than {MEMORY_FRACTION:.0%} of the "
            f"{avail / 2**30:.3g} GiB available; {hint}"
        )


def write_json(result, path) -> None:
    """Write a result (or a dict of results) as strict JSON (`ufm.results.dump`: NaN -> null)."""
    from ..results import dump

    dump(result, path)


# ---- output ----------------------------------------------------------------------------------------
def console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, no_color=not tty, width=None if tty else WIDTH)


def say(text: str) -> None:
    """One progress line on stderr, the ``ufm: `` prefix of every command."""
    print(f"ufm: {text}", file=sys.stderr, flush=True)


def finish(result, args, *, summary: list[str], verdict: str | None = None) -> int:
    """End a command that produced ``result`` (any `ufm.results` type): the summary lines and the
    verdict on stdout, ``--json`` as strict JSON, and the status read from the result: when
    ``result.converged`` is False, one line on stderr with its first message and exit 1."""
    for line in summary:
        print(line)
    if verdict:
        print(f"verdict: {verdict}")
    if getattr(args, "json", None):
        write_json(result, args.json)
    if not result.converged:
        messages = tuple(result.messages)
        first = messages[0] if messages else "no message"
        more = f" (and {len(messages) - 1} more, see --json)" if len(messages) > 1 else ""
        print(f"ufm: the run did not converge: {first}{more}", file=sys.stderr)
        return 1
    return 0


class Progress:
    """Progress on stderr that follows the stage actually running.

    On a terminal: one live rich line (label, bar or spinner, info, elapsed), replaced at each
    `stage`. Elsewhere (a pipe, a CI log): one line when a stage starts, one when it ends with
    its time, and a heartbeat line at most every ``heartbeat`` seconds in between, so a log is
    never silent for long. ``with Progress() as p: p.stage("training", total=n); p.update(i, info)``.
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
        if exc[0] is not None and issubclass(exc[0], KeyboardInterrupt):
            self.label = None  # Ctrl-C: `ufm.cli.main` says it in one line
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
