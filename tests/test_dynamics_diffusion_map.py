"""Diffusion maps (``ufm.dynamics``, ``docs/diffusion_maps.md``): closed forms and identities.

Independent routes: the circle's Markov eigenvalues ``I_k(2/ε)/I_0(2/ε)`` (circulant matrix,
scipy's Bessel functions), the continuum kernel-sum slope ``x(1 − I_1(x)/I_0(x))``, the
AR(1) eigenvalues ``c_α^k`` of a Gaussian cloud (§6), direct pairwise distances, and the
eigen-residual of the dense Markov matrix.
"""

import numpy as np
import pytest
from scipy.special import ive

from ufm.dynamics import (
    analyze_trajectory,
    diffusion_map,
    kernel_sum_curve,
    quadratic_r2,
    spectral_gap,
    squared_distances,
)


def _circle(theta):
    return np.c_[np.cos(theta), np.sin(theta)]


def test_chunked_distances_equal_direct():
    rng = np.random.default_rng(0)
    X = 100.0 + rng.standard_normal((40, 37))  # far from the origin: centring matters
    direct = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    for chunk in (1, 5, 37, 4096):
        np.testing.assert_allclose(squared_distances(X, chunk_size=chunk), direct, rtol=1e-10, atol=1e-10)
    memmap_like = np.lib.format.open_memmap("/tmp/ufm-dmap-test.npy", mode="w+", dtype=np.float64, shape=X.shape)
    memmap_like[:] = X
    np.testing.assert_allclose(squared_distances(memmap_like, chunk_size=8), direct, rtol=1e-10, atol=1e-10)


def test_circle_pairs_match_bessel_ratios():
    N, eps = 256, 0.5
    dm = diffusion_map(_circle(2 * np.pi * np.arange(N) / N), epsilon=eps, alpha=1.0, n_coords=8)
    k = np.repeat(np.arange(1, 5), 2)  # cos kθ, sin kθ: a pair per frequency
    expected = ive(k, 2 / eps) / ive(0, 2 / eps)  # trapezoid rule on a periodic analytic integrand: exact to 1e-15
    assert dm.eigenvalues[0] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(dm.eigenvalues[1:], expected, rtol=1e-10)
    np.testing.assert_allclose(dm.psi[:, 0], 1.0, rtol=1e-10)
    # ψ_1, ψ_2 span {cos θ, sin θ}: π-orthonormal, so √2 cos θ has unit norm
    theta = 2 * np.pi * np.arange(N) / N
    assert quadratic_r2(dm.psi[:, 1:3], np.c_[np.cos(theta), np.sin(theta)]).min() > 1 - 1e-10


def test_psi_are_right_eigenvectors_of_P():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 3)) * [1.0, 0.5, 0.1]
    for alpha in (0.0, 0.5, 1.0):
        dm = diffusion_map(X, epsilon=0.7, alpha=alpha, n_coords=6, t=2)
        P = dm.markov_matrix(X)
        np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
        res = np.linalg.norm(P @ dm.psi - dm.psi * dm.eigenvalues, axis=0)
        assert res.max() < 1e-10, res
        # π-orthonormal, π stationary (πᵀP = πᵀ), λ descending, coordinates λ^t ψ
        np.testing.assert_allclose(dm.psi.T @ (dm.stationary[:, None] * dm.psi), np.eye(7), atol=1e-10)
        np.testing.assert_allclose(dm.stationary @ P, dm.stationary, atol=1e-14)
        assert np.all(np.diff(dm.eigenvalues) <= 1e-12)
        np.testing.assert_allclose(dm.coordinates, dm.psi[:, 1:] * dm.eigenvalues[1:] ** 2)


def test_krylov_route_agrees_with_dense():
    X = np.random.default_rng(6).standard_normal((150, 4))
    dense = diffusion_map(X, epsilon=4.0, n_coords=4)
    krylov = diffusion_map(X, epsilon=4.0, n_coords=4, method="krylov")
    np.testing.assert_allclose(krylov.eigenvalues, dense.eigenvalues, rtol=1e-9)
    overlap = np.abs(np.sum(krylov.psi * dense.stationary[:, None] * dense.psi, axis=0))  # π-inner products
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_alpha_one_removes_the_sampling_density_on_the_circle():
    # θ drawn with density ∝ 1 + 0.8 cos θ (inverse CDF on a grid): α = 1 keeps cos/sin
    N = 600
    grid = np.linspace(0, 2 * np.pi, 20001)
    cdf = grid + 0.8 * np.sin(grid)
    theta = np.interp((np.arange(N) + 0.5) / N * 2 * np.pi, cdf, grid)
    X = _circle(theta)
    cossin = np.c_[np.cos(theta), np.sin(theta)]

    def misfit(alpha):
        dm = diffusion_map(X, epsilon=0.02, alpha=alpha, n_coords=2)
        Y = dm.psi[:, 1:3]
        coef, *_ = np.linalg.lstsq(np.c_[np.ones(N), cossin], Y, rcond=None)
        return np.linalg.norm(Y - np.c_[np.ones(N), cossin] @ coef) / np.linalg.norm(Y)

    assert misfit(1.0) < 0.01
    assert misfit(0.0) > 5 * misfit(1.0)  # the graph Laplacian (α = 0) is distorted by the density


