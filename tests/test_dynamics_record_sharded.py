"""`record(mesh=...)` on 8 simulated CPU devices equals the single-array recording (issue 24 item 3).

The XLA flag must be set before JAX starts, so the check runs in a subprocess
(``tests/_sharded_record_check.py``). Independent route: the same run with the data in one array
(no mesh): the loss is then ``loss_fn(params, batch)`` itself, not the per-device means summed by
``ufm.curvature._data.data_mean``. N = 37 is not divisible by the 8 devices (the leftover
samples take the replicated path).
"""

from _devices import run_on_simulated_devices  # tests/ is on sys.path under pytest


def test_sharded_recording_equals_the_single_array_one():
    out = run_on_simulated_devices("_sharded_record_check.py")
    assert out["devices"] == 8
    for mode in ("full", "minibatch"):
        r = out[mode]
        assert r["moved"] > 1e-3, r  # the run did train
        for key in ("params_rel", "step_losses_rel", "losses_rel", "metrics_rel"):
            assert r[key] < 1e-12, (mode, key, r)
    assert "divisible by the 8 devices" in out["error"]
