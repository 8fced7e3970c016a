"""`examples/torch_export.py` (issue 22 item 4): a PyTorch run exports a 4-checkpoint series that
`ufm analyze` reads as one. Skipped without torch (not a ufm dependency)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "torch_export.py")


@pytest.mark.slow  # ~1-2 min: torch training + four float64 analyses
def test_torch_export_series(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.join(os.path.dirname(__file__), os.pardir)}
    r = subprocess.run(
        [sys.executable, EXAMPLE, str(tmp_path), "1200"], capture_output=True, text=True, env=env, timeout=900
    )
    doc = json.loads((tmp_path / "series.json").read_text())
    cks = doc["checkpoints"]
    assert [c["step"] for c in cks] == [100, 300, 600, 1200]
    assert r.returncode == (0 if cks[-1]["verdict"]["passed"] else 1), r.stderr[-2000:]
    for c in cks:  # each checkpoint's NC1, recomputed in numpy from the exported file
        with np.load(c["file"]) as f:
            H, y = f["H1"].astype(np.float64).T, f["labels"]
        K = 10
        M = np.stack([H[:, y == k].mean(axis=1) for k in range(K)], axis=1)
        D = H - M[:, y]
        nc1 = np.trace(D @ D.T / y.size @ np.linalg.pinv(M @ M.T / K)) / K
        assert c["layers"][0]["nc1"] == pytest.approx(nc1, rel=1e-4)
    assert (tmp_path / "series.png").exists()
