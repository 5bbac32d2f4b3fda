"""Sanity check of ``detect_slide`` with the bundled model on real AMi-Br crops.

Each 128 x 128 px crop (0.25 um/px) is centred on an expert-labelled mitotic figure; the other
objects in a crop are mostly non-mitotic nuclei (see ``../shared/data/README.md``). For each crop
the script runs the whole pipeline (classical proposer, bundled classifier) and reports the MF
probability of the detection at the centre and the share of the other detections (>= 20 px from
the centre) at or above the model's threshold. ``--simulate-mpp 0.5`` first downsamples each crop
to 0.5 um/px (as a 20x scan would be) so the pipeline reads it back up-sampled to 0.25 um/px.

Usage::

    .venv/bin/python benchmarks/detect_crops.py [--n 12] [--simulate-mpp 0.5]
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amibr-train"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12, help="first N crops of Normal/ (sorted)")
    ap.add_argument("--simulate-mpp", type=float, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from PIL import Image

    from mitoscope.classify import load_classifier
    from mitoscope.detect import DetectConfig, detect_slide
    from mitoscope.slide import ArraySlide

    clf = load_classifier(device="cpu")
    files = sorted((DATA / "Normal").glob("*.png"))[: args.n]
    centre, others = [], []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        mpp = 0.25
        if args.simulate_mpp:
            side = int(round(128 * 0.25 / args.simulate_mpp))
            img = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR))
            mpp = args.simulate_mpp
        res = detect_slide(
            ArraySlide(img, mpp=mpp, path=f.name),
            classifier=clf,
            config=DetectConfig(floor=0.0, report=False, mpp_tolerance=0.0),
            progress=False,
        )
        d = res.detections
        s = mpp / 0.25  # level-0 px -> 0.25 um/px crop px
        dist = np.hypot(d.x_px * s - 64, d.y_px * s - 64)
        if len(d):
            i = int(np.argmin(dist))
            centre.append(float(d.mf_probability[i]) if dist[i] < 10 else float("nan"))
            others.extend(d.mf_probability[dist >= 20].tolist())
    o = np.asarray(others)
    c = np.asarray(centre)
    print(
        f"model {clf.name}, threshold {clf.threshold:.6g}; crops {len(files)}; "
        f"mpp {args.simulate_mpp or 0.25}"
    )
    print(
        f"centre MF found in {np.isfinite(c).sum()}/{len(files)} crops; "
        f"median centre p = {np.nanmedian(c):.4f}; at/above threshold {np.nansum(c >= clf.threshold):.0f}"
    )
    print(
        f"other detections {len(o)}: median p = {np.median(o):.3f}; "
        f"at/above threshold {int((o >= clf.threshold).sum())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
