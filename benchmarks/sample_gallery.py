"""Detections per mm² on the bundled sample slide and a gallery of every detection, to look at.

Runs ``detect_slide`` on the sample (``cmu_small_region.svs``: skin, 0.499 um/px) exactly as
``mitoscope detect --sample`` does, prints the count, the tissue area and the count per mm², and
writes a contact sheet of the detections (highest probability first; 20 x 20 um around each,
its probability printed above it) for a person to judge.

    .venv/bin/python benchmarks/sample_gallery.py [--model M.pt] [--out docs/images/sample_gallery.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from PIL import Image, ImageDraw

    from mitoscope import DetectConfig, detect_slide, load_classifier
    from mitoscope.data import sample_slide
    from mitoscope.slide import open_slide

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="classifier checkpoint (default: bundled)")
    ap.add_argument("--out", type=Path, default=Path("docs/images/sample_gallery.png"))
    ap.add_argument("--max", type=int, default=60, help="at most this many tiles")
    ap.add_argument("--cols", type=int, default=10)
    args = ap.parse_args(argv)

    path = sample_slide()
    clf = load_classifier(args.model) if args.model else None
    res = detect_slide(
        path, classifier=clf, config=DetectConfig(report=False, cascade=True), progress=False
    )
    m = res.mitoses
    out = {
        "slide": path.name,
        "model": res.model,
        "mitoses": len(m),
        "tissue_mm2": round(res.tissue_area_mm2, 4),
        "per_mm2": round(len(m) / res.tissue_area_mm2, 2) if res.tissue_area_mm2 else None,
        "threshold": round(float(res.threshold), 4),
    }
    print(json.dumps(out))
    order = np.argsort(-m.mf_probability)[: args.max]
    if not len(order):
        return 0
    half_um = 10.0
    tiles = []
    with open_slide(path) as reader:
        mpp = reader.info.mpp
        half = int(round(half_um / mpp))
        for i in order:
            x, y = int(round(m.x_px[i])), int(round(m.y_px[i]))
            rgb = reader.read_region((x - half, y - half), 0, (2 * half, 2 * half), clip=True)
            tile = Image.fromarray(np.asarray(rgb)[..., :3]).resize((128, 128), Image.LANCZOS)
            canvas = Image.new("RGB", (128, 142), "white")
            canvas.paste(tile, (0, 14))
            ImageDraw.Draw(canvas).text((2, 1), f"p={m.mf_probability[i]:.3f}", fill=(0, 0, 0))
            tiles.append(canvas)
    cols = min(args.cols, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 130, rows * 144), "white")
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * 130, (k // cols) * 144))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"gallery: {args.out} ({len(tiles)} of {len(m)} detections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
