"""Sharded and streamed curvature on 8 simulated CPU devices (issue 11 item 2).

The XLA flag must be set before JAX starts, so the check runs in a subprocess
(``tests/_sharded_check.py``). Independent route: the same products with the whole data
set in one array, closed over by the loss. N = 37 is divisible neither by the 8 devices
nor by the batch sizes, so the tail paths (a partial last batch, leftover samples
evaluated replicated) are exercised.
"""

import pytest
from _devices import run_on_simulated_devices  # tests/ is on sys.path under pytest


@pytest.mark.slow  # 24 s (a subprocess with 8 simulated devices compiles every route; measured at load 2)
def test_sharded_streamed_and_both_equal_the_single_array_products():
    out = run_on_simulated_devices("_sharded_check.py")
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
