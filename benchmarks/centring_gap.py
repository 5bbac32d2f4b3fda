"""Centring gap: why `mitoscope detect` finds fewer validation figures than the classifier's
training score promised (issue 12).

Per labelled mitotic figure of the bundled models' 22 validation slides (the figures of
``benchmarks/cascade_recall.py``: each AMi-Br crop's centre figure plus the other figures listed
inside it; the crop reflect-padded by 32 px and detected as a region image):

- ``p_label``: MF probability on the patch centred on the labelled position, cut as training
  cut it (:func:`mitoscope.train.samples.labelled_image_samples`: crop resampled to the model's
  pixel size, mask of the proposer object within 4 um, else a 3 um disc);
- ``has_cand`` / ``survives``: a proposer candidate within 7.5 um (MIDOG rule) before the
  cascade screen, and one the screen keeps (detection's own tile step,
  :func:`mitoscope.detect.tiles.process_tile`, without and with the screen);
- the nearest surviving candidate's distance (um) and ``p_cand`` (its patch cut and scored by
  detection's :class:`~mitoscope.detect.tiles.Batcher`); ``p_best``: the best surviving
  candidate within 7.5 um; ``p_label_det``: the label-centred patch of detection's own tile
  image with that nearest candidate's mask (only the patch centre differs from ``p_cand``);
- ``p_e2e``: the best detection of ``detect_slide`` (cascade, merging, tissue) within 7.5 um.

Reported per threshold: the recall of each stage, and how the figures lost end to end are lost:
(i) no candidate, (ii) the screen, (iii) a lower score at the candidate centre (split by whether
the label-centred score was above the threshold), (iv) after classification (merging, tissue);
and over figures with a surviving candidate: the median / 90th percentile label -> candidate
distance and the median score differences (p_label - p_cand, and its two parts: detection's
image and mask, p_label - p_label_det, and the shift of the patch centre, p_label_det - p_cand).
--json also writes every figure's record.

Run (a few minutes: detection plus two passes of its tile step per crop)::

    nice -n 19 .venv/bin/python benchmarks/centring_gap.py --threads 2 \\
        --json benchmarks/results/centring_gap.json [--limit N] [--model M.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from cascade_recall import MATCH_UM, PAD, validation_crops
from proposer_recall import slide_mpp

TRAIN_SIZE_PX = 100  # build_amibr_samples' patch side (the classifier centre-crops it)


def dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) distances between two (N, 2) point sets."""
    return np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def analyse_crop(row: dict, neighbours: list, clf, screen, proposer, cfg) -> list[dict]:
    """The per-figure records of one crop (its centre figure, then the listed neighbours)."""
    from PIL import Image

    from mitoscope.classify.patches import extract_patches
    from mitoscope.detect import detect_slide
    from mitoscope.detect.tiles import Batcher, process_tile
    from mitoscope.geometry import centre_to
    from mitoscope.slide import ArraySlide
    from mitoscope.slide.tiling import plan_tiles
    from mitoscope.slide.tissue import tissue_for_detection
    from mitoscope.train.samples import (
        KIND_CENTRE,
        KIND_MF_NEIGHBOUR,
        LabelPoint,
        labelled_image_samples,
        resample_rgb,
    )

    mpp = slide_mpp(row["dataset"], row["slide"])
    img = np.asarray(Image.open(common.SHARED_DATA / "amibr-train" / row["file"]).convert("RGB"))
    h, w = img.shape[:2]
    offsets = [(0.0, 0.0)] + [
        (dx, dy) for dx, dy in neighbours if 0 <= w // 2 + dx < w and 0 <= h // 2 + dy < h
    ]  # the figures cascade_recall.py counts: centre, and the listed ones inside the crop
    off = np.array(offsets, float)
    # (a) the training path: the crop at the model's pixel size, label-centred patches
    s = mpp / clf.input_mpp
    pts = [LabelPoint((w // 2 + dx) * s, (h // 2 + dy) * s, KIND_MF_NEIGHBOUR if i else KIND_CENTRE)
           for i, (dx, dy) in enumerate(offsets)]  # fmt: skip
    cols, _ = labelled_image_samples(
        resample_rgb(img, s), pts, mpp=clf.input_mpp, size_px=TRAIN_SIZE_PX, proposer=proposer
    )
    n = len(pts)
    p_label, _ = clf.predict_patches(np.stack(cols["patches"][:n]), np.stack(cols["masks"][:n]))
    # (e) end to end, as cascade_recall.py runs it
    reader = ArraySlide(
        np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect"), mpp=mpp, path=row["file"]
    )
    truth_um = (off + [w // 2 + PAD, h // 2 + PAD]) * mpp

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= PAD) & (x < PAD + w) & (y >= PAD) & (y < PAD + h)

    res = detect_slide(reader, classifier=clf, screen=screen, config=cfg, progress=False)
    d = res.detections.filter(inside(res.detections.x_px, res.detections.y_px))
    dd = dists(truth_um, np.column_stack([d.x_px, d.y_px]) * mpp)
    p_e2e = np.where(dd <= MATCH_UM, d.mf_probability[None, :], 0.0).max(axis=1, initial=0.0)
    # (b)-(d) detection's tile step at its own pixel sizes, without and with the screen
    tissue, _, _ = tissue_for_detection(reader, tile_um=cfg.tile_um, thumb_mpp=cfg.thumb_mpp)
    tiles = plan_tiles(reader.info, tissue, tile_um=cfg.tile_um, overlap_um=cfg.overlap_um)
    tiles = tiles if tissue.mask.any() else []
    wm, scale = res.stats.work_mpp, res.stats.work_mpp / mpp
    kw = {"proposer": proposer, "work_mpp": wm, "propose_mpp": res.stats.propose_mpp}
    allp, kept = [], []  # level-0 (x, y) of every candidate / (x, y, p, tile, image, cands, i)
    for tile in tiles:
        c = process_tile(reader, tile, **kw).candidates
        allp += zip(centre_to(c.x_px, scale, tile.x), centre_to(c.y_px, scale, tile.y), strict=True)
        work = process_tile(reader, tile, screen=screen, **kw)
        if not len(work.candidates):
            continue
        image, cands = work.image, work.candidates
        batcher = Batcher(clf, batch_size=cfg.batch_size, threshold=clf.threshold)
        ((_, mf, _),) = batcher.add(work) + batcher.flush()
        xs, ys = centre_to(cands.x_px, scale, tile.x), centre_to(cands.y_px, scale, tile.y)
        kept += [(xs[i], ys[i], mf[i], tile, image, cands, i) for i in range(len(cands))]
    allp = np.array([p for p in allp if inside(*p)], float).reshape(-1, 2)
    kept = [k for k in kept if inside(k[0], k[1])]
    kxy = np.array([k[:2] for k in kept], float).reshape(-1, 2)
    has_cand = (dists(truth_um, allp * mpp) <= MATCH_UM).any(axis=1)
    dk, pk = dists(truth_um, kxy * mpp), np.array([k[2] for k in kept], float)
    out = []
    for j in range(n):
        near = dk[j] <= MATCH_UM
        rec = {
            "file": row["file"], "slide": f"{row['dataset']}/{row['slide']}", "figure": j,
            "p_label": float(p_label[j]), "has_cand": bool(has_cand[j]),
            "survives": bool(near.any()), "dist_um": None, "p_cand": None, "p_best": 0.0,
            "p_label_det": None, "p_e2e": float(p_e2e[j]),
        }  # fmt: skip
        if near.any():
            _, _, p, tile, image, cands, i = kept[int(dk[j].argmin())]
            lx, ly = truth_um[j] / mpp
            size = getattr(clf, "cut_size_px", None) or clf.patch_size_px
            patch, mask = extract_patches(
                image, centre_to(np.array([lx - tile.x]), 1 / scale),
                centre_to(np.array([ly - tile.y]), 1 / scale), int(size),
                candidates=cands.filter([i]) if getattr(clf, "uses_mask", True) else None,
            )  # fmt: skip
            rec.update(
                dist_um=float(dk[j].min()), p_cand=float(p), p_best=float(pk[near].max()),
                p_label_det=float(clf.predict_patches(patch, mask)[0][0]),
            )  # fmt: skip
        out.append(rec)
    return out


def summarise(figs: list[dict], thresholds: list[float]) -> dict:
    """Stage recalls per threshold, distances, score differences, where lost figures go."""
    c = {k: np.array([np.nan if f[k] is None else f[k] for f in figs], float) for k in figs[0]
         if k not in ("file", "slide", "figure")}  # fmt: skip
    has, surv = c["has_cand"] > 0, c["survives"] > 0

    def q(a: np.ndarray, pct: float = 50) -> float | None:  # over figures with a survivor
        return float(np.percentile(a[surv], pct)) if surv.any() else None

    out: dict = {"figures": len(figs), "slides": len({f["slide"] for f in figs})}
    out["distance_um"] = {"median": q(c["dist_um"]), "p90": q(c["dist_um"], 90)}
    out["median_diff"] = {
        "p_label - p_cand (nearest)": q(c["p_label"] - c["p_cand"]),
        "p_label - p_best": q(c["p_label"] - c["p_best"]),
        "p_label_det - p_cand (centre shift alone)": q(c["p_label_det"] - c["p_cand"]),
        "p_label - p_label_det (detection image, mask)": q(c["p_label"] - c["p_label_det"]),
    }
    out["at"] = {}
    for t in thresholds:
        lost = c["p_e2e"] < t
        low = lost & surv & (c["p_best"] < t)
        out["at"][f"{t:g}"] = {
            "recall": {
                "(a) p_label": float(np.mean(c["p_label"] >= t)),
                "(b) has a candidate": float(np.mean(has)),
                "(c) candidate survives the screen": float(np.mean(surv)),
                "(d) p_cand of the best survivor": float(np.mean(c["p_best"] >= t)),
                "(d') label-centred, detection's image": float(np.mean(c["p_label_det"] >= t)),
                "(e) end to end": float(np.mean(c["p_e2e"] >= t)),
            },
            "lost_end_to_end": int(lost.sum()),
            "lost_to": {
                "(i) no candidate": int((lost & ~has).sum()),
                "(ii) the screen": int((lost & has & ~surv).sum()),
                "(iii) lower score at the candidate centre, p_label >= t": int(
                    (low & (c["p_label"] >= t)).sum()
                ),
                "(iii) ... and p_label < t too": int((low & (c["p_label"] < t)).sum()),
                "(iv) after classification (merging, tissue)": int(
                    (lost & surv & (c["p_best"] >= t)).sum()
                ),
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N figures (0 = all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--model", type=Path, default=None, help="classifier (default: the bundled one)"
    )
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.084, 0.301])
    args = ap.parse_args(argv)

    import torch

    from mitoscope.candidates import get_proposer
    from mitoscope.classify import load_classifier
    from mitoscope.classify.screen import load_screen
    from mitoscope.detect import DetectConfig

    torch.set_num_threads(args.threads)
    rows, nb = validation_crops()
    clf, screen = load_classifier(args.model, device="cpu"), load_screen()
    cfg = DetectConfig(floor=0.0, report=False, cascade=True)
    proposer = get_proposer("classical")
    figs: list[dict] = []
    for r in rows:
        if args.limit and len(figs) >= args.limit:
            break
        figs += analyse_crop(r, nb.get(Path(r["file"]).name, []), clf, screen, proposer, cfg)
    figs = figs[: args.limit or None]
    out = {"model": str(getattr(clf, "name", "")), "threshold": clf.threshold,
           **summarise(figs, args.thresholds)}  # fmt: skip
    print(f"{out['figures']} figures on {out['slides']} validation slides; label -> nearest "
          f"surviving candidate (um): {out['distance_um']}")  # fmt: skip
    for k, v in out["median_diff"].items():
        print(f"median {k}: {v:.4f}" if v is not None else f"median {k}: n/a")
    ts = list(out["at"])
    print("\n| recall | " + " | ".join(ts) + " |\n|---|" + "---|" * len(ts))
    for k in out["at"][ts[0]]["recall"]:
        print(f"| {k} | " + " | ".join(f"{out['at'][t]['recall'][k]:.3f}" for t in ts) + " |")
    print("| figures lost end to end | " + " | ".join(str(out["at"][t]["lost_end_to_end"])
                                                     for t in ts) + " |")  # fmt: skip
    for k in out["at"][ts[0]]["lost_to"]:
        print(f"| lost to {k} | " + " | ".join(str(out["at"][t]["lost_to"][k]) for t in ts) + " |")
    if args.json:
        args.json.write_text(json.dumps({**out, "per_figure": figs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
