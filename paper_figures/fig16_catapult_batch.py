"""Figure 16: the batch-size claim of [ZLRB] tested with power (``docs/catapults.md`` §7).

SGD at one fixed rate η = η_crit of the full-batch kernel at initialisation for every batch
size, on a rank-2 polynomial of x ~ N(0, I_20) with n = 128 (a task where GD leaves the AGOP
alignment ≈ 0.6); 12 paired seeds × 5 batch sizes. Panels: catapult count, final AGOP
alignment and final test MSE against the batch size — each seed a thin line (paired design),
the mean with its 95 % t-interval.

The sweep is ``benchmarks/catapult_batch.py`` (≈ 9 min on 2 shared cores); the figure draws its
saved JSON (``benchmarks/results/catapult_batch.json``) in both modes. Without that file it
runs a smoke-size sweep (3 seeds, 300 steps, b = 8, 32, 128; cached) and says so in the caption.
"""

import json
import os

import numpy as np

from . import _common as C

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "results", "catapult_batch.json")
LABELS = {"catapults": "catapults (count)", "agop_alignment": "final AGOP alignment", "test_mse": "final test MSE"}


def _load(out_dir):
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return json.load(f), True
    C.enable_x64()
    from ufm.experiments import catapult

    conf = dict(samples=128, test_samples=500, dim=20, width=256, target="polynomial", rank=2, steps=300)
    conf.update(probe_every=20, lr_multipliers=(1.0,), batch_sizes=(8, 32, 128), seeds=3)

    def compute():
        runs = catapult.batch_runs(catapult.run_sgd(catapult.CatapultConfig(**conf)))
        return {"runs": np.asarray(json.dumps(runs))}

    runs = json.loads(str(C.cached(out_dir, "fig16", conf, compute)["runs"]))
    per_batch, trend = catapult.batch_trend(runs, list(conf["batch_sizes"]))
    v, signs = catapult.batch_verdict(trend)
    out = {"runs": runs, "per_batch": per_batch, "trend": trend, "verdict": v, "config": conf}
    return out, False


def make(out_dir, quick: bool = False) -> C.FigureResult:
    from ufm import plotting

    data, measured = _load(out_dir)
    per_batch, trend, runs = data["per_batch"], data["trend"], data["runs"]
    bs = [row["batch_size"] for row in per_batch]
    seeds = sorted({r["seed"] for r in runs})
    with plotting.use_style():
        fig, axes = plotting.figure(1, 3, columns=2, height=2.3)
        for k, (ax, q) in enumerate(zip(axes, LABELS, strict=True)):
            for s in seeds:  # paired: one thin line per seed (a diverged run is a gap)
                y = []
                for b in bs:
                    r = next(r for r in runs if r["seed"] == s and r["batch_size"] == b)
                    y.append(np.nan if r["regime"] == "diverged" else r[q])
                ax.plot(bs, y, color="0.75", linewidth=0.5, zorder=1)
            m = np.array([row[q]["mean"] for row in per_batch])
            ci = np.array([row[q]["ci95"] for row in per_batch])
            ax.errorbar(
                bs,
                m,
                yerr=[m - ci[:, 0], ci[:, 1] - m],
                color=plotting.COLORS[k],
                marker="o",
                markersize=3,
                linewidth=1.2,
                capsize=2,
                zorder=3,
            )
            tr = trend[q]["slope_per_doubling"]
            ax.set_xscale("log", base=2)
            ax.set_xticks(bs, [str(b) for b in bs])
            ax.minorticks_off()
            ax.set(xlabel="batch size b (128 = full batch)", ylabel=LABELS[q])
            ax.set_title(
                f"({'abc'[k]}) paired slope per doubling of b:\n{tr['mean']:+.3g}, 95 % CI "
                f"[{tr['ci95'][0]:+.3g}, {tr['ci95'][1]:+.3g}]",
                loc="left",
                fontsize=6,
            )
        files = plotting.savefig(fig, os.path.join(out_dir, "fig16_catapult_batch"))
    eff = {q: trend[q]["smallest_minus_full"] for q in LABELS}
    div = sum(r["regime"] == "diverged" for r in runs)
    rho = lambda q: f"{trend[q]['spearman_rho']:.2f} (p = {trend[q]['spearman_p']:.1g})"  # noqa: E731
    conf = data["config"]
    src = (
        "benchmarks/results/catapult_batch.json (benchmarks/catapult_batch.py)"
        if measured
        else "a smoke-size sweep (the saved benchmark JSON is missing; 3 seeds cannot resolve the trend)"
    )
    caption = (
        f"The batch-size claim of [ZLRB]: SGD at one fixed rate η = {conf['lr_multipliers'][0]:g} η_crit (full-batch "
        f"kernel at initialisation) for every batch size, 2-layer NTK ReLU MLP of width {conf['width']}, target a "
        f"rank-{conf['rank']} polynomial of x ~ N(0, I_{conf['dim']}), n = {conf['samples']}, {conf['steps']} steps; "
        f"{len(seeds)} paired seeds (grey: one seed; colour: mean with 95 % t-interval). Batch {bs[0]} minus full "
        f"batch, paired: catapults {eff['catapults']['mean']:+.1f} [{eff['catapults']['ci95'][0]:+.1f}, "
        f"{eff['catapults']['ci95'][1]:+.1f}], AGOP alignment {eff['agop_alignment']['mean']:+.3f} "
        f"[{eff['agop_alignment']['ci95'][0]:+.3f}, {eff['agop_alignment']['ci95'][1]:+.3f}], test MSE "
        f"{eff['test_mse']['mean']:+.3f} [{eff['test_mse']['ci95'][0]:+.3f}, {eff['test_mse']['ci95'][1]:+.3f}]; "
        f"Spearman ρ against b: {rho('catapults')}, {rho('agop_alignment')}, {rho('test_mse')}. "
        f"{div} diverged run(s) left out. Verdict: {data['verdict']}. "
        f"Data: {src}."
    )
    return C.FigureResult(files, caption)
