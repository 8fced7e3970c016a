"""ufm.networks phase 1: datasets, IDX reader, models, training, checkpoints."""

import gzip
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufm import networks as nw
from ufm.model import UFMParams
from ufm.model import forward as ufm_forward
from ufm.spec import UFMSpec

EPS = np.finfo(np.float64).eps


# ---- IDX reader and MNIST ------------------------------------------------------------
def _write_idx(path, array, code=0x08, gz=False):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return raw


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_hand_built(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(path, images, gz=gz)
    out = nw.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, images)
    ints = rng.integers(-1000, 1000, size=(4, 6)).astype(np.int32)
    _write_idx(tmp_path / "i.idx", ints, code=0x0C)
    np.testing.assert_array_equal(nw.read_idx(tmp_path / "i.idx"), ints)


def test_read_idx_errors(tmp_path):
    images = np.zeros((4, 3, 3), np.uint8)
    raw = _write_idx(tmp_path / "ok.idx", images)
    (tmp_path / "trunc.idx").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        nw.read_idx(tmp_path / "trunc.idx")
    (tmp_path / "head.idx").write_bytes(raw[:9])
    with pytest.raises(ValueError, match="truncated IDX header"):
        nw.read_idx(tmp_path / "head.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match="magic"):
        nw.read_idx(tmp_path / "magic.idx")
    (tmp_path / "trail.idx").write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        nw.read_idx(tmp_path / "trail.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(ValueError, match="bad.gz"):
        nw.read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError):
        nw.read_idx(tmp_path / "missing.idx")


def test_mnist_shipped_split():
    data = nw.load_mnist()
    assert data.X.shape == (10_000, 1, 28, 28) and data.num_classes == 10
    assert tuple(data.class_counts) == nw.MNIST_T10K_CLASS_COUNTS
    # README: mean pixel 33.79 on the 0..255 scale.
    assert abs(data.X.mean(dtype=np.float64) * 255 - 33.79) < 0.01
    assert data.X.min() == 0.0 and data.X.max() == 1.0


def test_mnist_user_directory(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    data = nw.load_mnist(tmp_path, split="train", dtype=np.float64)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_allclose(data.X[:, 0] * 255, images, atol=1e-9)
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        nw.load_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:-1])
    with pytest.raises(ValueError, match="12 uint8 labels"):
        nw.load_mnist(tmp_path, split="train")
    with pytest.raises(FileNotFoundError):
        nw.load_mnist(tmp_path / "nowhere")


# ---- datasets and splits ---------------------------------------------------------------
def test_stratified_split_is_balanced_disjoint_seeded():
    data = nw.load_mnist()
    train, test = nw.stratified_split(data, 30, 20, seed=3)
    assert train.per_class == 30 and test.per_class == 20
    # class-major: sample i of the training set has class i // n
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(10), 30))
    np.testing.assert_array_equal(test.labels, np.repeat(np.arange(10), 20))
    rows = lambda d: {r.tobytes() for r in d.X.reshape(d.num_samples, -1)}  # noqa: E731
    assert not rows(train) & rows(test)
    again, _ = nw.stratified_split(data, 30, 20, seed=3)
    other, _ = nw.stratified_split(data, 30, 20, seed=4)
    np.testing.assert_array_equal(again.X, train.X)
    assert not np.array_equal(other.X, train.X)
    # default test size: all that the smallest class (892 images of digit 5) has left
    _, rest = nw.stratified_split(data, 800)
    assert rest.per_class == 92
    with pytest.raises(ValueError, match="test_per_class"):
        nw.stratified_split(data, 800, 93)


def test_subsample_and_class_major():
    data = nw.gaussian_mixture(3, 7, 5, seed=0)
    shuffled = nw.Dataset(data.X[::-1].copy(), data.labels[::-1].copy(), 3)
    cm = shuffled.class_major()
    np.testing.assert_array_equal(cm.labels, np.repeat(np.arange(3), 7))
    sub = nw.subsample(shuffled, 4, seed=0)
    assert sub.per_class == 4 and sub.num_samples == 12
    with pytest.raises(ValueError, match="smallest class"):
        nw.subsample(data, 8)


