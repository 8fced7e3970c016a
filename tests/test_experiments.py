"""`ufm.experiments`: one entry style (``run(config) -> Report``), typed configs, and reports that
follow the result protocol (`ufm.results`)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from ufm import results
from ufm.experiments import align, catapult, dmap, sgd_ode


def test_a_setting_the_task_does_not_take_is_refused_before_any_work():
    with pytest.raises(ValueError, match="rank does not apply to task 'ufm'"):
        dmap.run(dmap.DmapConfig(task="ufm", rank=2))
    with pytest.raises(ValueError, match="seeds does not apply to task 'kgmm'"):
        align.run(align.AlignConfig(task="kgmm", seeds=3))
    with pytest.raises(ValueError, match="task must be one of"):
        align.run(align.AlignConfig(task="nope"))
    with pytest.raises(ValueError, match="task must be one of"):
        catapult.run(catapult.CatapultConfig(), task="nope")
    with pytest.raises(ValueError, match="rtol and atol must be > 0"):
        sgd_ode.run(sgd_ode.SGDODEConfig(rtol=0.0))


def test_sgd_ode_report_is_a_pytree_with_status_and_strict_json():
    with jax.enable_x64(True):
        report = sgd_ode.run(sgd_ode.SGDODEConfig(loss="lsq", dim=40, time=0.5, points=3, sgd_runs=2))
    assert report.converged is True and report.messages == ()
    # the closed-form least-squares ODE against 2 SGD runs on the same grid: the gap is finite
    assert all(g.converged for g in report.gaps) and np.isfinite(report.summary["max_abs_gap"])
    leaves = jax.tree_util.tree_leaves(report)
    assert leaves and all(not isinstance(x, str) for x in leaves)
    text = results.dumps(report)
    back = json.loads(text)
    assert {"config", "times", "ode", "sgd", "sgd_stderr", "summary", "converged", "messages"} <= set(back)
    assert back["config"]["dim"] == 40 and len(back["times"]) == 3


def test_dmap_old_entry_and_config_entry_agree():
    cfg = dmap.DmapConfig(task="quadratic", dim=6, rank=2, steps=400, record_every=4)
    with jax.enable_x64(True):
        a = dmap.run(cfg)
        b = dmap.run("quadratic", dim=6, rank=2, steps=400, record_every=4)
    np.testing.assert_array_equal(a.analysis.diffusion.eigenvalues, b.analysis.diffusion.eigenvalues)
    assert a.converged and json.loads(results.dumps(a))["converged"] is True


@pytest.mark.parametrize(
    "cls",
    [
        dmap.DiffusionReport,
        align.AlignmentReport,
        catapult.CatapultReport,
        catapult.CatapultRun,
        sgd_ode.SGDODEReport,
    ],
)
def test_every_report_declares_the_status_fields(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[-2:] == ["converged", "messages"]


def test_experiments_report_stages_through_one_callback_signature():
    """Every experiment's progress is ``callback(event: dict)`` with a ``"stage"`` line (as record's checkpoints)."""
    from ufm.experiments import sgd_ode

    events = []
    cfg = sgd_ode.SGDODEConfig(dim=50, time=0.5, points=3, sgd_runs=2)
    sgd_ode.run(cfg, callback=events.append)
    assert events and all(isinstance(e, dict) and isinstance(e["stage"], str) for e in events)
