"""Wall time of `ufm verify` on the default spec (target: under a minute on 2 cores).

Run: ``python benchmarks/verify.py``. Prints the time to train to collapse and the time of
the checks, each in a fresh process state (compilation included, as a user sees it).
"""

import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import ufm  # noqa: E402
from ufm.verification import collapsed_state, verify  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -m benchmarks.x
from _env import machine  # noqa: E402


def main():
    m = machine()
    print(f"# {m['cpu']}, {m['cores']} cores, {len(m['devices'])} {m['backend']} device(s), jax {m['jax']}")
    for name, kwargs in [("default, trained", {}), ("default, constructed optimum", {"from_optimum": True})]:
        t = time.perf_counter()
        spec = ufm.UFMSpec()
        report = verify(spec, collapsed_state(spec, **kwargs))
        total = time.perf_counter() - t
        train = report.info["train_seconds"]
        print(
            f"{name:30s} total {total:6.1f} s  (state {train:5.1f} s, checks {total - train:5.1f} s)  "
            f"{len(report.checks)} checks, passed={report.passed}"
        )


if __name__ == "__main__":
    main()
