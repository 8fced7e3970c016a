"""Run a check script on simulated CPU devices in a subprocess (the XLA flag must be set before JAX starts)."""

import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


def run_on_simulated_devices(script: str, devices: int = 8, timeout: int = 600) -> dict:
    """``tests/<script>`` under ``--xla_force_host_platform_device_count=devices``; its last stdout line as JSON."""
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / script)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
