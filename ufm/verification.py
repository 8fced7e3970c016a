"""`verify`: closed-form theory against autodiff for one deep-UFM state — a citable report.

For a state (trained from random init, or the constructed optimum) every layer l gets:

* the data-Hessian block of ``W_l`` measured by dense autodiff (`ufm.curvature.hessian`;
  block Krylov `top_eigenpairs` when the block exceeds ``dense_max``) against the class-mean
  closed form (`ufm.theory.layer_hessian_spectrum`, ``docs/theory.md`` §4–§6): outlier
  eigenvalues, their count (gap rule), the bulk, principal angles between the predicted
  and measured outlier subspaces, and the alignment ``f(v) = (vᵀHv)²/(‖v‖²‖Hv‖²)`` of every
  predicted eigenvector;
* where the DNC point has a closed form (``docs/theory.md`` §3, §5), the outlier value and the
  singular values of ``W_l`` against it;
* MSE: Papyan's split measured by autodiff (`ufm.curvature.papyan_decomposition`) against
  the predicted ranks K / K(K−1) / 0; the data gradient's squared coefficients on the unit
  Kronecker vectors ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}`` (1/K on the diagonal, 0 off it) and its
  fraction in the outlier space (1);
* NC1–NC4 (`ufm.collapse.metrics`).

Then the full data Hessian over ``W_1..W_L`` against ``docs/theory.md`` §4's S/T closed form
(linear MSE, or ReLU with σ'(0) = 1). Every check carries its tolerance and pass/fail.
The "data Hessian" (no ridge) is compared throughout; the ridge only shifts a block by λ.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import collapse, curvature, theory
from .model import UFMParams, check_params, forward, init_params, loss_fn
from .results import all_converged, dump, result, to_jsonable
from .spec import UFMSpec
from .spectrum import Spectrum
from .training import train

__all__ = ["Check", "LayerSpectra", "Report", "State", "collapsed_state", "training_steps", "verify"]


@result(static=("name", "group", "required", "layer"))
class Check:
    """One comparison: ``error <= tolerance`` passes. ``predicted``/``measured`` are JSON-able.

    ``converged`` (the result protocol, `ufm.results`) is ``passed``; ``messages`` says why not.
    """

    name: str
    predicted: object
    measured: object
    error: float
    tolerance: float
    group: str = ""
    required: bool = True  # False: reported for information, not counted in Report.passed
    layer: int | None = None  # the layer l (block of W_l) the check is about, if any
    converged: bool | None = None  # None: ``passed``
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", self.passed)
        if not self.converged and not self.messages:
            why = f"error {float(self.error):.3g} > tolerance {float(self.tolerance):.3g}"
            object.__setattr__(self, "messages", (f"check {self.name!r} failed: {why}",))

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error) and self.error <= self.tolerance)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "name": self.name,
                "group": self.group,
                "layer": self.layer,
                "predicted": self.predicted,
                "measured": self.measured,
                "error": float(self.error),
                "tolerance": float(self.tolerance),
                "passed": self.passed,
                "required": self.required,
                "converged": self.converged,
                "messages": self.messages,
            }
        )


@result(static=("layer",))
class LayerSpectra:
    """The data-Hessian block of W_l: the class-mean closed form and the autodiff measurement."""

    layer: int
    predicted: Spectrum
    measured: Spectrum
    converged: bool | None = None  # None: the measurement's solver converged
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", bool(self.measured.converged))
            object.__setattr__(self, "messages", self.messages or tuple(self.measured.messages))


@result(static=("info",))
class State:
    """A state to verify and how it was made (``info``: ``state``, ``trained``, training steps ...).

    ``converged`` (`ufm.results`): the state is what was asked for — the constructed optimum, a
    given state, or training that reached its tolerance (False when it stopped at its step cap;
    ``messages`` says so)."""

    params: UFMParams
    info: dict
    converged: bool | None = None  # None: from info["train_converged"] (True when nothing trained)
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            ok = bool(self.info.get("train_converged", True))
            object.__setattr__(self, "converged", ok)
            if not ok and not self.messages:
                msg = (
                    f"training stopped at its {self.info.get('train_step_cap')}-step cap with ‖∇L‖ = "
                    f"{self.info.get('grad_norm', float('nan')):.2g} > {self.info.get('train_tol')}"
                )
                object.__setattr__(self, "messages", (msg,))


@result(static=("spec", "info"))
class Report:
    """All checks of one state, how the state was made (``info``), and per layer the predicted
    and measured spectra (``spectra``, what `ufm.plotting.layer_spectra_figure` draws).

    ``converged`` (`ufm.results`): every required check passed and every measured spectrum
    converged; ``messages``: the failed checks and the solvers' messages.
    """

    spec: UFMSpec
    checks: tuple[Check, ...]
    info: dict
    spectra: tuple[LayerSpectra, ...] = ()
    converged: bool | None = None  # None: computed from the checks and spectra
    messages: tuple[str, ...] = ()

    def __post_init__(self):
        if self.converged is None:
            object.__setattr__(self, "converged", self.passed and all_converged(self.spectra))
        if not self.messages:
            msgs = [m for c in self.checks if c.required for m in c.messages]
            msgs += [m for s in self.spectra for m in s.messages]
            object.__setattr__(self, "messages", tuple(msgs))

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.required)

    @property
    def failed(self) -> tuple[Check, ...]:
        """Required checks that failed."""
        return tuple(c for c in self.checks if c.required and not c.passed)

    def worst(self) -> Check:
        """The check with the largest ``error / tolerance`` (failed checks first)."""

        def badness(c):
            if not c.required:  # informational checks never count as the worst
                return (-1, 0.0)
            if c.passed:
                return (0, c.error / c.tolerance if c.tolerance else 0.0)
            return (1, c.error / c.tolerance if c.tolerance else np.inf)

        return max(self.checks, key=badness)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "passed": self.passed,
                "spec": self.spec,
                "info": self.info,
                "checks": self.checks,
                "spectra": self.spectra,
                "converged": self.converged,
                "messages": self.messages,
            }
        )

    def to_json(self, path) -> None:
        """Write `to_dict` as strict JSON (`ufm.results.dump`)."""
        dump(self, path)


def _rel(a, b) -> float:
    """Largest relative difference of two equally long sorted vectors (scale: max |b|)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        return float("inf")
    scale = max(np.max(np.abs(b), initial=0.0), np.finfo(float).tiny)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


