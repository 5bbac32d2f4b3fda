"""The trained detector against the classical proposer + the bundled classifier, on the same data.

Data (none of it trains the detector; the bundled classifier was trained with the 30 tissue
images as negatives, so its tissue numbers are in-sample):

- **labelled**: the AMi-Br training crops of the bundled classifier's 22 **validation slides**
  (``slide_split(val_fraction=0.15, seed=0)``; the detector trained here uses the same rule, so
  the same slides are held out of its training and choose its thresholds, as they chose the
  classifier's), tiled per slide into region images of 4 x 4 crops (128 px each, the slide's
  native 0.23 / 0.25 um/px). Ground truth: each crop's centre figure and the other mitotic
  figures listed for it in ``amibr_train_crop_neighbours.csv`` (the sources label every figure).
- **tissue**: the 30 ordinary-tissue images of ``../shared/data/tissue`` (7 organs, 0.2527 um/px;
  mitoses rare and unlabelled: every detection counts against the method, an upper bound on
  false positives per mm²).

Measured, all in one run on one thread (``--threads``), through the product's code:

1. **Proposer use** (candidates for a classifier): recall of the labelled figures within 7.5 um
   (MIDOG matching) and candidates per mm² (region images and tissue) of the classical proposer
   (alone at 0.25 um/px, and after the cascade screen at 0.5 um/px as ``mitoscope detect`` runs
   it), and of the detector at a sweep of score thresholds; the detector's recall at the
   classical proposer's candidate densities; seconds per mm².
2. **Detector use** (final detections), through :func:`mitoscope.detect.detect_slide`:
   F1 / precision / recall on the region images and detections per mm² of tissue, for
   (a) classical + cascade + bundled classifier (the default), (b) detector proposer + bundled
   classifier, (c) ``--mode detector``; speed in mm²/s over all images.

The detector is trained in the run (``mitoscope train-detector``'s code: AMi-Br crops of the
other slides, ``--epochs``, ``--samples-per-epoch``, ...) unless ``--detector PATH`` is given::

    .venv/bin/python benchmarks/detector.py --epochs 6 --samples-per-epoch 2048 \\
        --train-threads 2 --threads 1 --json benchmarks/results/detector.json
    .venv/bin/python benchmarks/detector.py --detector detector.pt --json out.json  # trained before
    .venv/bin/python benchmarks/detector.py --quick     # a few steps of a tiny detector
    .venv/bin/python benchmarks/detector.py --report benchmarks/results/detector.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from proposer_recall import slide_mpp

MATCH_UM = 7.5
GRID = 4  # crops per side of a region image
CROP = 128


def val_slides(rows: list[dict]) -> list[str]:
    """The bundled classifier's validation slides (``dataset/slide``)."""
    from mitoscope.train.data import slide_split

    slides = np.array([f"{r['dataset']}/{r['slide']}" for r in rows])
    _, va = slide_split(slides, val_fraction=0.15, seed=0)
    return sorted(set(slides[va].tolist()))


def region_images(limit_slides: int = 0) -> list[dict]:
    """Per validation slide, region images of GRID x GRID crops with their figures (px)."""
    from PIL import Image

    root = common.SHARED_DATA / "amibr-train"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    slides = val_slides(rows)
    if limit_slides:
        slides = slides[:limit_slides]
    nb: dict[str, list[tuple[float, float]]] = {}
    with open(common.SHARED_DATA / "annotations" / "amibr_train_crop_neighbours.csv") as f:
        for r in csv.DictReader(f):
            if r["neighbour_class"] == "MF":
                nb.setdefault(r["crop_file"], []).append((float(r["dx_px"]), float(r["dy_px"])))
    out = []
    for sl in slides:
        mine = [r for r in rows if f"{r['dataset']}/{r['slide']}" == sl]
        mpp = slide_mpp(mine[0]["dataset"], mine[0]["slide"])
        for k in range(0, len(mine), GRID * GRID):
            part = mine[k : k + GRID * GRID]
            n_rows = (len(part) + GRID - 1) // GRID
            canvas = np.full((n_rows * CROP, GRID * CROP, 3), 255, np.uint8)
            truth = []
            for j, r in enumerate(part):
                gy, gx = divmod(j, GRID)
                canvas[gy * CROP : (gy + 1) * CROP, gx * CROP : (gx + 1) * CROP] = np.asarray(
                    Image.open(root / r["file"]).convert("RGB")
                )
                cx, cy = gx * CROP + CROP // 2, gy * CROP + CROP // 2
                truth.append((cx, cy))
                for dx, dy in nb.get(Path(r["file"]).name, []):
                    if abs(dx) < CROP // 2 and abs(dy) < CROP // 2:
                        truth.append((cx + dx, cy + dy))
            out.append({
                "name": f"{sl.replace('/', '_')}_{k // (GRID * GRID)}", "slide": sl,
                "image": canvas, "mpp": mpp, "truth": np.array(truth, float),
                "area_mm2": len(part) * (CROP * mpp / 1000.0) ** 2,
            })  # fmt: skip
    return out


