"""The full data Hessian of a head at its class means (`ufm.theory.collapsed_full_hessian`, docs/theory.md §4.8).

Independent routes, all float64: dense ``jax.hessian`` of the class-mean loss at random points
(every activation / loss / bias case), dense ``jax.hessian`` of the data loss of a trained deep UFM
over every sample (whose features the training collapsed), and the DNC closed form §4.7
(`full_hessian_spectrum`) at the constructed optimum.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ufm
from ufm import theory as th
from ufm.collapse import class_means
from ufm.model import UFMParams, data_loss, output_loss
from ufm.networks import apply_head

EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _autodiff_class_mean(Ws, bs, M, activation, loss):
    """Dense Hessian of (1/K) Σ_c ℓ(head(μ_c), c) over (W_1..W_L, b_1..b_L) by jax.hessian."""
    K = M.shape[1]
    flat, unravel = ravel_pytree(([jnp.asarray(W) for W in Ws], [jnp.asarray(b) for b in bs]))

    def f(x):
        t = unravel(x)
        return output_loss(loss, apply_head(t[0], t[1], activation, jnp.asarray(M))[-1], jnp.arange(K))

    return np.asarray(jax.jit(jax.hessian(f))(flat))


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_autodiff_at_a_random_collapsed_point(activation, loss, bias):
    # a fixed seed per case (Python's hash of a str changes from process to process)
    rng = np.random.default_rng([("linear", "relu").index(activation), ("mse", "ce").index(loss), int(bias)])
    K = 3
    Ws = [rng.standard_normal((4, 4)), rng.standard_normal((5, 4)), rng.standard_normal((K, 5))]
    bs = [rng.standard_normal(W.shape[0]) for W in Ws] if bias else []
    M = rng.standard_normal((4, K))
    H = th.collapsed_full_hessian(Ws, M, bs, activation=activation, loss=loss)
    Ha = _autodiff_class_mean(Ws, bs, M, activation, loss)
    np.testing.assert_allclose(H, Ha, rtol=0, atol=1e3 * EPS * np.abs(Ha).max())
    # the point is not an optimum: the residual (cross-layer) part is nonzero, so this checks it too
    assert np.abs(H[:16, 16:36]).max() > 1e-3


def _trained(loss):
    spec = ufm.UFMSpec(num_classes=3, per_class=3, depth=3, width=(4, 5, 4), loss=loss, lambda_H=5e-3, lambda_W=5e-3)
    r = ufm.train(spec, ufm.init_params(spec, 1), steps=6000)
    return spec, r.params


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_matches_autodiff_of_a_trained_ufm(loss):
    """Trained to its optimum a deep UFM's H_1 is collapsed, so the data Hessian over every sample
    (autodiff) equals the closed form at the class means of H_1, the residual blocks included."""
    spec, p = _trained(loss)
    H1 = np.asarray(p.H1)
    M = class_means(H1, spec.class_index, spec.num_classes)
    spread = np.linalg.norm(H1 - M[:, spec.class_index]) / np.linalg.norm(H1)
    assert spread < 1e-6, spread  # collapsed: what the closed form needs
    flat, unravel = ravel_pytree(p.Ws)
    Ha = np.asarray(jax.jit(jax.hessian(lambda x: data_loss(spec, UFMParams(p.H1, unravel(x)))))(flat))
    H = th.collapsed_full_hessian([np.asarray(W) for W in p.Ws], M, loss=loss)
    scale = np.abs(Ha).max()
    np.testing.assert_allclose(H, Ha, rtol=0, atol=1e2 * spread * scale + 1e3 * EPS * scale)
    vals = np.linalg.eigvalsh(H)
    assert vals.min() < -1e-3 * vals.max()  # the data Hessian is indefinite: the residual term is in


def test_reproduces_the_dnc_closed_form():
    """At the constructed linear-MSE optimum the §4.7 levels (S, T, ± pairs, zeros) come out."""
    spec = ufm.UFMSpec(num_classes=3, per_class=2, depth=3, width=(5, 4, 6), lambda_H=1e-2, lambda_W=(1e-2, 2e-2, 5e-3))
    p = th.construct_optimum(spec, 0)
    M = class_means(np.asarray(p.H1), spec.class_index, spec.num_classes)
    vals = np.sort(np.linalg.eigvalsh(th.collapsed_full_hessian([np.asarray(W) for W in p.Ws], M)))[::-1]
    ref = np.sort(th.full_hessian_spectrum(spec).all_eigenvalues())[::-1]
    np.testing.assert_allclose(vals, ref, rtol=0, atol=1e4 * EPS * np.abs(ref).max())


def test_class_statistics_replace_the_class_mean_ones():
    """``curvatures`` / ``gradients`` enter linearly: Q → Q' changes only the GN part, g → g' only the residual."""
    rng = np.random.default_rng(3)
    K = 3
    Ws = [rng.standard_normal((4, 4)), rng.standard_normal((K, 4))]
    M = rng.standard_normal((4, K))
    base = th.collapsed_full_hessian(Ws, M, loss="ce")
    zero_g = th.collapsed_full_hessian(Ws, M, loss="ce", gradients=np.zeros((K, K)))
    zero_q = th.collapsed_full_hessian(Ws, M, loss="ce", curvatures=np.zeros((K, K, K)))
    # GN + residual = the whole; with Q = 0 only the residual is left, with g = 0 only GN
    np.testing.assert_allclose(zero_g + zero_q, base, atol=1e3 * EPS * np.abs(base).max())
    assert np.linalg.eigvalsh(zero_g).min() > -1e3 * EPS * np.abs(base).max()  # GN is PSD


def test_bad_input_names_the_argument():
    M = np.eye(2)
    with pytest.raises(ValueError, match="activation"):
        th.collapsed_full_hessian([np.eye(2)], M, activation="tanh")
    with pytest.raises(ValueError, match="W_2"):
        th.collapsed_full_hessian([np.eye(2), np.ones((2, 3))], M)
    with pytest.raises(ValueError, match="means"):
        th.collapsed_full_hessian([np.eye(2)], np.ones((2, 3)))
    with pytest.raises(ValueError, match="biases"):
        th.collapsed_full_hessian([np.eye(2)], M, [np.ones(3)])
    with pytest.raises(ValueError, match="max_dim"):
        th.collapsed_full_hessian([np.eye(2)], M, max_dim=3)
