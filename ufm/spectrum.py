"""`Spectrum`: one result type for closed-form, dense and Krylov spectra.

Comparison code never cares where a spectrum came from: the closed forms (`ufm.theory`),
a dense block (`Spectrum.from_dense`) and the matrix-free solver (`ufm.curvature.spectrum`)
all return one. `Spectrum` is a registered pytree (its arrays are the leaves), so it passes
through ``jax.tree`` functions. A spectrum holds its
*resolved* eigenpairs (the outliers, or all of them for a dense solve) and, optionally,
the single bulk value that fills the remaining ``dim − len(eigenvalues)`` directions
(e.g. 0 for a layer-wise data Hessian at DNC, λ once regularised).

Flat eigenvectors follow the project's row-major convention (``docs/theory.md`` §1): the
Kronecker vector ``a ⊗ b`` is the matrix ``a bᵀ`` flattened with ``reshape(-1)``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np

from .results import all_converged, result, to_jsonable

__all__ = [
    "Spectrum",
    "Counts",
    "spectrum_counts",
    "group_levels",
    "GaussNewtonSplit",
    "GradientSpectra",
    "SingularValues",
]

_WHICH = ("largest", "magnitude")


@contextlib.contextmanager
def _one_blas_thread():
    """LAPACK / BLAS on one thread for ufm's dense ``eigh``, the small ``eigh`` / QR of every
    Krylov step (`ufm.curvature.eigensolver`) and SLQ's tridiagonal ``eigh``: with more threads than free cores OpenBLAS
    spin-waits. Measured on the 2-core VM: one 400 × 400 ``eigh`` 0.10 s on one thread against
    5–10 s with two at CI load (``docs/alignment.md`` §6); one 100 × 100 ``eigh`` 0.6 ms against
    11–135 ms at load 7–8, 10× a top-50 step's product (issue 21). The blocks ufm decomposes
    densely (≤ `ufm.curvature.DEFAULT_DENSE_MAX`) gain little from threads when cores are free;
    XLA's own kernels (products, basis passes) keep theirs. ``scipy.linalg`` is imported first
    so that the OpenBLAS jaxlib's LAPACK kernels call is loaded when threadpoolctl looks for it.
    """
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def group_levels(values, rtol: float = 1e-6, atol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted-descending ``values`` into levels: ``(level_values, multiplicities)``.

    Consecutive values join a level while ``|v − level_start| <= atol + rtol·|level_start|``;
    a level's value is the mean of its members.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    levels, counts = [], []
    start = 0
    for i in range(1, len(v) + 1):
        if i == len(v) or abs(v[i] - v[start]) > atol + rtol * abs(v[start]):
            levels.append(v[start:i].mean())
            counts.append(i - start)
            start = i
    return np.array(levels), np.array(counts, dtype=int)


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Eigenvalues (descending) with optional eigenvectors, residuals and a bulk.

    Fields:
      eigenvalues: (m,) resolved eigenvalues, descending, repeated by multiplicity.
      eigenvectors: (dim, m) orthonormal columns (flat, row-major), or ``None``.
      dim: dimension of the operator (P).
      bulk_value: the value of the ``dim − m`` unresolved eigenvalues, if known.
      residuals: (m,) ``‖A v − λ v‖`` of each pair, when measured.
      factors: for Kronecker eigenvectors ``v_j = a_j ⊗ b_j``, the pair ``(A, B)`` with
        columns ``a_j`` and ``b_j`` (so ``v_j = np.outer(A[:, j], B[:, j]).ravel()``).
      source: where it came from, e.g. ``"closed-form"``, ``"dense"``, ``"lanczos"``.
      info: small JSON-able extras (labels of the levels, the λ used, ...).
      converged: the route reached its tolerance (closed forms and dense solves always do; a
        Krylov solve that ran out of budget does not) — the result protocol, `ufm.results`.
      messages: why not (the solver's words), or other warnings worth reading.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None = None
    dim: int | None = None
    bulk_value: float | None = None
    residuals: np.ndarray | None = None
    factors: tuple[np.ndarray, np.ndarray] | None = None
    source: str = ""
    info: dict = dataclasses.field(default_factory=dict)
    converged: bool = True
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        vals = np.asarray(self.eigenvalues, dtype=np.float64)
        if vals.ndim != 1:
            raise ValueError(f"eigenvalues must be 1-d, got shape {vals.shape}")
        order = np.argsort(-vals, kind="stable")
        object.__setattr__(self, "eigenvalues", vals[order])
        if self.eigenvectors is not None:
            vecs = np.asarray(self.eigenvectors)
            if vecs.ndim != 2 or vecs.shape[1] != vals.size:
                raise ValueError(f"eigenvectors must be (dim, {vals.size}), got shape {vecs.shape}")
            object.__setattr__(self, "eigenvectors", vecs[:, order])
            if self.dim is None:
                object.__setattr__(self, "dim", vecs.shape[0])
        if self.residuals is not None:
            object.__setattr__(self, "residuals", np.asarray(self.residuals, dtype=np.float64)[order])
        if self.factors is not None:
            A, B = (np.asarray(f) for f in self.factors)
            object.__setattr__(self, "factors", (A[:, order], B[:, order]))
        if self.dim is None:
            object.__setattr__(self, "dim", vals.size)
        if self.dim < vals.size:
            raise ValueError(f"dim={self.dim} is smaller than the number of eigenvalues {vals.size}")
        object.__setattr__(self, "converged", bool(self.converged))
        object.__setattr__(self, "messages", tuple(str(m) for m in self.messages))

    @classmethod
    def from_dense(
        cls,
        matrix,
        *,
        k: int | None = None,
        which: str = "largest",
        vectors: bool = True,
        source: str = "dense",
        info: dict | None = None,
    ) -> Spectrum:
        """The eigendecomposition of a dense symmetric matrix the caller already has.

        The matrix is symmetrised (``(A + Aᵀ)/2``, which removes the rounding asymmetry of a
        matrix built from products) and decomposed by ``eigh`` (on one BLAS thread, see
        `_one_blas_thread`); ``residuals`` are
        ``‖A v − λ v‖`` measured against the symmetrised matrix.

        Args:
          matrix: (P, P) array.
          k: keep the ``k`` eigenpairs selected by ``which`` (default all P).
          which: ``"largest"`` (algebraic) or ``"magnitude"`` (largest ``|λ|``).
          vectors: also eigenvectors and residuals (``eigh``); ``False`` uses ``eigvalsh``.
          source, info: stored as given.

        Examples:
          >>> import numpy as np
          >>> s = Spectrum.from_dense(np.diag([1.0, 3.0, 2.0]), k=2)
          >>> s.eigenvalues.tolist(), s.dim, s.source
          ([3.0, 2.0], 3, 'dense')
          >>> bool(np.all(s.residuals == 0))
          True
        """
        A = np.asarray(matrix, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"matrix must be square (P, P), got shape {A.shape}")
        if which not in _WHICH:
            raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
        P = A.shape[0]
        from .curvature._checks import check_count  # here: ufm.curvature imports this module

        k = P if k is None else check_count("k", k, 1, P, what="the matrix size P =")
        A = 0.5 * (A + A.T)
        with _one_blas_thread():
            if vectors:
                vals, vecs = np.linalg.eigh(A)
            else:
                vals, vecs = np.linalg.eigvalsh(A), None
            key = -vals if which == "largest" else -np.abs(vals)
            idx = np.argsort(key, kind="stable")[:k]
            vals = vals[idx]
            res = None
            if vectors:
                vecs = vecs[:, idx]
                res = np.linalg.norm(A @ vecs - vecs * vals, axis=0)
        return cls(vals, vecs, dim=P, residuals=res, source=source, info=dict(info or {}))

    @property
    def bulk_multiplicity(self) -> int:
        """How many eigenvalues the bulk value stands for: ``dim − m``."""
        return self.dim - self.eigenvalues.size

    def levels(self, rtol: float = 1e-6, atol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The resolved eigenvalues grouped into ``(values, multiplicities)``; see `group_levels`."""
        return group_levels(self.eigenvalues, rtol, atol)

    def all_eigenvalues(self) -> np.ndarray:
        """All ``dim`` eigenvalues, the bulk filled in, descending (needs ``bulk_value``)."""
        if self.bulk_multiplicity and self.bulk_value is None:
            raise ValueError("this spectrum has unresolved eigenvalues and no bulk_value")
        bulk = np.full(self.bulk_multiplicity, self.bulk_value if self.bulk_multiplicity else 0.0)
        return np.sort(np.concatenate([self.eigenvalues, bulk]))[::-1]

    def top(self, k: int) -> Spectrum:
        """The ``k`` largest resolved eigenpairs (the bulk is dropped)."""
        sl = slice(0, k)
        return dataclasses.replace(
            self,
            eigenvalues=self.eigenvalues[sl],
            eigenvectors=None if self.eigenvectors is None else self.eigenvectors[:, sl],
            residuals=None if self.residuals is None else self.residuals[sl],
            factors=None if self.factors is None else (self.factors[0][:, sl], self.factors[1][:, sl]),
            bulk_value=None,
        )

    def space(self, k: int) -> np.ndarray:
        """The top-``k`` eigenspace: the first ``k`` eigenvector columns (dim × k)."""
        if self.eigenvectors is None:
            raise ValueError("this spectrum has no eigenvectors (computed with vectors=False)")
        if not 0 <= k <= self.eigenvalues.size:
            raise ValueError(f"k must be in [0, {self.eigenvalues.size}] (the resolved eigenpairs), got {k}")
        return np.asarray(self.eigenvectors)[:, :k]

    def counts(self, *, min_ratio: float = 3.0, null_rtol: float = 1e-9) -> Counts:
        """Outliers, minibulk, bulk and null space by the gap rule (`spectrum_counts`): over all
        ``dim`` eigenvalues when the bulk value is known, else over the resolved ones with the
        ``dim − m`` unresolved counted as `spectrum_counts` says."""
        if self.bulk_value is not None:
            return spectrum_counts(self.all_eigenvalues(), min_ratio=min_ratio, null_rtol=null_rtol)
        return spectrum_counts(self.eigenvalues, dim=self.dim, min_ratio=min_ratio, null_rtol=null_rtol)

    def to_dict(self, vectors: bool = False) -> dict:
        """Strict-JSON dict (`ufm.results.to_jsonable`); eigenvectors only when ``vectors``."""
        out = {
            "eigenvalues": self.eigenvalues,
            "dim": int(self.dim),
            "bulk_value": self.bulk_value,
            "bulk_multiplicity": int(self.bulk_multiplicity),
            "source": self.source,
            "info": self.info,
            "converged": self.converged,
            "messages": self.messages,
        }
        if self.residuals is not None:
            out["residuals"] = self.residuals
        if vectors and self.eigenvectors is not None:
            out["eigenvectors"] = self.eigenvectors
        return to_jsonable(out)


