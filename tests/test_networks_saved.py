"""`ufm analyze PATH.npz`: a head saved by "another framework" (numpy here), with known structure.

The heads are exactly collapsed (every sample of a class has the same features), so the
class-mean predictions are exact; the reference is the dense Hessian of the loss written in
this file (``jax.hessian`` over the flat weight, ``numpy.linalg.eigvalsh``).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufm import cli
from ufm import networks as nw

EPS = np.finfo(np.float64).eps
K, n, d = 3, 4, 5


def _head(seed=0, bias=False):
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(K), n)  # not class-major: the loader sorts
    H1 = rng.standard_normal((d, K))[:, y]  # collapsed
    Ws = [rng.standard_normal((d, d)) / np.sqrt(d), rng.standard_normal((K, d)) / np.sqrt(d)]
    bs = [0.3 * rng.standard_normal(d), 0.3 * rng.standard_normal(K)] if bias else []
    return H1, y, Ws, bs


def _head_loss(ws, bs, H1, y, activation, loss):
    """The head's data loss written out, independently of ufm: ``h ← W_l h + b_l`` with the
    activation between layers, then MSE to one-hot (½ Σ / N) or mean cross-entropy."""
    sig = jax.nn.relu if activation == "relu" else (lambda x: x)
    h = jnp.asarray(H1)
    for l, W in enumerate(ws):
        h = W @ h + (bs[l][:, None] if len(bs) else 0.0)
        if l < len(ws) - 1:
            h = sig(h)
    if loss == "mse":
        return 0.5 * jnp.sum((h - jnp.eye(K)[:, y]) ** 2) / y.size
    return -jnp.mean(jax.nn.log_softmax(h, axis=0)[y, jnp.arange(y.size)])


def _dense_spectra(H1, y, Ws, bs, activation, loss):
    """Eigenvalues of the data Hessian of each W_l, independently of ufm."""

    def f(ws):
        return _head_loss(ws, bs, H1, y, activation, loss)

    out = []
    for l, W in enumerate(Ws):

        def g(w, l=l, W=W):
            return f([*Ws[:l], w.reshape(W.shape), *Ws[l + 1 :]])

        out.append(np.linalg.eigvalsh(np.asarray(jax.hessian(g)(jnp.asarray(W).reshape(-1))))[::-1])
    return out


def _save(path, H1, y, Ws, bs, activation, loss, rows=True, **extra):
    arrays = {"H1": H1.T.astype(np.float32) if rows else H1, "labels": y, "activation": activation, "loss": loss}
    arrays |= {f"W{l}": W for l, W in enumerate(Ws, start=1)} | {f"b{l}": b for l, b in enumerate(bs, start=1)}
    np.savez(path, **(arrays | extra))
    return path


@pytest.mark.parametrize("activation,loss,bias", [("linear", "mse", False), ("relu", "ce", True)])
def test_analyze_reproduces_the_dense_spectrum(tmp_path, capsys, activation, loss, bias):
    H1, y, Ws, bs = _head(bias=bias)
    H1 = H1.astype(np.float32).astype(np.float64)  # what the float32 file holds
    path = _save(tmp_path / "head.npz", H1, y, Ws, bs, activation, loss)
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "verdict: collapsed" in table and "columns:" in table
    rep = json.loads(out.read_text())
    assert set(rep) >= {"nc", "layers", "verdict", "config"} and rep["verdict"]["all_collapsed"]
    dense = _dense_spectra(H1, y, Ws, bs, activation, loss)
    for layer, ref in zip(rep["layers"], dense, strict=True):
        scale = ref[0]
        meas = np.asarray(layer["measured"])
        np.testing.assert_allclose(meas, ref[: meas.size], rtol=0, atol=1e4 * EPS * scale)
        m = layer["predicted_outliers"]
        np.testing.assert_allclose(layer["predicted"][:m], ref[:m], rtol=0, atol=1e4 * EPS * scale)
        assert layer["max_rel_error"] < 1e-8 and layer["class_averaged_max_rel_error"] < 1e-8
        assert layer["split"]["within_class"] < 1e-8
        assert layer["num_outliers"] == int(np.sum(ref > 1e-8 * scale))
    if loss == "mse":
        assert [c["num_outliers"] for c in rep["layers"]] == [K * K, K * K]


def test_layout_and_saved_later_features(tmp_path):
    H1, y, Ws, bs = _head(seed=3)
    H2 = Ws[0] @ H1
    a = nw.load_features(_save(tmp_path / "a.npz", H1, y, Ws, bs, "linear", "mse", rows=False, H2=H2))
    b = nw.load_features(_save(tmp_path / "b.npz", H1, y, Ws, bs, "linear", "mse", rows=True, H2=H2.T))
    np.testing.assert_allclose(a["H1"], H1)
    np.testing.assert_allclose(b["H1"], H1, rtol=1e-6)


def _bad_cases(tmp_path):
    H1, y, Ws, bs = _head()
    base = {"H1": H1.T, "labels": y, "W1": Ws[0], "W2": Ws[1], "activation": "linear", "loss": "mse"}
    cases = {
        "missing key": ({k: v for k, v in base.items() if k != "labels"}, "missing key 'labels'"),
        "missing loss": ({k: v for k, v in base.items() if k != "loss"}, "missing key 'loss'"),
        "weights chain": (base | {"W2": Ws[1].T}, "'W2' has"),
        "H1 shape": (base | {"H1": H1[:, :-1].T}, "'H1' must be"),
        "weight gap": ({k: v for k, v in base.items() if k != "W1"} | {"W3": Ws[1]}, "missing key 'W1'"),
        "float labels": (base | {"labels": y.astype(float)}, "integer"),
        "label range": (base | {"labels": np.where(y == 2, 7, y)}, "must lie in 0..2"),
        "missing class": (base | {"labels": np.where(y == 2, 1, y)}, "every class"),
        "NaN": (base | {"W1": np.where(np.eye(d) > 0, np.nan, Ws[0])}, "NaN"),
        "activation": (base | {"activation": "tanh"}, "'activation' must be one of"),
        "unknown key": (base | {"w3": Ws[1]}, "unknown key"),
        "biases partial": (base | {"b1": bs or np.zeros(d)}, "all or none"),
        "saved H2 mismatch": (base | {"H2": (Ws[0].T @ H1).T}, "does not match the forward pass"),
        "square": (base | {"H1": np.zeros((12, 12)), "W1": np.zeros((d, 12))}, "layout"),
    }
    paths = {}
    for name, (arrays, msg) in cases.items():
        paths[name] = (_write(tmp_path / f"{name.replace(' ', '_')}.npz", arrays), msg)
    bad = tmp_path / "not.npz"
    bad.write_bytes(b"not a zip file")
    paths["not npz"] = (bad, "not a readable .npz")
    paths["no file"] = (tmp_path / "absent.npz", "no such file")
    return paths


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


def test_every_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    for name, (path, msg) in _bad_cases(tmp_path).items():
        assert cli.main(["analyze", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert msg in err, (name, err)
    good = _save(tmp_path / "ok.npz", *_head(), "linear", "mse")
    assert cli.main(["analyze", str(good), "--json", str(tmp_path / "no" / "dir.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_unconverged_measurement_shows_in_table_json_and_exit_code(tmp_path, capsys, monkeypatch):
    """A Krylov block measurement that missed its tolerance is never a pass: the layer's row
    says so, ``holds`` is False, the verdict names it, the JSON carries it, the exit code is 1."""
    import dataclasses

    from ufm.networks import _measure as _analysis  # the one measurement route (_eig)

    real_eig = _analysis._eig

    def unconverged(*args, **kwargs):
        spec, Hm = real_eig(*args, **kwargs)
        return dataclasses.replace(spec, source="krylov", converged=False, messages=("Krylov missed tol",)), Hm

    monkeypatch.setattr(_analysis, "_eig", unconverged)
    path = _save(tmp_path / "head.npz", *_head(), "linear", "mse")
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(path), "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Krylov NOT CONVERGED" in captured.out and "did NOT CONVERGE" in captured.out
    assert captured.err.count("\n") == 1 and "ufm: verdict: not converged" in captured.err
    rep = json.loads(out.read_text())
    assert rep["verdict"]["converged"] == [False, False] and not rep["verdict"]["all_hold"]
    assert all(layer["converged"] is False and layer["holds"] is False for layer in rep["layers"])
    assert rep["converged"] is False and "Krylov missed tol" in rep["messages"]


# ---- one exit rule (issue 22, item 5): 0 the verdict holds, 1 it does not (the line says which), 2 a mistake ----
def _noisy_head(noise, seed=0):
    """The collapsed head of `_head` with Gaussian within-class noise of std ``noise`` on H1."""
    H1, y, Ws, bs = _head(seed)
    return H1 + noise * np.random.default_rng(seed + 1).standard_normal(H1.shape), y, Ws, bs


def _analyze_exit(tmp_path, capsys, H1, y, Ws, loss="mse"):
    path = _save(tmp_path / "head.npz", H1, y, Ws, [], "linear", loss, rows=False)
    out = tmp_path / "r.json"
    code = cli.main(["analyze", str(path), "--json", str(out)])
    captured = capsys.readouterr()
    return code, captured, json.loads(out.read_text())


def _nc1_uncentred(H, y):
    """tr(Σ_W Σ_B⁰†)/K from its definition, in numpy (the uncentred NC1 the MSE verdict judges)."""
    M = np.stack([H[:, y == c].mean(axis=1) for c in range(K)], axis=1)
    D = H - M[:, y]
    return float(np.trace(D @ D.T / y.size @ np.linalg.pinv(M @ M.T / K)) / K)


def test_analyze_exits_0_when_the_verdict_holds(tmp_path, capsys):
    H1, y, Ws, _ = _head()
    code, captured, rep = _analyze_exit(tmp_path, capsys, H1, y, Ws)
    assert code == 0 and captured.err == ""
    assert rep["verdict"]["status"] == "holds" and rep["verdict"]["passed"] is True


def test_analyze_exits_1_when_not_collapsed(tmp_path, capsys):
    H1, y, Ws, _ = _noisy_head(1.0)
    assert _nc1_uncentred(H1, y) > nw.NC1_THRESHOLD  # the premise, independently of ufm
    code, captured, rep = _analyze_exit(tmp_path, capsys, H1, y, Ws)
    assert code == 1 and captured.err.count("\n") == 1
    assert captured.err.startswith("ufm: verdict: not collapsed: NOT COLLAPSED within class at H~1")
    assert rep["verdict"]["status"] == "not collapsed" and rep["verdict"]["passed"] is False


def test_analyze_exits_1_when_the_predictions_miss(tmp_path, capsys):
    """Collapsed within class (NC1 < 0.1) but not exactly: the dense spectrum (written here) is off
    the class-mean prediction by more than the threshold, and the verdict says the predictions miss."""
    H1, y, Ws, _ = _noisy_head(0.1)
    assert _nc1_uncentred(H1, y) < nw.NC1_THRESHOLD
    code, captured, rep = _analyze_exit(tmp_path, capsys, H1, y, Ws)
    assert code == 1 and captured.err.count("\n") == 1
    assert captured.err.startswith("ufm: verdict: predictions miss: collapsed") and "MISS at W_1" in captured.err
    assert rep["verdict"]["status"] == "predictions miss" and rep["verdict"]["all_collapsed"]
    dense = _dense_spectra(H1, y, Ws, [], "linear", "mse")
    layer = rep["layers"][0]
    m = layer["predicted_outliers"]
    pred = np.asarray(layer["predicted"][:m])
    assert np.max(np.abs(dense[0][:m] - pred) / pred) > nw.REL_ERROR_THRESHOLD  # a real miss


def test_real_follows_the_same_exit_rule(monkeypatch, capsys):
    """`ufm real` ends through the same rule: a report whose verdict holds exits 0, one that is
    not collapsed exits 1 with the verdict on stderr (the training is replaced by a saved head)."""
    import ufm

    for noise, expected, status in ((0.0, 0, "holds"), (1.0, 1, "not collapsed")):
        H1, y, Ws, _ = _noisy_head(noise)
        report = nw.analyze_features(H1, y, Ws, loss="mse")
        monkeypatch.setattr(ufm.networks, "run_real", lambda report=report, **kw: (report, None))
        assert cli.main(["real", "--quick"]) == expected, status
        err = capsys.readouterr().err
        assert report.verdict["status"] == status
        assert (f"ufm: verdict: {status}" in err) == (expected == 1)


def test_real_and_analyze_help_state_the_exit_rule(capsys):
    for command in ("real", "analyze"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "Exit status: 0 when the verdict holds" in text and "2 on a user's mistake" in text
