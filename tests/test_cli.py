"""`ufm train`, `ufm real` and `ufm theory` end to end (verify has its own file)."""

import json

import pytest

from ufm import cli
from ufm.cli._spec import spec_from_args  # private: the flag -> UFMSpec mapping is the subject


def test_train_prints_the_nc_table_and_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    args = ["train", "--num-classes", "2", "--per-class", "2", "--depth", "2", "--width", "3", "--json", str(path)]
    assert cli.main(args) == 0
    assert "NC1" in capsys.readouterr().out
    result = json.loads(path.read_text())
    assert result["train"]["converged"] and max(result["collapse"]["nc1"]) < 1e-8


@pytest.mark.slow  # 21 s; the experiment itself runs in test_run_real_quick_smoke
def test_real_quick_on_digits_writes_table_json_and_figure(tmp_path, capsys):
    import jax

    path, plot = tmp_path / "real.json", tmp_path / "real"
    assert cli.main(["real", "--dataset", "digits", "--quick", "--json", str(path), "--plot", str(plot)]) == 0
    assert "W_1" in capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["train_accuracy"] == 1.0 and len(report["layers"]) == 3
    for ext in ("png", "pdf"):
        assert (tmp_path / f"real.{ext}").stat().st_size > 1000
    assert jax.config.jax_enable_x64  # the command leaves the process's float64 setting alone


def test_theory_latex(capsys):
    assert cli.main(["theory", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\gamma" in out and out.count("\n") > 5


def test_spec_flags_are_generated_from_the_spec_fields(capsys):
    import dataclasses

    from ufm.spec import UFMSpec

    parser = cli.build_parser()
    args = parser.parse_args(["verify", "--relu-grad0", "0.25", "--width", "8", "9", "-L", "2", "--x32"])
    spec = spec_from_args(args)
    assert spec.relu_grad0 == 0.25 and spec.width == (8, 9) and args.x64 is False  # the spec's interval, not {0, 1}
    assert parser.parse_args(["verify"]).x64 is True and parser.parse_args(["real"]).x64 is None
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(UFMSpec):
        assert "--" + f.name.replace("_", "-") in help_text
    assert cli.main(["train", "--relu-grad0", "1.5"]) == 2  # outside [0, 1]: one line, exit 2
    err = capsys.readouterr().err
    assert "relu_grad0" in err and err.count("\n") == 1
