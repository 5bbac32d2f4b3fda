"""Mitotic-figure recall of a candidate proposer on the real AMi-Br training crops.

Every crop in ``../shared/data/amibr-train`` is a 128 x 128 px image centred on an expert-labelled
mitotic figure (MF). Ground truth = the crop centre plus the other MFs listed for that crop in
``annotations/amibr_train_crop_neighbours.csv`` (``dx_px, dy_px`` from the centre) that lie inside
the crop. A figure is *recalled* when a candidate centroid lies within 7.5 um (the MIDOG match
radius). Pixel size by source: MIDOG21 slides 001-100 (Hamamatsu XR / S360) 0.23 um/px,
101-150 (Aperio CS2) 0.25 um/px; TUPAC16 0.25 um/px.

Crops are reflect-padded by ``--pad-px`` on every side before proposing (so objects cut by the
crop border still look like whole objects), and only candidates whose centroid lies inside the
original crop are kept and counted.

Also reports candidates per mm² (inside the crops), proposer seconds per mm² (of crop area,
padding included in the time) and, with ``--image``, on a real 1000 x 1000 H&E image.

Run::

    .venv/bin/python benchmarks/proposer_recall.py --proposer classical
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MATCH_UM = 7.5


def slide_mpp(dataset: str, slide: str) -> float:
    """Pixel size (um/px) of a source slide (see the module docstring)."""
    if dataset == "MIDOG21":
        num = int(Path(slide).stem)
        return 0.23 if num <= 100 else 0.25
    return 0.25


def scanner(dataset: str, slide: str) -> str:
    if dataset == "MIDOG21":
        num = int(Path(slide).stem)
        return "Hamamatsu XR" if num <= 50 else ("Hamamatsu S360" if num <= 100 else "Aperio CS2")
    return "TUPAC16"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    from PIL import Image

    from mitoscope.candidates import get_proposer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proposer", default="classical")
    ap.add_argument("--sam-checkpoint", default=None)
    ap.add_argument("--sam-variant", default="vit_h")
    ap.add_argument("--pad-px", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N crops (0 = all)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--image", type=Path, default=None, help="also time a real image")
    ap.add_argument("--image-mpp", type=float, default=0.25)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a proposer option, e.g. --set merge_radius_um=4 --set dark_levels=[]",
    )
    ap.add_argument("--misses", type=Path, default=None, help="write missed figures (CSV)")
    ap.add_argument(
        "--work-mpp",
        type=float,
        default=None,
        help="resample each (padded) crop to this pixel size before proposing (e.g. 0.5)",
    )
    args = ap.parse_args(argv)

    opts: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        opts[key] = json.loads(value)
        if isinstance(opts[key], list):
            opts[key] = tuple(opts[key])
    if args.proposer == "sam":
        opts.update({"checkpoint": args.sam_checkpoint, "variant": args.sam_variant})
    proposer = get_proposer(args.proposer, **opts)
    crops_dir = args.data / "amibr-train"
    labels = pd.read_csv(crops_dir / "labels.csv")
    if args.limit:
        labels = labels.iloc[: args.limit]
    nb = pd.read_csv(args.data / "annotations" / "amibr_train_crop_neighbours.csv")
    nb = nb[nb.neighbour_class == "MF"]
    nb_by_crop = {k: g for k, g in nb.groupby("crop_file")}
    label_by_uid = {(r.dataset, r.uid): r.label for r in labels.itertuples()}

    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    n_cands = 0
    area_mm2 = 0.0
    seconds = 0.0
    cpu_seconds = 0.0
    misses = []
    pad = int(args.pad_px)
    for row in labels.itertuples():
        mpp = slide_mpp(row.dataset, row.slide)
        rgb = np.asarray(Image.open(crops_dir / row.file).convert("RGB"))
        h, w = rgb.shape[:2]
        img = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="reflect") if pad else rgb
        t0, p0 = time.perf_counter(), time.process_time()
        f = 1.0
        if args.work_mpp:
            f = mpp / args.work_mpp  # work px per crop px
            ih, iw = img.shape[:2]
            size = (max(2, round(iw * f)), max(2, round(ih * f)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))
        c = proposer.propose(img, mpp=args.work_mpp or mpp)
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - p0
        x = (c.x_px + 0.5) / f - 0.5 - pad
        y = (c.y_px + 0.5) / f - 0.5 - pad
        inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
        x, y = x[inside], y[inside]
        n_cands += int(inside.sum())
        area_mm2 += h * w * (mpp / 1000.0) ** 2
        cx, cy = w // 2, h // 2
        gts = [(cx, cy, row.label, "centre")]
        g = nb_by_crop.get(Path(row.file).name)
        if g is not None:
            for n in g.itertuples():
                gx, gy = cx + n.dx_px, cy + n.dy_px
                if 0 <= gx < w and 0 <= gy < h:
                    lab = label_by_uid.get((row.dataset, n.neighbour_uid), "unknown")
                    gts.append((gx, gy, lab, "neighbour"))
        for gx, gy, lab, kind in gts:
            d = np.hypot(x - gx, y - gy) * mpp
            ok = bool(d.size and d.min() <= MATCH_UM)
            keys = [
                "all",
                f"label={lab}",
                f"dataset={row.dataset}",
                f"scanner={scanner(row.dataset, row.slide)}",
                f"kind={kind}",
            ]
            for k in keys:
                hits[k][0] += ok
                hits[k][1] += 1
            if not ok:
                misses.append(
                    {
                        "file": row.file,
                        "kind": kind,
                        "label": lab,
                        "x": gx,
                        "y": gy,
                        "nearest_um": float(d.min()) if d.size else None,
                    }
                )

    res = {
        "proposer": proposer.name,
        "options": args.set,
        "crops": len(labels),
        "pad_px": pad,
        "recall": {k: {"hit": v[0], "n": v[1], "recall": v[0] / v[1]} for k, v in hits.items()},
        "candidates_per_mm2": n_cands / area_mm2,
        "seconds_per_mm2_crops": seconds / area_mm2,
        "cpu_seconds_per_mm2_crops": cpu_seconds / area_mm2,
        "crop_area_mm2": area_mm2,
    }
    if args.image is not None:
        from mitoscope.slide import open_slide

        with open_slide(args.image, mpp=args.image_mpp) as r:
            img = r.read_region((0, 0), 0, (r.info.width, r.info.height))
        proposer.propose(img, mpp=args.image_mpp)  # warm-up
        t0, p0 = time.perf_counter(), time.process_time()
        reps = 3
        for _ in range(reps):
            c = proposer.propose(img, mpp=args.image_mpp)
        dt = (time.perf_counter() - t0) / reps
        cpu = (time.process_time() - p0) / reps
        a = img.shape[0] * img.shape[1] * (args.image_mpp / 1000.0) ** 2
        res["image"] = {
            "path": str(args.image.name),
            "shape": list(img.shape[:2]),
            "mpp": args.image_mpp,
            "seconds": dt,
            "seconds_per_mm2": dt / a,
            "cpu_seconds": cpu,
            "candidates": len(c),
            "candidates_per_mm2": len(c) / a,
        }
    print(f"proposer={proposer.name} crops={len(labels)} pad_px={pad} options={args.set}")
    print("| group | recalled / labelled | recall |")
    print("|---|---|---|")
    for k in sorted(hits, key=lambda s: (s != "all", s)):
        v = hits[k]
        print(f"| {k} | {v[0]} / {v[1]} | {v[0] / v[1]:.4f} |")
    print(f"candidates per mm² (crops): {res['candidates_per_mm2']:.0f}")
    print(
        f"proposer seconds per mm² (crops, incl. padding): wall {res['seconds_per_mm2_crops']:.3f}, "
        f"cpu {res['cpu_seconds_per_mm2_crops']:.3f}"
    )
    if "image" in res:
        im = res["image"]
        print(
            f"image {im['path']} {im['shape'][1]}x{im['shape'][0]} @ {im['mpp']} um/px: "
            f"{im['seconds']:.3f} s wall ({im['cpu_seconds']:.3f} s cpu), "
            f"{im['seconds_per_mm2']:.3f} s/mm², "
            f"{im['candidates']} candidates ({im['candidates_per_mm2']:.0f} /mm²)"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if args.misses:
        pd.DataFrame(misses).to_csv(args.misses, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
