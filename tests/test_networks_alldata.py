"""All the data (issue 22 item 3): --per-class past the smallest class takes every image up to balance,
--batch-size (or the automatic batches past 2 000 samples) bounds training and the whole-network products."""

import numpy as np
import pytest

from ufm import cli
from ufm import networks as nw
from ufm.experiments import real


@pytest.mark.slow  # ~20 s: a 3 000-sample run, streamed
def test_per_class_past_the_smallest_class_takes_every_image_streamed():
    rep, _ = nw.run_real(
        "gmm", "mlp", "mse", quick=True, per_class=1000, steps=20, learning_rate=0.01, hidden=(8,), width=10,
        depth=2, network_k=12, density=False, whole_network=True,
    )  # fmt: skip
    c = rep.config
    assert c["per_class_asked"] == 1000 and c["per_class"] == 300  # gmm: 300 per class
    assert rep.config["train"]["num_samples"] == 3000 and rep.test_accuracy is None
    assert c["batch_size"] == real.AUTO_BATCH and rep.network.batch_size == real.AUTO_BATCH
    # streamed products equal unstreamed ones: tests/test_networks_whole.py (batch_size=5 against dense autodiff)
    assert rep.network.converged and np.all(np.diff(rep.network.eigenvalues) <= 0)


def test_cli_per_class_and_batch_size_are_checked(capsys):
    for bad in (["--per-class", "0"], ["--batch-size", "-3"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["real", *bad])
        assert e.value.code == 2
    args = cli.build_parser().parse_args(["real", "--per-class", "1000", "--batch-size", "500"])
    assert args.per_class == 1000 and args.batch_size == 500
