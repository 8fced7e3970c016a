"""What a new user meets in the first hour (issue 12): a user's mistake is one line on stderr
and exit 2 (never a traceback, never after the work), bare commands say what they do, and
progress follows the stage actually running. The CLI runs in-process (`ufm.cli.main`).
"""

import io
import re

import pytest
import sympy as sp

import paper_figures
import ufm
from ufm import cli

# private helpers of the CLI are the subject of the layout tests below (progress lines, table width)
from ufm.cli._common import Progress, UsageError
from ufm.cli._spec import spec_text
from ufm.cli.verify import report_table

TINY = ["-K", "2", "-n", "2", "-L", "2", "-d", "3"]


def run(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``ufm argv`` (argparse's own exits included)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(argv, capsys, *words):
    code, out, err = run(argv, capsys)
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ufm: error: ") and all(w in err for w in words), err
    return err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--steps", "0"], ["--steps", ">= 1"]),
        (["train", "--log-every", "-5"], ["--log-every"]),
        (["verify", "--seed", "-1"], ["--seed", ">= 0"]),
        (["verify", "--seed", "-1", "--from-optimum"], ["--seed"]),
        (["real", "--seed", "x"], ["--seed", "'x'"]),
        (["train", "--num-classes", "1"], ["num_classes"]),
    ],
)
def test_bad_values_are_one_line_and_exit_2(argv, words, capsys):
    assert_user_error(argv, capsys, *words)


