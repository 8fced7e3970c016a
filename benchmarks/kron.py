"""Layer-wise Hessian spectrum: Kronecker closed form vs dense autodiff, d × d layers.

For a linear MSE layer the data-Hessian block is exactly ``AᵀA ⊗ H̃H̃ᵀ/N`` (``docs/theory.md`` §4),
so `ufm.theory.layer_hessian_spectrum` (through `kron_eigh`) never forms the P × P block
(P = d²). The dense route builds the block and calls `eigvalsh` (`ufm.curvature.spectrum`);
it is run only while the block fits (P <= 4096 here). Printed: times, the ratio and the
largest eigenvalue difference (relative). Run: ``python benchmarks/kron.py``.
"""

import functools
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import ufm  # noqa: E402

K = 10


def main():
    print(f"# jax {jax.__version__}, float64; layer 2 of a K={K}, n=5, L=3 UFM at its DNC optimum")
    print(f"{'d':>5s} {'P = d²':>9s} {'kron [s]':>9s} {'dense [s]':>10s} {'dense/kron':>10s} {'max rel. diff':>13s}")
    for d in (16, 32, 64, 128, 256, 512, 1000):
        spec = ufm.UFMSpec(num_classes=K, per_class=5, depth=3, width=d)
        params = ufm.theory.construct_optimum(spec, 0)
        ufm.theory.layer_hessian_spectrum(spec, params, 2, vectors=False)  # warm up
        t = time.perf_counter()
        pred = ufm.theory.layer_hessian_spectrum(spec, params, 2, vectors=False)
        t_kron = time.perf_counter() - t
        P = d * d
        if P <= 4096:
            f = ufm.model.loss_fn(spec, regularized=False)
            dense = functools.partial(ufm.curvature.spectrum, f, params, leaves=[2], method="dense", vectors=False)
            dense()  # compile
            t = time.perf_counter()
            vals = dense().eigenvalues
            t_dense = time.perf_counter() - t
            m = pred.eigenvalues.size
            diff = np.max(np.abs(vals[:m] - pred.eigenvalues)) / vals[0]
            print(f"{d:5d} {P:9d} {t_kron:9.4f} {t_dense:10.3f} {t_dense / t_kron:9.0f}x {diff:13.1e}")
        else:
            print(f"{d:5d} {P:9d} {t_kron:9.4f} {'(P×P too big)':>10s}")


if __name__ == "__main__":
    main()
