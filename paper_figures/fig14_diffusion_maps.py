"""Figure 14: diffusion maps of SGD trajectories (``docs/dynamics.md`` §D5, ``docs/diffusion_maps.md``).

Rows: SGD with noise ∝ H on a rank-3 quadratic in R^50 (the trajectory is a 3-dimensional
Gaussian cloud: three slow modes above a gap, dimension ≈ 3, R² ≈ 1 against the Hessian
directions) and — in the full build — mini-batch SGD on a deep UFM from its DNC point (no
gap; its PCA dimension is the linearised-SGD prediction, not the outlier count) and on a
small MNIST MLP (still drifting: ψ_2 is a parabola in ψ_1, ψ_1 is time).
Columns: the diffusion spectrum with the gap, ψ_1 vs ψ_2 coloured by step, the kernel-sum
slope curve (2 × slope is the dimension estimate) with the Hessian outlier count.
Not cached: the quick build takes seconds, the full one a few minutes.
"""

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    C.enable_x64()
    import os

    from ufm import plotting
    from ufm.experiments import dmap

    if quick:
        reports = [dmap.run_quadratic(steps=12_000, record_every=20, burn_in=25, seed=C.SEED)]
    else:
        reports = [dmap.run_quadratic(seed=C.SEED), dmap.run_ufm(seed=C.SEED), dmap.run_mnist(seed=C.SEED)]
    files = plotting.savefig(plotting.dmap.diffusion_figure(reports), os.path.join(out_dir, "fig14_diffusion_maps"))
    parts = []
    for r in reports:
        a = r.analysis
        parts.append(
            f"{r.task}: {a.diffusion.psi.shape[0]} iterates in R^{r.info['num_params']}, q = {a.n_coords} "
            f"coordinates (τ gap ×{a.gap_ratio:.2f}), dimension {a.dimension_estimate:.2f}, "
            f"{a.hessian_outliers} Hessian outliers (gap rule), R² "
            + ", ".join(f"{v:.3f}" for v in a.r2)
            + f", PCA participation ratio {a.participation_ratio:.2f}, drift {a.drift:+.2f}"
            + (
                f" (linearised-SGD prediction {r.info['predicted_participation_ratio']:.2f})"
                if "predicted_participation_ratio" in r.info
                else ""
            )
        )
    caption = "Diffusion maps (α = ½, median bandwidth) of SGD trajectories. " + "; ".join(parts) + f"; seed {C.SEED}."
    return C.FigureResult(files, caption)
