"""The many-class softmax ODE (docs/sgd_ode.md §3.1): validation against SGD, and its cost.

1. ``validate``: K = 10 and K = 50 classes, isotropic and power-law (a = 1.5, 2.5 cycled over
   the classes) covariances, d = 2000, γ = 1, T = 10, 41 points, 16 one-pass SGD runs against
   the ODE with the RQMC rule (8 × 256 scrambled Sobol points). Criterion, per quantity and
   time point: |ODE − mean SGD| ≤ 3·√(s.e.² + e²), s.e. the standard error over the runs, e
   the ODE's quadrature error estimate; it must hold at ≥ 95 % of the time points for the
   risk, cos(X_1, μ_1), the mean diagonal overlap (1/K) Σ_j cos(X_j, μ_j) and the mean ‖X_c‖².
2. ``cost``: seconds per ODE solve (one randomisation, 256 points, after compilation; power
   law, T = 10, 41 points, rtol 1e-6) against K at d = 2000 and against d at K = 20, with the
   solver's step count and the machine load.
3. ``dscale`` (only when asked): the K = 50 isotropic gaps at d = 1 000 and 4 000 (T = 5,
   11 points, 16 runs), to tell an O(1/d) bias from an error of the limit.
4. ``k50-large`` (only when asked): the K = 50 validation of 1. at ``--dim`` (default 8 000) on
   ``--covariances``, where the O(1/d) bias is small against the standard error of 16 runs.

Every validation compares both ODEs: the default (noise with ``E a_ρ² = λ_ρ + μ_ρ²``) and the
leading-order one (``mean_noise=False``); the verdict is the default's.

Run: ``PYTHONPATH=. python benchmarks/sgd_ode_classes.py [--quick] [--only validate|cost|dscale|k50-scale2|k50-large]
[--json PATH]``. Prints tables; asserts nothing. Default JSON:
``benchmarks/results/sgd_ode_classes.json``.
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from ufm import dynamics  # noqa: E402
from ufm.dynamics.sgd_ode import solve_sgd_ode  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402

THRESHOLD = 3.0  # standard errors
FRACTION = 0.95


def _load():
    return os.getloadavg()[0]


def mixture(k, cov, d, scale):
    return dynamics.anisotropic_mixture(
        d, cov, num_classes=k, exponents=(1.5, 2.5), zero_fraction=0.1, mean_scale=scale, seed=k
    )


def _series(ode, sgd):
    """{name: (ode (T,), ode err (T,), SGD estimate (T,), its s.e. (T,))} for the compared quantities:
    the SGD estimate of what the ODE computes (`SGDResult.estimate`: the overlaps as ratios of run
    means, jackknife s.e.), plus the mean of the per-run cosines, for the record (not judged)."""
    diag = lambda x: np.mean(np.diagonal(x, axis1=-2, axis2=-1), axis=-1)  # noqa: E731
    first = lambda x: x[..., 0, 0]  # noqa: E731
    runs = diag(sgd.overlap)
    return {
        "risk": (ode.risk, ode.err("risk"), *sgd.estimate("risk")),
        "overlap_11": (first(ode.overlap), first(ode.err("overlap")), *sgd.estimate("overlap", first)),
        "mean_diag_overlap": (diag(ode.overlap), diag(ode.err("overlap")), *sgd.estimate("overlap", diag)),
        "mean_norm2": (ode.norm2.mean(-1), ode.err("norm2").mean(-1), *sgd.estimate("norm2", lambda x: x.mean(-1))),
        "mean_diag_overlap_per_run_mean": (
            diag(ode.overlap),
            diag(ode.err("overlap")),
            runs.mean(0),
            runs.std(0, ddof=1) / np.sqrt(runs.shape[0]),
        ),
    }


JUDGED = ("risk", "overlap_11", "mean_diag_overlap", "mean_norm2")


def agreement(ode, sgd):
    out = {}
    for name, (o, e, m, se) in _series(ode, sgd).items():
        tol = THRESHOLD * np.sqrt(se**2 + e**2)
        gap = np.abs(o - m)
        ok = gap <= tol + 1e-12 * np.maximum(1, np.abs(m))
        z = np.where(tol > 0, gap / np.where(tol > 0, tol, 1) * THRESHOLD, 0.0)
        out[name] = {
            "fraction_within": float(ok.mean()),
            "max_gap_over_combined_se": float(z.max()),
            "median_gap_over_combined_se": float(np.median(z[1:])),
            "final_ode": float(o[-1]),
            "final_ode_err": float(e[-1]),
            "final_sgd": float(m[-1]),
            "final_sgd_se": float(se[-1]),
            "ode": o,
            "ode_err": e,
            "sgd_mean": m,
            "sgd_se": se,
        }
    return out


def holds(ag):
    return all(ag[n]["fraction_within"] >= FRACTION for n in JUDGED)


def validate(ks, covs, d, runs, T, points, reps, qmc_points, scale=None, save_runs=None):
    """Per (K, covariance): the SGD runs, then the ODE with the means' part of the noise (the
    default, ``mean_noise=True``) and without it (the leading order); the verdict is the default's."""
    rows = []
    for k in ks:
        s = {10: 2.0, 50: 3.0}.get(k, 2.0) if scale is None else scale  # ‖μ_j‖ per K unless given
        for cov in covs:
            mix = mixture(k, cov, d, s)
            load0 = _load()
            t = time.perf_counter()
            sgd = dynamics.simulate_sgd(
                mix, "softmax", 1.0, time=T, num_points=points, runs=runs, seed=k, qmc_points=qmc_points, qmc_reps=reps
            )
            t_sgd = time.perf_counter() - t
            if save_runs:  # the per-run arrays, for analyses the JSON's means cannot give
                os.makedirs(save_runs, exist_ok=True)
                fields = ("times", "risk", "M", "norm2", "overlap", "clean_overlap")
                np.savez(os.path.join(save_runs, f"sgd_K{k}_{cov}_d{d}.npz"), **{f: getattr(sgd, f) for f in fields})
            row = {"K": k, "covariance": cov, "mixture": mix.to_dict(), "d": d, "mean_scale": s, "runs": runs}
            row.update(T=T, points=points, sgd_s=t_sgd, times=sgd.times)
            for mean_noise in (True, False):
                t = time.perf_counter()
                ode = solve_sgd_ode(
                    mix,
                    "softmax",
                    1.0,
                    sgd.times,
                    qmc_points=qmc_points,
                    qmc_reps=reps,
                    rtol=1e-6,
                    mean_noise=mean_noise,
                )
                t_ode = time.perf_counter() - t
                ag = agreement(ode, sgd)
                ok = holds(ag)
                key = "" if mean_noise else "leading_order_"
                row.update(
                    {key + "agreement": ag, key + "holds": ok, key + "ode_s": t_ode, key + "ode_steps": ode.num_steps}
                )
                row["rule"] = ode.rule
                print(
                    f"K={k:3d} {cov:10s} d={d} runs={runs} {'mean noise' if mean_noise else 'leading   '} "
                    + " ".join(
                        f"{n}: {v['fraction_within']:.2f} (max {v['max_gap_over_combined_se']:.1f})"
                        for n, v in ag.items()
                    )
                    + f"  → {'holds' if ok else 'FAILS'}; SGD {t_sgd:.0f} s, ODE {t_ode:.0f} s, load {_load():.1f}",
                    flush=True,
                )
            row["load"] = [load0, _load()]
            rows.append(row)
    return rows