@pytest.mark.parametrize(
    "name, dim",
    [("circle", 1), ("torus", 2), ("swiss roll", 2)],
)
def test_kernel_sum_dimension(name, dim):
    rng = np.random.default_rng(2)
    N = 800
    if name == "circle":
        X = _circle(rng.uniform(0, 2 * np.pi, N))
    elif name == "torus":
        a, b = rng.uniform(0, 2 * np.pi, (2, N))
        X = np.c_[_circle(a), _circle(b)]  # the flat torus in R⁴
    else:
        t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=N))
        X = np.c_[t * np.cos(t), 21 * rng.uniform(size=N), t * np.sin(t)]
    curve = kernel_sum_curve(X)
    # 2·max slope overshoots a curved manifold by a little (unit circle: 1.218, flat torus 2.436; next test)
    assert abs(curve.dimension_estimate - dim) < 0.45, curve.dimension_estimate
    lo, hi = curve.plateau
    assert lo <= curve.epsilon == hi
    assert curve.median_epsilon == pytest.approx(np.median(squared_distances(X)[np.triu_indices(N, 1)]))


def test_kernel_sum_slope_matches_the_continuum_circle():
    # S/N² → e^{−x} I_0(x) with x = 2/ε on the unit circle: slope x(1 − I_1(x)/I_0(x)), max 0.6089 at x = 1.70
    N = 600  # equispaced: S/N² is the trapezoid rule for the integral (diagonal = the node at 0)
    curve = kernel_sum_curve(_circle(2 * np.pi * np.arange(N) / N), num=80)
    x = 2 / curve.epsilons
    exact = x * (1 - ive(1, x) / ive(0, x))
    mid = (curve.epsilons > 0.05) & (curve.epsilons < 50)  # above the spacing scale, S ≫ N
    np.testing.assert_allclose(curve.slopes[mid], exact[mid], atol=2e-3)
    xs = np.linspace(0.5, 5, 100001)
    assert curve.dimension_estimate == pytest.approx(2 * np.max(xs * (1 - ive(1, xs) / ive(0, xs))), abs=5e-3)


def test_gaussian_cloud_eigenvalues_are_ar1_powers():
    # docs §6: on N(0, s² I_r), P is an AR(1) kernel: λ = c_α^k, multiplicity C(k+r−1, r−1)
    rng = np.random.default_rng(3)
    r, s, N, eps = 2, 1.0, 1500, 3.0
    X = np.c_[s * rng.standard_normal((N, r)), np.zeros((N, 3))]
    for alpha in (0.0, 0.5, 1.0):
        s2 = 1 / (1 / s**2 - alpha / (s**2 + eps / 2))
        c = 2 * s2 / (2 * s2 + eps)
        dm = diffusion_map(X, epsilon=eps, alpha=alpha, n_coords=5)
        np.testing.assert_allclose(dm.eigenvalues[1:3], [c, c], rtol=0.05)  # sampling error ~ N^{-1/2}
        if alpha < 1:  # α = 1 up-weights the sparse tails, whose localised modes perturb the higher levels
            np.testing.assert_allclose(dm.eigenvalues[3:], [c**2] * 3, rtol=0.1)
        q, ratio = spectral_gap(dm.eigenvalues)
        assert q == r and ratio > 1.5


