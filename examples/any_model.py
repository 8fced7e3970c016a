"""Every instrument on your own model: an Equinox MLP trained on the shipped MNIST by `ufm.dynamics.record`.

The tutorial ``docs/any_model.md`` walks through the same code. Probes at each checkpoint: the
Hessian's top eigenvalues of the last layer and the alignment of its gradient (`spectral_probe`),
NC1–NC4 of the last hidden layer (`nc_probe`), the tangent kernel's top eigenvalues
(`kernel_probe`); after the run, catapults on the loss curve (`trajectory_catapults`) and a
diffusion map of the kept iterates (`trajectory_diffusion`). One figure. Run:

    PYTHONPATH=. python examples/any_model.py [--quick] [--out any_model.png]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ufm import dynamics as D
from ufm import networks

jax.config.update("jax_enable_x64", True)  # a script's choice (the library never switches precision)


def mse(model, batch):
    """``(1/2n) Σ_i ‖f(x_i) − e_{y_i}‖²`` (the catapult convention, ``docs/catapults.md`` §1)."""
    X, Y = batch
    return 0.5 * jnp.mean(jnp.sum((jax.vmap(model)(X) - Y) ** 2, axis=1))


def hidden(model, X):
    """The last hidden layer's features, (N, width): samples as rows."""
    h = X
    for layer in model.layers[:-1]:
        h = model.activation(jax.vmap(layer)(h))
    return h


def outputs(model, X):
    return jax.vmap(model)(X)


def main(per_class=60, steps=600, every=5, classes=3, seed=0, out="any_model.png"):
    data = networks.subsample(networks.load_mnist(dtype=np.float64), per_class, seed=seed)
    keep = data.labels < classes
    X = jnp.asarray(data.X[keep].reshape(int(keep.sum()), -1))
    labels = data.labels[keep]
    Y = jax.nn.one_hot(labels, classes, dtype=X.dtype)
    n = X.shape[0]
    model = eqx.nn.MLP(X.shape[1], classes, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(seed))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, model)

    kernel = D.kernel_probe(outputs, X, k=5)
    lam0 = float(kernel(model, None)["lambda_max"])
    lr = 1.5 * D.critical_learning_rate(lam0, n)  # 1.5 η_crit: a catapult is expected
    probes = {
        "hessian": D.spectral_probe(mse, (X, Y), 3, leaves=[-2, -1]),  # the last layer's weight and bias
        "nc": D.nc_probe(hidden, X, labels, weights_fn=lambda m: [m.layers[-1].weight], predict_fn=outputs),
        "kernel": kernel,
    }
    traj = D.record(
        mse,
        model,
        optax.sgd(lr),
        steps=steps,
        checkpoints=np.arange(0, steps, 10 * every),
        data=(X, Y),
        probes=probes,
        iterates_every=every,
        throw=False,
    )
    catapults = D.trajectory_catapults(traj, kernel="kernel")
    diffusion = D.trajectory_diffusion(traj, burn_in=traj.iterates.shape[0] // 10, max_coords=4)
    nc1 = traj.probe("nc", "nc1")[:, 0]
    print(
        f"{n} MNIST images, {classes} classes; η = {lr:.3g} (1.5 η_crit); {traj.stopped}; "
        f"{len(catapults)} catapult(s); NC1 {nc1[0]:.3g} -> {nc1[-1]:.3g}; diffusion q = {diffusion.n_coords}"
    )
    figure(traj, catapults, diffusion, 2 * n / lr, out)
    return traj, catapults, diffusion


def figure(traj, catapults, diffusion, critical_lambda, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.4))
    ax[0].semilogy(traj.step_losses, lw=0.8)
    for c in catapults:
        ax[0].axvspan(c.start, c.end, color="C3", alpha=0.2)
    ax[0].set(xlabel="step", ylabel="training loss", title="loss (catapults shaded)")
    ax[1].plot(traj.steps, traj.probe("kernel", "lambda_max"), "o-", label="λ_max(K)")
    ax[1].axhline(critical_lambda, color="k", ls="--", lw=0.8, label="2n/η")
    ax[1].set(xlabel="step", title="tangent kernel")
    ax[1].legend()
    ax[2].semilogy(traj.steps, traj.probe("nc", "nc1")[:, 0], "o-", label="NC1")
    ax[2].semilogy(traj.steps, traj.probe("hessian", "f_top_grad"), "s-", label="gradient in top-3 Hessian space")
    ax[2].set(xlabel="step", title="collapse and alignment")
    ax[2].legend()
    psi = diffusion.diffusion.psi
    sc = ax[3].scatter(psi[:, 1], psi[:, 2], c=diffusion.steps, s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax[3], label="step")
    ax[3].set(xlabel="ψ₁", ylabel="ψ₂", title="diffusion map of the iterates")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (seconds)")
    ap.add_argument("--out", default="any_model.png")
    args = ap.parse_args()
    main(**(dict(per_class=10, steps=100, every=2) if args.quick else {}), out=args.out)
