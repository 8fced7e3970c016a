"""Sharded and streamed curvature on 8 simulated CPU devices (issue 11 item 2).

The XLA flag must be set before JAX starts, so the check runs in a subprocess
(``tests/_sharded_check.py``). Independent route: the same products with the whole data
set in one array, closed over by the loss. N = 37 is divisible neither by the 8 devices
nor by the batch sizes, so the tail paths (a partial last batch, leftover samples
evaluated replicated) are exercised.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow  # 24 s (a subprocess with 8 simulated devices compiles every route; measured at load 2)
def test_sharded_streamed_and_both_equal_the_single_array_products():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "_sharded_check.py")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    moments = out["results"].pop("gradient_moments")
    assert moments["per_sample_rel"] < 1e-13, moments
    for name, r in out["results"].items():
        assert r["hvp_rel"] < 1e-13 and r["topk_rel"] < 1e-10, (name, r)
        assert r.get("ggn_rel", 0.0) < 1e-13, (name, r)
        assert r.get("trace_rel", 0.0) < 1e-13, (name, r)  # the same probes: equal to rounding
        assert r["all_reduces_per_product"] == (0 if name == "streamed" else 1), (name, r)
    assert "ggn_rel" in out["results"]["sharded+streamed"] and "trace_rel" in out["results"]["sharded+streamed"]
    errors = out["errors"]
    assert "divisible by the 8 devices" in errors["batch_not_divisible"]
    assert "batch_size must be >= 1" in errors["batch_zero"]
    assert "leading (sample) axis" in errors["leading_axes"]
