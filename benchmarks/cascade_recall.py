"""Cascade stage 1: how many candidates a darkness cut discards, and what recall it costs.

The classical proposer scores every candidate by its mean optical density (darkness). Mitotic
figures (condensed chromatin) are among the darkest objects, so a cut on that score is a free
first stage of a cascade: candidates below it never reach the classifier ensemble.

Data: the real AMi-Br training crops (``../shared/data/amibr-train``, 128 x 128 px, each centred on
an expert-labelled mitotic figure), split **by slide** into a validation half (the cut is chosen
there: the ``--max-loss`` quantile of the best matching candidate's score over recalled figures)
and a test half (the recall loss and the share of candidates discarded are measured there).
A figure is recalled when a candidate centroid lies within 7.5 um (MIDOG). Crops are reflect-padded
by 32 px before proposing; only candidates centred inside the crop count. Also reports the share
discarded on a real 1000 x 1000 H&E image without mitosis labels (ordinary tissue, few figures).

Run::

    .venv/bin/python benchmarks/cascade_recall.py [--max-crops 1200] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from proposer_recall import slide_mpp

MATCH_UM = 7.5
PAD = 32


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-crops", type=int, default=1200)
    ap.add_argument("--max-loss", type=float, default=0.01, help="recall loss allowed (share)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from PIL import Image

    from mitoscope.candidates import get_proposer

    root = common.SHARED_DATA / "amibr-train"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    if args.max_crops and args.max_crops < len(rows):
        rows = [rows[i] for i in sorted(rng.choice(len(rows), args.max_crops, replace=False))]
    prop = get_proposer("classical")
    halves: dict[str, dict[str, list]] = {
        h: {"best": [], "recalled": [], "scores": []} for h in ("val", "test")
    }
    t0 = time.perf_counter()
    for r in rows:
        half = "val" if zlib.crc32(r["slide"].encode()) % 2 == 0 else "test"
        mpp = slide_mpp(r["dataset"], r["slide"])
        img = np.asarray(Image.open(root / r["file"]).convert("RGB"))
        padded = np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
        c = prop.propose(padded, mpp=mpp)
        x, y = c.x_px - PAD, c.y_px - PAD
        inside = (x >= 0) & (x < img.shape[1]) & (y >= 0) & (y < img.shape[0])
        x, y, s = x[inside], y[inside], c.score[inside]
        d_um = np.hypot(x - img.shape[1] / 2, y - img.shape[0] / 2) * mpp
        near = d_um <= MATCH_UM
        halves[half]["scores"].append(s)
        halves[half]["recalled"].append(bool(near.any()))
        halves[half]["best"].append(float(s[near].max()) if near.any() else np.nan)
    seconds = time.perf_counter() - t0

    val = halves["val"]
    best_val = np.array(val["best"])[np.array(val["recalled"])]
    cut = float(np.quantile(best_val, args.max_loss))
    out: dict = {"cut_score": cut, "max_loss": args.max_loss, "seconds": seconds}
    for h in ("val", "test"):
        rec = np.array(halves[h]["recalled"])
        best = np.array(halves[h]["best"])
        scores = np.concatenate(halves[h]["scores"]) if halves[h]["scores"] else np.zeros(0)
        kept = rec & (np.nan_to_num(best, nan=-1.0) >= cut)
        out[h] = {
            "figures": int(len(rec)),
            "recall_before": float(rec.mean()),
            "recall_after": float(kept.mean()),
            "recall_loss_relative": float(1.0 - kept.sum() / max(1, rec.sum())),
            "candidates": int(len(scores)),
            "discarded_share": float((scores < cut).mean()) if len(scores) else 0.0,
        }
    # ordinary tissue: a real H&E image without labels (few mitoses)
    img = np.asarray(
        Image.open(common.SHARED_DATA / "slides" / "tiatoolbox_target_image.png").convert("RGB")
    )
    c = prop.propose(img, mpp=0.25)
    out["tiatoolbox_target_image"] = {
        "candidates": len(c),
        "discarded_share": float((c.score < cut).mean()) if len(c) else 0.0,
    }
    print(json.dumps(out, indent=2))
    t = out["test"]
    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| darkness cut (chosen on validation slides, <= {args.max_loss:.0%} loss) | {cut:.4f} |"
    )
    print(
        f"| test slides: MF recall of the proposer before / after the cut | "
        f"{t['recall_before']:.4f} / {t['recall_after']:.4f} ({t['figures']} figures) |"
    )
    print(f"| test slides: relative recall loss | {t['recall_loss_relative']:.2%} |")
    print(
        f"| test slides: candidates discarded | {t['discarded_share']:.1%} of {t['candidates']} |"
    )
    print(
        f"| real H&E image (1000x1000): candidates discarded | "
        f"{out['tiatoolbox_target_image']['discarded_share']:.1%} of {len(c)} |"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
