"""The maths documentation under ``docs/`` and the citations into it.

Code, help texts, captions and the docs themselves cite ``docs/<file>.md §N``; every
cited section must exist as a numbered Markdown heading of that file
(``## §4. ...``, ``### §4.2 ...``, ``## §D1. ...``; the ``§`` and the trailing dot are
optional). The older citation form, to the project's shared notes outside the repository,
must be gone.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCE_DIRS = ("ufm", "paper_figures", "benchmarks", "tests")
SOURCE_FILES = ("README.md",)
SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg"}
# Spelled in two parts so that a merge-time rewrite of the old citations leaves this file alone.
OLD_NOTES = ("MATH" + ".md", "DYNAMICS" + ".md")

_HEADING = re.compile(r"^#{1,6}\s+§?(D?\d+(?:\.\d+)*)(?=[.\s]|$)", re.MULTILINE)
_CODE_CITE = re.compile(r"docs/([a-z0-9_]+)\.md")
_DOCS_CITE = re.compile(r"(?<![\w/.-])(?:docs/)?([a-z0-9_]+)\.md")
_SECTION = re.compile(r"§\s?(D?)(\d+(?:\.\d+)*)(?:\s*[–-]\s*§?(D?)(\d+(?:\.\d+)*))?")
_TAIL_STOP = re.compile(r"[);]|\.md|\.\s|\n\s*\n")


def headings(text: str) -> set[str]:
    """Section ids of the numbered headings of a Markdown text: ``{"1", "4.2", "D1", ...}``."""
    return set(_HEADING.findall(text))


def _expand(p1, a, p2, b) -> list[str]:
    """``§4–§6`` → 4, 5, 6 (whole numbers with one prefix); anything else → both ends."""
    if b is None:
        return [p1 + a]
    if (p2 or p1) == p1 and a.isdigit() and b.isdigit() and int(a) <= int(b):
        return [f"{p1}{i}" for i in range(int(a), int(b) + 1)]
    return [p1 + a, (p2 or p1) + b]


def citations(text: str, *, in_docs: bool = False) -> list[tuple[int, str, str]]:
    """``(line, doc name, section)`` of every ``docs/<name>.md §N`` citation in ``text``.

    The sections are the ``§`` tokens after the file name, up to a ``)``, ``;``, the end of
    a sentence, a blank line or the next file name, on the same line or the next one when
    the file name ends a line (``§4–§6`` expands to 4, 5, 6). Inside ``docs/`` the
    ``docs/`` prefix is optional (``theory.md §4`` cites a sibling file).
    """
    out = []
    for m in (_DOCS_CITE if in_docs else _CODE_CITE).finditer(text):
        tail = text[m.end() : m.end() + 200]
        first_line, _, rest = tail.partition("\n")
        if "§" not in first_line and rest.lstrip().startswith("§"):
            tail = first_line + " " + rest.lstrip()
        else:
            tail = first_line
        stop = _TAIL_STOP.search(tail)
        tail = tail[: stop.start()] if stop else tail
        line = text.count("\n", 0, m.start()) + 1
        for p1, a, p2, b in _SECTION.findall(tail):
            for sec in _expand(p1, a, p2 or None, b or None):
                out.append((line, m.group(1), sec))
    return out


def _source_files():
    for d in SOURCE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.is_file() and p.suffix in SUFFIXES and p.resolve() != pathlib.Path(__file__).resolve():
                yield p
    for f in SOURCE_FILES:
        if (ROOT / f).is_file():
            yield ROOT / f


def _all_citations():
    for p in _source_files():
        for line, doc, sec in citations(p.read_text(encoding="utf-8", errors="replace")):
            yield f"{p.relative_to(ROOT)}:{line}", doc, sec
    for p in sorted(DOCS.glob("*.md")):
        for line, doc, sec in citations(p.read_text(encoding="utf-8"), in_docs=True):
            yield f"{p.relative_to(ROOT)}:{line}", doc, sec


# ---- the parser itself -------------------------------------------------------------------------
def test_parser_reads_every_citation_form():
    text = (
        '"""Data (``docs/theory.md`` §4–§6) and (``docs/theory.md`` §3 MSE, §5 CE).\n'
        "See docs/theory.md §8.2's note; docs/dynamics.md §D1, §D2–§D3. Not §9.\n"
        "the notes ``docs/theory.md``\n    §2 (next line) and docs/theory.md without a section.\n"
    )
    got = [(line, doc, sec) for line, doc, sec in citations(text)]
    assert got == [
        (1, "theory", "4"),
        (1, "theory", "5"),
        (1, "theory", "6"),
        (1, "theory", "3"),
        (1, "theory", "5"),
        (2, "theory", "8.2"),
        (2, "dynamics", "D1"),
        (2, "dynamics", "D2"),
        (2, "dynamics", "D3"),
        (3, "theory", "2"),
    ]
    assert citations("(`theory.md` §4.4) [x](theory.md)", in_docs=True) == [(1, "theory", "4.4")]
    assert citations("DESIGN.md §2 and README.md §1") == []


