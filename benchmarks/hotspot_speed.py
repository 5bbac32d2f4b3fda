"""Exact 2 mm² hotspot search on dense mitoses: grid branch and bound vs the plain pivot sweep.

Uniform random points at ~1,150 mitoses per mm² over half the area (the density of the
real-H&E mosaic slide), 0.25 um/px. Both searches are exact; the counts must agree.

Run::

    .venv/bin/python benchmarks/hotspot_speed.py [--sizes 10000,57000] [--plain-max 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import mitoscope.count as count

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,57000")
    ap.add_argument("--plain-max", type=int, default=10000, help="skip the plain sweep above this")
    args = ap.parse_args(argv)
    print("| mitoses | grid + sweep s | count | plain sweep s | count |")
    print("|---|---|---|---|---|")
    for n in (int(v) for v in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        side_px = np.sqrt(n / 1157 / 0.5) * 4000  # mm -> px at 0.25 um/px
        pts = rng.random((n, 2)) * side_px
        t = time.perf_counter()
        fast = count.hotspot(pts[:, 0], pts[:, 1], mpp=0.25, area_mm2=2.0)
        t_fast = time.perf_counter() - t
        plain = "skipped", "-"
        if n <= args.plain_max:
            saved, count._GRID_MIN_POINTS = count._GRID_MIN_POINTS, 10**12
            try:
                t = time.perf_counter()
                slow = count.hotspot(pts[:, 0], pts[:, 1], mpp=0.25, area_mm2=2.0)
                plain = f"{time.perf_counter() - t:.1f}", str(slow.count)
            finally:
                count._GRID_MIN_POINTS = saved
        print(f"| {n} | {t_fast:.1f} | {fast.count} | {plain[0]} | {plain[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
