"""The whole network: the top of the data Hessian over every parameter, and where it lives.

The top ``k`` eigenpairs of the data Hessian of the mean loss (no ridge) over backbone and
head together, by the Krylov solver of ``ufm.curvature`` (optionally streamed over the data
in batches), their gap-rule count, and "inheritance": how each eigenvector's squared mass
splits over the backbone and the head layers (head biases count with their layer)
(``docs/real_networks.md`` §10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..results import result, to_jsonable
from ..spectrum import Spectrum
from . import _measure
from ._data import Dataset
from ._measure import _count, _curvature, default_network_k, expected_outliers
from ._models import NetworkParams, NetworkSpec, head_leaf_indices, network_loss

__all__ = ["NetworkSpectrum", "network_spectrum"]


@result(static=("num_outliers", "num_params", "expected", "resolved", "masses", "batch_size"))
class NetworkSpectrum:
    """Top of the whole-network data Hessian.

    Fields:
      spectrum: the measured top-k `ufm.Spectrum` (Krylov; eigenvalues descending, eigenvectors,
        residuals ‖Hv − λv‖, its own ``converged`` / ``messages``). ``eigenvalues`` and
        ``residuals`` are read through to it.
      num_outliers: by the gap rule; num_params: P.
      expected: the outliers one head layer carries (K² or (K − 1)²); resolved: whether k
        exceeds it, so that a gap after the expected count could be seen at all (a count of
        0 with ``resolved = False`` means k was too small, not that there is no gap).
      inheritance: (k × (1 + L)) squared mass of each top eigenvector on
        [backbone, W_1, ..., W_L] (rows sum to 1); the first ``num_outliers`` rows are the outliers.
      in_layer_space: (k × L) fraction of each eigenvector's W_l part lying in layer l's
        predicted outlier space (NaN where the part is ~0 or no space was given).
      density_grid, density: SLQ estimate of the spectral density (empty if not asked).
      masses: mean squared mass of the outlier eigenvectors (the top ``expected`` when the gap
        rule finds none; ``masses["over"]`` says how many) on ``"backbone"`` and each ``"W_l"``.
      head_predicted: the top outliers of the head's full-Hessian prediction (the better of the
        class-mean and class-averaged closed forms, `HeadFullComparison`), empty when not given;
        ratio_to_head: ``λ_i(network) / λ_i(head prediction)`` over them (≥ 1 up to the
        prediction's error: the head block is a principal submatrix of the network's Hessian,
        Cauchy interlacing).
      batch_size: the batches the products streamed over (``None``: all samples at once).
      converged, messages: the spectrum's (the Krylov solve reached its tolerance, else the table says so).
    """

    spectrum: Spectrum
    num_outliers: int
    num_params: int
    expected: int
    resolved: bool
    inheritance: np.ndarray
    in_layer_space: np.ndarray
    density_grid: np.ndarray
    density: np.ndarray
    masses: dict
    head_predicted: np.ndarray
    ratio_to_head: np.ndarray
    batch_size: int | None = None
    converged: bool | None = None  # None: the spectrum's
    messages: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", bool(self.spectrum.converged))
        if self.messages is None:
            object.__setattr__(self, "messages", tuple(self.spectrum.messages))

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.asarray(self.spectrum.eigenvalues)

    @property
    def residuals(self) -> np.ndarray:
        r = self.spectrum.residuals
        return np.asarray(r) if r is not None else np.full(self.eigenvalues.size, np.nan)

    def to_dict(self) -> dict:
        """Strict JSON: the eigenvalues and residuals (not the P × k eigenvectors) and every other field."""
        out = {"eigenvalues": self.eigenvalues, "residuals": self.residuals, "source": self.spectrum.source}
        for f in (
            "num_outliers",
            "num_params",
            "expected",
            "resolved",
            "inheritance",
            "in_layer_space",
            "masses",
            "head_predicted",
            "ratio_to_head",
            "batch_size",
        ):
            out[f] = getattr(self, f)
        out.update(density_grid=self.density_grid, density=self.density, converged=self.converged)
        out["messages"] = self.messages
        return to_jsonable(out)


def _network_spectrum(
    fn,
    params,
    groups,
    L: int,
    expected: int,
    *,
    k,
    layer_spaces,
    density,
    density_matvecs,
    density_samples,
    seed,
    data=None,
    batch_size=None,
    head_predicted=None,
) -> NetworkSpectrum:
    """``groups[i]`` = 0 (backbone) or l (head layer l) for leaf i of ``params``; ``layer_spaces[l]``
    pairs the leaf index of W_l with an orthonormal basis of its outlier space. With ``data`` the
    loss is ``fn(params, batch)``, streamed in batches of ``batch_size``."""
    curv = _curvature()
    top, _ = _measure._eig(fn, params, k=k, dense_max=0, seed=seed, data=data, batch_size=batch_size)
    vals = np.asarray(top.eigenvalues)
    leaves = jax.tree_util.tree_leaves(params)
    sizes = np.array([x.size for x in leaves])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    V = np.asarray(top.eigenvectors)
    mass = np.zeros((V.shape[1], L + 1))
    in_space = np.full((V.shape[1], L), np.nan)
    for i, g in enumerate(groups):
        mass[:, g] += np.sum(V[bounds[i] : bounds[i + 1]] ** 2, axis=0)
    for l, (i, basis) in (layer_spaces or {}).items():
        part = V[bounds[i] : bounds[i + 1]]
        norm2 = np.sum(part**2, axis=0)
        proj = np.sum((np.asarray(basis).T @ part) ** 2, axis=0)
        in_space[:, l - 1] = np.where(norm2 > 1e-12, proj / np.maximum(norm2, 1e-300), np.nan)
    grid = dens = np.zeros(0)
    if density:
        sd = curv.spectral_density(
            fn,
            params,
            num_matvecs=density_matvecs,
            num_samples=density_samples,
            seed=seed,
            **({} if data is None else {"data": data, "batch_size": batch_size}),
        )
        grid, dens = np.asarray(sd.grid), np.asarray(sd.density)
    count = _count(vals)
    inheritance = mass / mass.sum(axis=1, keepdims=True)
    over = count or min(expected, vals.size)
    mean_mass = inheritance[:over].mean(axis=0)
    masses = {"over": int(over), "backbone": float(mean_mass[0])}
    masses.update({f"W_{l}": float(mean_mass[l]) for l in range(1, L + 1)})
    hp = np.zeros(0) if head_predicted is None else np.asarray(head_predicted, np.float64)
    n = min(hp.size, vals.size)
    return NetworkSpectrum(
        spectrum=top,
        num_outliers=count,
        num_params=int(sizes.sum()),
        expected=int(expected),
        resolved=bool(vals.size > expected),
        inheritance=inheritance,
        in_layer_space=in_space,
        density_grid=grid,
        density=dens,
        masses=masses,
        head_predicted=hp,
        ratio_to_head=vals[:n] / hp[:n],
        batch_size=batch_size,
    )


def network_spectrum(
    spec: NetworkSpec,
    params: NetworkParams,
    data: Dataset,
    *,
    k: int | None = None,
    layer_spaces: dict | None = None,
    density: bool = True,
    density_matvecs: int = 40,
    density_samples: int = 4,
    seed: int = 0,
    batch_size: int | None = None,
    head_predicted=None,
) -> NetworkSpectrum:
    """Top-``k`` eigenpairs (default `default_network_k`: K² + K for MSE, (K − 1)² + K for CE) of the
    whole-network data Hessian, the outlier count, inheritance over layers, the masses and
    (optionally) the SLQ density; products streamed over ``data`` in batches of ``batch_size``
    (``None``: all at once), so memory is bounded by one batch.

    ``layer_spaces`` maps l to an orthonormal (d_{l+1} d_l × m) basis of layer l's outlier space;
    ``head_predicted`` the head's full-Hessian predicted outliers, compared in ``ratio_to_head``.
    """
    batch = (jnp.asarray(data.X, jnp.float64), jnp.asarray(data.labels))
    fn = lambda p, b: network_loss(spec, p, b[0], b[1], regularized=False)  # noqa: E731
    head_idx = head_leaf_indices(spec)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    groups = [0] * n_leaves
    for l, i in enumerate(head_idx, start=1):
        groups[i] = l
    for l in range(1, n_leaves - head_idx[-1]):  # head biases follow W_1..W_L
        groups[head_idx[-1] + l] = l
    spaces = {l: (head_idx[l - 1], b) for l, b in (layer_spaces or {}).items()}
    return _network_spectrum(
        fn,
        params,
        groups,
        spec.depth,
        expected_outliers(spec),
        k=default_network_k(spec.loss, spec.num_classes) if k is None else k,
        layer_spaces=spaces,
        density=density,
        density_matvecs=density_matvecs,
        density_samples=density_samples,
        seed=seed,
        data=batch,
        batch_size=batch_size,
        head_predicted=head_predicted,
    )
