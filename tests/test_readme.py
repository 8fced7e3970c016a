"""The README's tour is executed code: run it as written and check what it claims."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_tour_runs_and_agrees():
    text = open(README, encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks and "import ufm" in blocks[0], "the README's first Python block is the tour"
    # (the second is the PyTorch export snippet, run by examples/torch_export.py, not here: no torch)
    scope = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    spec, pred, meas, top, report = (scope[k] for k in ("spec", "pred", "meas", "top", "report"))
    assert scope["state"].converged and report.passed, [c.to_dict() for c in report.failed]
    K = spec.num_classes
    # the closed form and the dense measurement of W_2's block: K² outliers at λγ/(1−γ) (docs/theory.md §4)
    assert pred.eigenvalues.size == K * K and meas.dim == pred.dim == int(np.prod(spec.weight_shapes[1]))
    np.testing.assert_allclose(meas.eigenvalues[: K * K], pred.eigenvalues, rtol=1e-8)
    np.testing.assert_allclose(pred.eigenvalues, scope["sol"].layer_outliers[1][0], rtol=1e-6)
    assert top.source == "krylov" and top.eigenvalues.size == 20 and top.converged
