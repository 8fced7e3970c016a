"""What a resumed run must share with the saved one: a JSON description of functions, optimisers and data.

`describe` turns an object into nested JSON values that change when its *settings* change and not
otherwise (deterministic across processes: no ids, no addresses):

* functions: the qualified name, the closure's cell contents and the defaults, described in turn
  (so ``optax.sgd(0.1)`` and ``optax.sgd(0.2)`` differ: the learning rate sits in a closure cell);
* ``functools.partial``: the function and its arguments; jitted functions: the wrapped one;
* numbers, strings, None; NamedTuples, dataclasses, tuples: their fields; lists, dicts and sets
  inside a closure or object only by type (mutable: state such as a counter, not a setting);
* arrays: shape, dtype and a SHA-1 of the bytes (small ones by value);
* anything else: its type's qualified name.

`first_difference` names the first place where two descriptions differ (for the error message of a
refused resume). Recursion stops at depth 12 (deeper content is not compared).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import types

import jax
import numpy as np

__all__ = ["describe", "data_fingerprint", "first_difference"]

_MAX_DEPTH = 12


def _array(x) -> dict | list:
    a = np.asarray(x)
    if a.size <= 8 and a.dtype.kind in "biuf":
        return {"dtype": str(a.dtype), "value": [_number(v) for v in a.ravel().tolist()], "shape": list(a.shape)}
    return {"shape": list(a.shape), "dtype": str(a.dtype), "sha1": hashlib.sha1(np.ascontiguousarray(a)).hexdigest()}


def _number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def _name(obj) -> str:
    return f"{getattr(obj, '__module__', '') or ''}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def describe(obj, _depth: int = 0, _seen: frozenset = frozenset()):
    """A JSON description of ``obj``'s settings (module docstring)."""
    if _depth > _MAX_DEPTH:
        return "..."
    d, seen = _depth + 1, _seen | {id(obj)}
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return _number(obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return _array(obj)
    if id(obj) in _seen:
        return "<cycle>"
    if isinstance(obj, functools.partial):
        return {
            "partial": describe(obj.func, d, seen),
            "args": [describe(a, d, seen) for a in obj.args],
            "keywords": {k: describe(v, d, seen) for k, v in sorted(obj.keywords.items())},
        }
    if isinstance(obj, types.FunctionType):
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(describe(cell.cell_contents, d, seen))
            except ValueError:  # an empty cell
                cells.append("<empty>")
        out = {"function": _name(obj), "closure": cells}
        if obj.__defaults__:
            out["defaults"] = [describe(v, d, seen) for v in obj.__defaults__]
        if obj.__kwdefaults__:
            out["kwdefaults"] = {k: describe(v, d, seen) for k, v in sorted(obj.__kwdefaults__.items())}
        return out
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and callable(obj):
        return {"wraps": describe(wrapped, d, seen)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return {"type": _name(type(obj)), **{f: describe(getattr(obj, f), d, seen) for f in obj._fields}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: describe(getattr(obj, f.name, None), d, seen) for f in dataclasses.fields(obj)}
        return {"type": _name(type(obj)), **fields}
    if isinstance(obj, tuple):
        return [describe(v, d, seen) for v in obj]
    if isinstance(obj, (list, dict, set)) and _depth > 0:  # mutable: state (a counter, a cache), not a setting
        return {"type": type(obj).__name__}
    if isinstance(obj, list):
        return [describe(v, d, seen) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v, d, seen) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (types.BuiltinFunctionType, types.MethodType, type)):
        return {"function": _name(obj)}
    return {"type": _name(type(obj))}


def data_fingerprint(data):
    """Shapes, dtypes and SHA-1 of every leaf of ``data`` (None stays None)."""
    if data is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(data)
    arrays = [_array(x) if hasattr(x, "shape") else describe(x) for x in leaves]
    return {"tree": str(treedef), "leaves": arrays}


def first_difference(a, b, where: str = "") -> str | None:
    """The path and the two values at the first place where descriptions ``a`` and ``b`` differ, or None."""
    if type(a) is not type(b):
        return f"{where or '.'}: {_short(a)} vs {_short(b)}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                left = _short(a[k]) if k in a else "missing"
                right = _short(b[k]) if k in b else "missing"
                return f"{where}.{k}: {left} vs {right}"
            diff = first_difference(a[k], b[k], f"{where}.{k}")
            if diff:
                return diff
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where or '.'}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = first_difference(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    return None if a == b else f"{where or '.'}: {_short(a)} vs {_short(b)}"


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
