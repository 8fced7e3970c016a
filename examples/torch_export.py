"""Train a small PyTorch MLP on sklearn's digits, export its head at four checkpoints, run ``ufm analyze``.

Needs torch (not a ufm dependency). The export is the lines between the markers, the same as
in the README plus a ``step`` key; everything else is an ordinary PyTorch training loop. The
four checkpoints go to ``OUTDIR/step_XXXX.npz`` and are analysed as one series
(``ufm analyze OUTDIR/step_*.npz --json OUTDIR/series.json --plot OUTDIR/series``), whose last
checkpoint's verdict is this script's exit status.

    OMP_NUM_THREADS=1 python examples/torch_export.py OUTDIR [STEPS]
"""

import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits

torch.manual_seed(0)
data = load_digits()
keep = np.concatenate([np.flatnonzero(data.target == c)[:50] for c in range(10)])  # 50 per class
X, y = torch.tensor(data.data[keep] / 16.0, dtype=torch.float32), torch.tensor(data.target[keep])
backbone = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
head = torch.nn.Sequential(torch.nn.Linear(32, 32, bias=False), torch.nn.Linear(32, 10, bias=False))
params = [*backbone.parameters(), *head.parameters()]
opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
out = sys.argv[1] if len(sys.argv) > 1 else "torch_series"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
os.makedirs(out, exist_ok=True)
marks = sorted({steps // 12, steps // 4, steps // 2, steps})  # four checkpoints along training


def export(path, step):
    # ---- export (README "Analyse your own network") ----
    with torch.no_grad():
        H1 = backbone(X)  # (N, d): the head's input, one row per sample
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        arrays = {f"W{l}": m.weight.numpy() for l, m in enumerate(linears, start=1)}  # each d_out × d_in
        arrays |= {f"b{l}": m.bias.numpy() for l, m in enumerate(linears, start=1) if m.bias is not None}
        relu = any(isinstance(m, torch.nn.ReLU) for m in head)
    np.savez(
        path,
        H1=H1.numpy(),
        labels=y.numpy(),
        activation="relu" if relu else "linear",
        loss="mse",
        step=np.int64(step),  # labels the checkpoint in a series
        **arrays,
    )
    # ---- end of export ----


files = []
for step in range(1, steps + 1):  # MSE ½‖z − e_y‖² per sample (ufm's convention) + explicit ridge 2e-3
    opt.zero_grad()
    Z = head(backbone(X))
    loss = 0.5 * ((Z - torch.nn.functional.one_hot(y, 10)) ** 2).sum(1).mean()
    (loss + 1e-3 * sum((p**2).sum() for p in params)).backward()
    opt.step()
    if step in marks:
        files.append(os.path.join(out, f"step_{step:05d}.npz"))
        export(files[-1], step)
print(f"train accuracy {(Z.argmax(1) == y).float().mean():.3f}, loss {loss.item():.4f}", file=sys.stderr)

from ufm import cli  # noqa: E402  (after training: torch and jax need not share the start-up)

series = os.path.join(out, "series")
sys.exit(cli.main(["analyze", *files, "--json", series + ".json", "--plot", series]))
