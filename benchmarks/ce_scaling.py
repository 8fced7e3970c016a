"""How the cross-entropy predictions' error scales with NC1 (issue 22 item 7), MNIST MLP.

    PYTHONPATH=. python benchmarks/ce_scaling.py [--json benchmarks/results/ce_scaling.json] [--quick]

The default `ufm real` MNIST MLP with cross-entropy (50 per class, linear head L = 3, d = 32) is
trained once with checkpoints along training (`ufm.networks.train_snapshots`) and, at the last
step, with two more ridges λ_W; at each point every head layer's block (and the full head) is
measured and compared with the class-mean and the class-averaged predictions
(`ufm.networks.analyze`). The law fitted by least squares in log–log:
``error ≈ c · NC1^p`` over all (layer, point) pairs, for the max and the median relative error of
the class-averaged prediction, along training and across ridge. Printed and saved as JSON with the
machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import machine

import ufm.networks as nets
from ufm.results import dump


def _fit(nc1, err):
    ok = (np.asarray(nc1) > 0) & (np.asarray(err) > 0)
    x, y = np.log(np.asarray(nc1)[ok]), np.log(np.asarray(err)[ok])
    if x.size < 2 or np.ptp(x) == 0:
        return {"exponent": None, "prefactor": None, "points": int(x.size)}
    p, a = np.polyfit(x, y, 1)
    return {"exponent": float(p), "prefactor": float(np.exp(a)), "points": int(x.size)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cfg = dict(nets.DEFAULTS[(False, "ce")])
    per_class = 20 if args.quick else cfg["per_class"]
    marks = (200, 600) if args.quick else (500, 1000, 2000, 4000)
    ridges = (cfg["lambda_W"],) if args.quick else (5e-4, cfg["lambda_W"], 8e-3)
    train = nets.subsample(nets.load_mnist(), per_class, seed=0)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows = []
    for lam in ridges:
        spec = nets.NetworkSpec(
            input_shape=train.input_shape, num_classes=10, hidden=(128, 128), width=32, depth=3, loss="ce", lambda_W=lam
        )
        params = nets.init_network(spec, 0, dtype=np.float32)
        these = marks if lam == cfg["lambda_W"] else (marks[-1],)
        for step, res in nets.train_snapshots(
            spec, params, train, these, learning_rate=cfg["learning_rate"], warmup_steps=200, log_every=100
        ):
            rep = nets.analyze(spec, res.params, train, whole_network=False)
            for c in rep.layers:
                rows.append(
                    dict(
                        lambda_W=lam,
                        step=step,
                        layer=c.layer,
                        nc1=c.nc1,
                        mean_max=c.max_rel_error,
                        mean_median=c.median_rel_error,
                        avg_max=c.class_averaged_max_rel_error,
                        avg_median=c.class_averaged_median_rel_error,
                        within=c.split.get("within_class", float("nan")),
                    )
                )
            f = rep.head_full
            rows.append(
                dict(
                    lambda_W=lam,
                    step=step,
                    layer="head",
                    nc1=max(c.nc1 for c in rep.layers),
                    mean_max=f.max_rel_error,
                    mean_median=f.median_rel_error,
                    avg_max=f.class_averaged_max_rel_error,
                    avg_median=f.class_averaged_median_rel_error,
                    within=float("nan"),
                )
            )
            print({k: v for k, v in rows[-1].items()}, flush=True)
    layer_rows = [r for r in rows if r["layer"] != "head"]
    along = [r for r in layer_rows if r["lambda_W"] == cfg["lambda_W"]]
    across = [r for r in layer_rows if r["step"] == marks[-1]]
    out = {
        "machine": machine(),
        "load_before": load0,
        "load_after": os.getloadavg(),
        "seconds": time.perf_counter() - t0,
        "per_class": per_class,
        "marks": marks,
        "ridges": ridges,
        "rows": rows,
        "fits": {
            f"{name}_{which}": _fit([r["nc1"] for r in sel], [r[which] for r in sel])
            for name, sel in (("along_training", along), ("across_ridge", across), ("all", layer_rows))
            for which in ("avg_max", "avg_median", "mean_max", "mean_median")
        },
    }
    for key, fit in out["fits"].items():
        print(key, fit)
    if args.json:
        dump(out, args.json)


if __name__ == "__main__":
    main()
