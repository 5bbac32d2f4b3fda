"""Slide-reading overhead of mitoscope over a bare OpenSlide loop (issue 2).

Reads every tissue tile of the large real-H&E mosaic slide (40,000 x 40,000 px at 0.25 um/px,
built once and cached in ``benchmarks/.cache``) twice per tile in the same run:

* through the package: ``open_slide`` + ``SlideReader.read_region`` (RGB uint8 array out);
* through bare OpenSlide: ``openslide.OpenSlide.read_region`` + ``numpy.asarray`` (RGBA array).

The two reads of a tile are interleaved (alternating which goes first) and the whole pass is
repeated ``--rounds`` times, after a warm-up pass that puts the file in the page cache, so
that noise from the shared CPU hits both sides alike. The tile list is the package's
``plan_tiles`` over ``detect_tissue`` (default 256 um tiles, 32 um overlap); its one-off cost
is reported separately.

Run::

    .venv/bin/python benchmarks/read_overhead.py [--rounds 3] [--max-tiles N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over all tiles")
    ap.add_argument("--max-tiles", type=int, default=0, help="use only the first N tiles")
    ap.add_argument("--slide", type=Path, default=None, help="another slide instead")
    args = ap.parse_args(argv)

    import openslide

    from mitoscope.slide import detect_tissue, open_slide, plan_tiles

    path = args.slide or common.large_slide()
    t0 = time.perf_counter()
    with open_slide(path) as reader:
        info = reader.info
        tissue = detect_tissue(reader)
        tiles = plan_tiles(info, tissue)
    t_plan = time.perf_counter() - t0
    if args.max_tiles:
        tiles = tiles[: args.max_tiles]
    mpix = sum(t.width * t.height for t in tiles) / 1e6
    print(
        f"slide {path.name}: {info.width}x{info.height} px, mpp {info.mpp}, "
        f"tissue {tissue.area_mm2:.1f} mm², {len(tiles)} tissue tiles ({mpix:.0f} Mpx)"
    )
    print(f"open + detect_tissue + plan_tiles: {t_plan:.2f} s (once per slide)")

    pkg = open_slide(path)
    bare = openslide.OpenSlide(str(path))

    def read_pkg(t):
        return pkg.read_region((t.x, t.y), 0, (t.width, t.height))

    def read_bare(t):
        return np.asarray(bare.read_region((t.x, t.y), 0, (t.width, t.height)))

    # warm-up: page cache, lazy imports; also check both give the same pixels
    for t in tiles:
        a, b = read_pkg(t), read_bare(t)
    assert np.array_equal(a, b[..., :3]), "package and bare OpenSlide pixels differ"

    clock = time.perf_counter
    rows = []
    for r in range(args.rounds):
        tp = tb = 0.0
        for i, t in enumerate(tiles):
            if (i + r) % 2 == 0:
                s = clock()
                read_pkg(t)
                m = clock()
                read_bare(t)
                e = clock()
                tp += m - s
                tb += e - m
            else:
                s = clock()
                read_bare(t)
                m = clock()
                read_pkg(t)
                e = clock()
                tb += m - s
                tp += e - m
        rows.append((tp, tb))
        print(
            f"round {r + 1}: package {tp:.2f} s, bare openslide {tb:.2f} s, "
            f"overhead {100 * (tp / tb - 1):+.1f}%",
            flush=True,
        )
    pkg.close()
    bare.close()
    tp = float(np.median([r[0] for r in rows]))
    tb = float(np.median([r[1] for r in rows]))
    overhead = 100 * (tp / tb - 1)
    total_overhead = 100 * ((tp + t_plan) / tb - 1)
    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| slide | {info.width} x {info.height} px, {info.mpp} um/px, real-H&E mosaic, JPEG tiles |"
    )
    print(
        f"| tissue tiles read | {len(tiles)} ({mpix:.0f} Mpx, {tissue.area_mm2:.1f} mm² tissue) |"
    )
    print(f"| bare OpenSlide loop (median of {args.rounds}) | {tb:.2f} s ({mpix / tb:.0f} Mpx/s) |")
    print(f"| package loop (median of {args.rounds}) | {tp:.2f} s ({mpix / tp:.0f} Mpx/s) |")
    print(f"| **read overhead** | **{overhead:+.1f}%** (target <= 10%) |")
    print(f"| open + tissue + plan (once) | {t_plan:.2f} s |")
    print(f"| overhead incl. planning | {total_overhead:+.1f}% |")
    print(f"| load average at end | {common.load_avg()} |")
    print(f"| machine | {common.machine()} |")
    return 0 if overhead <= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
