"""Training speed: time to ‖∇L‖ <= 1e-9 (float64) and steps/s, jitted vs eager.

Run: ``python benchmarks/train.py``. Prints one table; nothing is asserted.
"""

import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import optax  # noqa: E402

import ufm  # noqa: E402
from ufm.model import loss  # noqa: E402
from ufm.train import gd_linesearch  # noqa: E402

SPECS = {
    "default K4 n5 L3 d16": ufm.UFMSpec(),
    "K10 n10 L3 d32": ufm.UFMSpec(num_classes=10, per_class=10, width=32),
    "K4 n5 L1 d16": ufm.UFMSpec(depth=1),
    "K4 n5 L4 d16 λ per layer": ufm.UFMSpec(depth=4, lambda_W=(1e-3, 2e-3, 5e-4, 1e-3)),
    "K4 n5 L3 relu": ufm.UFMSpec(activation="relu"),
}


def step_rate(spec, params, n_steps, jit):
    opt = gd_linesearch()
    f = lambda p: loss(spec, p)  # noqa: E731

    def step(p, s):
        v, g = jax.value_and_grad(f)(p)
        u, s = opt.update(g, s, p, value=v, grad=g, value_fn=f)
        return optax.apply_updates(p, u), s

    step = jax.jit(step) if jit else step
    p, s = params, opt.init(params)
    p, s = step(p, s)  # compile / warm up
    jax.block_until_ready(p)
    t = time.perf_counter()
    for _ in range(n_steps):
        p, s = step(p, s)
    jax.block_until_ready(p)
    return n_steps / (time.perf_counter() - t)


def main():
    print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
          f"jax {jax.__version__}, float64")
    print(f"{'spec':28s} {'steps':>7s} {'time to 1e-9 [s]':>17s} {'converged':>9s} "
          f"{'loop steps/s':>12s} {'jit step/s':>11s} {'eager step/s':>12s} {'jit/eager':>9s}")
    for name, spec in SPECS.items():
        p0 = ufm.init_params(spec, 0)
        ufm.train(spec, p0, steps=10, log_every=10)  # compile outside the timing
        t = time.perf_counter()
        r = ufm.train(spec, p0, steps=200_000, log_every=5_000)
        elapsed = time.perf_counter() - t
        jit_rate = step_rate(spec, p0, 200, jit=True)
        eager_rate = step_rate(spec, p0, 5, jit=False)
        print(f"{name:28s} {r.steps:7d} {elapsed:17.2f} {str(r.converged):>9s} {r.steps / elapsed:12.0f} "
              f"{jit_rate:11.0f} {eager_rate:12.1f} {jit_rate / eager_rate:8.0f}x")


if __name__ == "__main__":
    main()
