"""Wall time of ``ufm real --dataset mnist --per-class 1000`` (MLP, MSE): every image of the shipped split.

    PYTHONPATH=. python benchmarks/real_full.py [--json benchmarks/results/real_full.json] [-- extra ufm real args]

Runs the command in a subprocess (as a user would), with the 1-minute load average before and
after and the peak resident memory of the child (``ru_maxrss``), and saves the report's
configuration, verdict and stage seconds next to them. At ``--per-class 1000`` the run takes
every image up to balance (892 per class on the shipped t10k split: 8 920 images), trains on
mini-batches of 1 000 and streams the whole-network products in batches of 1 000
(`ufm.experiments.real.AUTO_BATCH`). Target (issue 22 item 3): ≤ 10 min on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import machine

from ufm.results import dump


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("extra", nargs="*", help="more `ufm real` arguments")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "ufm", "real", "--dataset", "mnist", "--per-class", "1000", "--json", report]
        cmd += args.extra
        load0, t = os.getloadavg(), time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall, load1 = time.perf_counter() - t, os.getloadavg()
        rep = json.load(open(report)) if os.path.exists(report) else {}
    out = {
        "machine": machine(),
        "command": " ".join(cmd[1:]),
        "exit_status": proc.returncode,
        "wall_s": wall,
        "load_before": load0,
        "load_after": load1,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "seconds": rep.get("seconds"),
        "config": {k: rep.get("config", {}).get(k) for k in ("per_class", "per_class_asked", "batch_size", "steps")},
        "verdict": rep.get("verdict", {}).get("summary"),
    }
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    if args.json:
        dump(out, args.json)


if __name__ == "__main__":
    main()