def test_gaussian_mixture_means_and_seed():
    data = nw.gaussian_mixture(4, 2000, 8, separation=3.0, noise=0.5, seed=2, dtype=np.float64)
    M = np.stack([data.X[data.labels == c].mean(0) for c in range(4)])
    # means are 3 × orthonormal rows; sample means deviate by O(noise / sqrt(n))
    np.testing.assert_allclose(M @ M.T, 9 * np.eye(4), atol=0.2)
    np.testing.assert_array_equal(nw.gaussian_mixture(4, 5, 8, seed=2).X, nw.gaussian_mixture(4, 5, 8, seed=2).X)


def test_digits_lazy_sklearn():
    data = nw.load_digits()
    assert data.X.shape == (1797, 1, 8, 8) and data.num_classes == 10
    assert 0.0 <= data.X.min() and data.X.max() <= 1.0


def test_dataset_validation():
    with pytest.raises(ValueError, match="labels must lie"):
        nw.Dataset(np.zeros((3, 2)), np.array([0, 1, 5]), 3)
    with pytest.raises(TypeError, match="floating"):
        nw.Dataset(np.zeros((3, 2), int), np.array([0, 1, 2]), 3)


# ---- models ----------------------------------------------------------------------------
def _tiny(backbone="mlp", **kw):
    shape = (1, 8, 8) if backbone == "cnn" else (6,)
    spec = nw.NetworkSpec(
        input_shape=shape, num_classes=3, backbone=backbone, hidden=(7,), channels=(2, 3), width=4, **kw
    )
    data = nw.gaussian_mixture(3, 4, 64 if backbone == "cnn" else 6, seed=1, dtype=np.float64)
    if backbone == "cnn":
        data = nw.Dataset(data.X.reshape(-1, 1, 8, 8), data.labels, 3)
    return spec, nw.init_network(spec, 0, dtype=jnp.float64), data


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_head_is_the_deep_ufm(activation):
    """The head applied to backbone features equals ufm.model.forward with H_1 := features."""
    spec, params, data = _tiny(activation=activation, depth=3)
    H1 = nw.backbone_features(spec, params, data.X)
    feats = nw.head_features(spec, params, H1)
    ufm_spec = UFMSpec(num_classes=3, per_class=4, depth=3, width=4, activation=activation, relu_grad0=0.0)
    acts = ufm_forward(ufm_spec, UFMParams(H1, params.head))
    assert len(feats) == 4
    for mine, theirs in zip(feats, [*acts.post, acts.output], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=100 * EPS)
    np.testing.assert_allclose(nw.forward(spec, params, data.X), acts.output, atol=100 * EPS)


def test_head_leaf_indices_point_at_the_head():
    for backbone in ("mlp", "cnn"):
        spec, params, _ = _tiny(backbone, head_bias=True)
        leaves = jax.tree_util.tree_leaves(params)
        for l, i in enumerate(nw.head_leaf_indices(spec)):
            assert leaves[i] is params.head[l]


def test_cnn_backbone_against_numpy():
    """Stride-2 convolutions + ReLU against an explicit numpy loop."""
    spec, params, data = _tiny("cnn")
    x = np.asarray(data.X[:2], np.float64)
    for W, b in params.backbone[:-1]:
        W, b = np.asarray(W), np.asarray(b) + 0.1  # nonzero bias: checks its broadcast
        pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        h, w = x.shape[2] // 2, x.shape[3] // 2
        conv = np.zeros((x.shape[0], W.shape[0], h, w))
        for i in range(h):
            for j in range(w):
                conv[:, :, i, j] = np.einsum("ncab,ocab->no", pad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], W)
        x = np.maximum(conv + b[None, :, None, None], 0)
    Wo, bo = (np.asarray(a) for a in params.backbone[-1])
    expected = (x.reshape(2, -1) @ Wo.T + bo).T
    shifted = params._replace(backbone=tuple((W, b + 0.1) for W, b in params.backbone[:-1]) + params.backbone[-1:])
    np.testing.assert_allclose(nw.backbone_features(spec, shifted, data.X[:2]), expected, atol=1e3 * EPS)


