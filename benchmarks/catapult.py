"""Catapult experiments: wall and CPU time of `run_gd`, `run_schedule`, `run_sgd` at a fixed size.

Run: ``python benchmarks/catapult.py [--json PATH] [--label NAME]``. Each experiment runs once to
compile and then ``--repeats`` times; the best time is reported (wall clock and process CPU time,
the latter less inflated by other load on a shared machine). Saved with the machine description
and the 1-minute load average; nothing is asserted.
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

from ufm.experiments import catapult  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402

CONFIG = dict(samples=64, width=256, steps=200, test_samples=200, seeds=2, batch_sizes=(8, 64), increases=2)


def timed(fn, cfg, repeats):
    fn(cfg)  # compile
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        report = fn(cfg)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu, report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "catapult.json"))
    ap.add_argument("--label", default="")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = catapult.CatapultConfig(**CONFIG)
    rows = {}
    for name, fn in (("gd", catapult.run_gd), ("schedule", catapult.run_schedule), ("sgd", catapult.run_sgd)):
        load = os.getloadavg()[0]
        wall, cpu, report = timed(fn, cfg, args.repeats)
        rows[name] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "load_1min": load,
            "regimes": [r.regime for r in report.runs],
            "catapults": [r.num_catapults for r in report.runs],
        }
        print(f"{name:9s} wall {wall:7.3f} s  cpu {cpu:7.3f} s  load {load:.2f}  {rows[name]['regimes']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(dumps({"label": args.label, "machine": machine(), "config": CONFIG, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
