"""``ufm analyze PATH.npz``: a network head saved from any framework, analysed as a deep UFM."""

from __future__ import annotations

import os
import zipfile

from ._common import POSITIVE, UsageError
from .real import EXIT_RULE, emit_network_report

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
        "(ufm.networks.NC1_THRESHOLD, REL_ERROR_THRESHOLD). " + EXIT_RULE,
    )
    p.add_argument(
        "path",
        metavar="PATH.npz",
        help="H1 (N×d or d×N), labels, W1..WL (d_out×d_in), optional b1..bL and H2..HL, activation, loss",
    )
    p.add_argument("--json", metavar="PATH", help="write the report (the schema of `ufm real --json`)")
    p.add_argument("--plot", metavar="PATH", help="figure of predicted vs measured layer spectra (PDF + PNG)")
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


def run(args) -> int:
    """``ufm analyze PATH.npz``: a head saved from any framework (format: ``ufm.networks._saved``)."""
    from .. import networks

    _check_file(args.path)
    try:
        arrays = networks.load_features(args.path)
        report = networks.analyze_features(**arrays, dense_max=args.dense_max, config={"source": str(args.path)})
    except (TypeError, ValueError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UsageError(f"{args.path}: {e}") from None
    return emit_network_report(report, args)
