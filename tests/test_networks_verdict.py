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


def test_the_verdict_judges_nc1_and_reports_nc2_nc3_as_facts():
    """Features collapsed within class (NC1 = 0) on random means far from an orthogonal frame:
    the verdict holds, says "collapsed within class", and reports NC2 / NC3 beside it, checked
    against their definitions written here in numpy."""
    rng = np.random.default_rng(1)
    K, d, n = 3, 4, 3
    y = np.repeat(np.arange(K), n)
    M1 = rng.standard_normal((d, K)) + 2.0  # a common offset: far from orthogonal
    Ws = [rng.standard_normal((d, d)), rng.standard_normal((K, d))]
    rep = nw.analyze_features(M1[:, y], y, Ws, loss="mse")
    v = json.loads(json.dumps(rep.to_dict()))["verdict"]
    assert v["passed"] and v["status"] == "holds" and v["nc2_frame"] == "orthogonal frame"
    assert "NC1" in v["judged"] and "not judged" in v["judged"]

    def of_distance(M):
        G = M.T @ M
        c = np.trace(G) / K
        return np.linalg.norm(G - c * np.eye(K)) / np.linalg.norm(G)

    M2 = Ws[0] @ M1  # class means of H~2 (linear head)
    np.testing.assert_allclose(v["nc2_frame_distance"], [of_distance(M1), of_distance(M2)], rtol=1e-10)
    assert min(v["nc2_frame_distance"]) > 0.3  # far from a frame, yet the verdict holds: NC2 is not judged
    dual = np.linalg.norm(Ws[1] / np.linalg.norm(Ws[1]) - M2.T / np.linalg.norm(M2))
    np.testing.assert_allclose(v["nc3_self_duality"], dual, rtol=1e-10)
    Q = np.linalg.qr(M1)[0]
    outside = np.linalg.norm(Ws[0] - Ws[0] @ Q @ Q.T) / np.linalg.norm(Ws[0])
    np.testing.assert_allclose(v["nc3_outside_means"][0], outside, rtol=1e-8)
    summary = v["summary"]
    assert summary.startswith("collapsed within class (NC1 ≤") and "not judged" in summary
    assert f"{max(v['nc2_frame_distance']):.2g}" in summary
    assert "verdict: collapsed within class" in nw.format_table(rep) and "self-dual" in nw.format_table(rep)
