"""Every test runs in float64: verification is exact arithmetic or nothing.

BLAS runs single-threaded: XLA already uses the cores, and on a 2-core machine a
multi-threaded OpenBLAS fighting it made small eigh/QR calls up to 40x slower.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
