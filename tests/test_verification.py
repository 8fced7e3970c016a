"""`ufm verify`: end to end, the JSON schema, and failures where the theory does not apply."""

import json

import jax
import pytest

import ufm
from ufm import cli
from ufm.verification import collapsed_state, verify

TINY = ["--num-classes", "2", "--per-class", "2", "--depth", "2", "--width", "3"]


def test_cli_verify_trained_tiny_spec_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert cli.main(["verify", *TINY, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "outlier eigenvalues" in out and "FAIL" not in out
    report = json.loads(path.read_text())
    assert report["passed"] is True
    assert len(report["checks"]) > 10
    for check in report["checks"]:
        assert set(check) >= {"name", "predicted", "measured", "error", "tolerance", "passed"}
        assert isinstance(check["passed"], bool) and check["passed"]
        assert check["error"] <= check["tolerance"]
    names = {c["name"] for c in report["checks"]}
    assert any(n.startswith("full Hessian") for n in names)  # linear MSE has the full closed form


def test_cli_bad_arguments_exit_2(capsys):
    assert cli.main(["verify", "--num-classes", "4", "--width", "3"]) == 2
    err = capsys.readouterr().err
    assert "width" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", "--loss", "hinge"])
    assert e.value.code == 2


def _perturbed(spec, scale):
    p = ufm.theory.construct_optimum(spec, 0)
    noise = scale * jax.random.normal(jax.random.PRNGKey(1), p.H1.shape, p.H1.dtype)
    return p._replace(H1=p.H1 + noise)


def test_off_collapse_state_fails_the_right_checks():
    spec = ufm.UFMSpec(num_classes=3, per_class=3, depth=2, width=4)
    report = verify(spec, _perturbed(spec, 1e-2), full=False)
    assert not report.passed
    failed = {(c.group, c.name) for c in report.failed}
    assert ("layer 1", "NC1 tr(Σ_W Σ_B†)/K") in failed
    assert ("DNC point", "output at the DNC point: ‖Z − Z*‖/‖Z*‖") in failed
    # the class-mean formula refuses (it says how far from collapse) instead of returning numbers
    refused = [c for c in report.failed if c.name == "class-mean formula applicable"]
    assert refused and "NC1" in str(refused[0].measured)
    # the exact optimum itself passes everything
    assert verify(spec, ufm.theory.construct_optimum(spec, 0)).passed


def test_cross_entropy_optimum_reports_three_levels():
    spec = ufm.UFMSpec(num_classes=4, per_class=2, depth=2, width=5, loss="ce")
    report = verify(spec, collapsed_state(spec, from_optimum=True))
    assert report.passed, [c.to_dict() for c in report.failed]
    levels = [c for c in report.checks if c.name == "CE outlier levels vs DNC closed form"]
    assert len(levels) == spec.depth
    assert "full Hessian" in report.info["skipped"]  # no closed form claimed for CE


@pytest.mark.parametrize("grad0", [0.0, 1.0])
def test_relu_reports_its_convention(grad0):
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=3, width=4, activation="relu", relu_grad0=grad0)
    report = verify(spec, collapsed_state(spec, from_optimum=True))
    assert report.info["relu_convention"] == f"σ'(0) = {grad0:g}"
    assert report.passed, [c.to_dict() for c in report.failed]
    counts = {c.group: c.predicted for c in report.checks if c.name == "outlier count (gap rule)"}
    K = spec.num_classes
    if grad0 == 1.0:  # identical to linear: K² outliers at every layer (docs/theory.md §6)
        assert all(v == K * K for v in counts.values())
    else:  # jax.nn.relu's convention: fewer outliers before the last layer
        assert counts["layer 1"] < K * K and counts[f"layer {spec.depth}"] == K * K
