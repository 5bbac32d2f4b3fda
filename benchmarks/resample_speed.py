"""Reading tiles at the model's pixel size from slides scanned at another one (issue 7).

``SlideReader.read_region_mpp`` resamples every tile when the slide is not at the classifier's
0.25 um/px: 20x scans (~0.5 um/px) are enlarged 2x, the MIDOG Hamamatsu scanners (0.23 um/px)
shrunk by 0.92. This times, on the same tiles in one process, the current resampler (Pillow
bilinear) against the previous one (``skimage.transform.resize(order=1, anti_aliasing=...)``),
and reports how far their pixels differ. Slides: the bundled sample (real SVS, 0.499 um/px) and
the 8,192 px real-H&E mosaic read as if scanned at 0.23 um/px (``--mpp 0.23``).

Run::

    .venv/bin/python benchmarks/resample_speed.py [--tiles 12]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def _skimage(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """The resampler read_region_mpp used until session 3 (the baseline)."""
    from skimage.transform import resize

    shrinking = out_w < img.shape[1]
    res = resize(img, (out_h, out_w), order=1, preserve_range=True, anti_aliasing=shrinking)
    return np.clip(res + 0.5, 0, 255).astype(np.uint8)


def measure(path: Path, mpp: float | None, n_tiles: int, target: float = 0.25) -> dict:
    from mitoscope.slide import detect_tissue, open_slide, plan_tiles

    with open_slide(path, mpp=mpp) as r:
        tiles = plan_tiles(r.info, detect_tissue(r))[:n_tiles]
        t_new = t_old = 0.0
        diffs, big = [], []
        for tile in tiles:
            a = time.perf_counter()
            new = r.read_region_mpp(tile.region, target)
            b = time.perf_counter()
            raw = r.read_region((tile.x, tile.y), 0, (tile.width, tile.height))
            c = time.perf_counter()
            old = _skimage(raw, new.shape[1], new.shape[0])
            d = time.perf_counter()
            t_new += b - a
            t_old += (c - b) + (d - c)  # the same read, then the old resize
            delta = np.abs(new.astype(np.int16) - old.astype(np.int16))
            diffs.append(float(delta.mean()))
            big.append(float((delta > 2).mean()))
        n = max(1, len(tiles))
        return {
            "slide": path.name,
            "mpp": r.info.mpp,
            "tiles": len(tiles),
            "tile_px_out": f"{new.shape[1]} x {new.shape[0]}",
            "new_s_per_tile": t_new / n,
            "old_s_per_tile": t_old / n,
            "speedup": t_old / max(t_new, 1e-9),
            "mean_abs_diff": float(np.mean(diffs)),
            "share_diff_over_2": float(np.mean(big)),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=12)
    args = ap.parse_args(argv)
    from mitoscope.data import sample_slide

    rows = [
        measure(sample_slide(), None, args.tiles),
        measure(common.mosaic_slide(8192, 8192), 0.23, args.tiles),
    ]
    print("| slide (um/px) | tile at 0.25 um/px | previous (skimage) | now (Pillow) | speed-up "
          "| mean abs pixel difference | pixels differing by > 2 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['slide']} ({r['mpp']:.3f}) | {r['tile_px_out']} px | "
            f"{r['old_s_per_tile'] * 1000:.0f} ms | {r['new_s_per_tile'] * 1000:.0f} ms | "
            f"**{r['speedup']:.1f}x** | {r['mean_abs_diff']:.3f} | {r['share_diff_over_2']:.2%} |"
        )
    print(f"machine: {common.machine()}; load average {common.load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
