"""Bring your own JAX model: an Equinox backbone and head analysed by ``ufm.networks.analyze_model``.

The backbone is any ``features(params, X) -> (N, d)``; the head any ``head(params, H) -> (N, K)``
whose 2-d leaves are its linear layers (d_out × d_in, as ``eqx.nn.Linear.weight``). Run:

    PYTHONPATH=. python examples/equinox_model.py
"""

import equinox as eqx
import jax
import optax

from ufm import networks


def main(steps: int = 1500, seed: int = 0):
    data = networks.gaussian_mixture(4, 20, 16, separation=4.0, noise=0.3, seed=seed)
    kb, kh = jax.random.split(jax.random.PRNGKey(seed))
    model = (
        eqx.nn.MLP(16, 8, 32, 1, key=kb),  # backbone: 16 -> 32 -> d = 8
        eqx.nn.MLP(8, 4, 8, 1, activation=lambda x: x, use_bias=False, use_final_bias=False, key=kh),
    )  # head
    features = lambda m, X: jax.vmap(m)(X)  # noqa: E731
    head = lambda m, H: jax.vmap(m)(H)  # noqa: E731

    def loss(m):  # MSE ½‖z − e_y‖² per sample + ridge 1e-3
        Z = head(m[1], features(m[0], data.X))
        reg = sum(jax.numpy.sum(p**2) for p in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array)))
        return 0.5 * jax.numpy.mean(jax.numpy.sum((Z - jax.nn.one_hot(data.labels, 4)) ** 2, axis=1)) + 5e-4 * reg

    opt = optax.adam(3e-3)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(m, s):
        g = eqx.filter_grad(loss)(m)
        u, s = opt.update(g, s, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, u), s

    for _ in range(steps):
        model, state = step(model, state)
    report = networks.analyze_model(features, model[0], head, model[1], data.X, data.labels, loss="mse")
    print(networks.format_table(report))
    return report


if __name__ == "__main__":
    main()