_HOW = {"dense": "dense", "krylov": "block Krylov"}


def _measure_block(f, params, leaves, k, dense_max, vectors=True):
    """All eigenpairs of a Hessian block when it has at most ``dense_max`` coordinates, else
    the top ``k`` by block Krylov (`ufm.curvature.spectrum`)."""
    P = sum(np.size(jax.tree_util.tree_leaves(params)[i]) for i in leaves)
    dense = P <= dense_max
    return curvature.spectrum(
        f,
        params,
        leaves=leaves,
        k=None if dense else min(k, P),
        dense_max=dense_max,
        # a Krylov block that misses its tolerance is reported with the block, not raised
        **({"vectors": vectors} if dense else {"throw": False}),
    )


def _block_matvec(f, params, leaves):
    """``v ↦ H v`` of the block, linearised once and jitted (one compilation for all vectors)."""
    op = curvature.hessian_operator(f, params, leaves=leaves)
    return jax.jit(lambda v: op.make(op.args)(jnp.asarray(v, op.dtype)))


def _layer_checks(spec, params, l, f_data, dense_max, tol, at_dnc) -> tuple[list[Check], np.ndarray]:
    g = f"layer {l}"
    checks = []
    pred = theory.layer_hessian_spectrum(spec, params, l, vectors=True)
    m = pred.eigenvalues.size
    meas = _measure_block(f_data, params, [l], m + 5, dense_max)
    vals, vecs, how = meas.eigenvalues, meas.eigenvectors, _HOW[meas.source]
    checks.append(
        Check(
            "outlier eigenvalues (class-mean formula)",
            pred.eigenvalues,
            vals[:m],
            _rel(vals[:m], pred.eigenvalues),
            tol["eig"],
            g,
        )
    )
    # the same gap rule on both sides: tiny predicted eigenvalues belong to the bulk
    n_pred = int(curvature.count_outliers(pred.all_eigenvalues()))
    n_out = int(curvature.count_outliers(vals))
    checks.append(Check("outlier count (gap rule)", n_pred, n_out, float(abs(n_out - n_pred)), 0.0, g))
    rest = vals[m:]
    bulk_err = float(np.max(np.abs(rest - pred.bulk_value), initial=0.0) / max(abs(vals[0]), 1e-300))
    checks.append(
        Check(
            f"bulk ({how})",
            pred.bulk_value,
            [float(rest.min(initial=0)), float(rest.max(initial=0))],
            bulk_err,
            tol["eig"],
            g,
        )
    )
    angles = np.asarray(curvature.principal_angles(pred.eigenvectors[:, :n_pred], vecs[:, :n_pred]))
    checks.append(
        Check(
            "outlier subspace: largest principal angle [rad]",
            0.0,
            float(angles.max()),
            float(angles.max()),
            tol["angle"],
            g,
        )
    )
    matvec = _block_matvec(f_data, params, [l])
    f_vals = np.array([float(curvature.alignment(matvec, pred.eigenvectors[:, j])) for j in range(m)])
    checks.append(
        Check(
            "alignment f(v) of predicted eigenvectors (min)",
            1.0,
            float(f_vals.min()),
            float(1 - f_vals.min()),
            tol["angle"],
            g,
        )
    )

    if not at_dnc:  # the closed-form DNC values hold only at the DNC point itself
        return checks + (_gn_checks(spec, params, l, tol, g) if spec.loss == "mse" else []), LayerSpectra(l, pred, meas)
    sol = theory.dnc_solution(spec)
    levels, mults = sol.layer_outliers[l - 1], sol.layer_multiplicities[l - 1]
    if mults:  # the layer's own λ_l (docs/theory.md §4, §5)
        value = np.sort(np.repeat(levels, mults))[::-1]
        name = "outliers vs DNC closed form λγ/(1−γ)" if spec.loss == "mse" else "CE outlier levels vs DNC closed form"
        checks.append(
            Check(
                name,
                float(levels[0]) if spec.loss == "mse" else list(levels),
                vals[: value.size],
                _rel(vals[: value.size], value),
                tol["dnc"],
                g,
            )
        )
    ws = theory.weight_spectrum(spec, params)[l - 1]
    if ws.max_rel_error is not None:
        checks.append(
            Check(
                f"singular values of W_{l} vs DNC",
                ws.predicted,
                ws.values[: ws.multiplicity],
                ws.max_rel_error,
                tol["dnc"],
                g,
            )
        )
    if spec.loss == "mse":
        checks += _gn_checks(spec, params, l, tol, g)
        checks += _gradient_checks(spec, params, l, pred, tol, g)
    return checks, LayerSpectra(l, pred, meas)