def cost(ks, dims, k_for_d, d_for_k, cov="power-law"):
    rows = []

    def one(k, d):
        mix = mixture(k, cov, d, 2.0)
        times = dynamics.time_grid(10.0, 41, d)[0]
        kw = dict(qmc_reps=2, rtol=1e-6)
        t = time.perf_counter()
        solve_sgd_ode(mix, "softmax", 1.0, times, **kw)
        first = time.perf_counter() - t
        load0 = _load()
        t = time.perf_counter()
        o = solve_sgd_ode(mix, "softmax", 1.0, times, qmc_seed=1, **kw)
        s = (time.perf_counter() - t) / 2
        row = {"K": k, "d": d, "covariance": cov, "seconds_per_solve": s, "steps_per_solve": o.num_steps / 2}
        row.update(first_call_s=first, load=[load0, _load()])
        print(f"K={k:3d} d={d:5d}: {s:7.2f} s per solve ({o.num_steps / 2:.0f} steps), load {_load():.1f}", flush=True)
        return row

    for k in ks:
        rows.append(one(k, d_for_k))
    for d in dims:
        rows.append(one(k_for_d, d))
    return rows


def dscale(dims, k=50, cov="isotropic", scale=3.0, runs=16, T=5.0, points=11):
    """The K = 50 gaps against d: ``(SGD − ODE) · d`` and ``s.e. · d`` per quantity, for the default
    ODE and the leading-order one (an O(1/d) bias keeps the first constant while the second grows
    like √d)."""
    rows = []
    for d in dims:
        mix = mixture(k, cov, d, scale)
        sgd = dynamics.simulate_sgd(mix, "softmax", 1.0, time=T, num_points=points, runs=runs, seed=k)
        row = {"d": d, "K": k, "covariance": cov, "mean_scale": scale, "runs": runs, "T": T}
        for mean_noise in (True, False):
            ode = solve_sgd_ode(mix, "softmax", 1.0, sgd.times, rtol=1e-6, mean_noise=mean_noise)
            ag = agreement(ode, sgd)
            for n, v in ag.items():
                g = (v["sgd_mean"] - v["ode"]) * d
                print(
                    f"d={d} {'mean noise' if mean_noise else 'leading   '} {n:18s} within {v['fraction_within']:.2f};"
                    f" (SGD − ODE)·d {np.round(g[2::4], 2)}, s.e.·d {np.round(v['sgd_se'][2::4] * d, 2)}",
                    flush=True,
                )
            row["agreement" if mean_noise else "leading_order_agreement"] = ag
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["validate", "cost", "dscale", "k50-scale2", "k50-large"])
    p.add_argument("--dim", type=int, default=8000, help="k50-large: the dimension (default 8000)")
    p.add_argument("--covariances", nargs="+", default=["isotropic", "power-law"], help="k50-large: which")
    p.add_argument("--save-runs", metavar="DIR", help="validations: save each SGD sweep's per-run arrays (npz) here")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "sgd_ode_classes.json"))
    a = p.parse_args()
    out = {"machine": machine(), "threshold_stderrs": THRESHOLD, "fraction": FRACTION}
    if a.only in (None, "validate"):
        if a.quick:
            out["validate"] = validate([10], ["isotropic"], 500, 8, 5.0, 11, 4, 256)
        else:
            out["validate"] = validate(
                [10, 50], ["isotropic", "power-law"], 2000, 16, 10.0, 41, 8, 256, save_runs=a.save_runs
            )
    if a.only == "k50-scale2":  # K = 50 with ‖μ_j‖ = 2 (as at K = 10): is the K = 50 miss K or ‖μ‖²?
        out["validate"] = validate([50], ["isotropic"], 2000, 16, 10.0, 41, 8, 256, scale=2.0)
    if a.only == "k50-large":  # the K = 50 validation where its O(1/d) bias is small against 16 runs' s.e.
        out["validate"] = validate([50], a.covariances, a.dim, 16, 10.0, 41, 8, 256, save_runs=a.save_runs)
    if a.only == "dscale":
        out["dscale"] = dscale([1000, 4000])
    if a.only in (None, "cost"):
        if a.quick:
            out["cost"] = cost([5, 10], [500, 1000], 10, 1000)
        else:
            out["cost"] = cost([5, 10, 20, 50, 100], [500, 1000, 2000, 4000], 20, 2000)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        f.write(dumps(out))
    print("wrote", a.json)


if __name__ == "__main__":
    main()
