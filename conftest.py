"""Doctests of ``ufm/`` (``--doctest-modules``, see pyproject.toml): only modules whose text holds
an example (``>>>``) are imported for collection, so the doctest pass imports no module
needlessly (and never ``ufm/__main__.py``, which runs the command line). The examples enable
float64 themselves where their numbers need it.
"""

import pathlib

_UFM = pathlib.Path(__file__).parent / "ufm"


def pytest_ignore_collect(collection_path, config):
    path = pathlib.Path(collection_path)
    if path.suffix == ".py" and _UFM in path.parents:
        return ">>>" not in path.read_text(encoding="utf-8")
    return None