def _gn_checks(spec, params, l, tol, g) -> list[Check]:
    """Papyan's split by autodiff (`ufm.curvature.papyan_decomposition`) against the
    class-mean closed form (`ufm.theory.gn_decomposition`): ranks and eigenvalues."""
    model = lambda p: forward(spec, p).output  # noqa: E731
    dec = curvature.papyan_decomposition(model, params, spec.class_index, loss="mse", leaves=[l])
    measured = dec.spectra(vectors=False)
    predicted = theory.gn_decomposition(spec, params, l, vectors=False)
    top = max(float(np.linalg.eigvalsh(np.asarray(dec.class_ + dec.cross)).max()), 1e-300)
    checks = []
    for name in ("G_class", "G_cross", "G_within"):
        ev, p = getattr(measured, name).eigenvalues, getattr(predicted, name)
        rank = int(np.sum(ev > tol["rank"] * top))
        pv = p.eigenvalues[p.eigenvalues > tol["rank"] * top]  # same numerical-rank rule on both sides
        checks.append(
            Check(f"{name} rank (> {tol['rank']:g}·λ_max)", pv.size, rank, float(abs(rank - pv.size)), 0.0, g)
        )
        if pv.size and rank == pv.size:
            checks.append(Check(f"{name} eigenvalues", pv, ev[:rank], _rel(ev[:rank], pv), tol["eig"], g))
    return checks


def _gradient_checks(spec, params, l, pred, tol, g) -> list[Check]:
    """Squared coefficients of the autodiff data gradient on ``μ̂_c^{(l+1)} ⊗ μ̂_{c'}^{(l)}``."""
    K = spec.num_classes
    grad = np.asarray(jax.grad(loss_fn(spec, regularized=False))(params).Ws[l - 1])
    acts = forward(spec, params)
    unit = lambda X: X / np.linalg.norm(X, axis=0)  # noqa: E731
    M_in = collapse.class_means(acts.post[l - 1], spec.class_index, K)
    M_out = collapse.class_means(np.asarray(params.Ws[l - 1]) @ np.asarray(acts.post[l - 1]), spec.class_index, K)
    ghat = grad / np.linalg.norm(grad)
    coef2 = (unit(M_out).T @ ghat @ unit(M_in)) ** 2
    expected = np.eye(K) / K
    frac = float(curvature.gradient_fraction(ghat.reshape(-1), pred.eigenvectors))
    return [
        Check(
            "gradient: squared coefficients on μ̂_c⊗μ̂_c' (1/K diagonal)",
            expected,
            coef2,
            float(np.max(np.abs(coef2 - expected))),
            tol["dnc"],
            g,
        ),
        Check("gradient: fraction in the outlier space", 1.0, frac, abs(1 - frac), tol["dnc"], g),
    ]


