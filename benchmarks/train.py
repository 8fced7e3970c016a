"""Training speed: time to ‖∇L‖ <= 1e-9 (float64), steps/s of the `ufm.train` loop, jitted vs eager.

Run: ``python benchmarks/train.py [--json PATH] [--label NAME]``. Prints one table and saves
it with the machine description (``benchmarks/results/train.json`` by default); nothing is
asserted. "loop steps/s" is `ufm.train` itself over a fixed number of steps (``tol=0``, so
no early stop; compilation excluded) — the number the one-gradient-per-step change of the
training loop moves. "jit step/s" / "eager step/s" time one line-search step outside the loop.
"""

import argparse
import json
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import ufm  # noqa: E402
from ufm.model import loss  # noqa: E402

try:
    from ufm.training import gd_linesearch  # noqa: E402
except ImportError:  # before the module was renamed (benchmarking an older checkout)
    from ufm.train import gd_linesearch  # noqa: E402

SPECS = {
    "default K4 n5 L3 d16": ufm.UFMSpec(),
    "K10 n10 L3 d32": ufm.UFMSpec(num_classes=10, per_class=10, width=32),
    "K4 n5 L1 d16": ufm.UFMSpec(depth=1),
    "K4 n5 L4 d16 λ per layer": ufm.UFMSpec(depth=4, lambda_W=(1e-3, 2e-3, 5e-4, 1e-3)),
    "K4 n5 L3 relu": ufm.UFMSpec(activation="relu"),
}
LOOP_STEPS = 4_000


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "optax": optax.__version__, "backend": jax.default_backend()}
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


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


def loop_rate(spec, params, n_steps, repeats=3):
    """Best of ``repeats`` runs of `ufm.train` for exactly ``n_steps`` steps (compiled beforehand)."""
    ufm.train(spec, params, steps=n_steps, tol=0.0, log_every=n_steps)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        r = ufm.train(spec, params, steps=n_steps, tol=0.0, log_every=n_steps)
        jax.block_until_ready(r.params)
        best = min(best, time.perf_counter() - t)
    return r.steps / best


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "train.json"))
    ap.add_argument("--label", default="", help="a name for this run (saved with the results)")
    args = ap.parse_args()
    info = machine()
    print(f"# {info['processor']}, {info['cpus']} cpus, {jax.device_count()} {jax.default_backend()} device(s), "
          f"jax {jax.__version__}, float64 {args.label}")
    print(f"{'spec':28s} {'steps':>7s} {'time to 1e-9 [s]':>17s} {'converged':>9s} {'loop steps/s':>12s} "
          f"{'jit step/s':>11s} {'eager step/s':>12s} {'jit/eager':>9s}")
    rows = []
    for name, spec in SPECS.items():
        p0 = ufm.init_params(spec, 0)
        ufm.train(spec, p0, steps=10, log_every=10)  # compile outside the timing
        t = time.perf_counter()
        r = ufm.train(spec, p0, steps=200_000, log_every=5_000)
        elapsed = time.perf_counter() - t
        loop = loop_rate(spec, p0, LOOP_STEPS)
        jit_rate = step_rate(spec, p0, 200, jit=True)
        eager_rate = step_rate(spec, p0, 5, jit=False)
        print(f"{name:28s} {r.steps:7d} {elapsed:17.2f} {str(r.converged):>9s} {loop:12.0f} "
              f"{jit_rate:11.0f} {eager_rate:12.1f} {jit_rate / eager_rate:8.0f}x")
        rows.append({"spec": name, "steps_to_tol": r.steps, "seconds_to_tol": elapsed, "converged": r.converged,
                     "final_grad_norm": float(r.history["grad_norm"][-1]), "loop_steps_per_s": loop,
                     "jit_steps_per_s": jit_rate, "eager_steps_per_s": eager_rate})
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"label": args.label, "machine": info, "loop_steps": LOOP_STEPS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
