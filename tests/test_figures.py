"""Every paper figure builds in quick mode and writes a non-empty PDF and PNG; the style is local.

One module-scoped output folder is shared, so the trained states (the linear-MSE trajectory,
the CE / ReLU / softplus states) are computed once through the figures' npz cache.
"""

import os

import matplotlib
import numpy as np
import pytest

import paper_figures
from paper_figures import _common


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


def _nonempty(path):
    return os.path.isfile(path) and os.path.getsize(path) > 1000


# the quick builds above 15 s whose experiments have tests of their own (alignment, the SGD ODE,
# real networks) run with -m slow, to keep the default suite under 10 minutes on 2 cores
SLOW_FIGURES = {"fig11_alignment", "fig12_sgd_ode", "fig15_real_error_vs_nc1"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FIGURES else n for n in paper_figures.FIGURES]
)
def test_figure_quick(name, out_dir):
    res = paper_figures._module(name).make(out_dir, quick=True)
    assert {os.path.splitext(f)[1] for f in res.files} == {".pdf", ".png"}
    for f in res.files:
        assert _nonempty(f), f
    with open([f for f in res.files if f.endswith(".png")][0], "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width_px = int.from_bytes(head[16:20], "big")  # IHDR width
    assert width_px in (round(3.25 * 300), round(6.75 * 300)), width_px  # one or two paper columns at 300 dpi
    with open([f for f in res.files if f.endswith(".pdf")][0], "rb") as fh:
        pdf = fh.read()
    assert pdf[:5] == b"%PDF-"
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType fonts embedded, no Type 3
    assert "seed" in res.caption or "closed form" in res.caption


def test_build_gallery_uses_cache(out_dir):
    """A second build reads the cache (every figure already built above) and writes index.md."""
    results = paper_figures.build(out_dir, quick=True, only=["fig01", "fig03"])
    assert [r[0] for r in results] == ["fig01_layer_spectra", "fig03_gauss_newton"]
    assert all(r[2] for r in results)
    paper_figures.build(out_dir, quick=True, only=["fig07"])  # the gallery keeps earlier entries
    text = open(os.path.join(out_dir, "index.md")).read()
    assert "fig01_layer_spectra.png" in text and "fig07_cross_entropy.png" in text
    assert "Skipped" not in text and "seed 0" in text
    with pytest.raises(ValueError, match="matches"):
        paper_figures.build(out_dir, quick=True, only=["fig"])


def test_cache_roundtrip(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3.0)}

    first = _common.cached(tmp_path, "x", {"k": 1}, compute)
    second = _common.cached(tmp_path, "x", {"k": 1}, compute)
    third = _common.cached(tmp_path, "x", {"k": 2}, compute)
    assert len(calls) == 2 and np.array_equal(first["a"], second["a"]) and np.array_equal(third["a"], first["a"])


def test_style_is_local_and_savefig_writes_both(tmp_path):
    from ufm import plotting

    before = dict(matplotlib.rcParams)
    with plotting.use_style():
        assert matplotlib.rcParams["font.size"] == plotting.STYLE["font.size"]
        fig, ax = plotting.figure()
        floor = plotting.plot_spectrum(ax, [1.0, 1.0, 1e-20, -1e-18])
        plotting.mark_value(ax, 1.0, "predicted")
    assert floor == pytest.approx(1e-14)
    assert dict(matplotlib.rcParams) == before
    paths = plotting.savefig(fig, tmp_path / "sub" / "f.png")
    assert [os.path.basename(p) for p in paths] == ["f.pdf", "f.png"] and all(_nonempty(p) for p in paths)
    with pytest.raises(ValueError, match="columns"):
        plotting.figure(columns=3)


def test_layer_spectra_figure_from_a_report(tmp_path):
    """`ufm verify --plot`: the figure reads the report's predicted and measured spectra, never check names."""
    import ufm
    from ufm import plotting
    from ufm.spectrum import Spectrum
    from ufm.verification import LayerSpectra, Report

    spec = ufm.UFMSpec(num_classes=2, per_class=2, depth=2, width=3)
    spectra = tuple(
        LayerSpectra(
            l, Spectrum(np.full(4, v), dim=4 + extra, bulk_value=0.0), Spectrum(np.r_[np.full(4, v), np.zeros(extra)])
        )
        for l, v, extra in ((1, 0.5, 5), (2, 0.25, 2))
    )
    fig = plotting.layer_spectra_figure(Report(spec, (), {"state": "test"}, spectra))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    for ax, pred in zip(
        visible, (s.predicted for s in spectra), strict=True
    ):  # one dashed line per predicted level, at its value
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() not in ("None", "none", "")]
        assert [ln.get_ydata()[0] for ln in dashed] == pytest.approx(pred.levels()[0].tolist())
    assert all(_nonempty(p) for p in plotting.savefig(fig, tmp_path / "v"))
    with pytest.raises(ValueError, match="spectra"):
        plotting.layer_spectra_figure(Report(spec, (), {}))


def test_gallery_page_has_every_figure():
    """docs/figures.md (written by ``ufm figures --out docs/figures --gallery docs/figures.md``)
    has an entry and a PNG for every figure in `paper_figures.FIGURES`."""
    root = os.path.join(os.path.dirname(__file__), "..", "docs")
    with open(os.path.join(root, "figures.md")) as f:
        page = f.read()
    for name in paper_figures.FIGURES:
        assert f"## {name}:" in page, f"docs/figures.md has no entry for {name}"
        assert f"](figures/{name}.png)" in page, name
        assert _nonempty(os.path.join(root, "figures", f"{name}.png")), name


def test_panels_are_lettered(tmp_path):
    from ufm import plotting

    with plotting.use_style():
        fig, axes = plotting.figure(1, 3, columns=2)
        axes[0].set_title("first")
        axes[2].set_title("third", loc="left")
        fig.colorbar(axes[1].imshow(np.eye(2)), ax=axes[1])
    plotting.savefig(fig, tmp_path / "f")
    assert axes[0].get_title() == "(a) first"
    assert axes[1].get_title("left") == "(b)"  # no title: the letter alone, at the left
    assert axes[2].get_title("left") == "(c) third"
    plotting.savefig(fig, tmp_path / "g")  # idempotent
    assert axes[0].get_title() == "(a) first"