@pytest.mark.parametrize("command", [["train"], ["verify"], ["verify", "--from-optimum"], ["real", "--quick"]])
def test_output_path_is_checked_before_any_work(command, tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("the run started before the output path was checked")

    for name in ("train", "verify", "init_params"):
        monkeypatch.setattr(ufm, name, no_work)
    monkeypatch.setattr(ufm.verification, "verify", no_work)
    monkeypatch.setattr(ufm.networks, "run_real", no_work)
    missing = tmp_path / "no" / "such" / "dir"
    assert_user_error(command + ["--json", str(missing / "x.json")], capsys, str(missing), "does not exist")
    if command[0] != "train":  # --plot too
        assert_user_error(command + ["--plot", str(missing / "fig")], capsys, "--plot", "does not exist")
    assert_user_error(command + ["--json", str(tmp_path)], capsys, "is a directory")


def test_bare_ufm_prints_the_command_list_and_version_works(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and "Traceback" not in err
    for command in ("train", "verify", "real", "figures", "theory", "dynamics"):
        assert re.search(rf"^\s+{command}\s+\S", err, re.M), f"{command} missing from:\n{err}"
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"ufm {ufm.__version__}"


def test_figures_names_in_help_and_a_wrong_name_lists_them(capsys):
    code, out, _ = run(["figures", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    assert all(name in flat for name in paper_figures.FIGURES)
    err = assert_user_error(["figures", "--only", "nonexistent", "--out", "/nonexistent"], capsys, "no such figure")
    assert all(name in err for name in paper_figures.FIGURES)
    assert_user_error(["figures", "--only", "fig"], capsys, "ambiguous", *paper_figures.FIGURES)
    assert paper_figures.select(["fig02", "fig01"]) == ["fig01_layer_spectra", "fig02_training_dynamics"]


def test_theory_without_flag_prints_the_closed_forms(capsys):
    code, out, _ = run(["theory"], capsys)
    assert code == 0 and "\\" not in out  # plain text, not LaTeX
    # the printed threshold, parsed back, is ufm.theory's numeric one at every depth
    line = next(line for line in out.splitlines() if "collapse to zero iff b >= " in line)
    names = {x: sp.Symbol(x) for x in ("gamma", "K", "L", "lambda_l")}  # not sympy's gamma function
    threshold = sp.sympify(line.split("collapse to zero iff b >= ")[1], locals=names)
    for depth in (2, 3, 5):
        assert float(threshold.subs("L", depth)) == pytest.approx(ufm.theory.mse_threshold(depth), rel=1e-14)
    # σ_l² = γ(1−γ)/(Kλ_l) evaluated at the DNC point of a spec is its singular value squared
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=2, width=4, lambda_W=(2e-3, 5e-3), lambda_H=1e-3)
    sol = ufm.theory.dnc_solution(spec)
    sig2 = sp.sympify(
        next(line for line in out.splitlines() if line.startswith("sigma_l**2 = gamma")).split(",")[0].split(" = ")[1],
        locals=names,
    )
    for l, lam in enumerate(spec.lambdas):
        value = float(sig2.subs({"gamma": sol.scale, "K": 3, "lambda_l": lam}))
        assert value == pytest.approx(float(sol.singular_values[l]) ** 2, rel=1e-10)
    code, tex, _ = run(["theory", "--latex"], capsys)
    assert code == 0 and tex.count(r"\begin{align*}") == 1


def test_progress_follows_the_stages_when_not_a_terminal(capsys, monkeypatch):
    code, out, err = run(["train", *TINY, "--steps", "20", "--log-every", "10"], capsys)
    lines = err.strip().splitlines()
    assert code == 0 and lines[0] == "ufm: training (at most 20 steps, stops at ‖∇L‖ <= 1e-09) ..."
    assert lines[-2].startswith("ufm: training (") and "done after" in lines[-2] and "step 20" in lines[-2]
    assert lines[-1].startswith("ufm: warning: training stopped at --steps 20") and "not converged" in lines[-1]

    from ufm import verification

    def constructed(spec, *, from_optimum, seed, callback):
        assert from_optimum and callback is None  # nothing trains
        raise UsageError("stop here")

    monkeypatch.setattr(verification, "collapsed_state", constructed)
    code, out, err = run(["verify", *TINY, "--from-optimum"], capsys)
    assert code == 2 and "training" not in err
    lines = err.splitlines()
    assert lines[0] == "ufm: constructing the DNC optimum ..." and lines[-1] == "ufm: error: stop here"
    assert lines[1].startswith("ufm: constructing the DNC optimum: stopped after") and len(lines) == 3


def test_real_progress_switches_to_the_analysis_stage(capsys, monkeypatch):
    def fake_run_real(callback, **kw):
        callback({"step": 0, "loss": 1.0})
        callback({"stage": "analysing the trained head"})
        raise ValueError("stop here")

    monkeypatch.setattr(ufm.networks, "run_real", fake_run_real)
    code, _, err = run(["real", "--quick"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[0] == "ufm: training mlp on mnist ..."
    assert lines[1].startswith("ufm: training mlp on mnist: done after") and "loss 1" in lines[1]
    assert lines[2] == "ufm: analysing the trained head ..." and lines[-1] == "ufm: error: stop here"


def test_progress_on_a_terminal_is_one_live_line_that_follows_the_stage():
    from rich.console import Console

    buffer = io.StringIO()
    with Progress(Console(file=buffer, force_terminal=True, width=100)) as progress:
        progress.stage("first stage", total=10)
        progress.update(5, "half way")
        assert [t.description for t in progress._bar.tasks] == ["first stage"]
        progress.stage("second stage")
        assert [t.description for t in progress._bar.tasks] == ["second stage"]
    assert "first stage" in buffer.getvalue()


# ---- verify: float32 sessions, unconverged states, λ above the threshold, the table, the plot ----------------------
SMALL = ufm.UFMSpec(num_classes=2, per_class=2, depth=2, width=3)


@pytest.fixture(scope="module")
def float32_session_report():
    """`verify` of the constructed optimum, made and checked with float64 switched off globally."""
    import jax

    from ufm import verification

    with jax.enable_x64(False):
        state = verification.collapsed_state(SMALL, from_optimum=True)
        report = verification.verify(SMALL, state, full=False)
        optimum32 = ufm.theory.construct_optimum(SMALL)
    return state, report, optimum32


def test_a_float32_session_verifies_in_float64_or_refuses_clearly(float32_session_report, capsys):
    state, report, optimum32 = float32_session_report
    assert {str(x.dtype) for x in jax_leaves(state.params)} == {"float64"}
    assert report.passed and report.info["float64"] and len(report.checks) > 20
    # params the caller made in float32 are refused, with how to fix it
    assert {str(x.dtype) for x in jax_leaves(optimum32)} == {"float32"}
    with pytest.raises(ValueError, match="float64.*collapsed_state.*jax_enable_x64"):
        ufm.verify(SMALL, optimum32)
    assert_user_error(["verify", "--x32", "--from-optimum"], capsys, "--x32", "float64")


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_verify_table_fits_100_columns_and_the_spec_line_breaks_between_fields(float32_session_report):
    from rich.cells import cell_len
    from rich.console import Console

    _, report, _ = float32_session_report
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(report_table(report))
    lines = console.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= 100
    assert len(lines) <= 4 + len({c.group for c in report.checks}) + 2 * len(report.checks)  # a name wraps once at most
    spec = SMALL.replace(width=(3, 4), lambda_W=(1e-3, 2e-3))
    text = spec_text(spec, 60)
    assert all(len(line) <= 60 for line in text.splitlines()) and len(text.splitlines()) > 1
    # every value stays on one line: joining the lines gives back the repr's fields
    assert " ".join(line.strip() for line in text.splitlines()) == repr(spec)


def test_verify_plot_shows_every_eigenvalue_and_labels_the_outliers(float32_session_report):
    import matplotlib

    matplotlib.use("Agg")
    from ufm import plotting

    _, report, _ = float32_session_report
    fig = plotting.layer_spectra_figure(report)
    for ax, layer in zip(fig.axes, report.spectra, strict=True):
        drawn = sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "None")
        assert drawn == layer.measured.eigenvalues.size == layer.measured.dim
        top = float(layer.predicted.eigenvalues.max())
        assert max(t for t in ax.get_yticks() if t <= ax.get_ylim()[1]) >= top  # a tick above the outliers
        assert any(f"{top:.4g}" in t.get_text() for t in ax.texts)  # the predicted level, labelled with its value
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_an_unconverged_state_fails_visibly(capsys, monkeypatch):
    from ufm import verification

    state = verification.collapsed_state(SMALL, steps=5)
    assert state.info["train_converged"] is False
    report = verification.verify(SMALL, state, full=False)
    first = report.checks[0]
    assert first.group == "state" and not first.passed and "5-step cap" in first.name
    assert first.measured == state.info["grad_norm"] > verification.TRAIN_TOL and not report.passed
    # the CLI: said before the table, a FAIL row in it, exit 1
    monkeypatch.setitem(verification.TRAIN_STEPS, "linear", 5)
    monkeypatch.setattr(verification, "verify", lambda spec, st: report)  # the checks above, not again
    code, out, err = run(["verify", *TINY], capsys)
    assert code == 1 and "not converged: training stopped at its 5-step cap" in out
    row = next(line for line in out.splitlines() if "training reached ‖∇L‖ <= 1e-10 (stopped" in line)
    assert row.rstrip().endswith("FAIL")
    assert "Traceback" not in err and "failed, first: state / training reached" in err


@pytest.mark.parametrize("lambda_W", [10.0, 3.0])  # b = 16, 0.144 >= 1/16
def test_lambda_above_the_threshold_is_said_up_front(lambda_W, capsys, monkeypatch):
    from ufm import verification

    spec = SMALL.replace(lambda_W=lambda_W)
    K, n, L = spec.num_classes, spec.per_class, spec.depth
    b, bound = K ** (L + 1) * n * spec.lambda_H * lambda_W**L, (L - 1) ** (L - 1) / L ** (2 * L)  # docs/theory.md §3
    assert b >= bound

    def no_training(*a, **k):
        raise AssertionError("trained although the minimiser is 0")

    monkeypatch.setattr(verification, "collapsed_state", no_training)
    err = assert_user_error(
        ["verify", "-K", "2", "-n", "2", "-L", "2", "-d", "3", "--lambda-W", str(lambda_W)],
        capsys,
        "global minimiser is 0",
        f"{b:.4g}",
        f"{bound:.4g}",
    )
    assert "--lambda-W" in err
    # the library: only the state rows, the threshold row failing, the rest skipped with the reason
    report = verification.verify(spec, ufm.init_params(spec))
    assert not report.passed and [c.group for c in report.checks] == ["state"]
    assert report.checks[0].measured == pytest.approx(b) and report.checks[0].predicted == pytest.approx(bound)
    assert "global minimiser is 0" in report.info["skipped"]["every DNC check"]


def test_verify_refuses_a_spec_without_a_dnc_point_before_training(capsys, monkeypatch):
    from ufm import verification

    monkeypatch.setattr(verification, "collapsed_state", lambda *a, **k: pytest.fail("trained"))
    assert_user_error(["verify", *TINY, "--activation", "softplus"], capsys, "nothing to verify", "softplus")
    assert_user_error(
        ["verify", *TINY, "--loss", "ce", "--lambda-W", "10"], capsys, "nothing to verify", "cross-entropy"
    )


def test_a_dynamics_task_whose_krylov_probe_did_not_converge_fails_visibly(tmp_path, capsys, monkeypatch):
    """A ``ufm dynamics`` task whose report says ``converged=False`` (here: every eigensolve of its
    probes reports a missed tolerance) prints a line on stderr, writes ``"converged": false`` with
    the messages in its JSON and exits 1; a clean run says ``true`` and exits 0. The CLI reads the
    status from the result (no warnings caught, no file rewritten)."""
    import dataclasses
    import json

    from ufm import curvature

    argv = ["dynamics", "align", "--task", "kgmm", "--dim", "8", "--num-classes", "2", "--time", "1"]
    argv += ["--checkpoints", "1", "--test-samples", "20"]
    out = tmp_path / "r.json"
    assert cli.main([*argv, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["converged"] is True and rep["messages"] == []
    assert "verdict: " in capsys.readouterr().out

    real = curvature.spectrum

    def missed(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), converged=False, messages=("top-5 did not converge",))

    monkeypatch.setattr(curvature, "spectrum", missed)
    assert cli.main([*argv, "--json", str(out)]) == 1
    rep = json.loads(out.read_text())
    assert rep["converged"] is False and "missed its tolerance" in rep["messages"][0]
    assert all(row["converged"] is False for row in rep["checkpoints"])
    assert "did not converge" in capsys.readouterr().err