def _collapse_checks(spec, params, tol, geometry_required=True) -> list[Check]:
    nc = collapse.metrics(spec, params)
    geometry = "etf_distance" if spec.loss == "ce" else "of_distance"
    checks = []
    for i in range(spec.depth):
        g = f"layer {i + 1}"
        checks.append(
            Check("NC1 tr(Σ_W Σ_B†)/K", 0.0, float(nc.nc1[i]), float(abs(nc.nc1[i])), tol["nc"], g, layer=i + 1)
        )
        checks.append(
            Check(
                f"NC2 {geometry}",
                0.0,
                float(getattr(nc, geometry)[i]),
                float(getattr(nc, geometry)[i]),
                tol["nc2"],
                g,
                geometry_required,
                i + 1,
            )
        )
        checks.append(
            Check(
                "NC3 rows of W outside span(M)",
                0.0,
                float(nc.nc3[i]),
                float(nc.nc3[i]),
                tol["nc2"],
                g,
                geometry_required,
                i + 1,
            )
        )
        checks.append(
            Check("NC4 nearest-centre disagreement", 0.0, float(nc.nc4[i]), float(nc.nc4[i]), 0.0, g, layer=i + 1)
        )
    return checks


def _dnc_distance_check(spec, params, sol, tol) -> Check:
    """``‖Z − Z*‖/‖Z*‖`` with ``Z* = γY`` (MSE, ``docs/theory.md`` §3) or ``α (I − 11ᵀ/K) ⊗ 1_nᵀ`` (CE, §5)."""
    Z = np.asarray(forward(spec, params).output, dtype=np.float64)
    if sol.collapsed_to_zero:
        target = np.zeros_like(Z)
    elif spec.loss == "mse":
        target = sol.scale * spec.targets
    else:
        K = spec.num_classes
        target = sol.scale * np.kron(np.eye(K) - np.ones((K, K)) / K, np.ones((1, spec.per_class)))
    err = float(np.linalg.norm(Z - target) / max(np.linalg.norm(target), np.linalg.norm(Z), 1e-300))
    return Check("output at the DNC point: ‖Z − Z*‖/‖Z*‖", 0.0, err, err, tol["dnc"], "DNC point")


def _full_checks(spec, params, f_data, dense_max, tol) -> list[Check]:
    try:
        pred = theory.full_hessian_spectrum(spec, params)
    except ValueError as e:  # no closed form for this loss / activation
        return [], str(e)
    L = spec.depth
    leaves = list(range(1, L + 1))
    k = min(int(np.sum(pred.eigenvalues > 0)) + 5, pred.dim)
    meas = _measure_block(f_data, params, leaves, k, dense_max, vectors=False)
    measured, how = meas.eigenvalues, _HOW[meas.source]
    predicted = np.sort(pred.all_eigenvalues())[::-1][: measured.size]
    checks = [
        Check(
            f"full Hessian over W_1..W_L: all {measured.size} eigenvalues ({how})",
            predicted,
            measured,
            _rel(measured, predicted),
            tol["dnc"],
            "full",
        )
    ]
    n_pos = int(np.sum(pred.eigenvalues > 1e-8 * np.abs(pred.eigenvalues).max()))
    n_meas = int(np.sum(measured > 1e-8 * np.abs(measured).max()))
    checks.append(
        Check("full Hessian: number of positive eigenvalues", n_pos, n_meas, float(abs(n_meas - n_pos)), 0.0, "full")
    )
    return checks, None


DEFAULT_TOLERANCES = {
    "eig": 1e-8,  # closed form from the state's own class means vs autodiff at that state
    "angle": 1e-6,
    "dnc": 1e-6,  # against the DNC point: limited by how far training converged
    "rank": 1e-8,
    "nc": 1e-8,
    "nc2": 1e-6,
}


