"""The batch-size claim of [ZLRB] with power (docs/catapults.md §7): smaller batches → more
catapults → higher AGOP alignment and lower test error.

Task: ``f*(x) = Σ_{j≤2} He₂(u_jᵀx)/2`` (rank-2 polynomial, ``target="polynomial"``) of
x ~ N(0, I_20), n = 128 training samples (6.4 per dimension), a 2-layer ReLU NTK MLP of width
256; full-batch GD below the critical rate leaves the AGOP alignment at ≈ 0.6. Protocol (the
paper's): one fixed learning rate for every batch size, η = 1.0 · η_crit of the full-batch
tangent kernel at initialisation (η_crit = 2n/λ_max(K)), 1000 steps; batch sizes 8, 16, 32,
64 and 128 (= full batch, GD); ≥ 10 seeds (a seed fixes the data, the target's projection, the
initialisation and the batches, and is shared by every batch size: the design is paired).

Reported per batch size: mean and 95 % t-interval of the catapult count, the final AGOP
alignment (test inputs) and the final test MSE. Trend tests: Spearman's ρ of each quantity
against the batch size over all runs (with its p-value), and the per-seed least-squares slope
against log₂ b (mean over seeds with a 95 % t-interval: a paired test); effect sizes: the
paired differences b = 8 minus b = 128 with 95 % t-intervals.

Run: ``PYTHONPATH=. python benchmarks/catapult_batch.py [--seeds S] [--quick] [--json PATH]``.
Default JSON: ``benchmarks/results/catapult_batch.json`` (read by paper_figures/fig16).
"""

import argparse
import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)


from ufm.experiments import catapult  # noqa: E402
from ufm.experiments.catapult import BATCH_QUANTITIES as QUANTITIES  # noqa: E402
from ufm.experiments.catapult import batch_trend as analyse  # noqa: E402
from ufm.experiments.catapult import batch_verdict as verdict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import machine  # noqa: E402

from ufm.results import dumps  # noqa: E402

CONFIG = dict(
    samples=128,
    test_samples=500,
    dim=20,
    width=256,
    target="polynomial",
    rank=2,
    steps=1000,
    probe_every=20,
    lr_multipliers=(1.0,),
    batch_sizes=(8, 16, 32, 64, 128),
)


def report(out):
    for row in out["per_batch"]:
        print(
            f"b={row['batch_size']:4d} ({row['diverged']} diverged): "
            + "  ".join(
                f"{q} {row[q]['mean']:.3f} [{row[q]['ci95'][0]:.3f}, {row[q]['ci95'][1]:.3f}]" for q in QUANTITIES
            )
        )
    for q, tr in out["trend"].items():
        s, d = tr["slope_per_doubling"], tr["smallest_minus_full"]
        print(
            f"{q}: Spearman ρ {tr['spearman_rho']:.2f} (p {tr['spearman_p']:.1e}); "
            f"slope/doubling {s['mean']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]; "
            f"smallest − full {d['mean']:.4f} [{d['ci95'][0]:.4f}, {d['ci95'][1]:.4f}] (d_z {d['cohen_dz']:.2f})"
        )
    print("verdict:", out["verdict"], out["signs"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="3 seeds, 300 steps, batch 8/32/128 (a smoke run)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "catapult_batch.json"))
    ap.add_argument("--reanalyse", action="store_true", help="recompute the statistics of the runs saved in --json")
    a = ap.parse_args()
    if a.reanalyse:
        with open(a.json) as f:
            out = json.load(f)
        out["per_batch"], out["trend"] = analyse(out["runs"], list(out["config"]["batch_sizes"]))
        out["verdict"], out["signs"] = verdict(out["trend"])
        report(out)
        with open(a.json, "w") as f:
            f.write(dumps(out))
        return
    conf = dict(CONFIG, seeds=a.seeds)
    if a.quick:
        conf.update(seeds=3, steps=300, batch_sizes=(8, 32, 128))
    cfg = catapult.CatapultConfig(**conf)
    load0, t = os.getloadavg()[0], time.perf_counter()
    rep = catapult.run_sgd(cfg, callback=lambda e: print(e["stage"], flush=True))
    wall = time.perf_counter() - t
    runs = [  # the rows batch_trend reads, and what a later look at a run needs
        {
            **row,
            "train_loss": float(r.loss[-1]),
            "eta_crit": r.eta_crit,
            "probe_steps": r.probe_steps,
            "agop_curve": r.agop_alignment,
            "catapult_starts": [c.start for c in r.catapults],
        }
        for row, r in zip(catapult.batch_runs(rep), rep.runs, strict=True)
    ]
    per_batch, trend = analyse(runs, list(cfg.batch_sizes))
    v, signs = verdict(trend)
    out = {
        "machine": machine(),
        "config": cfg.to_dict(),
        "lr_rule": "fixed eta = 1.0 * eta_crit(full-batch kernel at init) for every batch size",
        "wall_s": wall,
        "load": [load0, os.getloadavg()[0]],
        "runs": runs,
        "per_batch": per_batch,
        "trend": trend,
        "verdict": v,
        "signs": signs,
        "diverged": sum(r["regime"] == "diverged" for r in runs),
    }
    report(out)
    print(f"({wall:.0f} s, load {load0:.1f} → {os.getloadavg()[0]:.1f})")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        f.write(dumps(out))
    print("wrote", a.json)


if __name__ == "__main__":
    main()
