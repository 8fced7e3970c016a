"""The tail recursion: how a layer's input reaches the loss (``docs/theory.md`` §4–§6).

Conventions (loss ``Φ = (1/N) Σ_i ℓ_i``, row-major vec, layer l = the block of ``W_l``) are
those of `ufm.theory._layer`.

The one formula behind every layer-wise closed form (derived; it generalises ``docs/theory.md`` §4–§6):
``W_l`` enters the network only through ``u_i = W_l h̃_i``, so

    ∇²_{W_l} Φ = (1/N) Σ_i C_i ⊗ h̃_i h̃_iᵀ,     C_i = ∇²_u ℓ_i(u_i)   (d_{l+1} × d_{l+1}),

exactly, at any point and for any activation. At a collapsed point (``h̃_i = μ_c``) this is
``(1/K) Σ_c C_c ⊗ μ_c μ_cᵀ``. ``C`` is computed by the backward recursion
``C_j = D_j W_jᵀ C_{j+1} W_j D_j + diag(σ''(h_j) ⊙ W_jᵀ g_{j+1})``, ``g_j = D_j W_jᵀ g_{j+1}``
from ``C_{L+1} = ∇²_z ℓ`` (``I`` for MSE, ``ρ = diag(p) − ppᵀ`` for CE), ``D_j = diag(σ'(h_j))``.
Linear MSE gives ``C = A^{(l+1)ᵀ}A^{(l+1)}`` (``docs/theory.md`` §4, one Kronecker product); CE
gives ``A^{(l+1)ᵀ} ρ_c A^{(l+1)}`` (§5); ReLU uses ``σ'(0) = spec.relu_grad0`` and ``σ'' = 0``
(the autodiff convention); softplus ``softplus(βx)/β`` has ``σ' = sigmoid(βx)`` and
``σ'' = β·sigmoid(βx)(1 − sigmoid(βx))`` (§6).
"""

from __future__ import annotations

import numpy as np

from ..results import result
from ..spec import UFMSpec

__all__ = ["Tail", "activation_derivatives", "tail"]


@result
class Tail:
    """Per column m of the input: the tail Jacobian of z (m × K × d), the loss gradient
    ``g`` (m × d) and the loss Hessian ``C`` (m × d × d), all with respect to that column.
    Closed form: ``converged`` is always True (`ufm.results`)."""

    jacobian: np.ndarray
    gradient: np.ndarray
    curvature: np.ndarray
    converged: bool = True
    messages: tuple[str, ...] = ()


def activation_derivatives(spec: UFMSpec, x: np.ndarray):
    """(σ(x), σ'(x), σ''(x)) with the spec's conventions at the kink."""
    if spec.activation == "linear":
        return x, np.ones_like(x), np.zeros_like(x)
    if spec.activation == "relu":
        slope = np.where(x > 0, 1.0, np.where(x == 0, spec.relu_grad0, 0.0))
        return np.maximum(x, 0.0), slope, np.zeros_like(x)
    beta = spec.softplus_beta
    sig = 0.5 * (1.0 + np.tanh(0.5 * beta * x))  # sigmoid(βx), overflow-free
    return np.logaddexp(0.0, beta * x) / beta, sig, beta * sig * (1.0 - sig)


def tail(spec: UFMSpec, Ws, X: np.ndarray, labels: np.ndarray, start: int) -> Tail:
    """Per column of ``X = H_start`` (pre-activation of layer ``start`` ∈ 1..L+1):
    the Jacobian ``J`` (m × K × d) of z, the loss gradient ``g`` (m × d) and Hessian
    ``C`` (m × d × d) with respect to that column (see the module docstring)."""
    L = spec.depth
    X = np.asarray(X, dtype=np.float64)
    pres, slopes, curvs = [], [], []
    post = X
    for j in range(start, L + 1):
        if j == 1:
            d1, d2 = np.ones_like(post), np.zeros_like(post)
        else:
            post, d1, d2 = activation_derivatives(spec, pres[-1] if pres else X)
        slopes.append(d1)
        curvs.append(d2)
        pres.append(np.asarray(Ws[j - 1]) @ post)
        post = pres[-1]
    Z = post if start <= L else X  # K × m
    m, K = Z.shape[1], spec.num_classes
    Y = np.eye(K)[:, labels]
    if spec.loss == "mse":
        g, C = (Z - Y).T, np.broadcast_to(np.eye(K), (m, K, K)).copy()
    else:
        P = np.exp(Z - Z.max(axis=0))
        P /= P.sum(axis=0)
        g = (P - Y).T
        C = np.einsum("ij,ik->kij", np.eye(K), P) - np.einsum("ik,jk->kij", P, P)
    J = np.broadcast_to(np.eye(K), (m, K, K)).copy()
    for j in range(L, start - 1, -1):
        W = np.asarray(Ws[j - 1], dtype=np.float64)
        D = slopes[j - start].T  # m × d_j
        WtC = W.T @ C @ W  # (m, d_j, d_j); a 3-operand einsum here built a d⁴-sized intermediate
        WtG = g @ W  # m × d_j  (rows: W_jᵀ g_{j+1})
        C = D[:, :, None] * WtC * D[:, None, :]
        C[:, np.arange(D.shape[1]), np.arange(D.shape[1])] += curvs[j - start].T * WtG
        g = D * WtG
        J = np.einsum("kab,bc->kac", J, W) * D[:, None, :]
    return Tail(J, g, C)