# ---- gap-rule counts ------------------------------------------------------------------------------
@result(static=("outliers", "minibulk", "bulk", "null"))
class Counts:
    """Gap-rule counts of a spectrum of dimension ``outliers + minibulk + bulk + null``:
    ``null`` eigenvalues at most ``null_rtol · λ_max`` (an exact kernel, e.g. the flat
    directions 1 ⊗ w of softmax regression, or the unresolved zeros of a rank-M G-matrix),
    ``outliers`` above the largest ratio gap of the rest, ``minibulk`` above the largest gap
    below them, ``bulk`` the remaining nonzero eigenvalues."""

    outliers: int
    minibulk: int
    bulk: int
    null: int
    converged: bool = True  # a count (`ufm.results`)
    messages: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The four counts by name."""
        return {"outliers": self.outliers, "minibulk": self.minibulk, "bulk": self.bulk, "null": self.null}


def spectrum_counts(eigenvalues, *, dim: int | None = None, min_ratio: float = 3.0, null_rtol: float = 1e-9) -> Counts:
    """Outliers, minibulk, bulk and null space of a (partial, descending) spectrum.

    The project's gap rule (`ufm.count_outliers`, largest ratio gap ≥
    ``min_ratio``) is applied to the eigenvalues above ``null_rtol · λ_max`` — an exact
    kernel would otherwise always be "the" gap — once for the outliers and once more below
    them for the minibulk. ``dim`` (default len(λ)) counts the unresolved eigenvalues:
    they are taken to be null when fewer than ``dim`` values are given and the smallest is
    null, else bulk.
    """
    from .curvature.subspace import count_outliers  # curvature imports this module: import on use

    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    dim = lam.size if dim is None else int(dim)
    if dim < lam.size:
        raise ValueError(f"dim={dim} is smaller than the number of eigenvalues {lam.size}")
    top = max(lam[0], 0.0) if lam.size else 0.0
    live = lam[lam > null_rtol * top] if top > 0 else lam[:0]
    out = count_outliers(live, min_ratio=min_ratio, rtol=0.0) if live.size else 0
    mini = count_outliers(live[out:], min_ratio=min_ratio, rtol=0.0) if out else 0
    null = lam.size - live.size
    unresolved = dim - lam.size
    if null or not live.size:
        null += unresolved
        unresolved = 0
    return Counts(int(out), int(mini), int(live.size - out - mini + unresolved), int(null))


# ---- results whose fields are spectra (one type per object, closed form and autodiff alike) ----------
def _status(obj, *spectra) -> None:
    """Fill ``converged`` / ``messages`` of a result made of spectra from its parts (unless given)."""
    parts = [s for s in spectra if s is not None]
    if obj.converged is None:
        object.__setattr__(obj, "converged", all_converged(*parts))
    if not obj.messages:
        object.__setattr__(obj, "messages", tuple(m for s in parts for m in s.messages))


@result
class GaussNewtonSplit:
    """Papyan's split of a Gauss–Newton block, ``G = G_class + G_cross + G_within`` (``docs/theory.md`` §4).

    Built by the closed form (`ufm.theory.gn_decomposition`) and by autodiff
    (`ufm.curvature.PapyanDecomposition.spectra`), so the two compare field by field.
    ``nc1``: the (uncentred) NC1 of the layer input, where the closed form measured it.
    """

    G_class: Spectrum
    G_cross: Spectrum
    G_within: Spectrum
    nc1: float | None = None
    converged: bool | None = None  # None: all three spectra converged
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        _status(self, self.G_class, self.G_cross, self.G_within)


@result
class GradientSpectra:
    """A block's mean data gradient and the spectra of its per-sample gradients (``docs/theory.md`` §4).

    Built by the closed form (`ufm.theory.gradient_spectrum`) and by autodiff
    (`ufm.curvature.GradientMoments.spectra`).

    Fields:
      gradient: the mean (data) gradient, flat row-major (P,).
      second_moment: spectrum of ``(1/N) Σ_i g_i g_iᵀ``.
      covariance: spectrum of ``(1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ``.
      class_coefficients: closed form only, (K × K) coefficients of the unit gradient on the
        unit Kronecker vectors ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}``.
      outlier_fraction: closed form only, ``‖P g‖²/‖g‖²`` on the layer Hessian's outlier space.
    """

    gradient: np.ndarray
    second_moment: Spectrum
    covariance: Spectrum
    class_coefficients: np.ndarray | None = None
    outlier_fraction: float | None = None
    converged: bool | None = None  # None: both spectra converged
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        _status(self, self.second_moment, self.covariance)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "gradient_norm": float(np.linalg.norm(self.gradient)),
                "second_moment": self.second_moment,
                "covariance": self.covariance,
                "class_coefficients": self.class_coefficients,
                "outlier_fraction": self.outlier_fraction,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


@result(static=("layer", "multiplicity"))
class SingularValues:
    """Singular values of a weight matrix (descending) with its singular vectors and a prediction.

    Fields:
      values: (r,) singular values, descending; left (d_out × r), right (d_in × r): singular
        vectors, ``W = left @ diag(values) @ right.T``.
      layer: l of W_l; predicted: the closed-form σ_l and multiplicity (the rest 0), where one
        exists; max_rel_error: ``max |s_i − σ_l| / σ_l`` over the leading ``multiplicity``.
    """

    values: np.ndarray
    left: np.ndarray
    right: np.ndarray
    layer: int | None = None
    predicted: float | None = None
    multiplicity: int | None = None
    max_rel_error: float | None = None
    converged: bool = True
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "values": self.values,
                "layer": self.layer,
                "predicted": self.predicted,
                "multiplicity": self.multiplicity,
                "max_rel_error": self.max_rel_error,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


# ---- pytree registration ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class _Meta:
    """Metadata riding along in a pytree's static part; never part of structure comparisons
    (two spectra of one operator from different routes map over together)."""

    source: str
    info: dict
    converged: bool = True
    messages: tuple[str, ...] = ()

    def __eq__(self, other):
        return isinstance(other, _Meta)

    def __hash__(self):
        return 0


def _flatten(s: Spectrum):
    children = (s.eigenvalues, s.eigenvectors, s.residuals, s.factors, s.bulk_value)
    return children, (s.dim, _Meta(s.source, s.info, s.converged, s.messages))


def _unflatten(aux, children):
    # no __post_init__: the leaves may be tracers or placeholders inside jax.tree functions
    out = object.__new__(Spectrum)
    for name, value in zip(
        ("eigenvalues", "eigenvectors", "residuals", "factors", "bulk_value"), children, strict=True
    ):
        object.__setattr__(out, name, value)
    dim, meta = aux
    object.__setattr__(out, "dim", dim)
    object.__setattr__(out, "source", meta.source)
    object.__setattr__(out, "info", meta.info)
    object.__setattr__(out, "converged", meta.converged)
    object.__setattr__(out, "messages", meta.messages)
    return out


jax.tree_util.register_pytree_node(Spectrum, _flatten, _unflatten)