def tissue_images(limit: int = 0) -> list[dict]:
    from PIL import Image

    root = common.SHARED_DATA / "tissue"
    with open(root / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if limit:  # one per organ first, so a short run still sees several organs
        rows = sorted(rows, key=lambda r: (sum(1 for q in rows[: rows.index(r)]
                                               if q["organ"] == r["organ"]), r["file"]))[:limit]  # fmt: skip
    out = []
    for r in rows:
        img = np.asarray(Image.open(root / r["file"]).convert("RGB"))
        mpp = float(r["mpp"])
        out.append({"name": Path(r["file"]).stem, "organ": r["organ"], "image": img, "mpp": mpp,
                    "area_mm2": img.shape[0] * img.shape[1] * (mpp / 1000.0) ** 2})  # fmt: skip
    return out


def get_detector(args: argparse.Namespace) -> tuple[object, dict]:
    from mitoscope.detector.detector import load_detector

    if args.detector:
        return load_detector(args.detector, device="cpu"), {"trained_here": False}
    from mitoscope.train.detector import DetectorTrainConfig, train_detector

    src = {"type": "amibr", "path": str(common.SHARED_DATA / "amibr-train")}
    if args.train_limit:
        src["limit"] = args.train_limit
    out = common.CACHE / ("detector_quick.pt" if args.quick else "detector_bench.pt")
    cfg = DetectorTrainConfig(
        sources=(src,), backbone=args.backbone, epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch, batch_size=args.batch_size,
        tile_px=args.tile_px, out=str(out), threads=args.train_threads, progress=not args.quiet,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = train_detector(cfg)
    info = {"trained_here": True, "checkpoint": str(out), "train_wall_s": time.perf_counter() - t0,
            "config": {k: v for k, v in vars(cfg).items() if k != "sources"},
            "validation_metrics": res.metrics}  # fmt: skip
    return res.detector, info


def _one_tile(reader: object) -> object:
    from mitoscope.types import Region, Tile

    w, h = reader.info.width, reader.info.height  # type: ignore[attr-defined]
    return Tile(0, 0, 0, w, h, Region(0, 0, w, h))


def classical_candidates(images: list[dict], *, cascade: bool) -> tuple[list, float]:
    """Classical proposer candidates (level-0 px) per image, as detection's tile step makes
    them (with the cascade: proposed at 0.5 um/px and screened), and the seconds taken."""
    from mitoscope.candidates import get_proposer
    from mitoscope.classify.screen import load_screen
    from mitoscope.detect.tiles import process_tile
    from mitoscope.geometry import centre_to
    from mitoscope.slide import ArraySlide

    prop = get_proposer("classical")
    screen = load_screen() if cascade else None
    out, secs = [], 0.0
    c0 = time.process_time()
    for im in images:
        reader = ArraySlide(im["image"], mpp=im["mpp"], path=im["name"])
        work_mpp = im["mpp"] if abs(im["mpp"] / 0.25 - 1) <= 0.03 else 0.25
        t0 = time.perf_counter()
        work = process_tile(reader, _one_tile(reader), proposer=prop, work_mpp=work_mpp,
                            propose_mpp=screen.input_mpp if screen else None, screen=screen)  # fmt: skip
        secs += time.perf_counter() - t0
        s = work_mpp / im["mpp"]
        c = work.candidates
        out.append(np.stack([centre_to(c.x_px, s), centre_to(c.y_px, s)], 1).reshape(-1, 2))
    return out, (secs, time.process_time() - c0)


def detector_candidates(det: object, images: list[dict]) -> tuple[list, float]:
    """Detector boxes (centres, scores >= 0.01) per image and the (wall, CPU) seconds taken."""
    out, secs = [], 0.0
    c0 = time.process_time()
    for im in images:
        t0 = time.perf_counter()
        xy, _, sc = det.detect(im["image"], mpp=im["mpp"], score_threshold=0.01)  # type: ignore[attr-defined]
        secs += time.perf_counter() - t0
        out.append((xy, sc))
    return out, (secs, time.process_time() - c0)


def recall_density(images: list[dict], cands: list[np.ndarray]) -> dict:
    from mitoscope.evaluate.matching import match_points

    hit = n = 0
    for im, xy in zip(images, cands, strict=True):
        m = match_points(im["truth"], xy, radius=MATCH_UM / im["mpp"])
        hit += m.tp
        n += len(im["truth"])
    return {"recall": hit / max(n, 1), "n_truth": n,
            "per_mm2": sum(len(c) for c in cands) / sum(im["area_mm2"] for im in images)}  # fmt: skip


def run_pipeline(
    images: list[dict], proposer: object, classifier: object, screen: object = None
) -> dict:
    """``detect_slide`` on every image: detections (level 0 px) at the pipeline's threshold."""
    from mitoscope.detect import DetectConfig, detect_slide
    from mitoscope.slide import ArraySlide

    cfg = DetectConfig(report=False, cascade=screen is not None, workers=1)
    dets, secs, thr = [], 0.0, None
    c0 = time.process_time()
    for im in images:
        reader = ArraySlide(im["image"], mpp=im["mpp"], path=f"{im['name']}.png")
        t0 = time.perf_counter()
        res = detect_slide(reader, proposer=proposer, classifier=classifier, config=cfg,
                           progress=False, screen=screen)  # fmt: skip
        secs += time.perf_counter() - t0
        d = res.detections
        keep = d.mf_probability >= res.threshold
        thr = res.threshold
        dets.append(np.stack([d.x_px[keep], d.y_px[keep]], 1).reshape(-1, 2))
    return {"dets": dets, "seconds": secs, "cpu_seconds": time.process_time() - c0,
            "threshold": thr}  # fmt: skip


def detection_metrics(lab: list[dict], tis: list[dict], run_lab: dict, run_tis: dict) -> dict:
    from mitoscope.evaluate.matching import match_points

    tp = fp = fn = 0
    for im, xy in zip(lab, run_lab["dets"], strict=True):
        m = match_points(im["truth"], xy, radius=MATCH_UM / im["mpp"])
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    area = sum(im["area_mm2"] for im in lab) + sum(im["area_mm2"] for im in tis)
    secs = run_lab["seconds"] + run_tis["seconds"]
    cpu = run_lab["cpu_seconds"] + run_tis["cpu_seconds"]
    per_organ: dict[str, list[float]] = {}
    for im, xy in zip(tis, run_tis["dets"], strict=True):
        per_organ.setdefault(im["organ"], []).append(len(xy) / im["area_mm2"])
    return {
        "threshold": run_lab["threshold"],
        "f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
        "tissue_detections_per_mm2": sum(len(x) for x in run_tis["dets"])
        / sum(im["area_mm2"] for im in tis),
        "tissue_per_mm2_by_organ": {k: float(np.mean(v)) for k, v in sorted(per_organ.items())},
        "seconds": secs, "area_mm2": area, "mm2_per_s": area / secs,
        "cpu_seconds": cpu, "mm2_per_cpu_s": area / cpu,
    }  # fmt: skip


def report(res: dict) -> str:
    lines = [f"Machine: {res['machine']}; threads {res['threads']}; load {res['load']}",
             f"Data: {res['n_region_images']} region images of {res['n_val_slides']} AMi-Br "
             f"validation slides ({res['n_truth']} figures, {res['labelled_area_mm2']:.3f} mm²), "
             f"{res['n_tissue']} tissue images ({res['tissue_area_mm2']:.3f} mm²)",
             f"Detector: {res['detector']}", "", "Proposer use (candidates for the classifier):", "",
             "| candidates | recall (7.5 um) | per mm² regions | per mm² tissue | s/mm² | CPU s/mm² |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in res["proposer"]:
        lines.append(f"| {row['name']} | {row['recall']:.3f} | {row['per_mm2']:.0f} | "
                     f"{row['tissue_per_mm2']:.0f} | {row['s_per_mm2']:.1f} | "
                     f"{row['cpu_s_per_mm2']:.1f} |")  # fmt: skip
    lines += ["", "Detector recall at the classical proposer's candidate densities (regions):", ""]
    for row in res["detector_at_classical_density"]:
        lines.append(f"- {row['density_of']}: {row['per_mm2']:.0f}/mm² -> detector recall "
                     f"{row['detector_recall']:.3f} (threshold {row['threshold']:.3f}) vs "
                     f"{row['classical_recall']:.3f}")  # fmt: skip
    lines += ["", "Detector use (final detections):", "",
              "| pipeline | threshold | F1 | precision | recall | tissue det/mm² | mm²/s | mm²/CPU s |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in res["pipelines"].items():
        lines.append(f"| {name} | {m['threshold']:.3f} | {m['f1']:.3f} | {m['precision']:.3f} | "
                     f"{m['recall']:.3f} | {m['tissue_detections_per_mm2']:.0f} | "
                     f"{m['mm2_per_s']:.4f} | {m['mm2_per_cpu_s']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--detector", type=Path, default=None, help="a trained detector (skip training)"
    )
    ap.add_argument("--backbone", default="effnet_lite0")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--samples-per-epoch", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tile-px", type=int, default=320)
    ap.add_argument("--train-limit", type=int, default=0, help="first N AMi-Br crops (0 = all)")
    ap.add_argument(
        "--val-slides", type=int, default=0, help="first N validation slides (0 = all 22)"
    )
    ap.add_argument("--tissue", type=int, default=0, help="N tissue images (0 = all 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads when measuring")
    ap.add_argument("--train-threads", type=int, default=2, help="torch threads for training")
    ap.add_argument(
        "--quick", action="store_true", help="a tiny detector, a few steps, little data"
    )
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--report", type=Path, default=None, help="print a saved run")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.quick:
        args.backbone, args.epochs, args.samples_per_epoch, args.batch_size = "tiny", 1, 8, 4
        args.tile_px, args.train_limit = 128, args.train_limit or 400
        args.val_slides, args.tissue = args.val_slides or 2, args.tissue or 2

    import torch

    from mitoscope.classify import load_classifier
    from mitoscope.detector.proposer import DetectorProposer, DetectorScorer

    torch.set_num_threads(args.threads)
    lab = region_images(args.val_slides)
    tis = tissue_images(args.tissue)
    det, det_info = get_detector(args)
    torch.set_num_threads(args.threads)
    srcs = det.card.get("config", {}).get("sources") or [{"type": "amibr"}]  # type: ignore[attr-defined]
    if all(src.get("type") == "amibr" for src in srcs):  # nothing of the benchmark trained it
        held = {s.split("/", 1)[1] for s in det.card["split"]["val_slides"]}  # type: ignore[attr-defined]
        with open(common.SHARED_DATA / "amibr-train" / "labels.csv", newline="") as f:
            used = [f"{r['dataset']}/{r['slide']}" for r in csv.DictReader(f)]
        trained = set(used[: srcs[0].get("limit") or None]) - held
        if {im["slide"] for im in lab} & trained:
            if not args.quick:
                raise SystemExit("the detector trained on a benchmark slide; check the split")
            lab = [im for im in lab if im["slide"] not in trained]  # --quick: a subset trained
            if not lab:
                lab = [im for im in region_images(0) if im["slide"] not in trained][:2]
    else:
        print("note: the detector was trained on other sources; its training slides are not "
              "checked against the benchmark's", flush=True)  # fmt: skip
    area_lab = sum(im["area_mm2"] for im in lab)
    area_tis = sum(im["area_mm2"] for im in tis)
    res: dict = {
        "machine": common.machine(), "threads": args.threads, "load": common.load_avg(),
        "command": " ".join(sys.argv), "n_region_images": len(lab),
        "n_val_slides": len({im["slide"] for im in lab}), "n_truth": int(sum(len(im["truth"]) for im in lab)),
        "labelled_area_mm2": area_lab, "n_tissue": len(tis), "tissue_area_mm2": area_tis,
        "detector": f"{det.card.get('backbone')} FCOS, threshold {det.threshold:.3f}, "  # type: ignore[attr-defined]
        f"proposer threshold {det.proposer_threshold:.3f}", "detector_info": det_info,  # type: ignore[attr-defined]
    }  # fmt: skip
    # 1. proposer use
    rows = []
    for name, casc in (("classical (0.25 um/px)", False), ("classical + cascade screen", True)):
        cl, s1 = classical_candidates(lab, cascade=casc)
        ct, s2 = classical_candidates(tis, cascade=casc)
        rd = recall_density(lab, cl)
        rows.append({"name": name, **rd, "tissue_per_mm2": sum(len(c) for c in ct) / area_tis,
                     "s_per_mm2": (s1[0] + s2[0]) / (area_lab + area_tis),
                     "cpu_s_per_mm2": (s1[1] + s2[1]) / (area_lab + area_tis)})  # fmt: skip
    dl, s1 = detector_candidates(det, lab)
    dt, s2 = detector_candidates(det, tis)
    det_s_per_mm2 = (s1[0] + s2[0]) / (area_lab + area_tis)
    det_cpu_per_mm2 = (s1[1] + s2[1]) / (area_lab + area_tis)
    thresholds = sorted({0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7,
                         round(det.proposer_threshold, 4), round(det.threshold, 4)})  # type: ignore[attr-defined]  # fmt: skip
    curve = []
    for t in thresholds:
        rd = recall_density(lab, [xy[sc >= t] for xy, sc in dl])
        row = {"name": f"detector, score >= {t:g}", "threshold": t, **rd,
               "tissue_per_mm2": sum(int((sc >= t).sum()) for _, sc in dt) / area_tis,
               "s_per_mm2": det_s_per_mm2, "cpu_s_per_mm2": det_cpu_per_mm2}  # fmt: skip
        curve.append(row)
    res["proposer"] = rows + curve
    # the detector's recall at the classical densities (threshold matching the density)
    fine = np.unique(np.concatenate([[0.01], *[sc for _, sc in dl]]))
    at = []
    for row in rows:
        best = None
        for t in fine:  # the lowest threshold whose density does not exceed the classical one
            n = sum(int((sc >= t).sum()) for _, sc in dl)
            if n / area_lab <= row["per_mm2"]:
                best = t
                break
        t = float(fine[-1] if best is None else best)
        rd = recall_density(lab, [xy[sc >= t] for xy, sc in dl])
        at.append({"density_of": row["name"], "per_mm2": row["per_mm2"], "threshold": t,
                   "detector_recall": rd["recall"], "classical_recall": row["recall"]})  # fmt: skip
    res["detector_at_classical_density"] = at
    # 2. detector use: the product path
    clf = load_classifier(device="cpu")
    from mitoscope.candidates import get_proposer
    from mitoscope.classify.screen import load_screen

    pipes = {  # name: (proposer, classifier, cascade screen), every model loaded once
        "classical + cascade + bundled classifier (default)": (
            get_proposer("classical"), clf, load_screen()),
        "detector proposer + bundled classifier": (DetectorProposer(detector=det), clf, None),
        "detector alone (--mode detector)": (
            DetectorProposer(detector=det, score_threshold=min(0.05, det.threshold)),  # type: ignore[attr-defined]
            DetectorScorer(det), None),
    }  # fmt: skip
    res["pipelines"] = {}
    for name, (prop, c, scr) in pipes.items():
        if not args.quiet:
            print(f"running: {name}", flush=True)
        rl = run_pipeline(lab, prop, c, scr)
        rt = run_pipeline(tis, prop, c, scr)
        res["pipelines"][name] = detection_metrics(lab, tis, rl, rt)
    print(report(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
