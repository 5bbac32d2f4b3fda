"""``curate masks`` against real expert nucleus outlines (MoNuSeg, ../shared/data/tissue/nuclei).

Every outlined nucleus becomes a label twice: as a point (its centroid, the hardest case: the
prompt box is a ``box_um`` square) and as a box (the outline's bounding box, like MIDOG++ /
SlideRunner rectangles). Each label's curated mask is compared with the expert outline:
mean IoU (flagged labels count 0), mean IoU of accepted masks, recall (accepted and IoU >= 0.5),
how many were flagged and how many needed the second prompt. Classical method (no weights); with
``--sam-checkpoint`` the SAM method too.

Run (all 13 outlined images)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curate_masks.py --json benchmarks/results/curate_masks.json

``--quick``: the first outlined image of three organs (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TISSUE = ROOT.parent / "shared" / "data" / "tissue"


def outlines(path: Path) -> list[np.ndarray]:
    """The exterior rings of the Polygon features of a GeoJSON file (order of the file)."""
    data = json.loads(path.read_text())
    rings = []
    for feat in data["features"]:
        g = feat.get("geometry") or {}
        if g.get("type") == "Polygon":
            rings.append(np.asarray(g["coordinates"][0], dtype=np.float64)[:, :2])
        elif g.get("type") == "MultiPolygon":
            rings.append(np.asarray(g["coordinates"][0][0], dtype=np.float64)[:, :2])
    return rings


def run_image(geojson: Path, mpp: float, prompt: str, sam_model=None) -> dict:
    from mitoscope.curate.masks import compare_to_outlines, curate_masks
    from mitoscope.io.geojson import read_geojson

    ann = read_geojson(geojson)
    rings = outlines(geojson)
    assert len(rings) == len(ann), (geojson, len(rings), len(ann))
    if prompt == "point":
        ann.bbox = None
    t0 = time.perf_counter()
    res = curate_masks(ann, TISSUE / "images", mpp=mpp, sam_model=sam_model)
    out = compare_to_outlines(res, rings)
    out["seconds"] = time.perf_counter() - t0
    out["method"] = res.config.method
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three images (three organs) only")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--sam-checkpoint", type=Path, help="also run the SAM method")
    ap.add_argument("--sam-variant", default="vit_h")
    args = ap.parse_args(argv)
    if not TISSUE.exists():
        print(f"needs {TISSUE}", file=sys.stderr)
        return 2
    rows = [r for r in csv.DictReader(open(TISSUE / "images.csv")) if r["nuclei"]]
    if args.quick:  # the first outlined image of three organs
        seen: dict[str, dict] = {}
        for r in rows:
            seen.setdefault(r["organ"], r)
        rows = list(seen.values())[:3]
    models = {"classical": None}
    if args.sam_checkpoint:
        from mitoscope.candidates.sam import load_sam

        models["sam"] = load_sam(args.sam_checkpoint, variant=args.sam_variant)
    per_image = []
    for r in rows:
        for method, model in models.items():
            for prompt in ("point", "box"):
                m = run_image(TISSUE / r["nuclei"], float(r["mpp"]), prompt, model)
                m.update(image=Path(r["file"]).stem, organ=r["organ"], prompt=prompt)
                m["method"] = method
                per_image.append(m)
                print(
                    f"{m['image']} {r['organ']:<8} {method:<9} {prompt:<5} n={m['labels']:.0f} "
                    f"meanIoU={m['mean_iou']:.3f} (accepted {m['mean_iou_ok']:.3f}) "
                    f"recall@0.5={m['recall']:.3f} flagged={m['flagged']:.0f} "
                    f"2nd={m['second_prompt']:.0f} {m['seconds']:.0f}s",
                    flush=True,
                )
    summary = {}
    for method in models:
        for prompt in ("point", "box"):
            sel = [m for m in per_image if m["method"] == method and m["prompt"] == prompt]
            n = sum(m["labels"] for m in sel)
            acc = sum(m["accepted"] for m in sel)
            summary[f"{method}/{prompt}"] = {
                "images": len(sel),
                "labels": n,
                "mean_iou": sum(m["mean_iou"] * m["labels"] for m in sel) / n,
                "mean_iou_accepted": sum(m["mean_iou_ok"] * m["accepted"] for m in sel) / acc,
                "recall_iou50": sum(m["recall"] * m["labels"] for m in sel) / n,
                "flagged_share": sum(m["flagged"] for m in sel) / n,
                "second_prompt_share": sum(m["second_prompt"] for m in sel) / n,
                "accepted_below_iou50": sum(m["accepted_below_threshold"] for m in sel),
            }
    for k, v in summary.items():
        print(k, json.dumps({a: round(b, 4) for a, b in v.items()}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"summary": summary, "per_image": per_image, "quick": args.quick}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
