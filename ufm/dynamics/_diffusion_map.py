"""Diffusion maps (Coifman & Lafon 2006) of point clouds and optimiser trajectories.

Conventions are ``docs/diffusion_maps.md`` (from ``docs/dynamics.md`` §D5):

* kernel ``k_ij = exp(−‖x_i − x_j‖²/ε)`` (no factor 4, no 1/2), density ``q_i = Σ_j k_ij``
  (diagonal included), α-normalised kernel ``k_ij / (q_i q_j)^α``, Markov matrix
  ``P = D⁻¹K^{(α)}``, eigenpairs through the symmetric ``A = D^{−½}K^{(α)}D^{−½}`` (§2);
* right eigenvectors ``ψ_l = √(Σd) · D^{−½} φ_l``: ``ψ_0 ≡ 1`` and ``Σ_i π_i ψ_l(i)ψ_k(i) = δ_lk``
  with the stationary law ``π = d/Σd``; each ψ's sign makes its largest-|·| entry positive;
* diffusion coordinates ``Ψ_t(x_i) = (λ_1^t ψ_1(i), …, λ_q^t ψ_q(i))``;
* kernel-sum curve ``S(ε) = Σ_ij k_ij`` and its exact log–log slope
  ``s(ε) = Σ_ij (‖x_i−x_j‖²/ε) k_ij / S`` (§3); dimension estimate ``2 max_ε s(ε)``;
* number of coordinates from the gap in the relaxation times ``τ_l = −1/log λ_l`` (§4).

Squared distances come from the Gram matrix of the column-centred points, accumulated over
column chunks (§1): memory is N² plus one N × chunk block, whatever m is, and ``X`` may be a
NumPy memmap or any array-like that slices ``X[:, a:b]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..curvature.subspace import count_outliers
from ..results import result, to_jsonable

__all__ = [
    "DiffusionMap",
    "KernelSumCurve",
    "TrajectoryDiffusion",
    "analyze_trajectory",
    "diffusion_map",
    "kernel_sum_curve",
    "quadratic_r2",
    "spectral_gap",
    "squared_distances",
]


# ---- validation ------------------------------------------------------------------------
def _points(X, name: str = "X"):
    if not (hasattr(X, "shape") and hasattr(X, "__getitem__")):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be a 2-d array (N points × m coordinates), got shape {tuple(X.shape)}")
    if X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 points and 1 coordinate, got shape {tuple(X.shape)}")
    return X


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive float, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return v


def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _float_dtype():
    return jnp.zeros(()).dtype  # float64 when jax_enable_x64, else float32


# ---- distances (§1) --------------------------------------------------------------------
@jax.jit
def _accumulate(G, sq, Xc):
    Xc = Xc - jnp.mean(Xc, axis=0)  # centring is per column, so chunk-local and exact
    return G + Xc @ Xc.T, sq + jnp.sum(Xc * Xc, axis=1)


@jax.jit
def _from_gram(G, sq):
    D2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * G, 0.0)
    return D2 * (1 - jnp.eye(G.shape[0], dtype=G.dtype))  # exact zeros on the diagonal


def squared_distances(X, *, chunk_size: int = 4096) -> jax.Array:
    """The N × N matrix of ``‖x_i − x_j‖²`` from the Gram matrix of the centred points.

    ``D²_ij = ‖x̃_i‖² + ‖x̃_j‖² − 2 x̃_i·x̃_j`` with ``x̃ = x − mean`` (centring removes the
    cancellation when the cloud sits far from the origin, as SGD iterates do), accumulated
    over ``chunk_size`` columns at a time in the default float dtype; negative rounding is
    clipped to 0. Peak memory: two N × N matrices plus one N × chunk block.

    Args:
      X: (N, m) points: a NumPy / JAX array, a ``np.memmap``, or any array-like with
        ``shape`` and column slicing ``X[:, a:b]``.
      chunk_size: columns per chunk.

    Raises:
      ValueError: X not 2-d, fewer than 2 points, or a non-finite entry.
    """
    X = _points(X)
    chunk = _int("chunk_size", chunk_size, 1)
    N, m = X.shape
    dtype = _float_dtype()
    G, sq = jnp.zeros((N, N), dtype), jnp.zeros(N, dtype)
    for a in range(0, m, chunk):
        G, sq = _accumulate(G, sq, jnp.asarray(np.asarray(X[:, a : a + chunk]), dtype))
        # wait for the product: asynchronous dispatch would otherwise queue (and keep alive) every
        # chunk read so far — measured 2.6 GB instead of ~0.4 GB for N = 1000, m = 10⁶
        sq.block_until_ready()
    if not bool(jnp.all(jnp.isfinite(sq))):
        bad = np.flatnonzero(~np.isfinite(np.asarray(sq)))
        raise ValueError(f"X must be finite; points {bad[:5].tolist()} contain NaN or inf")
    return _from_gram(G, sq)


# ---- the diffusion map (§2) ------------------------------------------------------------
@result(static=("epsilon", "alpha", "t"))
class DiffusionMap:
    """Eigenpairs of the Markov matrix P and the diffusion coordinates (``docs/diffusion_maps.md`` §2).

    Fields:
      eigenvalues: (q+1,) descending, ``λ_0 = 1`` first.
      psi: (N, q+1) right eigenvectors of P, ``ψ_0 ≡ 1``, π-orthonormal.
      coordinates: (N, q) ``λ_l^t ψ_l`` for l = 1..q.
      stationary: (N,) the stationary law ``π = d / Σd`` of P.
      epsilon, alpha, t: the bandwidth, normalisation and diffusion time used.
      converged, messages: the eigensolver's status (`ufm.results`; dense always converges).
    """

    eigenvalues: np.ndarray
    psi: np.ndarray
    coordinates: np.ndarray
    stationary: np.ndarray
    epsilon: float
    alpha: float
    t: int
    converged: bool = True
    messages: tuple[str, ...] = ()

    def markov_matrix(self, X) -> np.ndarray:
        """The dense N × N matrix P for the points ``X`` it was computed from (for checks)."""
        _, _, P = _kernels(squared_distances(X), self.epsilon, self.alpha)
        return np.asarray(P)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "eigenvalues": self.eigenvalues,
                "epsilon": self.epsilon,
                "alpha": self.alpha,
                "t": self.t,
                "n_coords": int(self.coordinates.shape[1]),
                "converged": self.converged,
                "messages": self.messages,
            }
        )


@jax.jit
def _kernels(D2, epsilon, alpha):
    """``(A, d, P)``: the symmetric conjugate, the row sums of K^{(α)}, the Markov matrix."""
    K = jnp.exp(-D2 / epsilon)
    q = jnp.sum(K, axis=1)
    Ka = K / jnp.outer(q**alpha, q**alpha)
    d = jnp.sum(Ka, axis=1)
    s = 1 / jnp.sqrt(d)
    return s[:, None] * Ka * s[None, :], d, Ka / d[:, None]


def _top_eigenpairs(A, k: int, method: str):
    """The k largest eigenpairs of the symmetric A, descending, with the solver's ``(converged,
    messages)``: LAPACK (dense) or block Krylov (`ufm.curvature.spectrum`)."""
    if method == "dense":
        from scipy.linalg import eigh

        A = np.asarray(A, dtype=np.float64)
        N = A.shape[0]
        lam, phi = eigh(0.5 * (A + A.T), subset_by_index=[N - k, N - 1])  # dense symmetric (MRRR), top k only
        return lam[::-1], phi[:, ::-1], True, ()
    from ..curvature import spectrum

    # the project's restarted block Krylov on products with A; its status travels in the result
    sp = spectrum(np.asarray(A), k=k, method="krylov", throw=False)
    return sp.eigenvalues, np.asarray(sp.eigenvectors, np.float64), sp.converged, sp.messages


def _diffusion_map(D2, epsilon: float, alpha: float, n_coords: int, t: int, method: str = "dense") -> DiffusionMap:
    A, d, _ = _kernels(D2, epsilon, alpha)
    lam, phi, converged, messages = _top_eigenpairs(A, n_coords + 1, method)
    d = np.asarray(d, dtype=np.float64)
    psi = phi / np.sqrt(d)[:, None] * np.sqrt(d.sum())
    sign = np.sign(psi[np.argmax(np.abs(psi), axis=0), np.arange(psi.shape[1])])
    psi = psi * np.where(sign == 0, 1.0, sign)
    coords = psi[:, 1:] * lam[1:] ** t
    return DiffusionMap(lam, psi, coords, d / d.sum(), float(epsilon), float(alpha), int(t), converged, messages)


def _check_map_args(N, epsilon, alpha, n_coords, t, method="dense"):
    if method not in ("dense", "krylov"):
        raise ValueError(f"method must be 'dense' or 'krylov', got {method!r}")
    epsilon = _positive("epsilon", epsilon)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha must be a float in [0, 1] (0 graph Laplacian, 1/2 Fokker–Planck, 1 Laplace–Beltrami), got {alpha!r}"
        )
    n_coords = _int("n_coords", n_coords, 1)
    if N < n_coords + 1:
        raise ValueError(f"need N >= n_coords + 1 points, got N={N} and n_coords={n_coords}")
    return epsilon, float(alpha), n_coords, _int("t", t, 0)


def diffusion_map(
    X, *, epsilon: float, alpha: float = 1.0, n_coords: int, t: int = 1, method: str = "dense", chunk_size: int = 4096
) -> DiffusionMap:
    r"""Diffusion map of the points ``X`` (``docs/dynamics.md`` §D5, ``docs/diffusion_maps.md`` §2).

    With ``k_ij = exp(−‖x_i − x_j‖²/ε)``, ``q_i = Σ_j k_ij``,
    ``k^{(α)}_ij = k_ij / (q_i^α q_j^α)``, ``d_i = Σ_j k^{(α)}_ij`` and ``P = D⁻¹K^{(α)}``:
    the top ``n_coords + 1`` eigenpairs of ``A = D^{−½}K^{(α)}D^{−½}`` (a dense symmetric
    eigensolver, ``scipy.linalg.eigh`` with an index subset, or the block Krylov solver
    `ufm.curvature.top_eigenpairs` on ``v ↦ Av``), ``ψ = √(Σd) D^{−½}φ``.

    Args:
      X: (N, m) points (see `squared_distances` for what array-likes work).
      epsilon: kernel bandwidth ε > 0 (squared-distance units; see `kernel_sum_curve`).
      alpha: α ∈ [0, 1]; 1 (Laplace–Beltrami) removes the sampling density.
      n_coords: q >= 1 diffusion coordinates; needs N >= q + 1.
      t: diffusion time (integer >= 0).
      method: ``"dense"`` (LAPACK, O(N³)) or ``"krylov"`` (O(N²) per product; faster for
        N in the thousands; warns if it did not converge). ``docs/diffusion_maps.md`` §7.
      chunk_size: columns per chunk of the Gram matrix.

    Returns:
      `DiffusionMap`.

    Example (the unit circle: ``λ_{2k−1} = λ_{2k} ≈ I_k(2/ε)/I_0(2/ε)``)::

        theta = 2 * np.pi * np.arange(200) / 200
        dm = diffusion_map(np.c_[np.cos(theta), np.sin(theta)], epsilon=0.5, n_coords=4)
    """
    X = _points(X)
    epsilon, alpha, n_coords, t = _check_map_args(X.shape[0], epsilon, alpha, n_coords, t, method)
    return _diffusion_map(squared_distances(X, chunk_size=chunk_size), epsilon, alpha, n_coords, t, method)


# ---- bandwidth and intrinsic dimension (§3) --------------------------------------------
@result(static=("epsilon", "median_epsilon", "dimension_estimate", "plateau"))
class KernelSumCurve:
    """``S(ε)`` on a log grid with its log–log slope (``docs/diffusion_maps.md`` §3).

    Fields:
      epsilons, kernel_sums, slopes: (G,) the grid, ``S(ε)`` and ``d log S / d log ε``.
      epsilon: the chosen bandwidth — the largest ε of the plateau around the maximal slope
        (slope ≥ ``(1 − plateau) · max``), the upper end of the linear region.
      median_epsilon: the median heuristic, ``median_{i<j} ‖x_i − x_j‖²``.
      dimension_estimate: ``2 · max slope``.
      plateau: (ε_low, ε_high), the plateau's ends.
    """

    epsilons: np.ndarray
    kernel_sums: np.ndarray
    slopes: np.ndarray
    epsilon: float
    median_epsilon: float
    dimension_estimate: float
    plateau: tuple[float, float]
    converged: bool = True  # a grid evaluation: nothing iterative (`ufm.results`)
    messages: tuple[str, ...] = ()


@jax.jit
def _sum_and_slope(D2, epsilon):
    K = jnp.exp(-D2 / epsilon)
    S = jnp.sum(K)
    return S, jnp.sum(D2 / epsilon * K) / S  # d log S / d log ε, exactly


def _kernel_sum_curve(D2, num: int, plateau: float) -> KernelSumCurve:
    off = np.asarray(D2)[np.triu_indices(D2.shape[0], 1)]
    pos = off[off > 0]
    if pos.size == 0:
        raise ValueError("all points coincide: no bandwidth can be chosen")
    median = float(np.median(off))
    # from well below the nearest pair (S ≈ N) to well above the diameter (S ≈ N²)
    grid = np.geomspace(pos.min() / 10, pos.max() * 10, num)
    S, s = map(np.asarray, jax.lax.map(lambda e: _sum_and_slope(D2, e), jnp.asarray(grid, D2.dtype)))
    i = int(np.argmax(s))
    inside = s >= (1 - plateau) * s[i]
    lo = hi = i
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    while hi < num - 1 and inside[hi + 1]:
        hi += 1
    return KernelSumCurve(grid, S, s, float(grid[hi]), median, float(2 * s[i]), (float(grid[lo]), float(grid[hi])))


def kernel_sum_curve(X, *, num: int = 60, plateau: float = 0.1, chunk_size: int = 4096) -> KernelSumCurve:
    """The kernel-sum criterion ``S(ε) = Σ_ij exp(−‖x_i − x_j‖²/ε)`` (``docs/diffusion_maps.md`` §3).

    On a D-dimensional set sampled densely enough, ``S(ε) ∝ ε^{D/2}`` between the scale of
    the nearest pairs (``S → N``) and the diameter (``S → N²``); ``2 · max slope`` estimates
    D (Coifman et al. 2008; Berry & Harlim 2016). The slope is the exact derivative
    ``Σ (D²/ε) k / Σ k``, not a finite difference. The grid spans [min D²/10, 10 max D²].

    Args:
      X: (N, m) points.
      num: grid points (log-spaced), >= 3.
      plateau: relative drop from the maximal slope that still counts as linear, in (0, 1).
    """
    num = _int("num", num, 3)
    if not 0 < plateau < 1:
        raise ValueError(f"plateau must lie in (0, 1), got {plateau!r}")
    return _kernel_sum_curve(squared_distances(_points(X), chunk_size=chunk_size), num, plateau)


# ---- number of coordinates (§4) --------------------------------------------------------
def spectral_gap(eigenvalues, *, min_ratio: float = 1.5) -> tuple[int, float]:
    """``(q, ratio)``: the diffusion coordinates above the largest gap in relaxation times.

    ``τ_l = −1/log λ_l`` for l >= 1 (``λ_0 = 1`` is dropped; ``λ_l <= 0`` gives τ = 0): the
    slow modes are the outliers of τ, counted with the project's gap rule
    (`ufm.curvature.count_outliers`, largest ratio ``τ_q/τ_{q+1}`` at least ``min_ratio``;
    ``q = 0`` when there is no such gap). τ is independent of t; for a circle
    ``τ_2/τ_3 ≈ 4``, for a Gaussian cloud ``τ_r/τ_{r+1} ≈ 2`` (Hermite levels).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1][1:]
    if lam.size < 2:
        raise ValueError(f"need at least 3 eigenvalues (λ_0 and two more) to find a gap, got {lam.size + 1}")
    tau = np.where(lam > 0, -1 / np.log(np.clip(lam, 1e-300, 1 - 1e-16)), 0.0)
    q = count_outliers(tau, min_ratio=min_ratio)
    floor = np.maximum(tau, 1e-10 * tau[0])
    ratio = float(floor[q - 1] / floor[q]) if q else float(np.max(floor[:-1] / floor[1:]))
    return q, ratio


