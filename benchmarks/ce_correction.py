"""The class-covariance correction of the CE layer blocks tried in docs/real_networks.md §12 (issue 22 item 7).

    PYTHONPATH=. python benchmarks/ce_correction.py [CHECKPOINT.npz]

On the default CE MNIST MLP (trained, or resumed from the `ufm real --checkpoint` file given),
each head layer's measured block against the class-averaged prediction ``Σ_c π_c C̄_c ⊗ μ_cμ_cᵀ``
and against it plus the class feature covariances ``Σ_c π_c C̄_c ⊗ (μ_cμ_cᵀ + Σ_c)``: max and
median relative error over the prediction's top (at most (K−1)²) eigenvalues. Printed.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from ufm.collapse import class_means
from ufm.experiments.real import DEFAULTS
from ufm.networks._data import load_mnist, stratified_split
from ufm.networks._head import _builtin_head
from ufm.networks._measure import _eig
from ufm.networks._models import NetworkSpec, backbone_features, init_network
from ufm.networks._train import train_network
from ufm.theory import kron_sum_spectrum


def main():
    cfg = DEFAULTS[(False, "ce")]
    train, _ = stratified_split(load_mnist(), 50, 100, seed=0)  # the default run's split
    spec = NetworkSpec(
        input_shape=train.input_shape, num_classes=10, hidden=(128, 128), width=32, depth=3, loss="ce",
        lambda_W=cfg["lambda_W"],
    )  # fmt: skip
    res = train_network(
        spec, init_network(spec, 0, dtype=np.float32), train, steps=4000, learning_rate=0.1, warmup_steps=200,
        seed=0, log_every=200, checkpoint=sys.argv[1] if len(sys.argv) > 1 else None,
    )  # fmt: skip
    K, k = 10, 81
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), res.params)
        head = _builtin_head(spec, p, backbone_features(spec, p, jnp.asarray(train.X, jnp.float64)), train.labels)
        y = head.labels
        for l in (1, 2, 3):
            H = head.features[l - 1]
            C = head.curvatures(l, head.preactivations(l, H), y)
            Cbar = [C[y == c].mean(axis=0) / K for c in range(K)]
            M = class_means(H, y, K)
            spread = [(H[:, y == c] - M[:, c : c + 1]) / np.sqrt((y == c).sum()) for c in range(K)]
            avg = kron_sum_spectrum(Cbar, [M[:, c : c + 1] for c in range(K)])
            cov = kron_sum_spectrum(Cbar, [np.concatenate([M[:, c : c + 1], spread[c]], axis=1) for c in range(K)])
            meas, _ = _eig(head.loss_fn, head.arrays, leaves=[l - 1], k=k + 10)
            for name, s in (("class-averaged", avg), ("+ class covariance", cov)):
                m = min(k, s.eigenvalues.size)
                rel = np.abs(meas.eigenvalues[:m] - s.eigenvalues[:m]) / s.eigenvalues[:m]
                print(f"W_{l} {name} (top {m}): max {rel.max():.3g}, median {np.median(rel):.3g}", flush=True)


if __name__ == "__main__":
    main()
