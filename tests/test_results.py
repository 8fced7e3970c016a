"""The result protocol (`ufm.results`): pytrees with ``converged`` / ``messages``, strict JSON."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufm import results


@results.result(static=("name",))
class _Fit:
    name: str
    values: np.ndarray
    nested: dict
    converged: bool = True
    messages: tuple[str, ...] = ()


def _fit(**kw):
    base = dict(name="a", values=np.array([1.0, np.nan, np.inf]), nested={"x": jnp.array([[-np.inf, 2.0]])})
    return _Fit(**{**base, **kw})


def test_strict_json_never_raises_and_maps_non_finite_to_null():
    text = results.dumps(_fit(messages=("Krylov missed tol",), converged=False))
    back = json.loads(text)  # strict: a NaN token would not even be produced
    assert back == {
        "name": "a",
        "values": [1.0, None, None],
        "nested": {"x": [[None, 2.0]]},
        "converged": False,
        "messages": ["Krylov missed tol"],
    }
    assert "NaN" not in text and "Infinity" not in text


def test_scalars_enums_and_namedtuples():
    from typing import NamedTuple

    class P(NamedTuple):
        a: float
        b: np.float32

    assert results.to_jsonable(P(math.nan, np.float32(2.5))) == {"a": None, "b": 2.5}
    assert results.to_jsonable(np.int64(3)) == 3
    assert results.to_jsonable({1: (np.bool_(True), float("-inf"))}) == {"1": [True, None]}
    with pytest.raises(TypeError, match="cannot serialise"):
        results.to_jsonable(object())


def test_result_is_a_pytree_with_static_status():
    r = _fit(converged=False, messages=("m",))
    leaves = jax.tree_util.tree_leaves(r)
    assert len(leaves) == 2  # values and nested["x"]; name / converged / messages are metadata
    doubled = jax.tree.map(lambda x: 2 * x, r)
    assert isinstance(doubled, _Fit) and doubled.converged is False and doubled.messages == ("m",)
    np.testing.assert_array_equal(doubled.values[:1], [2.0])
    out = jax.jit(lambda t: t)(_fit(values=jnp.ones(3), nested={"x": jnp.zeros(2)}))
    assert out.name == "a" and out.converged is True


def test_result_requires_status_fields():
    with pytest.raises(TypeError, match="converged"):

        @results.result
        class Bad:
            x: np.ndarray
            messages: tuple = ()


def test_all_converged():
    ok, bad = _fit(), _fit(converged=False)
    assert results.all_converged(ok, [ok, (ok,)])
    assert not results.all_converged(ok, [ok, bad])


def test_dump_writes_strict_json(tmp_path):
    path = tmp_path / "r.json"
    results.dump({"r": _fit(), "t": (1, 2.0)}, path)
    assert json.loads(path.read_text())["r"]["values"] == [1.0, None, None]


# ---- every public result type of the package follows the protocol ----------------------------------
_MODULES = (
    "ufm",
    "ufm.spectrum",
    "ufm.collapse",
    "ufm.training",
    "ufm.verification",
    "ufm.theory",
    "ufm.networks",
    "ufm.dynamics",
    "ufm.curvature",
    "ufm.experiments.align",
    "ufm.experiments.dmap",
    "ufm.experiments.catapult",
    "ufm.experiments.sgd_ode",
)
# inputs, not results: specs, parameters, configs, data models, models, probe contexts
_NOT_RESULTS = {
    "UFMSpec",
    "UFMParams",
    "NetworkSpec",
    "NetworkParams",
    "TwoLayerParams",
    "Dataset",
    "KGMM",
    "XORGMM",
    "AnisotropicMixture",
    "NTKMLP",
    "Target",
    "ProbeContext",
    "Operator",  # a linear operator (an input to the solvers), not a result
    "AlignConfig",
    "DmapConfig",
    "CatapultConfig",
    "SGDODEConfig",
}


def _public_result_types():
    import dataclasses
    import importlib
    import inspect

    seen = {}
    for name in _MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr, None)
            if not inspect.isclass(obj) or attr in _NOT_RESULTS or obj in seen.values():
                continue
            if dataclasses.is_dataclass(obj) or (issubclass(obj, tuple) and hasattr(obj, "_fields")):
                seen[f"{name}.{attr}"] = obj
    return seen


def test_every_public_result_type_has_status_fields_to_dict_and_is_a_pytree():
    import dataclasses

    found = _public_result_types()
    assert len(found) >= 30, sorted(found)
    for name, cls in found.items():
        fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)
        assert {"converged", "messages"} <= set(fields), name
        assert callable(getattr(cls, "to_dict", None)), name
        # registered with JAX: flattening a registered class does not treat the instance as one leaf
        assert cls in _registered_types(), name


def _registered_types():
    from jax._src import tree_util  # private: JAX has no public "is this type registered" query

    return set(tree_util._registry) | set(getattr(tree_util, "_registry_with_keypaths", {}))
