"""`ufm real` / `ufm analyze` say whether the head collapsed and whether the predictions mean anything
(issue 12, item 4): the verdict in the table and the JSON, and the whole-network note when k is
too small to see a gap."""

import json

import numpy as np

from ufm import networks as nw


def test_not_collapsed_head_gets_a_visible_verdict():
    rng = np.random.default_rng(0)
    K, d, n = 3, 4, 5
    y = np.repeat(np.arange(K), n)
    H1 = rng.standard_normal((d, K * n))  # random features: NC1 far above the threshold
    Ws = [rng.standard_normal((d, d)), rng.standard_normal((K, d))]
    rep = nw.analyze_features(H1, y, Ws, loss="ce")
    v = rep.verdict
    assert not v["all_collapsed"] and v["nc1_threshold"] == nw.NC1_THRESHOLD
    assert all(nc1 > nw.NC1_THRESHOLD for nc1 in v["nc1"]) and v["collapsed"] == [False, False]
    table = nw.format_table(rep)
    assert "verdict: NOT COLLAPSED" in table and "columns:" in table
    assert json.loads(json.dumps(rep.to_dict()))["verdict"]["summary"].startswith("NOT COLLAPSED")
    # collapsed features: the verdict flips, and both predictions hold
    M = rng.standard_normal((d, K))
    ok = nw.analyze_features(M[:, y], y, Ws, loss="mse")
    assert ok.verdict["all_collapsed"] and all(c.holds for c in ok.layers)
    assert "verdict: collapsed" in nw.format_table(ok)


def test_whole_network_with_too_few_eigenvalues_says_so():
    data = nw.gaussian_mixture(3, 4, 6, noise=0.5, seed=0, dtype=np.float64)
    spec = nw.NetworkSpec(input_shape=(6,), num_classes=3, hidden=(8,), width=4, depth=2, lambda_W=1e-2)
    params = nw.init_network(spec, 0, dtype=np.float64)
    rep = nw.analyze(spec, params, data, network_k=5, density=False)
    assert rep.network.expected == 9 and not rep.network.resolved
    assert "k was too small to see a gap" in nw.format_table(rep)