#: The one training budget of a verified state, per activation: ReLU's loss has a kink at the
#: collapsed optimum (exact zeros), where GD converges only sublinearly, so its budget is capped
#: instead of chasing ‖∇L‖ = 1e-10 (the L=3, K=4 ReLU state passes every required check at 100k).
TRAIN_STEPS = {"linear": 200_000, "softplus": 200_000, "relu": 100_000}
TRAIN_TOL = 1e-10


def training_steps(spec: UFMSpec) -> int:
    """The training budget of `collapsed_state` for ``spec`` (`TRAIN_STEPS`)."""
    return TRAIN_STEPS[spec.activation]


def collapsed_state(
    spec: UFMSpec,
    *,
    from_optimum: bool = False,
    seed: int = 0,
    steps: int | None = None,
    tol: float = TRAIN_TOL,
    callback=None,
) -> State:
    """The state `verify` checks: trained from ``init_params(spec, seed)`` to ``‖∇L‖ <= tol``
    (at most ``steps``, default `training_steps`), or the constructed DNC optimum.

    Always float64 (a local ``jax.enable_x64`` scope), whatever the caller's global setting.
    A training run that stops at ``steps`` before ``tol`` is kept (``info["train_converged"]``
    is False) and `verify` reports it as a failed check.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> state = ufm.verification.collapsed_state(ufm.UFMSpec(num_classes=2, per_class=1, depth=1, width=2),
      ...                                          from_optimum=True)
      >>> state.info["state"], state.info["trained"]
      ('constructed optimum (seed 0)', False)
    """
    t0 = time.perf_counter()
    with jax.enable_x64(True):  # a float64 state whatever the caller's setting: verify's tolerances need it
        if from_optimum:
            params = theory.construct_optimum(spec, seed)
            info = {"state": f"constructed optimum (seed {seed})", "trained": False}
        else:
            steps = training_steps(spec) if steps is None else steps
            result = train(
                spec,
                init_params(spec, seed, dtype=jnp.float64),
                steps=steps,
                tol=tol,
                callback=callback,
                log_every=2_000,
            )
            params = result.params
            info = {
                "state": f"trained from random init (seed {seed})",
                "trained": True,
                "train_steps": result.steps,
                "train_step_cap": steps,
                "train_tol": tol,
                "train_converged": result.converged,
                "grad_norm": float(result.history["grad_norm"][-1]),
            }
    info["train_seconds"] = time.perf_counter() - t0
    return State(params, info)


def verify(
    spec: UFMSpec,
    params: UFMParams | State,
    *,
    dense_max: int = curvature.DEFAULT_DENSE_MAX,
    full: bool = True,
    tolerances: dict | None = None,
) -> Report:
    """Check the closed-form theory against autodiff at the given state of ``spec``.

    Args:
      spec: the model.
      params: the state: parameters, or a `State` from `collapsed_state` (its ``info`` goes
        into the report; a trained ReLU state is not required to be the symmetric DNC point).
      dense_max: blocks up to this many coordinates are measured densely, larger ones by
        block Krylov (`ufm.curvature.spectrum`).
      full: also check the full Hessian over W_1..W_L where a closed form exists.
      tolerances: overrides of `DEFAULT_TOLERANCES`.

    The checks run in float64 (a local ``jax.enable_x64`` scope) whatever the caller's global
    setting; ``params`` must be float64 (`collapsed_state` makes them so). The report's first
    rows (group ``"state"``) say whether training reached its tolerance and, for MSE, whether
    ``b`` is below the collapse threshold; above it the minimiser is 0 and only those rows are
    reported (``info["skipped"]`` says why).

    Raises:
      ValueError: ``params`` not float64; a spec without a closed-form DNC point
        (`ufm.theory.dnc_solution`).

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import ufm
      >>> spec = ufm.UFMSpec(num_classes=2, per_class=1, depth=1, width=3)
      >>> report = ufm.verify(spec, ufm.theory.construct_optimum(spec))
      >>> report.passed, [s.layer for s in report.spectra]
      (True, [1])
    """
    state = params if isinstance(params, State) else State(params, {"state": "given", "trained": False})
    check_params(spec, state.params)
    dtypes = sorted({str(np.asarray(x).dtype) for x in jax.tree.leaves(state.params)} - {"float64"})
    if dtypes:
        raise ValueError(
            f"params must be float64 arrays (verify's tolerances, down to 1e-8, are below float32's rounding 6e-8), "
            f"got {dtypes}; "
            "build the state with ufm.collapsed_state (float64 whatever the global setting) or call "
            "jax.config.update('jax_enable_x64', True) before making it"
        )
    with jax.enable_x64(True):  # the checks run in float64 whatever the caller's global setting
        return _verify(spec, state, dense_max, full, {**DEFAULT_TOLERANCES, **(tolerances or {})})