def test_loss_terms():
    spec, params, data = _tiny(loss="ce", lambda_W=0.3, lambda_H=0.7)
    H1 = nw.backbone_features(spec, params, data.X)
    Z = nw.head_features(spec, params, H1)[-1]
    logp = jax.nn.log_softmax(Z, axis=0)
    ce = -np.mean(np.asarray(logp)[data.labels, np.arange(data.num_samples)])
    ridge = 0.15 * sum(float(jnp.sum(p**2)) for p in jax.tree_util.tree_leaves(params))
    feat = 0.35 * float(jnp.sum(H1**2)) / data.num_samples
    np.testing.assert_allclose(nw.network_loss(spec, params, data.X, data.labels), ce + ridge + feat, rtol=1e3 * EPS)
    np.testing.assert_allclose(
        nw.network_loss(spec, params, data.X, data.labels, regularized=False), ce, rtol=1e3 * EPS
    )


def test_spec_validation():
    with pytest.raises(ValueError, match="cnn backbone needs image"):
        nw.NetworkSpec(input_shape=(6,), backbone="cnn")
    with pytest.raises(ValueError, match="width"):
        nw.NetworkSpec(input_shape=(6,), num_classes=10, width=4)
    with pytest.raises(ValueError, match="activation"):
        nw.NetworkSpec(input_shape=(6,), activation="tanh")
    with pytest.raises(ValueError, match="lambda_W"):
        nw.NetworkSpec(input_shape=(6,), lambda_W=-1.0)


# ---- training ---------------------------------------------------------------------------
@pytest.mark.parametrize("backbone,loss,optimizer", [("mlp", "mse", "sgd"), ("cnn", "ce", "adam")])
def test_training_decreases_loss(backbone, loss, optimizer):
    spec, params, data = _tiny(backbone, loss=loss)
    lr = 0.05 if optimizer == "sgd" else 0.01
    records = []
    res = nw.train_network(
        spec,
        params,
        data,
        steps=60,
        learning_rate=lr,
        optimizer=optimizer,
        log_every=20,
        batch_size=6,
        callback=records.append,
    )
    assert [r["step"] for r in records] == [0, 20, 40, 60] == res.history["step"].tolist()
    assert res.history["loss"][-1] < res.history["loss"][0]
    np.testing.assert_allclose(
        res.history["loss"][-1], nw.network_loss(spec, res.params, data.X, data.labels), rtol=1e3 * EPS
    )


def test_interpolation_and_plateau_stop():
    spec, params, data = _tiny(lambda_W=1e-2)
    res = nw.train_network(spec, params, data, steps=5000, learning_rate=0.02, log_every=250, plateau_rtol=1e-4)
    assert res.interpolation_step is not None and res.history["train_accuracy"][-1] == 1.0
    assert res.plateaued and res.steps < 5000


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    spec, params, data = _tiny()
    kw = dict(learning_rate=0.01, batch_size=5, seed=7, log_every=10)
    full = nw.train_network(spec, params, data, steps=40, **kw)
    ckpt = tmp_path / "run.npz"
    first = nw.train_network(spec, params, data, steps=20, checkpoint=ckpt, **kw)
    assert first.steps == 20 and ckpt.exists()
    resumed = nw.train_network(spec, params, data, steps=40, checkpoint=ckpt, **kw)
    assert resumed.steps == 40
    np.testing.assert_array_equal(resumed.history["step"], full.history["step"])
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(full.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=10 * EPS)
    other, _, _ = _tiny(depth=2)
    with pytest.raises(ValueError, match="does not match"):
        nw.train_network(other, nw.init_network(other, 0, dtype=jnp.float64), data, steps=40, checkpoint=ckpt, **kw)
