"""Figure 13: catapults in GD and SGD [ZLRB] (``docs/catapults.md``; ``docs/dynamics.md`` §D4).

Top row: full-batch GD on the x₁x₂ target with a 2-layer NTK ReLU network at η = 0.5 η_crit
(monotone) and 1.5 η_crit (a catapult): loss, P_s L and P_s^⊥ L (s = 5) and λ_max(K) with
2n/η dashed. Bottom row: AGOP alignment against the number of catapults of the schedule
that steps above the current η_crit again and again; the SGD batch-size sweep (catapults,
final AGOP alignment, test MSE, mean ± std over seeds).
"""

import json

import numpy as np

from . import _common as C

SUB, SUPER = 0.5, 1.5


def _configs(quick: bool):
    from ufm.experiments.catapult import CatapultConfig

    if quick:
        base = dict(samples=32, width=128, steps=100, test_samples=100, seed=C.SEED)
        return (
            CatapultConfig(**base, lr_multipliers=(SUB, SUPER)),
            CatapultConfig(**base, lr_multipliers=(1.5,), increases=2),
            CatapultConfig(**base, lr_multipliers=(0.5,), batch_sizes=(4, 32), seeds=2),
        )
    return (
        CatapultConfig(lr_multipliers=(SUB, SUPER), seed=C.SEED),
        CatapultConfig(lr_multipliers=(1.2, 1.5), increases=3, seed=C.SEED),
        CatapultConfig(lr_multipliers=(0.5,), batch_sizes=(4, 8, 16, 32, 64, 128), seeds=3, seed=C.SEED),
    )


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    from ufm import plotting
    from ufm.experiments import catapult as experiment
    from ufm.plotting import catapult

    cfgs = _configs(quick)

    def compute():
        reports = (experiment.run_gd(cfgs[0]), experiment.run_schedule(cfgs[1]), experiment.run_sgd(cfgs[2]))
        return {
            name: np.asarray(json.dumps(r.to_dict()))
            for name, r in zip(("gd", "schedule", "sgd"), reports, strict=True)
        }

    data = C.cached(out_dir, "catapults", {"configs": [c.to_dict() for c in cfgs]}, compute)
    gd, schedule, sgd = (json.loads(str(data[k])) for k in ("gd", "schedule", "sgd"))
    with plotting.use_style():
        fig, axes = plotting.figure(2, 4, columns=2, height=4.3)
        for (ax, bx), run in zip((axes[0, :2], axes[0, 2:]), gd["runs"], strict=True):
            catapult.plot_run(
                (ax, bx), run, title=rf"$\eta = {run['multiplier']:g}\,\eta_{{\rm crit}}$ ({run['regime']})"
            )
        axes[0, 0].legend(loc="center right")
        axes[0, 1].legend(loc="center right")
        catapult.plot_alignment_vs_catapults(axes[1, 0], schedule)
        catapult.plot_batch_sweep(axes[1, 1:], sgd)
        axes[1, 1].legend()
        files = plotting.savefig(fig, f"{out_dir}/fig13_catapults")
    cfg = cfgs[0]
    sup = gd["runs"][1]
    cat = max(sup["catapults"], key=lambda c: c["peak_loss"]) if sup["catapults"] else None
    peak = (
        f"peak loss {cat['peak_loss']:.3g} at step {cat['peak']}, {100 * cat['peak_share_top']:.1f}% of it in "
        f"P_sL; λ_max {cat['lambda_max_before']:.3g} → {cat['lambda_max_after']:.3g}"
        if cat
        else "no catapult"
    )
    caption = (
        f"Catapults [ZLRB]: 2-layer NTK {cfg.activation} MLP, width {cfg.width}, n = {cfg.samples}, "
        f"d = {cfg.dim}, target x₁x₂, MSE (1/2n)‖f−y‖², s = {cfg.top}; GD at {SUB} and {SUPER} η_crit "
        f"({peak}; AGOP alignment {gd['runs'][0]['agop_alignment_final']:.3f} vs "
        f"{sup['agop_alignment_final']:.3f}); schedule with {cfgs[1].increases} increases; SGD at "
        f"{cfgs[2].lr_multipliers[0]} η_crit, {cfgs[2].seeds} seeds; seed {C.SEED}."
    )
    return C.FigureResult(files, caption)