def _state_checks(info: dict, sol) -> list[Check]:
    """The state itself: training reached its tolerance; (MSE) a non-zero DNC point is the minimiser."""
    checks = []
    if info.get("trained") and "train_tol" in info:
        capped = "" if info["train_converged"] else f" (stopped at the {info['train_step_cap']}-step cap)"
        checks.append(
            Check(
                f"training reached ‖∇L‖ <= {info['train_tol']:g}{capped}",
                info["train_tol"],
                info["grad_norm"],
                info["grad_norm"],
                info["train_tol"],
                "state",
            )
        )
    if sol.loss == "mse":
        # docs/theory.md §3: the DNC point is the global minimiser iff b < (L−1)^{L−1}/L^{2L}
        checks.append(
            Check(
                "b = K^(L+1)·n·λ_H·Πλ_l < (L−1)^(L−1)/L^(2L) (else the minimiser is 0)",
                sol.b_bound,
                sol.b,
                sol.b / sol.b_bound,
                float(np.nextafter(1.0, 0.0)),
                "state",
            )
        )
    return checks


def _verify(spec: UFMSpec, state: State, dense_max: int, full: bool, tol: dict) -> Report:
    params = state.params
    t0 = time.perf_counter()
    info = {"float64": True}
    if spec.activation == "relu":
        info["relu_convention"] = f"σ'(0) = {spec.relu_grad0:g}"
    if spec.activation == "softplus":
        info["softplus_beta"] = spec.softplus_beta
    info.update(state.info)
    sol = theory.dnc_solution(spec)
    info["dnc"] = sol.to_dict()
    state_checks = _state_checks(state.info, sol)
    if sol.collapsed_to_zero:  # every DNC check would compare with a point that is not the minimiser
        info["skipped"] = {
            "every DNC check": f"b = {sol.b:.4g} >= {sol.b_bound:.4g}: the global minimiser is 0 "
            "(docs/theory.md §3), there is no collapsed DNC point to check"
        }
        info["seconds"] = info.get("train_seconds", 0.0) + time.perf_counter() - t0
        return Report(spec, tuple(state_checks), info, ())
    f_data = loss_fn(spec, regularized=False)
    # Trained ReLU deep UFMs need not reach the symmetric DNC point (docs/theory.md §6: K² unequal
    # outliers): there the geometry and DNC-point checks are reported, not required.
    symmetric_required = not (spec.activation == "relu" and state.info.get("trained", False))
    checks = _collapse_checks(spec, params, tol, symmetric_required)
    dnc = dataclasses.replace(_dnc_distance_check(spec, params, sol, tol), required=symmetric_required)
    checks.append(dnc)
    geometry = [c for c in checks if c.name.startswith("NC2")]
    at_dnc = dnc.passed and all(c.passed for c in geometry)  # Z ≈ Z* alone admits non-symmetric ReLU states
    skipped = {} if at_dnc else {"DNC-point checks": "the state is not the DNC point: " + f"{dnc.measured:.3g}"}
    spectra = []
    for l in range(1, spec.depth + 1):
        try:
            layer_checks, layer_spectra = _layer_checks(spec, params, l, f_data, dense_max, tol, at_dnc)
            spectra.append(layer_spectra)
        except ValueError as e:  # e.g. not collapsed: the theory says how far
            layer_checks = [Check("class-mean formula applicable", "collapsed", str(e), np.inf, 0.0, f"layer {l}")]
        checks += [dataclasses.replace(c, layer=l) for c in layer_checks]
    if full and at_dnc:
        full_checks, reason = _full_checks(spec, params, f_data, dense_max, tol)
        checks += full_checks
        if reason:
            skipped["full Hessian"] = reason
    info["skipped"] = skipped
    info["seconds"] = info.get("train_seconds", 0.0) + time.perf_counter() - t0
    return Report(spec, tuple(state_checks) + tuple(sorted(checks, key=_group_order)), info, tuple(spectra))


def _group_order(check: Check) -> tuple:
    """Report order (stable): the DNC point, layers 1..L, the full Hessian."""
    if check.layer is not None:
        return (1, check.layer)
    return (0, 0) if check.group == "DNC point" else (2, 0)
