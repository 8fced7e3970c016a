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
