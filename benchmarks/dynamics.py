"""`ufm.dynamics.record`: steps/s of the compiled segment vs one jitted step per Python
iteration, the probe cost per checkpoint of the kgmm experiment, and the probes' share of the
wall time of the k-GMM and MNIST alignment tasks at their default checkpoints (issue 24 item 9;
target <= 20 %).

Run: ``python benchmarks/dynamics.py [--quick] [--share-only]``. Prints the ratios measured in
this run and saves them with the machine description to ``benchmarks/results/dynamics.json``;
nothing is asserted. Both loops are timed after a warm-up run (compilation excluded), wall clock
and process CPU time (the latter is what a loaded shared machine does not inflate). The probe
share times every probe call of a task (the task's own probes wrapped in a timer, through the
`record` the task calls) against the task's whole run, after a warm-up run of the same task.
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import optax  # noqa: E402

from ufm import dynamics as D  # noqa: E402
from ufm.experiments import align  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0):
    w, c = _clock()
    return w - t0[0], c - t0[1]


def loop_rates(dim, steps, num_classes=4):
    """steps/s of one-pass SGD on the k-GMM: compiled segments vs a Python loop of jitted steps."""
    gmm = D.KGMM.create(num_classes, dim, 200.0)
    loss = align._loss(D.softmax_loss, 0.1)
    p0 = D.init_softmax(0, num_classes, dim)
    kw = dict(sampler=align._one_sample, data=gmm, num_checkpoints=1)
    out = {}
    for name, compiled in (("scan", True), ("python", False)):
        D.record(loss, p0, optax.sgd(0.01), steps=3, compiled=compiled, **kw)  # compile
        t0 = _clock()
        D.record(loss, p0, optax.sgd(0.01), steps=steps, compiled=compiled, **kw)
        wall, cpu = _since(t0)
        out[name] = {
            "steps": steps,
            "wall_s": wall,
            "cpu_s": cpu,
            "steps_per_s": steps / wall,
            "steps_per_cpu_s": steps / cpu,
        }
    out["ratio_wall"] = out["scan"]["steps_per_s"] / out["python"]["steps_per_s"]
    out["ratio_cpu"] = out["scan"]["steps_per_cpu_s"] / out["python"]["steps_per_cpu_s"]
    return out


def probe_cost(dim, num_classes=4, checkpoints=4):
    """Seconds per checkpoint of the kgmm probe (full kd × kd data Hessian + 2k blocks) vs the
    SGD time of one segment, at the experiment's defaults (δ = 2/d, T = 20)."""
    kw = dict(num_classes=num_classes, dim=dim, time=20.0, checkpoints=checkpoints)
    align.kgmm(**(kw | {"checkpoints": 1, "time": 0.1}))  # compile
    stamps = []
    t0 = _clock()
    align.kgmm(callback=lambda _event: stamps.append(_clock()), **kw)
    wall, cpu = _since(t0)
    steps = int(round(20.0 / (2.0 / dim)))
    rates = loop_rates(dim, min(steps, 20_000), num_classes)
    sgd_wall = steps / rates["scan"]["steps_per_s"]
    sgd_cpu = steps / rates["scan"]["steps_per_cpu_s"]
    per_ckpt_wall = (wall - sgd_wall) / (checkpoints + 1)
    per_ckpt_cpu = (cpu - sgd_cpu) / (checkpoints + 1)
    return {
        "dim": dim,
        "num_classes": num_classes,
        "checkpoints": checkpoints + 1,
        "steps": steps,
        "total_wall_s": wall,
        "total_cpu_s": cpu,
        "sgd_wall_s": sgd_wall,
        "sgd_cpu_s": sgd_cpu,
        "probe_wall_s_per_checkpoint": per_ckpt_wall,
        "probe_cpu_s_per_checkpoint": per_ckpt_cpu,
        "probe_over_segment_cpu": per_ckpt_cpu / (sgd_cpu / checkpoints),
    }


