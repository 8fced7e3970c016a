"""Training speed: time to ‖∇L‖ <= 1e-9 (float64), steps/s of the `ufm.train` loop, jitted vs eager.

Run: ``python benchmarks/train.py [--json PATH] [--label NAME]``. Prints one table and saves
it with the machine description (``benchmarks/results/train.json`` by default); nothing is
asserted. "loop steps/s" is `ufm.train` itself over a fixed number of steps (``tol=0``, so
no early stop; compilation excluded) and "evals/step" the loss evaluations (forward + backward)
per step inside the loop, counted, so independent of the machine's load — the numbers the
one-gradient-per-step change of the training loop moves. "jit step/s" / "eager step/s" time one
line-search step outside the loop.
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import ufm  # noqa: E402
from ufm.model import loss  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402

try:
    from ufm.training import gd_linesearch
except ImportError:  # before the module was renamed (benchmarking an older checkout)
    from ufm.train import gd_linesearch

SPECS = {
    "default K4 n5 L3 d16": ufm.UFMSpec(),
    "K10 n10 L3 d32": ufm.UFMSpec(num_classes=10, per_class=10, width=32),
    "K4 n5 L1 d16": ufm.UFMSpec(depth=1),
    "K4 n5 L4 d16 λ per layer": ufm.UFMSpec(depth=4, lambda_W=(1e-3, 2e-3, 5e-4, 1e-3)),
    "K4 n5 L3 relu": ufm.UFMSpec(activation="relu"),
}
LOOP_STEPS = 4_000


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
    """Steps/s of `ufm.train` for exactly ``n_steps`` steps (compiled beforehand), best of
    ``repeats``: by wall clock, and by this process's CPU time (less sensitive to other load
    on a shared machine)."""
    ufm.train(spec, params, steps=n_steps, tol=0.0, log_every=n_steps)
    wall = cpu = np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        r = ufm.train(spec, params, steps=n_steps, tol=0.0, log_every=n_steps)
        jax.block_until_ready(r.params)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return r.steps / wall, r.steps / cpu


def evaluations_per_step(spec, params, n_steps=200) -> float:
    """Loss evaluations per `ufm.train` step (each a forward + backward pass inside the loop):
    counted by a ``jax.debug.callback`` in the loss, so the number does not depend on the load."""
    module = sys.modules[ufm.train.__module__]  # the training module (ufm.training; ufm.train before)
    count, loss_fn = [0], module.loss

    def counted(spec_, p):
        jax.debug.callback(lambda: count.__setitem__(0, count[0] + 1))
        return loss_fn(spec_, p)

    jax.clear_caches()
    module.loss = counted
    try:
        ufm.train(spec, params, steps=n_steps, tol=0.0, log_every=n_steps)
    finally:
        module.loss = loss_fn
        jax.clear_caches()
    return (count[0] - 1) / n_steps  # the one evaluation before the loop (the first record) apart


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "train.json"))
    ap.add_argument("--label", default="", help="a name for this run (saved with the results)")
    ap.add_argument("--loop-only", action="store_true", help="only the fixed-step loop rate (before/after runs)")
    args = ap.parse_args()
    info = machine(optax=optax.__version__)
    print(
        f"# {info['processor']}, {info['cpus']} cpus, {jax.device_count()} {jax.default_backend()} device(s), "
        f"jax {jax.__version__}, float64 {args.label}"
    )
    print(
        f"{'spec':28s} {'steps':>7s} {'time to 1e-9 [s]':>17s} {'converged':>9s} {'loop steps/s':>12s} "
        f"{'(CPU time)':>10s} {'jit step/s':>11s} {'eager step/s':>12s} {'jit/eager':>9s} {'evals/step':>10s}"
    )
    rows = []
    for name, spec in SPECS.items():
        p0 = ufm.init_params(spec, 0)
        row = {"spec": name, "loss_evaluations_per_step": evaluations_per_step(spec, p0)}
        row["loop_steps_per_s"], row["loop_steps_per_cpu_s"] = loop_rate(spec, p0, LOOP_STEPS)
        if args.loop_only:
            print(
                f"{name:28s} {'':7s} {'':17s} {'':9s} {row['loop_steps_per_s']:12.0f} "
                f"{row['loop_steps_per_cpu_s']:10.0f} "
                f"{row['loss_evaluations_per_step']:11.2f} evaluations/step"
            )
            rows.append(row)
            continue
        t = time.perf_counter()
        r = ufm.train(spec, p0, steps=200_000, log_every=5_000)
        elapsed = time.perf_counter() - t
        jit_rate = step_rate(spec, p0, 200, jit=True)
        eager_rate = step_rate(spec, p0, 5, jit=False)
        print(
            f"{name:28s} {r.steps:7d} {elapsed:17.2f} {str(r.converged):>9s} {row['loop_steps_per_s']:12.0f} "
            f"{row['loop_steps_per_cpu_s']:10.0f} {jit_rate:11.0f} {eager_rate:12.1f} {jit_rate / eager_rate:8.0f}x "
            f"{row['loss_evaluations_per_step']:6.2f}"
        )
        row.update(
            steps_to_tol=r.steps,
            seconds_to_tol=elapsed,
            converged=r.converged,
            final_grad_norm=float(r.history["grad_norm"][-1]),
            jit_steps_per_s=jit_rate,
            eager_steps_per_s=eager_rate,
        )
        rows.append(row)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(dumps({"label": args.label, "machine": info, "loop_steps": LOOP_STEPS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