# ---- trajectories (§5) -----------------------------------------------------------------
def quadratic_r2(Y, Z) -> np.ndarray:
    """R² of the least-squares fit of each column of ``Y`` (N × q) by a quadratic in ``Z`` (N × k).

    Features ``1, z_a, z_a z_b (a <= b)``; ``R² = 1 − ‖y − ŷ‖² / ‖y − ȳ‖²`` (in sample).
    """
    Y, Z = np.atleast_2d(np.asarray(Y, np.float64).T).T, np.atleast_2d(np.asarray(Z, np.float64).T).T
    if Y.shape[0] != Z.shape[0]:
        raise ValueError(f"Y and Z need the same number of rows, got {Y.shape[0]} and {Z.shape[0]}")
    Z = (Z - Z.mean(0)) / np.where(Z.std(0) > 0, Z.std(0), 1.0)
    a, b = np.triu_indices(Z.shape[1])
    F = np.hstack([np.ones((Z.shape[0], 1)), Z, Z[:, a] * Z[:, b]])
    coef, *_ = np.linalg.lstsq(F, Y, rcond=None)
    res = ((Y - F @ coef) ** 2).sum(0)
    tot = ((Y - Y.mean(0)) ** 2).sum(0)
    return 1 - res / np.where(tot > 0, tot, np.inf)