def test_headings_parser():
    text = "# Title\n## §1. Model\n### §1.4 vec\n## 3. Old style\n## §D2. SGD\n#### §8.10 Other\nnot # §9\n"
    assert headings(text) == {"1", "1.4", "3", "D2", "8.10"}


# ---- the docs --------------------------------------------------------------------------------
def test_theory_keeps_the_shared_numbering():
    """§1–§8 of the earlier shared notes map 1:1 onto docs/theory.md; §8.1–§8.8 are its corrections."""
    ids = headings((DOCS / "theory.md").read_text(encoding="utf-8"))
    assert {str(i) for i in range(1, 12)} <= ids
    assert {f"8.{i}" for i in range(1, 9)} <= ids


def test_dynamics_keeps_the_shared_numbering():
    ids = headings((DOCS / "dynamics.md").read_text(encoding="utf-8"))
    assert {f"D{i}" for i in range(1, 6)} <= ids


def test_every_cited_section_exists():
    """(a) Each ``docs/<file>.md §N`` in ufm/, paper_figures/, benchmarks/, tests/, README.md
    and docs/ names an existing file and one of its numbered headings."""
    cache, missing, count = {}, [], 0
    for where, doc, sec in _all_citations():
        count += 1
        path = DOCS / f"{doc}.md"
        if doc not in cache:
            cache[doc] = headings(path.read_text(encoding="utf-8")) if path.is_file() else None
        if cache[doc] is None:
            missing.append(f"{where}: docs/{doc}.md does not exist")
        elif sec not in cache[doc]:
            missing.append(f"{where}: docs/{doc}.md has no heading §{sec}")
    assert count > 0, "no citation found at all: the parser is broken"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("old", OLD_NOTES)
def test_no_citation_of_the_old_notes_remains(old):
    """(b) The code cites the shipped docs, not notes outside the repository."""
    left = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _source_files()
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if old in line
    ]
    assert not left, f"{len(left)} lines still cite {old}:\n" + "\n".join(left)


# ---- the function index (docs/theory.md §11) names what exists ------------------------------
_INDEX_NAME = re.compile(r"`([A-Za-z_][\w.]*(?:\.\*)?)`")