def test_analyze_trajectory_finds_the_plane_and_the_hessian_directions():
    rng = np.random.default_rng(4)
    T, m = 1800, 30
    Q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    Z = rng.standard_normal((T, 2))
    X = 5.0 + Z @ Q[:, :2].T  # a Gaussian plane in R^30 (an OU trajectory's stationary law)
    lam = np.r_[3.0, 2.0, np.zeros(8)]
    res = analyze_trajectory(
        X,
        steps=np.arange(T),
        losses=(Z**2).sum(1),
        burn_in=100,
        thin=2,
        hessian_eigenvalues=lam,
        hessian_vectors=Q[:, :10],
    )
    assert res.n_coords == 2 and res.hessian_outliers == 2
    assert abs(res.dimension_estimate - 2) < 0.5
    assert res.participation_ratio == pytest.approx(2.0, rel=0.1)  # PCA of an isotropic plane
    assert abs(res.drift) < 0.2  # i.i.d. rows: ψ_1 is unrelated to the step
    line = analyze_trajectory(np.c_[np.arange(300.0), np.zeros(300)], steps=np.arange(300), max_coords=3)
    assert abs(line.drift) > 0.99  # a straight walk: ψ_1 is a monotone function of time
    assert res.r2.shape == (2,) and res.r2.min() > 0.99
    assert res.diffusion.psi.shape[0] == 850 and res.steps[0] == 100 and res.steps[1] == 102
    d = res.to_dict()
    for key in (
        "eigenvalues",
        "epsilon",
        "alpha",
        "slope_curve",
        "dimension_estimate",
        "n_coords",
        "hessian_outliers",
        "r2",
    ):
        assert key in d
    # a random direction explains nothing
    junk = analyze_trajectory(X, hessian_vectors=Q[:, 5:6], thin=4, max_coords=4)
    assert junk.r2.max() < 0.1


def test_bad_input_raises():
    X = np.random.default_rng(5).standard_normal((10, 3))
    with pytest.raises(ValueError, match="epsilon"):
        diffusion_map(X, epsilon=0.0, n_coords=2)
    with pytest.raises(ValueError, match="epsilon"):
        diffusion_map(X, epsilon=-1.0, n_coords=2)
    with pytest.raises(ValueError, match="n_coords"):
        diffusion_map(X, epsilon=1.0, n_coords=10)
    with pytest.raises(ValueError, match="alpha"):
        diffusion_map(X, epsilon=1.0, alpha=2.0, n_coords=2)
    Y = X.copy()
    Y[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        diffusion_map(Y, epsilon=1.0, n_coords=2)
    with pytest.raises(ValueError, match="2-d"):
        diffusion_map(X[0], epsilon=1.0, n_coords=2)
    with pytest.raises(TypeError, match="n_coords"):
        diffusion_map(X, epsilon=1.0, n_coords=2.0)
    with pytest.raises(ValueError, match="iterates"):
        analyze_trajectory(X, burn_in=9)
    with pytest.raises(ValueError, match="steps"):
        analyze_trajectory(X, steps=np.arange(3))
    with pytest.raises(ValueError, match="epsilon"):
        analyze_trajectory(X, epsilon="widest")


def test_cli_quadratic_recovers_the_rank(tmp_path):
    import json

    from ufm.cli import main

    path = tmp_path / "q.json"
    assert (
        main(
            [
                "dynamics",
                "dmap",
                "--task",
                "quadratic",
                "--dim",
                "20",
                "--rank",
                "2",
                "--steps",
                "12000",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    d = json.loads(path.read_text())
    assert d["config"]["rank"] == 2 and d["n_coords"] == 2 and d["hessian_outliers"] == 2
    assert abs(d["dimension_estimate"] - 2) < 0.5 and min(d["r2"]) > 0.99
    assert len(d["slope_curve"]["epsilons"]) == len(d["slope_curve"]["slopes"])
    assert main(["dynamics", "dmap", "--task", "ufm", "--rank", "2"]) == 2
    assert main(["dynamics", "dmap", "--json", str(tmp_path / "missing" / "x.json")]) == 2


def test_participation_ratio_equals_direct_pca():
    X = np.random.default_rng(7).standard_normal((60, 7)) * np.arange(1, 8)
    sigma = np.linalg.eigvalsh(np.cov(X.T, bias=True))
    res = analyze_trajectory(X, max_coords=3)
    assert res.participation_ratio == pytest.approx(sigma.sum() ** 2 / (sigma**2).sum(), rel=1e-10)


def test_stationary_covariance_solves_the_discrete_lyapunov_equation():
    from scipy.linalg import solve_discrete_lyapunov

    from ufm.experiments.dmap import _stationary_covariance

    rng = np.random.default_rng(8)
    A = rng.standard_normal((6, 6))
    H, Bc = A @ A.T + 0.1 * np.eye(6), rng.standard_normal((6, 6))
    C, eta = Bc @ Bc.T, 0.05
    lam, U = np.linalg.eigh(H)
    M = np.eye(6) - eta * H
    np.testing.assert_allclose(
        _stationary_covariance(lam[::-1], U[:, ::-1], C, eta),
        solve_discrete_lyapunov(M, eta**2 * C),
        rtol=1e-9,
        atol=1e-12,
    )
