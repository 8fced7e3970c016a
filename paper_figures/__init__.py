"""The paper figures, one module per figure, each a few lines over the public ``ufm`` API.

``build(out_dir, quick=False, only=None)`` writes ``<name>.pdf`` / ``<name>.png`` per figure
and a gallery ``index.md`` with each figure's caption (spec and seed); computed data is
cached in ``out_dir/cache`` (npz), so a second build only re-plots. ``quick`` builds every
figure at reduced size (the CI smoke test). ``python -m paper_figures --help``.
"""

from __future__ import annotations

import importlib
import json
import os
import time

from ._common import FigureResult

__all__ = ["FIGURES", "FigureResult", "build", "select"]

#: name -> module (in gallery order).
FIGURES = {
    "fig01_layer_spectra": "fig01_layer_spectra",
    "fig02_training_dynamics": "fig02_training_dynamics",
    "fig03_gauss_newton": "fig03_gauss_newton",
    "fig04_gradient": "fig04_gradient",
    "fig05_full_hessian": "fig05_full_hessian",
    "fig06_weights_geometry": "fig06_weights_geometry",
    "fig07_cross_entropy": "fig07_cross_entropy",
    "fig08_relu": "fig08_relu",
    "fig09_phase_diagram": "fig09_phase_diagram",
    "fig10_real_networks": "fig10_real_networks",
    "fig11_alignment": "fig11_alignment",
    "fig12_sgd_ode": "fig12_sgd_ode",
    "fig13_catapults": "fig13_catapults",
    "fig14_diffusion_maps": "fig14_diffusion_maps",
    "fig15_real_error_vs_nc1": "fig15_real_error_vs_nc1",
    "fig16_catapult_batch": "fig16_catapult_batch",
}


def _module(name: str):
    return importlib.import_module(f".{FIGURES[name]}", __name__)


def select(only=None) -> list[str]:
    """The figure names ``only`` picks (all when ``None``), in gallery order.

    Raises:
      ValueError: a name that matches no figure, or a prefix that matches several; the message
        lists the valid names.
    """
    names = list(FIGURES)
    if only is None:
        return names
    chosen = []
    for want in [only] if isinstance(only, str) else only:
        hits = [n for n in names if n == want or n.startswith(want)]
        if len(hits) != 1:
            why = f"ambiguous, matches {', '.join(hits)}" if hits else "no such figure"
            raise ValueError(f"only: {want!r}: {why}; figures are {', '.join(names)} (or a prefix such as fig01)")
        chosen.append(hits[0])
    return [n for n in names if n in chosen]


def build(
    out_dir, *, quick: bool = False, only=None, callback=None, gallery=None
) -> list[tuple[str, float, tuple[str, ...]]]:
    """Build the figures into ``out_dir``; returns ``[(name, seconds, files)]``.

    Args:
      out_dir: output folder (created); the cache lives in ``out_dir/cache``.
      quick: reduced sizes (seconds per figure), for CI.
      only: names (or unambiguous prefixes such as ``"fig01"``) of the figures to build.
      callback: ``callback(event: dict)`` (the package's one progress signature), called with
        ``{"stage": name, "index": i, "total": n}`` before each figure.
      gallery: also write the gallery page here (``docs/figures.md``), besides ``out_dir/index.md``.
    """
    from ._common import enable_x64

    names = select(only)
    enable_x64()
    os.makedirs(os.path.join(out_dir, "cache"), exist_ok=True)
    store = os.path.join(out_dir, "cache", "gallery.json")
    entries = {}
    if os.path.exists(store):
        with open(store) as f:
            entries = {k: v for k, v in json.load(f).items() if k in FIGURES and v.get("quick") == quick}
    results = []
    for i, name in enumerate(names):
        if callback is not None:
            callback({"stage": name, "index": i, "total": len(names)})
        t0 = time.perf_counter()
        res = _module(name).make(out_dir, quick=quick)
        files, caption = tuple(str(f) for f in res.files), res.caption
        dt = time.perf_counter() - t0
        results.append((name, dt, files))
        entries[name] = {"seconds": dt, "files": list(files), "caption": caption, "quick": quick}
        with open(store, "w") as f:
            json.dump(entries, f, indent=1)
    _write_gallery(out_dir, entries, quick)
    if gallery is not None:
        _write_gallery(out_dir, entries, quick, gallery)
    return results


def describe(name: str) -> tuple[str, str]:
    """``(title, what it demonstrates)`` of a figure: its module docstring's first line (after
    "Figure N:") and the rest of its first paragraph."""
    doc = (_module(name).__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    title, _, body = first.partition("\n")
    title = title.split(":", 1)[1].strip() if title.lower().startswith("figure") else title
    title = title[:1].upper() + title[1:]
    return title.rstrip("."), " ".join((body + " " + rest.split("\n\n")[0] if not body else body).split())


def _write_gallery(out_dir, entries: dict, quick: bool, path=None) -> str:
    """The gallery (default ``out_dir/index.md``): every figure built so far into ``out_dir`` (this
    call or an earlier one), in order, with its title, what it demonstrates, the command that
    makes it, the PNG and the caption (its numbers come from the data drawn)."""
    path = os.path.join(out_dir, "index.md") if path is None else os.fspath(path)
    flag = " --quick" if quick else ""
    lines = [
        "# Gallery: the paper figures" + (" (quick build: reduced sizes)" if quick else ""),
        "",
        f"Every figure of the paper, made by `ufm figures{flag}` (PDF and PNG; computed data is cached, so a",
        "second build only re-plots). This page is written by",
        f"`ufm figures{flag} --out {os.path.relpath(out_dir)} --gallery {os.path.relpath(path)}`.",
        "",
    ]
    for name in (n for n in FIGURES if n in entries):
        dt, files, caption = entries[name]["seconds"], entries[name]["files"], entries[name]["caption"]
        title, shows = describe(name)
        lines += [f"## {name}: {title}", ""]
        png = [f for f in files if f.endswith(".png")]
        if png:
            lines += [f"![{name}]({os.path.relpath(png[0], os.path.dirname(path) or '.')})", ""]
        lines += [
            f"**What it shows.** {shows}" if shows else "",
            "",
            f"**Caption.** {caption}",
            "",
            f"**Command.** `ufm figures{flag} --only {name.split('_')[0]}` ({dt:.1f} s in this build).",
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
