"""The full data Hessian of a deep-UFM head over all its layers at a collapsed point (``docs/theory.md`` §4.8).

Any point, any weights: not only the DNC optimum of `full_hessian_spectrum` (§4.7), which it
reproduces there. The head ``u_l = W_l h_l + b_l``, ``h_{l+1} = σ(u_l)`` (σ linear or ReLU, so
σ'' = 0 away from the kinks), ``z = u_L``, on features collapsed to their class means
(``h_{i,1} = μ_{y_i}``, balanced classes), has the data Hessian of the mean loss over
``θ = (W_1, .., W_L, b_1, .., b_L)``

    ∇²Φ = (1/K) Σ_c [ J_cᵀ Q_c J_c + R_c ],

with, per class c (all factors at the class mean, ``D_{c,l} = diag σ'(u_{c,l})``):

* tail Jacobians ``B_{c,L} = I``, ``B_{c,l} = B_{c,l+1} W_{l+1} D_{c,l}`` (= ∂z/∂u_l);
  ``J_c v = Σ_l B_{c,l} (ΔW_l h_{c,l} + Δb_l)`` (the Gauss–Newton part);
* ``Q_c = ∇²_z ℓ``: ``I`` for MSE ``½‖z − e_c‖²``, ``diag p_c − p_c p_cᵀ`` for CE;
* the residual part, one term per pair of layers l < m (the loss is linear in each layer):
  ``vᵀ R_c v = 2 Σ_{l<m} δ_{c,m}ᵀ ΔW_m G_{c,m,l} (ΔW_l h_{c,l} + Δb_l)`` with
  ``δ_{c,m} = B_{c,m}ᵀ g_c``, ``g_c = ∇_z ℓ`` (``z_c − e_c`` MSE, ``p_c − e_c`` CE) and
  ``G_{c,m,l} = ∂h_m/∂u_l = D_{c,m−1} W_{m−1} ⋯ W_{l+1} D_{c,l}``.

Derivation: second-order expansion of ``ℓ(z(θ + v))``; ``z`` is multilinear in the layers and
σ'' = 0, so ``d²z[v, v] = 2 Σ_{l<m} B_m ΔW_m G_{m,l} Δu_l`` (the §4.7 cross blocks, at any point).
The ridge is not included (add λ_l per coordinate of layer l). ``curvatures`` / ``gradients``
replace ``Q_c`` / ``g_c`` by other class-level statistics (e.g. the class averages of the
per-sample ``∇²_z ℓ`` and ``∇_z ℓ``: the class-averaged prediction of ``docs/real_networks.md`` §3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["collapsed_full_hessian", "collapsed_full_hessian_matvec"]


def _check(weights, M, biases, activation, loss):
    if activation not in ("linear", "relu"):
        raise ValueError(f"activation must be 'linear' or 'relu' (σ'' = 0), got {activation!r}")
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    Ws = [np.asarray(W, np.float64) for W in weights]
    if not Ws:
        raise ValueError("weights: the head needs at least one weight W_1")
    M = np.asarray(M, np.float64)
    if M.ndim != 2:
        raise ValueError(f"means must be (d_1, K) class means, got shape {M.shape}")
    d = M.shape[0]
    for l, W in enumerate(Ws, start=1):
        if W.ndim != 2 or W.shape[1] != d:
            raise ValueError(f"weights: W_{l} must be (d_out, {d}), got shape {W.shape}")
        d = W.shape[0]
    K = Ws[-1].shape[0]
    if M.shape[1] != K:
        raise ValueError(f"means must have one column per class (K={K} rows of W_L), got {M.shape[1]}")
    bs = [np.asarray(b, np.float64) for b in biases]
    if bs and (len(bs) != len(Ws) or any(b.shape != (W.shape[0],) for b, W in zip(bs, Ws, strict=True))):
        raise ValueError(f"biases must be one (d_out,) vector per weight or none, got {[b.shape for b in bs]}")
    return Ws, M, bs, K


def _class_factors(Ws, M, bs, activation, loss, curvatures, gradients):
    """Per-class features h_{c,l}, tails B_{c,l}, errors δ_{c,l}, masks D_{c,l}, Q_c (all numpy)."""
    L, K = len(Ws), M.shape[1]
    hs, Ds, h = [], [], M  # h: d_l × K, columns are classes
    for l in range(L):
        hs.append(h)
        u = Ws[l] @ h + (bs[l][:, None] if bs else 0.0)
        if l < L - 1:
            D = (u > 0).astype(np.float64) if activation == "relu" else np.ones_like(u)
            Ds.append(D)
            h = u * D if activation == "relu" else u
    Z = u  # K_out × K
    E = np.eye(K)
    if loss == "mse":
        g, Q = Z - E, np.broadcast_to(np.eye(K), (K, K, K)).copy()
    else:
        P = np.exp(Z - Z.max(axis=0))
        P /= P.sum(axis=0)
        g = P - E
        Q = np.stack([np.diag(P[:, c]) - np.outer(P[:, c], P[:, c]) for c in range(K)])
    if curvatures is not None:
        Q = np.asarray(curvatures, np.float64)
        if Q.shape != (K, K, K):
            raise ValueError(f"curvatures must be (K, K, K) = {(K, K, K)}, got {Q.shape}")
    if gradients is not None:
        g = np.asarray(gradients, np.float64).T
        if g.shape != (K, K):
            raise ValueError(f"gradients must be (K, K) = {(K, K)} (row c for class c), got {g.T.shape}")
    Bs = [None] * L  # B_{c,l}: K × K_out × d_{l+1}
    Bs[L - 1] = np.broadcast_to(np.eye(K), (K, K, K)).copy()
    for l in range(L - 2, -1, -1):
        Bs[l] = np.einsum("cko,oi,ic->cki", Bs[l + 1], Ws[l + 1], Ds[l])
    deltas = [np.einsum("cko,kc->co", B, g) for B in Bs]  # δ_{c,l} = B_{c,l}ᵀ g_c: K × d_{l+1}
    return hs, Ds, Bs, deltas, Q


def collapsed_full_hessian_matvec(
    weights, means, biases=(), *, activation: str = "linear", loss: str = "mse", curvatures=None, gradients=None
):
    """``(matvec, dim)``: products with the full data Hessian of the head at its class means (module docstring).

    Args:
      weights: ``W_1..W_L``, each d_out × d_in, W_L with K rows.
      means: (d_1, K) class means of the head's input H_1, column c for class c.
      biases: ``b_1..b_L`` or ``()``.
      activation: σ between the layers, ``"linear"`` or ``"relu"`` (σ'(0) = 0); loss: ``"mse"``
        (``½‖z − e_c‖²`` per sample) or ``"ce"``.
      curvatures, gradients: optional (K, K, K) / (K, K) replacements of ``Q_c = ∇²_z ℓ`` and
        ``g_c = ∇_z ℓ`` at the class-mean logits (row c for class c).

    Returns:
      ``matvec``: a jittable ``(dim,) -> (dim,)`` function on flat vectors ordered
      ``W_1, .., W_L, b_1, .., b_L`` (each row-major), and ``dim``. Float64 inside a
      ``jax.enable_x64`` context (as `collapsed_full_hessian` builds it).
    """
    Ws, M, bs, K = _check(weights, means, biases, activation, loss)
    L = len(Ws)
    hs, Ds, Bs, deltas, Q = _class_factors(Ws, M, bs, activation, loss, curvatures, gradients)
    # G_{c,m,l} = ∂h_m/∂u_l (K × d_m × d_{l+1}) for l < m (0-based layer indices l < m)
    G = {}
    for l in range(L):
        for m in range(l + 1, L):
            G[m, l] = (
                np.einsum("ci,ij->cij", Ds[l].T, np.eye(Ds[l].shape[0]))
                if m == l + 1
                else np.einsum("ci,ij,cjk->cik", Ds[m - 1].T, Ws[m - 1], G[m - 1, l])
            )
    j = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
    hs_, Bs_, deltas_, Q_ = [j(h) for h in hs], [j(B) for B in Bs], [j(x) for x in deltas], j(Q)
    G_ = {key: j(v) for key, v in G.items()}
    shapes = [W.shape for W in Ws]
    sizes = [a * b for a, b in shapes] + ([W.shape[0] for W in Ws] if bs else [])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    dim = int(offsets[-1])
    has_b = bool(bs)

    def matvec(v):
        v = jnp.asarray(v)
        dW = [v[offsets[l] : offsets[l + 1]].reshape(shapes[l]) for l in range(L)]
        db = [v[offsets[L + l] : offsets[L + l + 1]] for l in range(L)] if has_b else [jnp.zeros(s[0]) for s in shapes]
        du = [dW[l] @ hs_[l] + db[l][:, None] for l in range(L)]  # Δu_{c,l}: d_{l+1} × K
        Jv = sum(jnp.einsum("cki,ic->kc", Bs_[l], du[l]) for l in range(L))  # K_out × K
        QJv = jnp.einsum("ckj,jc->kc", Q_, Jv)
        back = [jnp.einsum("cki,kc->ic", Bs_[l], QJv) for l in range(L)]  # GN part on u_l: d_{l+1} × K
        outW = [back[l] @ hs_[l].T for l in range(L)]
        outb = [back[l].sum(axis=1) for l in range(L)]
        for (m, l), Gml in G_.items():
            x = jnp.einsum("cij,jc->ic", Gml, du[l])  # G_{c,m,l} Δu_{c,l}: d_m × K
            outW[m] = outW[m] + deltas_[m].T @ x.T
            y = jnp.einsum("cij,ic->jc", Gml, dW[m].T @ deltas_[m].T)  # G_{c,m,l}ᵀ ΔW_mᵀ δ_{c,m}: d_{l+1} × K
            outW[l] = outW[l] + y @ hs_[l].T
            outb[l] = outb[l] + y.sum(axis=1)
        parts = [w.reshape(-1) for w in outW] + (outb if has_b else [])
        return jnp.concatenate(parts) / K

    return matvec, dim


def collapsed_full_hessian(
    weights,
    means,
    biases=(),
    *,
    activation: str = "linear",
    loss: str = "mse",
    curvatures=None,
    gradients=None,
    max_dim: int = 8192,
) -> np.ndarray:
    """The dense (dim × dim) full data Hessian of the head at its class means (`collapsed_full_hessian_matvec`).

    Built column by column from the closed-form products (no autodiff of the loss), symmetrised;
    refused above ``max_dim`` coordinates (use the matvec with a Krylov solver instead).

    >>> import numpy as np
    >>> H = collapsed_full_hessian([np.eye(2)], 2.0 * np.eye(2))   # one layer: I ⊗ MMᵀ/K = I ⊗ 2I
    >>> np.allclose(H, 2.0 * np.eye(4))
    True
    """
    if not (isinstance(max_dim, int) and max_dim >= 1):
        raise ValueError(f"max_dim must be a positive int, got {max_dim!r}")
    with jax.enable_x64(True):
        matvec, dim = collapsed_full_hessian_matvec(
            weights, means, biases, activation=activation, loss=loss, curvatures=curvatures, gradients=gradients
        )
        if dim > max_dim:
            raise ValueError(f"the full Hessian has dim={dim} > max_dim={max_dim} coordinates; use the matvec")
        H = np.asarray(jax.jit(jax.vmap(matvec, in_axes=1, out_axes=1))(jnp.eye(dim, dtype=jnp.float64)))
    return 0.5 * (H + H.T)
