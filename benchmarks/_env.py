"""What every benchmark shares: the machine description saved with its JSON, a median timer, MLP data.

numpy, jax and torch are imported lazily (or only looked at if already imported), so that a
script can set ``OPENBLAS_NUM_THREADS`` / ``XLA_FLAGS`` before they load and a worker
subprocess that measures its own peak memory loads nothing it would not load anyway.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import time


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{key: pool.get(key) for key in ("user_api", "internal_api", "num_threads")} for pool in threadpool_info()]


def machine(**extra) -> dict:
    """The machine this run is on, as a JSON-ready dict; ``extra`` is merged in last (it wins).

    Keys: ``cpu`` / ``cpu_model`` (``/proc/cpuinfo``; ``cpu`` falls back to `platform`),
    ``processor``, ``cores`` = ``cpus``, ``platform``, ``python``, ``mem_total``, ``jax``,
    ``backend``, ``devices``, ``float64``, ``numpy``, ``torch`` (version or None, not imported),
    ``torch_threads`` (if torch is imported), ``OPENBLAS_NUM_THREADS``, ``blas_threads``
    (threadpoolctl, if importable), ``load_average_at_start`` (the 1/5/15 min load averages
    at the time of the call) and ``load_average_1min``.
    """
    import jax
    import numpy as np

    cpu_model = _cpu_model()
    processor = platform.processor() or platform.machine()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info = {
        "cpu": cpu_model or processor,
        "cpu_model": cpu_model,
        "processor": processor,
        "cores": os.cpu_count(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    info.update(
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
        float64=bool(jax.config.read("jax_enable_x64")),
        numpy=np.__version__,
        torch=_version("torch"),
    )
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    info.update(
        OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS"),
        blas_threads=_blas_threads(),
        load_average_at_start=load,
        load_average_1min=load[0] if load else None,
    )
    return {**info, **extra}


def median_time(fn, repeats):
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls, each waiting for its JAX results."""
    jax = sys.modules.get("jax")  # a result can only be a JAX array if jax is loaded
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if jax is not None:
            jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    return float(statistics.median(times))


def mlp_data(sizes, num_samples, seed=0):
    """``(X, y, Ws, bs)``: Gaussian inputs, uniform labels, 1/√fan-in weights and 0.1-scaled biases (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((num_samples, sizes[0]))
    y = rng.integers(0, sizes[-1], num_samples)
    Ws = [rng.standard_normal((m, n)) / np.sqrt(n) for n, m in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.1 * rng.standard_normal(m) for m in sizes[1:]]
    return X, y, Ws, bs
