"""Time to load the bundled classifier and screen for ONNX Runtime, with and without the graph cache.

Each load runs in a fresh Python process (as each ``mitoscope detect`` or cohort worker does):
``cold`` with an empty cache directory (the members are exported to ONNX, as every load did
before the cache), ``warm`` with the graphs the cold run left there. The time is measured
inside the process around ``load_classifier()`` + ``load_screen()`` + building one ONNX Runtime
session per graph (imports excluded). Prints a markdown table and the warm/cold ratio.

    .venv/bin/python benchmarks/model_load.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CHILD = """
import json, time, torch
torch.set_num_threads(1)
from mitoscope.classify import load_classifier
from mitoscope.classify.backends import ort_session
from mitoscope.classify.screen import load_screen
t0 = time.perf_counter()
clf = load_classifier(device="cpu", backend="onnx")
scr = load_screen()
for g in [*clf._onnx, scr.onnx]:
    ort_session(g, threads=1)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def one(cache: Path) -> float:
    env = {**os.environ, "MITOSCOPE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    cold, warm = [], []
    for _ in range(int(args.repeats)):
        with tempfile.TemporaryDirectory() as d:
            cold.append(one(Path(d)))  # empty cache: exports
            warm.append(one(Path(d)))  # the graphs the cold run cached
    res = {
        "machine": common.machine(),
        "load_avg": common.load_avg(),
        "cold_s": cold,
        "warm_s": warm,
        "cold_median_s": statistics.median(cold),
        "warm_median_s": statistics.median(warm),
    }
    res["warm_over_cold"] = res["warm_median_s"] / res["cold_median_s"]
    print(f"machine: {res['machine']}; 1-min load {res['load_avg']}")
    print("| load (bundled classifier + screen, ONNX Runtime sessions) | median s | runs |")
    print("|---|---|---|")
    print(f"| cold: empty cache, graphs exported | {res['cold_median_s']:.2f} | {len(cold)} |")
    print(f"| warm: graphs read from the cache | {res['warm_median_s']:.2f} | {len(warm)} |")
    print(f"warm / cold: {res['warm_over_cold']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