def index_names() -> list[tuple[str, str]]:
    """``(row, qualified name)`` for every backticked name in the first column of §11.

    A dotted name (``curvature.hessian``) is looked up from ``ufm``; a bare name from the module
    of the row's last dotted name (``curvature.hessian``, ``ggn`` -> ``ufm.curvature.ggn``), or
    from ``ufm`` itself when the row has none; ``theory.symbolic.*`` names a module.
    """
    text = (DOCS / "theory.md").read_text(encoding="utf-8")
    section = text.split("## §11.", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines()[3:]:  # past the heading, the blank line and the table's header
        if not line.startswith("| `"):
            continue
        module = None
        for name in _INDEX_NAME.findall(line.split("|")[1]):
            out.append((line, name if "." in name or module is None else f"{module}.{name}"))
            if "." in name and not name.endswith(".*"):
                module = name.rsplit(".", 1)[0]
    assert len(out) > 30, "the §11 table was not found or not parsed"
    return out


def _resolve(name: str):
    import importlib

    import ufm

    if name.endswith(".*"):
        return importlib.import_module("ufm." + name[:-2])
    obj = ufm
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_function_index_names_exist():
    """Every backticked name in the index of docs/theory.md §11 (functions and types) exists."""
    missing = []
    for line, name in index_names():
        try:
            _resolve(name)
        except (AttributeError, ImportError):
            missing.append(f"ufm.{name} (row: {line.split('|')[1].strip()})")
    assert not missing, "docs/theory.md §11 names what ufm does not have:\n" + "\n".join(missing)


def test_function_index_covers_dynamics():
    """The index lists the ``ufm.dynamics`` library: record, probes, the ODE, catapults, diffusion maps."""
    names = {name for _, name in index_names()}
    for needed in ("dynamics.record", "dynamics.spectral_probe", "dynamics.solve_sgd_ode", "dynamics.diffusion_map"):
        assert needed in names


# ---- claims of docs/theory.md that no ufm function computes: checked against dense autodiff ----
def test_gauss_newton_part_of_the_full_hessian():
    """§4.7: the GN part over W_1..W_L at the linear MSE optimum has rank K², value (γ/(1−γ)) Σ λ_l."""
    import jax.numpy as jnp
    import numpy as np

    from ufm import curvature, theory
    from ufm.model import forward
    from ufm.spec import UFMSpec

    spec = UFMSpec(num_classes=3, per_class=2, depth=2, width=(5, 4), lambda_H=1e-2, lambda_W=(1e-2, 3e-2))
    sol = theory.dnc_solution(spec)
    params = theory.construct_optimum(spec, 1)
    Y = jnp.asarray(spec.targets)
    G = curvature.ggn(
        lambda p: forward(spec, p).output, lambda Z: 0.5 * jnp.sum((Z - Y) ** 2) / Z.shape[1], params, leaves=[1, 2]
    )
    ev = np.sort(np.linalg.eigvalsh(np.asarray(G)))[::-1]
    value = sol.gamma / sol.one_minus_scale * sum(spec.lambdas)
    np.testing.assert_allclose(ev[:9], value, rtol=1e-12)
    assert np.all(np.abs(ev[9:]) < 1e-12 * value)


def test_relu_grad0_scales_the_off_diagonal_outliers():
    """§6: with σ'(0) = t, layer l < L has K outliers at λγ/(1−γ) and K(K−1) at t^{2(L−l)}λγ/(1−γ)."""
    import numpy as np

    from ufm import curvature, theory
    from ufm.model import loss_fn
    from ufm.spec import UFMSpec

    t, K, L = 0.5, 3, 3
    spec = UFMSpec(
        num_classes=K, per_class=2, depth=L, width=6, activation="relu", relu_grad0=t, lambda_H=1e-2, lambda_W=1e-2
    )
    sol = theory.dnc_solution(spec)
    params = theory.construct_optimum(spec, 0)
    outlier = 1e-2 * sol.gamma / sol.one_minus_scale
    for l in range(1, L + 1):
        H = np.asarray(curvature.hessian(loss_fn(spec, regularized=False), params, leaves=[l]))
        ev = np.sort(np.linalg.eigvalsh(H))[::-1]
        expected = np.r_[np.full(K, outlier), np.full(K * (K - 1), t ** (2 * (L - l)) * outlier)]
        np.testing.assert_allclose(np.sort(ev[: K * K])[::-1], np.sort(expected)[::-1], rtol=1e-10)
        assert np.all(np.abs(ev[K * K :]) < 1e-12 * outlier)
