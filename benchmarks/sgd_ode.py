"""SGD vs its high-dimensional ODE (docs/sgd_ode.md): cost and agreement, measured in one run.

1. time for the same risk curve (logistic, power law a = 1.5/2.5, T = 10, 41 points): the
   ODE against S SGD runs, at d = 1000 and 10 000 (compilation timed separately);
2. the ODE's cost as d grows (per solve and per solver step; it should be linear in d);
3. the largest |ODE − mean SGD| over the grid per covariance model, with the SGD standard
   error, for d = 250, 1000, 4000 (its shrinkage with d).

Run: ``python benchmarks/sgd_ode.py [--quick] [--json PATH]``. Prints tables; asserts nothing.
Default JSON: ``benchmarks/results/sgd_ode.json``.
"""

import argparse
import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from ufm import dynamics  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402


def _timed(f, *args, **kwargs):
    t = time.perf_counter()
    out = f(*args, **kwargs)
    return out, time.perf_counter() - t


def _model(name, d):
    kw = {"power-law": {"exponents": (1.5, 2.5)}}.get(name, {})
    return dynamics.anisotropic_mixture(d, name, zero_fraction=0.1, **kw)


def ode_vs_sgd_time(dims, runs, T, points):
    rows = []
    for d in dims:
        mix = _model("power-law", d)
        times = dynamics.time_grid(T, points, d)[0]
        _, ode_first = _timed(dynamics.solve_sgd_ode, mix, "logistic", 1.0, times)
        ode, ode_s = _timed(dynamics.solve_sgd_ode, mix, "logistic", 1.0, times)
        sgd_kw = dict(time=T, num_points=points, runs=runs, seed=0)
        _, sgd_first = _timed(dynamics.simulate_sgd, mix, "logistic", 1.0, **sgd_kw)
        _, sgd_s = _timed(dynamics.simulate_sgd, mix, "logistic", 1.0, **{**sgd_kw, "seed": 1})
        rows.append(
            {
                "d": d,
                "runs": runs,
                "steps_per_run": int(round(T * d)),
                "ode_s": ode_s,
                "ode_first_call_s": ode_first,
                "ode_solver_steps": ode.num_steps,
                "sgd_s": sgd_s,
                "sgd_first_call_s": sgd_first,
                "sgd_over_ode": sgd_s / ode_s,
            }
        )
        r = rows[-1]
        print(
            f"d={d:6d}  ODE {r['ode_s']:.3f} s ({r['ode_solver_steps']} steps; first call {ode_first:.1f} s)  "
            f"SGD {runs} runs × {r['steps_per_run']} steps {sgd_s:.2f} s (first call {sgd_first:.1f} s)  "
            f"SGD/ODE {r['sgd_over_ode']:.0f}×",
            flush=True,
        )
    return rows


def ode_cost_vs_dim(dims, T, points, repeats=5):
    """Best of ``repeats`` solves to ``T`` (long, so that the fixed cost per solve is amortised)."""
    rows = []
    for d in dims:
        mix = _model("power-law", d)
        times = np.linspace(0.0, T, points)  # same grid for every d: the cost is per mode
        dynamics.solve_sgd_ode(mix, "logistic", 1.0, times)
        best = min(_timed(dynamics.solve_sgd_ode, mix, "logistic", 1.0, times)[1] for _ in range(repeats))
        res = dynamics.solve_sgd_ode(mix, "logistic", 1.0, times)
        rows.append({"d": d, "ode_s": best, "solver_steps": res.num_steps, "s_per_step": best / res.num_steps})
        print(
            f"d={d:7d}  ODE {best:.4f} s, {res.num_steps} steps, {1e6 * best / res.num_steps:.1f} µs/step", flush=True
        )
    d, s = np.log([r["d"] for r in rows]), np.log([r["s_per_step"] for r in rows])
    slope = float(np.polyfit(d, s, 1)[0])
    print(f"log-log slope of time per solver step vs d: {slope:.2f} (1 = linear)")
    return rows, slope


def gap_vs_dim(dims, runs, T, points):
    rows = []
    for name in dynamics.COVARIANCES:
        for d in dims:
            mix = _model(name, d)
            (sgd, t_sgd) = _timed(
                dynamics.simulate_sgd, mix, "logistic", 1.0, time=T, num_points=points, runs=runs, seed=0
            )
            ode = dynamics.solve_sgd_ode(mix, "logistic", 1.0, sgd.times)
            g = dynamics.ode_sgd_gap(ode, sgd)
            single = float(np.max(np.std(sgd.risk, axis=0, ddof=1)))
            rows.append(
                {
                    "covariance": name,
                    "d": d,
                    "runs": runs,
                    **g.to_dict(),
                    "max_single_run_std": single,
                    "sqrt_d_times_single_std": single * np.sqrt(d),
                    "sgd_s": t_sgd,
                }
            )
            print(
                f"{name:10s} d={d:5d}: max |ODE − SGD mean| = {g.max_abs_gap:.2e} at t={g.time:.2g} "
                f"(s.e. there {g.stderr_at:.1e}, max |gap|/s.e. {g.max_ratio:.2f}); one run's std ≤ {single:.1e} "
                f"(×√d = {single * np.sqrt(d):.3f}); final risk ODE {g.final_ode:.4f} SGD {g.final_sgd:.4f}",
                flush=True,
            )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run; writes no JSON)")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=["timing", "cost", "gaps"],
        default=["timing", "cost", "gaps"],
        help="what to measure (the JSON keeps the other parts from an earlier run)",
    )
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "sgd_ode.json"))
    args = ap.parse_args(argv)
    info = machine()
    print(
        f"# {info['cpu']}, {info['cores']} cores, jax {info['jax']} ({info['backend']}), float64, "
        f"load {info['load_average_at_start'][0]:.1f}"
    )
    T, points = (2.0, 11) if args.quick else (10.0, 41)
    out = {}
    if not args.quick and os.path.exists(args.json):
        with open(args.json) as f:
            out = json.load(f)
    out["config"] = {"T": T, "points": points, "loss": "logistic", "lr": 1.0}
    if "timing" in args.parts:
        print("\n## ODE vs SGD time for the same curve")
        out["timing"] = ode_vs_sgd_time(
            [200, 1000] if args.quick else [1000, 10_000], 2 if args.quick else 4, T, points
        )
        out["machine_timing"] = info
    if "cost" in args.parts:
        print("\n## ODE cost vs d (solves to t = 100 T)")
        out["ode_cost"], out["ode_cost_loglog_slope"] = ode_cost_vs_dim(
            [250, 1000, 4000] if args.quick else [1000, 4000, 16_000, 64_000], 100 * T, points
        )
        out["machine_cost"] = info
    if "gaps" in args.parts:
        print("\n## max gap vs d (logistic)")
        out["gaps"] = gap_vs_dim([100, 200] if args.quick else [250, 1000, 4000], 4 if args.quick else 16, T, points)
        out["machine_gaps"] = info
    if not args.quick:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(dumps(out, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
