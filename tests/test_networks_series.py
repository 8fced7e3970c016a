"""`ufm analyze A.npz B.npz ...`: a checkpoint series (issue 22 item 4) and its exit rule.

The "checkpoints" are the saved heads of test_networks_saved with shrinking within-class noise;
NC1 is recomputed here in numpy from its definition, and the exit status must follow the LAST
file's verdict.
"""

import json

import numpy as np
import pytest
from test_networks_saved import _nc1_uncentred, _noisy_head, _save  # tests/ is on sys.path under pytest

from ufm import cli
from ufm import networks as nw


def _series(tmp_path, noises, steps):
    paths = []
    for i, (noise, step) in enumerate(zip(noises, steps, strict=True)):
        H1, y, Ws, _ = _noisy_head(noise)
        extra = {} if step is None else {"step": np.int64(step)}
        paths.append(str(_save(tmp_path / f"ck{i}.npz", H1, y, Ws, [], "linear", "mse", rows=False, **extra)))
    return paths


def test_series_json_table_plot_and_exit_by_the_last_checkpoint(tmp_path, capsys):
    noises, steps = (1.0, 0.1, 0.0), (100, 200, 300)
    paths = _series(tmp_path, noises, steps)
    out, fig = tmp_path / "s.json", tmp_path / "s.png"
    assert cli.main(["analyze", *paths, "--json", str(out), "--plot", str(fig)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = [line for line in captured.out.splitlines() if line.startswith(tuple(p[-22:] for p in paths))]
    assert len(rows) == 3 * 3  # 3 checkpoints × (W_1, W_2, the full head)
    doc = json.loads(out.read_text())
    cks = doc["checkpoints"]
    assert [c["file"] for c in cks] == paths and [c["step"] for c in cks] == list(steps)
    for c, noise in zip(cks, noises, strict=True):
        H1, y, _, _ = _noisy_head(noise)
        assert c["layers"][0]["nc1"] == pytest.approx(_nc1_uncentred(H1, y), rel=1e-6)
    assert cks[-1]["verdict"]["status"] == "holds" and cks[0]["verdict"]["status"] == "not collapsed"
    assert fig.exists() and fig.with_suffix(".pdf").exists()


def test_series_exits_1_when_the_last_checkpoint_fails(tmp_path, capsys):
    paths = _series(tmp_path, (0.0, 1.0), (None, None))  # no step key: the position labels it
    assert cli.main(["analyze", *paths]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last checkpoint" in err and "not collapsed" in err


def test_series_bad_step_is_exit_2(tmp_path, capsys):
    paths = _series(tmp_path, (0.0, 0.0), (1, None))
    H1, y, Ws, _ = _noisy_head(0.0)
    _save(tmp_path / "ck1.npz", H1, y, Ws, [], "linear", "mse", rows=False, step=np.float64(1.5))
    assert cli.main(["analyze", *paths]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'step'" in err


def test_series_help_says_the_last_checkpoint_decides(capsys):
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "LAST checkpoint's verdict decides the exit status" in out
    assert nw.load_step is not None


def test_series_table_says_when_a_krylov_measurement_did_not_converge(tmp_path):
    """A non-converged layer measurement is named on its row, not only counted in `holds`."""
    import dataclasses

    path = _series(tmp_path, (0.0,), (7,))[0]
    report = nw.analyze_features(**nw.load_features(path))
    assert "NOT CONVERGED" not in nw.series_table([(path, 7, report)])
    bad = dataclasses.replace(report.layers[0], converged=False, holds=False)
    report = dataclasses.replace(report, layers=[bad, *report.layers[1:]], converged=False)
    rows = [r for r in nw.series_table([(path, 7, report)]).splitlines() if "W_1" in r]
    assert len(rows) == 1 and rows[0].endswith("(Krylov NOT CONVERGED)")
