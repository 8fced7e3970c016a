"""Every test runs in float64: verification is exact arithmetic or nothing."""

import jax

jax.config.update("jax_enable_x64", True)
