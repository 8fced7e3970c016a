"""`record(mesh=...)` on 8 simulated CPU devices equals the single-array recording (issue 24 item 3).

The XLA flag must be set before JAX starts, so the check runs in a subprocess
(``tests/_sharded_record_check.py``). Independent route: the same run with the data in one array
(no mesh): the loss is then ``loss_fn(params, batch)`` itself, not the per-device means summed by
``ufm.curvature._data.data_mean``. N = 37 is not divisible by the 8 devices (the leftover
samples take the replicated path).
"""

import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


def test_sharded_recording_equals_the_single_array_one():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "_sharded_record_check.py")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for mode in ("full", "minibatch"):
        r = out[mode]
        assert r["moved"] > 1e-3, r  # the run did train
        for key in ("params_rel", "step_losses_rel", "losses_rel", "metrics_rel"):
            assert r[key] < 1e-12, (mode, key, r)
    assert "divisible by the 8 devices" in out["error"]
