"""Real networks on real data whose head is a deep UFM (issue 5).

Datasets (`load_mnist` — the shipped MNIST test split —, `load_digits`,
`gaussian_mixture`, balanced `subsample` / `stratified_split`), models (an MLP or small
CNN backbone followed by an L-layer deep-UFM head), training with optax past
interpolation (`train_network`, resumable checkpoints), and the analysis that compares
the head's measured collapse and Hessian spectra with the deep-UFM theory.
"""

from ._data import (
    MNIST_T10K_CLASS_COUNTS,
    Dataset,
    gaussian_mixture,
    load_digits,
    load_mnist,
    read_idx,
    stratified_split,
    subsample,
)
from ._models import (
    NetworkParams,
    NetworkSpec,
    accuracy,
    apply_head,
    backbone_features,
    forward,
    head_features,
    head_leaf_indices,
    init_network,
    network_loss,
)
from ._train import NetworkTrainResult, make_optimizer, train_network, train_snapshots

__all__ = [
    "Dataset",
    "read_idx",
    "load_mnist",
    "load_digits",
    "gaussian_mixture",
    "subsample",
    "stratified_split",
    "MNIST_T10K_CLASS_COUNTS",
    "NetworkSpec",
    "NetworkParams",
    "init_network",
    "backbone_features",
    "head_features",
    "forward",
    "network_loss",
    "head_leaf_indices",
    "accuracy",
    "apply_head",
    "NetworkTrainResult",
    "train_network",
    "train_snapshots",
    "make_optimizer",
]
from ._head import head_as_ufm
from ._layers import (
    NC1_THRESHOLD,
    REL_ERROR_THRESHOLD,
    LayerComparison,
    compare_layer,
    measured_layer_spectrum,
    predicted_layer_spectrum,
)
from ._measure import expected_outliers
from ._network import NetworkSpectrum, network_spectrum
from ._report import VERDICT_STATUSES, RealNetworkReport, analyze, analyze_features, analyze_model
from ._saved import load_features, load_step

__all__ += [
    "LayerComparison",
    "NetworkSpectrum",
    "RealNetworkReport",
    "analyze",
    "analyze_features",
    "analyze_model",
    "head_as_ufm",
    "NC1_THRESHOLD",
    "REL_ERROR_THRESHOLD",
    "VERDICT_STATUSES",
    "compare_layer",
    "expected_outliers",
    "measured_layer_spectrum",
    "network_spectrum",
    "predicted_layer_spectrum",
    "run_real",
    "format_table",
    "DEFAULTS",
    "LEGEND",
    "load_features",
    "load_step",
    "series_table",
]

# the real-network run is an experiment (`ufm.experiments.real`, which imports this package's
# modules): its names are re-exported on first use
_EXPERIMENT = ("run_real", "format_table", "series_table", "DEFAULTS", "LEGEND")


def __getattr__(name):
    if name in _EXPERIMENT:
        from ..experiments import real

        return getattr(real, name)
    raise AttributeError(f"module 'ufm.networks' has no attribute {name!r}")
