"""Train a small PyTorch MLP on sklearn's digits, then export its head for ``ufm analyze``.

Needs torch (not a ufm dependency). The export is the ten lines between the markers, the
same as in the README; everything above them is an ordinary PyTorch training loop.

    OMP_NUM_THREADS=1 python examples/torch_export.py digits_head.npz && ufm analyze digits_head.npz
"""

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
for _step in range(3000):  # MSE ½‖z − e_y‖² per sample (ufm's convention) + explicit ridge 2e-3
    opt.zero_grad()
    Z = head(backbone(X))
    loss = 0.5 * ((Z - torch.nn.functional.one_hot(y, 10)) ** 2).sum(1).mean()
    (loss + 1e-3 * sum((p**2).sum() for p in params)).backward()
    opt.step()
print(f"train accuracy {(Z.argmax(1) == y).float().mean():.3f}, loss {loss.item():.4f}", file=sys.stderr)

# ---- export (README "Analyse your own network") ----
with torch.no_grad():
    H1 = backbone(X)  # (N, d): the head's input, one row per sample
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    arrays = {f"W{l}": m.weight.numpy() for l, m in enumerate(linears, start=1)}  # each d_out × d_in
    arrays |= {f"b{l}": m.bias.numpy() for l, m in enumerate(linears, start=1) if m.bias is not None}
    relu = any(isinstance(m, torch.nn.ReLU) for m in head)
np.savez(
    sys.argv[1] if len(sys.argv) > 1 else "head.npz",
    H1=H1.numpy(),
    labels=y.numpy(),
    activation="relu" if relu else "linear",
    loss="mse",
    **arrays,
)
# ---- end of export ----