def probe_share(task, repeats=1, **kwargs):
    """Wall / CPU seconds of a whole ``align.<task>(**kwargs)`` run and of its probe calls (compiled beforehand)."""
    real = align.record
    spent = {"wall": 0.0, "cpu": 0.0, "calls": 0}

    def timed(fn):
        def probe(params, ctx):
            t0 = _clock()
            out = fn(params, ctx)
            w, c = _since(t0)
            spent["wall"] += w
            spent["cpu"] += c
            spent["calls"] += 1
            return out

        return probe

    def record(*args, probes=None, **kw):
        return real(*args, probes={n: timed(f) for n, f in (probes or {}).items()}, **kw)

    fn = getattr(align, task)
    fn(**kwargs)  # compile
    align.record = record
    try:
        best = None
        for _ in range(repeats):
            spent.update(wall=0.0, cpu=0.0, calls=0)
            t0 = _clock()
            fn(**kwargs)
            wall, cpu = _since(t0)
            row = {
                "task": task,
                "kwargs": kwargs,
                "total_wall_s": wall,
                "total_cpu_s": cpu,
                "probe_wall_s": spent["wall"],
                "probe_cpu_s": spent["cpu"],
                "probe_calls": spent["calls"],
                "probe_share_wall": spent["wall"] / wall,
                "probe_share_cpu": spent["cpu"] / cpu,
                "load_1min": os.getloadavg()[0],
            }
            best = row if best is None or row["total_wall_s"] < best["total_wall_s"] else best
    finally:
        align.record = real
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--share-only", action="store_true", help="only the probes' share of the two tasks")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "dynamics.json"))
    args = ap.parse_args()
    dims = (50,) if args.quick else (100, 400)
    env = machine()
    print(f"# {env['cpu']}, {env['cores']} cores, jax {env['jax']}, float64, load {env['load_average_1min']}")
    results = {"machine": env, "loops": {}, "probes": {}, "probe_share": {}}
    tasks = {"kgmm": {}, "mnist": {}} if not args.quick else {"kgmm": {"dim": 100}, "mnist": {"steps": 300}}
    print(
        f"{'task':>6s} {'total wall s':>13s} {'probes wall s':>14s} {'share (wall)':>13s} "
        f"{'share (cpu)':>12s} {'load':>5s}"
    )
    for task, kw in tasks.items():
        r = probe_share(task, **kw)
        results["probe_share"][task] = r
        print(
            f"{task:>6s} {r['total_wall_s']:13.2f} {r['probe_wall_s']:14.2f} {r['probe_share_wall']:13.1%} "
            f"{r['probe_share_cpu']:12.1%} {r['load_1min']:5.2f}"
        )
    if args.share_only:
        dims = ()
    if dims:
        print(f"{'d':>5s} {'scan steps/s':>13s} {'python steps/s':>15s} {'ratio (wall)':>13s} {'ratio (cpu)':>12s}")
    for d in dims:
        r = loop_rates(d, 2000 if args.quick else 20_000)
        results["loops"][d] = r
        print(
            f"{d:5d} {r['scan']['steps_per_s']:13.0f} {r['python']['steps_per_s']:15.0f} {r['ratio_wall']:13.1f} "
            f"{r['ratio_cpu']:12.1f}"
        )
    if dims:
        print(f"{'d':>5s} {'probe cpu s/ckpt':>17s} {'probe wall s/ckpt':>18s} {'probe / segment (cpu)':>22s}")
    for d in dims:
        r = probe_cost(d, checkpoints=2 if args.quick else 4)
        results["probes"][d] = r
        print(
            f"{d:5d} {r['probe_cpu_s_per_checkpoint']:17.2f} {r['probe_wall_s_per_checkpoint']:18.2f} "
            f"{r['probe_over_segment_cpu']:22.1f}"
        )
    path = args.json
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(dumps(results, indent=1))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
