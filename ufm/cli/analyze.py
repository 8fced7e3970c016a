"""``ufm analyze PATH.npz [PATH.npz ...]``: a network head (or a checkpoint series) saved from any framework."""

from __future__ import annotations

import os
import sys
import zipfile

from ._common import POSITIVE, UsageError, write_json
from .real import EXIT_RULE, emit_network_report

#: How a series of checkpoints exits (``--help``, README).
SERIES_RULE = (
    "Several files are a checkpoint series, analysed in the order given (an integer 'step' key labels each): "
    'one table row per checkpoint and layer, --json writes {"checkpoints": [<the single-file report with '
    '"file" and "step">, ...]}, --plot draws NC1 and the prediction errors along the series and the error '
    "against NC1; the LAST checkpoint's verdict decides the exit status."
)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from ..curvature import DEFAULT_DENSE_MAX  # the package's one dense threshold

    p = sub.add_parser(
        "analyze",
        help="analyse a network's head saved from any framework (.npz: H1, labels, W1..WL, ...)",
        description="Collapse (NC1-NC4) per head layer, the class-mean and class-averaged predictions of each head "
        "layer's data-Hessian outliers, the measured blocks (autodiff on the head alone, float64) and "
        "their comparison, with a verdict. File format: README 'Analyse your own network'.",
        epilog="A legend under the table explains every column and states the thresholds of the verdict "
        "(ufm.networks.NC1_THRESHOLD, REL_ERROR_THRESHOLD). " + EXIT_RULE + " " + SERIES_RULE,
    )
    p.add_argument(
        "path",
        metavar="PATH.npz",
        nargs="+",
        help="H1 (N×d or d×N), labels, W1..WL (d_out×d_in), optional b1..bL, H2..HL and step, activation, loss; "
        "several files: a checkpoint series",
    )
    p.add_argument("--json", metavar="PATH", help="write the report (the schema of `ufm real --json`)")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="figure of predicted vs measured layer spectra; for a series, NC1 and the errors along it (PDF + PNG)",
    )
    p.add_argument(
        "--dense-max",
        type=POSITIVE,
        default=DEFAULT_DENSE_MAX,
        help="blocks up to this many parameters are measured densely, larger ones by Lanczos "
        "(default: ufm.curvature.DEFAULT_DENSE_MAX)",
    )
    p.set_defaults(func=run)


def _check_file(path) -> None:
    """A missing, empty or corrupted ``.npz`` is a user mistake, said in one line before any work."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise UsageError(f"{path}: not a readable .npz file: it is empty (numpy.savez writes a zip archive)")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a readable .npz file (numpy.savez writes a zip archive; this is not one)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UsageError(f"{path}: not a readable .npz file: corrupted ({e})") from None
    if bad is not None:
        raise UsageError(f"{path}: not a readable .npz file: corrupted (member {bad!r} fails its checksum)")


def _one(path, dense_max):
    from .. import networks

    _check_file(path)
    try:
        arrays = networks.load_features(path)
        step = networks.load_step(path)
        report = networks.analyze_features(**arrays, dense_max=dense_max, config={"source": str(path)})
    except (TypeError, ValueError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UsageError(f"{path}: {e}") from None
    return step, report


def run(args) -> int:
    """``ufm analyze PATH.npz ...``: a head saved from any framework (format: ``ufm.networks._saved``),
    or a checkpoint series of them (`SERIES_RULE`)."""
    paths = list(args.path)
    if len(paths) == 1:
        _, report = _one(paths[0], args.dense_max)
        return emit_network_report(report, args)
    for path in paths:  # every file is checked before any work
        _check_file(path)
    from .. import networks

    entries = [(path, *_one(path, args.dense_max)) for path in paths]
    print(networks.series_table(entries))
    if args.json:
        doc = {"checkpoints": [{"file": str(path), "step": step, **report.to_dict()} for path, step, report in entries]}
        write_json(doc, args.json)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from ..plotting import savefig
        from ..plotting.real import checkpoint_series_figure

        savefig(checkpoint_series_figure(entries), args.plot)
    last = entries[-1][2]
    if last.verdict["passed"] and last.converged:
        return 0
    print(f"ufm: verdict of the last checkpoint ({entries[-1][0]}): {last.verdict['status']}", file=sys.stderr)
    return 1
