"""Cascade: what the screen costs in recall and what it saves, end to end on unseen slides.

Runs ``detect_slide`` with the bundled classifier twice on every AMi-Br training crop of the
bundled models' **validation slides** (the 22 slides of ``slide_split(val_fraction=0.15,
seed=0)``: neither the classifier nor the screen trained on them; their thresholds were chosen
there): once without the cascade (propose at 0.25 um/px, classify every candidate) and once with
it (propose at 0.5 um/px, screen, classify the kept ones). Crops are reflect-padded by 32 px;
only objects centred inside the crop count. Ground truth: the crop's centre figure plus the other
mitotic figures listed for it in ``amibr_train_crop_neighbours.csv``; the sources label every
figure, so every other detection is a false positive. Matching: the project's MIDOG matcher
(:func:`mitoscope.evaluate.matching.match_points`, 7.5 um).

A third pass is out of sample for the screen: its threshold is re-chosen (as
``mitoscope.train.screen_train`` does) on one half of the validation slides and applied to the
other half, both ways. Reported per mode: candidate recall (a classified candidate within 7.5 um of the figure),
detection recall / precision / F1 at the classifier's threshold, candidates classified, seconds;
and the cascade's relative recall loss. Also the share of candidates the screen discards on two
real images of ordinary tissue (the bundled skin sample slide and a 1000 x 1000 H&E image).

Run::

    .venv/bin/python benchmarks/cascade_recall.py [--threads 1] [--json out.json] [--model M.pt]

Per mode it also reports each threshold's detection recall and the highest threshold that keeps
``--target-recall`` (0.93) of the figures end to end (proposer, screen, classifier, merging).
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
PAD = 32


def _val_slides(rows: list[dict]) -> set[str]:
    from mitoscope.train.data import slide_split

    slides = np.array([f"{r['dataset']}/{r['slide']}" for r in rows])
    _, va = slide_split(slides, val_fraction=0.15, seed=0)
    return set(slides[va].tolist())


def validation_crops() -> tuple[list[dict], dict[str, list[tuple[float, float]]]]:
    """The AMi-Br crops of the 22 validation slides (labels.csv rows) and, per crop file, the
    offsets (px) of the other mitotic figures listed inside it."""
    with open(common.SHARED_DATA / "amibr-train" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = _val_slides(rows)
    rows = [r for r in rows if f"{r['dataset']}/{r['slide']}" in val]
    nb: dict[str, list[tuple[float, float]]] = {}
    with open(common.SHARED_DATA / "annotations" / "amibr_train_crop_neighbours.csv") as f:
        for r in csv.DictReader(f):
            if r["neighbour_class"] == "MF":
                nb.setdefault(r["crop_file"], []).append((float(r["dx_px"]), float(r["dy_px"])))
    return rows, nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N validation crops (0 = all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--model", type=Path, default=None, help="classifier (default: the bundled one)"
    )
    ap.add_argument(
        "--target-recall",
        type=float,
        default=0.93,
        help="also report, per mode, the highest threshold whose detection recall is at least this",
    )
    ap.add_argument(
        "--write-threshold",
        action="store_true",
        help="set the measured model's MF threshold to the cascade mode's threshold for "
        "--target-recall (the end-to-end operating point; the rule goes into its card)",
    )
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from mitoscope.classify import load_classifier
    from mitoscope.classify.screen import load_screen
    from mitoscope.detect import DetectConfig, detect_slide
    from mitoscope.evaluate.matching import match_points
    from mitoscope.slide import ArraySlide, open_slide
    from mitoscope.train.metrics import threshold_at_recall

    torch.set_num_threads(args.threads)
    root = common.SHARED_DATA / "amibr-train"
    rows, nb = validation_crops()
    val = {f"{r['dataset']}/{r['slide']}" for r in rows}
    if args.limit:
        rows = rows[: args.limit]

    clf = load_classifier(args.model, device="cpu")
    screen = load_screen()
    thr = clf.threshold
    modes = {
        "no cascade (propose at 0.25 um/px, classify all)": DetectConfig(
            floor=0.0, report=False, cascade=False
        ),
        "cascade (propose at 0.5 um/px, screen, classify kept)": DetectConfig(
            floor=0.0, report=False, cascade=True
        ),
    }
    # out of sample: the screen's threshold re-chosen (as screen_train does) on one half of the
    # validation slides and used on the other half, both ways
    from dataclasses import replace as dc_replace

    from mitoscope.train.screen_train import build_screen_samples, crop_figures, figure_threshold

    target = float(screen.card.get("metrics", {}).get("target_recall", 0.995))
    nb_csv = common.SHARED_DATA / "annotations" / "amibr_train_crop_neighbours.csv"
    vcrops = [c for c in crop_figures(root, nb_csv) if c["slide"] in val]
    ss = build_screen_samples(
        vcrops, screen_mpp=screen.input_mpp, size_px=screen.patch_size_px + 8, progress=False
    )
    sc = screen.scores(ss.patches, ss.masks)
    vs = np.array(sorted(val))
    perm = np.random.default_rng(1).permutation(vs)
    halves = [set(perm[: len(perm) // 2].tolist()), set(perm[len(perm) // 2 :].tolist())]
    half_screens = {}
    for a, b in ((0, 1), (1, 0)):
        figs_a = np.flatnonzero(np.isin(ss.figure_slide, list(halves[a])))
        thr_a = figure_threshold(sc, ss.figure, figs_a, target)
        for sl in halves[b]:
            half_screens[sl] = dc_replace(screen, threshold=thr_a)
    oos = "cascade, screen threshold from the other half of the slides (out of sample)"
    modes[oos] = DetectConfig(floor=0.0, report=False, cascade=True)
    stats = {
        m: {
            "tp": 0,
            "fp": 0,
            "fn": 0,
            "cand_hit": 0,
            "n_cand": 0,
            "n_prop": 0,
            "s": 0.0,
            "best": [],
        }
        for m in modes
    }
    n_truth = 0
    for r in rows:
        mpp = slide_mpp(r["dataset"], r["slide"])
        img = np.asarray(Image.open(root / r["file"]).convert("RGB"))
        h, w = img.shape[:2]
        padded = np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
        cx, cy = w // 2 + PAD, h // 2 + PAD
        truth = [(cx, cy)]
        for dx, dy in nb.get(Path(r["file"]).name, []):
            if 0 <= w // 2 + dx < w and 0 <= h // 2 + dy < h:
                truth.append((cx + dx, cy + dy))
        truth_um = np.array(truth, float) * mpp
        n_truth += len(truth)
        for name, cfg in modes.items():
            reader = ArraySlide(padded, mpp=mpp, path=r["file"])
            t0 = time.perf_counter()
            scr = None
            if cfg.cascade:
                scr = half_screens[f"{r['dataset']}/{r['slide']}"] if name == oos else screen
            res = detect_slide(
                reader, classifier=clf, screen=scr, config=cfg, progress=False,
            )  # fmt: skip
            st = stats[name]
            st["s"] += time.perf_counter() - t0
            d = res.detections
            inside = (d.x_px >= PAD) & (d.x_px < PAD + w) & (d.y_px >= PAD) & (d.y_px < PAD + h)
            pts = np.column_stack([d.x_px, d.y_px])[inside] * mpp
            probs = d.mf_probability[inside]
            st["n_cand"] += int(inside.sum())
            st["n_prop"] += int(res.stats.n_proposed)
            st["cand_hit"] += match_points(truth_um, pts, radius=MATCH_UM).tp
            # each figure's best-scoring detection within the matching radius (0: none): the
            # detection recall at any threshold t is the share of figures whose best is >= t
            for tx, ty in truth_um:
                near = np.hypot(pts[:, 0] - tx, pts[:, 1] - ty) <= MATCH_UM
                st["best"].append(float(probs[near].max()) if near.any() else 0.0)
            m = match_points(truth_um, pts[probs >= thr], radius=MATCH_UM)
            st["tp"] += m.tp
            st["fp"] += m.fp
            st["fn"] += m.fn
    out: dict = {
        "crops": len(rows),
        "figures": n_truth,
        "slides": len(val),
        "threshold": thr,
        "modes": {},
    }
    for name, st in stats.items():
        tp, fp, fn = st["tp"], st["fp"], st["fn"]
        out["modes"][name] = {
            "candidate_recall": st["cand_hit"] / n_truth,
            "recall": tp / n_truth,
            "precision": tp / max(1, tp + fp),
            "f1": 2 * tp / max(1, 2 * tp + fp + fn),
            "tp": tp,
            "fp": fp,
            "candidates_classified": st["n_cand"],
            "proposed": st["n_prop"],
            "seconds": round(st["s"], 1),
            f"threshold_at_recall_{args.target_recall}": threshold_at_recall(
                np.ones(len(st["best"]), bool), np.array(st["best"]), args.target_recall
            ),
            "recall_at": {
                f"{t:.2f}": float(np.mean(np.array(st["best"]) >= t))
                for t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
            },
        }
    a, b, c = (out["modes"][k] for k in modes)
    out["relative_recall_loss"] = 1.0 - b["recall"] / a["recall"] if a["recall"] else float("nan")
    out["relative_candidate_recall_loss"] = 1.0 - b["candidate_recall"] / a["candidate_recall"]
    out["relative_recall_loss_out_of_sample"] = 1.0 - c["recall"] / a["recall"]
    out["relative_candidate_recall_loss_out_of_sample"] = (
        1.0 - c["candidate_recall"] / a["candidate_recall"]
    )

    # ordinary tissue: how much of the classifier's work the screen removes
    ordinary = {}
    for label, path, mpp in (
        ("bundled sample slide (skin, 0.499 um/px)", common.SHARED_DATA / "slides" / "cmu_small_region.svs", None),
        ("tiatoolbox_target_image.png (1000 x 1000)", common.SHARED_DATA / "slides" / "tiatoolbox_target_image.png", 0.25),
    ):  # fmt: skip
        with open_slide(path, mpp=mpp) as rd:
            res = detect_slide(
                rd, classifier=clf, screen=screen,
                config=DetectConfig(floor=0.0, report=False, cascade=True), progress=False,
            )  # fmt: skip
        st = res.stats
        ordinary[label] = {
            "proposed": st.n_proposed,
            "screened_out": st.n_screened_out,
            "discarded_share": st.n_screened_out / max(1, st.n_proposed),
            "tissue_mm2": res.tissue_area_mm2,
        }
    out["ordinary_tissue"] = ordinary
    print(json.dumps(out, indent=2))
    print()
    key = f"threshold_at_recall_{args.target_recall}"
    print(
        "| mode | candidate recall | recall @ thr | precision | F1 | candidates classified | s "
        f"| threshold for recall {args.target_recall} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, m in out["modes"].items():
        print(
            f"| {name} | {m['candidate_recall']:.4f} | {m['recall']:.4f} | {m['precision']:.4f} "
            f"| {m['f1']:.4f} | {m['candidates_classified']} | {m['seconds']} | {m[key]:.4f} |"
        )
    print(
        f"\nrelative recall loss of the cascade at the threshold: {out['relative_recall_loss']:.2%}"
        f" (out of sample: {out['relative_recall_loss_out_of_sample']:.2%}); candidate recall "
        f"loss {out['relative_candidate_recall_loss']:.2%} (out of sample: "
        f"{out['relative_candidate_recall_loss_out_of_sample']:.2%})"
    )
    for label, o in ordinary.items():
        print(f"{label}: screen discards {o['discarded_share']:.1%} of {o['proposed']} proposed")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.write_threshold:
        from mitoscope.classify.checkpoint import default_model_path, set_threshold

        casc = out["modes"]["cascade (propose at 0.5 um/px, screen, classify kept)"]
        t = float(casc[key])
        target = args.model or default_model_path()
        set_threshold(
            target,
            t,
            rule=f"MF: the highest threshold at which `mitoscope detect` (classical proposer, "
            f"cascade screen, this classifier, merging) finds {args.target_recall} of the "
            f"{n_truth} labelled figures of the {len(val)} validation slides "
            "(benchmarks/cascade_recall.py --write-threshold)",
            evidence={
                "target_recall": args.target_recall,
                "figures": n_truth,
                "validation_slides": len(val),
                "recall_at": casc["recall_at"],
                "threshold": t,
            },
        )
        print(f"threshold of {target} set to {t:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