def _projections(X, U, ref, chunk: int) -> np.ndarray:
    out = np.zeros((X.shape[0], U.shape[1]))
    for a in range(0, X.shape[1], chunk):
        out += (np.asarray(X[:, a : a + chunk], np.float64) - ref[a : a + chunk]) @ U[a : a + chunk]
    return out


@jax.jit
def _participation_ratio(D2):
    G = -0.5 * (D2 - D2.mean(0) - D2.mean(1)[:, None] + D2.mean())  # −½ J D² J: the centred Gram matrix
    return jnp.trace(G) ** 2 / jnp.sum(G * G)


@result(static=("n_coords", "hessian_outliers", "burn_in", "thin"))
class TrajectoryDiffusion:
    """A trajectory's diffusion analysis (``docs/diffusion_maps.md`` §5).

    Fields:
      diffusion: the `DiffusionMap` with ``max_coords`` coordinates.
      curve: the `KernelSumCurve` (dimension estimate, both bandwidth heuristics).
      n_coords: q from `spectral_gap` (0 = no gap), and ``gap_ratio`` its τ ratio.
      dimension_estimate: ``2 · max slope`` of the kernel-sum curve.
      participation_ratio: ``(Σσ_i)² / Σσ_i²`` of the iterates' covariance spectrum (PCA),
        from the double-centred ``G = −½ J D² J`` as ``(tr G)² / ‖G‖_F²`` (a linear dimension).
      hessian_outliers: `count_outliers` of the Hessian eigenvalues (None without them).
      r2: (q',) R² of the quadratic fit of ψ_1..ψ_{q'} on the projections onto the top
        Hessian eigenvectors, q' = max(q, 1) (empty without eigenvectors).
      projections: (N, k) those projections, ``U_kᵀ(x_i − x_ref)``.
      steps, losses: the kept rows' steps and losses (or None).
      burn_in, thin: the rows dropped first and the stride.
      drift: Spearman rank correlation of ψ_1 with the step (None without steps): near ±1
        the slowest mode is time itself — the iterates drift rather than fluctuate about a
        minimum, and the stationary reading of §6 does not apply.
      converged, messages: the diffusion map's eigensolver status (`ufm.results`).
    """

    diffusion: DiffusionMap
    curve: KernelSumCurve | None
    n_coords: int
    gap_ratio: float
    dimension_estimate: float
    participation_ratio: float
    hessian_outliers: int | None
    r2: np.ndarray
    projections: np.ndarray | None
    steps: np.ndarray | None
    losses: np.ndarray | None
    burn_in: int
    thin: int
    drift: float | None
    converged: bool | None = None  # None: the diffusion map's
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", bool(self.diffusion.converged))
            object.__setattr__(self, "messages", self.messages or tuple(self.diffusion.messages))

    def to_dict(self) -> dict:
        c = self.curve
        return to_jsonable(
            {
                "eigenvalues": self.diffusion.eigenvalues.tolist(),
                "epsilon": self.diffusion.epsilon,
                "alpha": self.diffusion.alpha,
                "t": self.diffusion.t,
                "slope_curve": None
                if c is None
                else {
                    "epsilons": c.epsilons.tolist(),
                    "slopes": c.slopes.tolist(),
                    "kernel_sums": c.kernel_sums.tolist(),
                    "plateau": list(c.plateau),
                    "median_epsilon": c.median_epsilon,
                },
                "dimension_estimate": self.dimension_estimate,
                "participation_ratio": self.participation_ratio,
                "n_coords": self.n_coords,
                "gap_ratio": self.gap_ratio,
                "hessian_outliers": self.hessian_outliers,
                "r2": self.r2.tolist(),
                "num_points": int(self.diffusion.psi.shape[0]),
                "burn_in": self.burn_in,
                "thin": self.thin,
                "drift": self.drift,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


def analyze_trajectory(
    iterates,
    *,
    steps=None,
    losses=None,
    burn_in: int = 0,
    thin: int = 1,
    hessian_eigenvalues=None,
    hessian_vectors=None,
    reference=None,
    epsilon="median",
    alpha: float = 0.5,
    t: int = 1,
    max_coords: int = 10,
    min_ratio: float = 1.5,
    max_projections: int = 10,
    chunk_size: int = 4096,
) -> TrajectoryDiffusion:
    """Diffusion analysis of recorded iterates (``docs/dynamics.md`` §D5, ``docs/diffusion_maps.md`` §5).

    Keeps rows ``burn_in, burn_in + thin, …`` of ``iterates``; computes the kernel-sum
    curve (the dimension estimate), takes ε by the median heuristic, the kernel-sum rule or
    as given, computes ``max_coords`` diffusion coordinates, q from
    the spectral gap, and — with the Hessian at the end point — the outlier count and the R²
    of a quadratic regression of each of ψ_1..ψ_max(q,1) on the projections
    ``U_kᵀ(x_i − x_ref)`` (x_ref = ``reference``, default the last kept iterate).

    Args:
      iterates: (T, m) flattened parameters, one row per recorded step (any recorder; a
        memmap works and is read in column chunks).
      steps, losses: optional (T,) step numbers and losses, thinned alongside.
      burn_in, thin: rows dropped first, then the stride.
      hessian_eigenvalues: the Hessian's top eigenvalues at the end point (count them past
        the gap: e.g. `ufm.curvature.top_eigenpairs` with k = expected + 5).
      hessian_vectors: (m, k) its eigenvectors; the first ``hessian_outliers`` columns (all
        k when there is no gap) are the projection basis.
      epsilon: ``"median"`` (default: the median heuristic), ``"kernel-sum"`` (the upper
        end of the kernel-sum curve's linear region) or a number.
      alpha: as in `diffusion_map`; default ½ (Fokker–Planck: near a minimum its
        eigenfunctions are those of SGD's own Ornstein–Uhlenbeck generator, §6), t: time.
      max_coords: eigenpairs computed past λ_0.
      min_ratio: the gap rule's threshold (`spectral_gap`).
      max_projections: at most this many Hessian directions enter the regression.
    """
    X = _points(iterates, "iterates")
    burn_in, thin = _int("burn_in", burn_in, 0), _int("thin", thin, 1)
    T = X.shape[0]
    keep = slice(burn_in, T, thin)
    N = len(range(*keep.indices(T)))
    if N < 3:
        raise ValueError(f"burn_in={burn_in} and thin={thin} leave {N} of {T} iterates; need at least 3")
    max_coords = _int("max_coords", max_coords, 2)
    max_coords = min(max_coords, N - 1)
    X = X[keep]
    rows = {}
    for name, v in (("steps", steps), ("losses", losses)):
        if v is not None:
            v = np.asarray(v).ravel()
            if v.size != T:
                raise ValueError(f"{name} must have one entry per iterate ({T}), got {v.size}")
            v = v[keep]
        rows[name] = v
    rule = isinstance(epsilon, str)
    if rule and epsilon not in ("median", "kernel-sum"):
        raise ValueError(f"epsilon must be 'median', 'kernel-sum' or a number > 0, got {epsilon!r}")
    _, alpha, max_coords, t = _check_map_args(N, 1.0 if rule else epsilon, alpha, max_coords, t)
    D2 = squared_distances(X, chunk_size=chunk_size)
    curve = _kernel_sum_curve(D2, 60, 0.1)
    eps = (curve.median_epsilon if epsilon == "median" else curve.epsilon) if rule else float(epsilon)
    dm = _diffusion_map(D2, eps, alpha, max_coords, t)
    q, ratio = spectral_gap(dm.eigenvalues, min_ratio=min_ratio)
    outliers, r2, proj = None, np.zeros(0), None
    if hessian_eigenvalues is not None:
        outliers = count_outliers(hessian_eigenvalues)
    if hessian_vectors is not None:
        U = np.asarray(hessian_vectors, np.float64)
        if U.ndim != 2 or U.shape[0] != X.shape[1]:
            raise ValueError(f"hessian_vectors must be ({X.shape[1]}, k), got shape {U.shape}")
        k = min(outliers if outliers else U.shape[1], _int("max_projections", max_projections, 1))
        ref = np.asarray(X[N - 1] if reference is None else reference, np.float64).ravel()
        proj = _projections(X, U[:, :k], ref, chunk_size)
        r2 = quadratic_r2(dm.psi[:, 1 : 1 + max(q, 1)], proj)
    drift = None
    if rows["steps"] is not None:
        from scipy.stats import spearmanr

        drift = float(spearmanr(dm.psi[:, 1], rows["steps"]).statistic)
    return TrajectoryDiffusion(
        dm,
        curve,
        q,
        ratio,
        curve.dimension_estimate,
        float(_participation_ratio(D2)),
        outliers,
        r2,
        proj,
        rows["steps"],
        rows["losses"],
        burn_in,
        thin,
        drift,
    )
