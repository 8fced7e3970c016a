"""The result protocol: one way for every public result to be a pytree, say whether it worked, and become JSON.

Every public result type of ``ufm`` is a frozen dataclass (or a ``NamedTuple``) that

* is a registered JAX pytree: its array fields are leaves, everything else is static metadata, so a
  result passes through ``jax.tree.map`` / ``jit`` boundaries like its arrays;
* carries ``converged: bool`` (did the solver / loop / check reach what it was asked for) and
  ``messages: tuple[str, ...]`` (why not, or warnings worth reading);
* serialises through `to_jsonable` / `to_dict()` into *strict* JSON: NaN and ±inf become ``null``, numpy
  and JAX arrays become nested lists, so ``json.dumps(..., allow_nan=False)`` never raises.

`result` is the decorator that gives a dataclass all three; `dumps` / `dump` are the one JSON writer.
Iterative solvers and loops take ``throw=`` with the one default `THROW` (failure is loud unless the
caller opts out, as in diffrax / optimistix).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["THROW", "result", "to_jsonable", "dumps", "dump", "all_converged"]

THROW = True
"""The package-wide default of ``throw=``: a solver or loop that misses its target raises."""

_STATIC_ALWAYS = ("converged", "messages")


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dicts, lists, str, int, float (finite), bool and None.

    Dataclasses and NamedTuples go through their ``to_dict()`` when they have one (else their fields);
    arrays and numpy scalars become lists / Python numbers; NaN and ±inf become ``None``; enums their
    value; tuples and sets lists; mapping keys strings.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        if a.dtype.kind in "fc":
            if a.dtype.kind == "c":
                a = a.real
            a = a.astype(np.float64)
            return _finite_list(a)
        if a.dtype.kind in "biu":
            return a.tolist()
        return to_jsonable(a.tolist())
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):
        return to_jsonable(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        return {k: to_jsonable(v) for k, v in zip(obj._fields, obj, strict=True)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"to_jsonable: cannot serialise an object of type {type(obj).__name__}")


def _finite_list(a: np.ndarray):
    if a.ndim == 0:
        v = float(a)
        return v if math.isfinite(v) else None
    return [_finite_list(x) for x in a] if a.ndim > 1 else [float(v) if math.isfinite(v) else None for v in a]


def dumps(obj: Any, **kwargs) -> str:
    """Strict JSON text of ``obj`` (`to_jsonable`, then ``json.dumps(allow_nan=False)``)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def dump(obj: Any, path: str | os.PathLike, *, indent: int | None = 1) -> None:
    """Write ``obj`` to ``path`` as strict JSON (see `dumps`)."""
    text = dumps(obj, indent=indent)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")


def all_converged(*results: Any) -> bool:
    """True when every result (or nested sequence of results) has ``converged`` True."""
    for r in results:
        if isinstance(r, (list, tuple)) and not hasattr(r, "converged"):
            if not all_converged(*r):
                return False
        elif not bool(r.converged):
            return False
    return True


def result(cls=None, *, static: tuple[str, ...] = ()):
    """Class decorator: a frozen dataclass, registered as a pytree, with ``to_dict()`` (strict JSON values).

    Fields named in ``static`` (and ``converged`` / ``messages``, always) are pytree metadata; the
    others are leaves (arrays, or nested pytrees such as other results). The class must declare
    ``converged: bool`` and ``messages: tuple[str, ...]``; a ``to_dict`` it defines itself is kept.

    Examples:
      >>> import numpy as np
      >>> @result(static=("name",))
      ... class Fit:
      ...     name: str
      ...     values: np.ndarray
      ...     converged: bool = True
      ...     messages: tuple[str, ...] = ()
      >>> Fit("a", np.array([1.0, np.nan])).to_dict()
      {'name': 'a', 'values': [1.0, None], 'converged': True, 'messages': []}
    """

    def wrap(cls):
        dc = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(dc)]
        for need in _STATIC_ALWAYS:
            if need not in names:
                raise TypeError(f"result: {cls.__name__} must declare a {need!r} field")
        unknown = set(static) - set(names)
        if unknown:
            raise TypeError(f"result: static names no field of {cls.__name__}: {sorted(unknown)}")
        meta = [n for n in names if n in static or n in _STATIC_ALWAYS]
        data = [n for n in names if n not in meta]
        jax.tree_util.register_dataclass(dc, data_fields=data, meta_fields=meta)
        if "to_dict" not in cls.__dict__:

            def to_dict(self) -> dict:
                return {n: to_jsonable(getattr(self, n)) for n in names}

            dc.to_dict = to_dict
        return dc

    return wrap if cls is None else wrap(cls)
