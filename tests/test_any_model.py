"""The tutorial ``docs/any_model.md`` runs as written, at a small size, and ``examples/any_model.py`` too.

Independent checks: λ_max of the tangent kernel recorded at step 0 against the dense ``J Jᵀ``
formed here from ``jax.jacrev`` of the flat parameters; NC1 at step 0 against
`ufm.collapse.nc_metrics` of the hidden features computed by hand; the figure file exists.
"""

import pathlib
import re
import runpy
import sys

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = "PER_CLASS, STEPS, EVERY = 10, 100, 2"


def tutorial_code() -> str:
    text = (ROOT / "docs" / "any_model.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    sizes = re.compile(r"^PER_CLASS, STEPS, EVERY = .*$", re.M)
    assert sizes.search(code), "the tutorial's size line moved: update QUICK here"
    return sizes.sub(QUICK, code)


def test_tutorial_runs_and_its_numbers_hold(tmp_path, monkeypatch):
    import equinox as eqx

    from ufm import collapse

    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "tutorial"}
    exec(compile(tutorial_code(), "docs/any_model.md", "exec"), ns)
    traj, model, X = ns["traj"], ns["model"], ns["X"]
    assert (tmp_path / "any_model.png").stat().st_size > 10_000
    assert isinstance(traj.final_params, eqx.nn.MLP) and traj.stopped == "steps"
    arrays, static = eqx.partition(model, eqx.is_array)
    flat, unravel = ravel_pytree(arrays)
    J = jax.jacrev(lambda v: ns["outputs"](eqx.combine(unravel(v), static), X).reshape(-1))(flat)
    lam = np.linalg.eigvalsh(np.asarray(J @ J.T))[-1]
    assert traj.probe("kernel", "lambda_max")[0] == pytest.approx(lam, rel=1e-10)
    H = np.asarray(ns["hidden"](model, X)).T
    nc1 = collapse.nc_metrics([H], ns["labels"]).nc1[0]
    assert traj.probe("nc", "nc1")[0, 0] == pytest.approx(nc1, rel=1e-10)
    assert traj.step_losses[-1] < traj.step_losses[0]
    assert traj.iterates.shape[0] == ns["STEPS"] // ns["EVERY"]


def test_example_script_quick(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["any_model.py", "--quick", "--out", str(tmp_path / "fig.png")])
    runpy.run_path(str(ROOT / "examples" / "any_model.py"), run_name="__main__")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
