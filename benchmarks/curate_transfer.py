"""Registration error and DAB separation of ``curate rescan`` / ``curate phh3`` on real images.

Paired scans are not available, so each case warps a real image by a known similarity
transform (rotation, shift, the scale of another pixel size) and measures, in micrometres of the
target, how far the transferred points land from where the transform puts them:

- ``he/<image>``: real H&E images from ../shared (MoNuSeg tissue at 0.2527 um/px; the Aperio
  sample slide at 0.499 um/px) against themselves re-scanned at another pixel size;
- ``ihc-cross-stain``: scikit-image's real IHC image (haematoxylin + DAB; no pixel size, 0.5
  um/px given) against a haematoxylin-only rendering of itself at 0.46 um/px (the H&E of a
  pHH3 pair), features on the haematoxylin channel.

DAB separation (``skimage.color.rgb2hed``, threshold 0.5 decadic OD and DAB above the other
stains): positive fraction and objects on the IHC image, on its DAB-only and
haematoxylin-only renderings, and on the 30 real H&E images of ../shared/data/tissue (no DAB:
every positive is counterstain leak), per mm².

    python benchmarks/curate_transfer.py [--quick] [--json out.json]
    python benchmarks/curate_transfer.py --dab-only [--json out.json]   # the DAB part only
    python benchmarks/curate_transfer.py --examples DIR   # the docs' worked-example files

``--quick``: one MoNuSeg image, 15 points per case, a 1,000 px square of the Aperio slide and
five tissue images for the DAB check. ``--examples DIR`` writes
the files of docs/curate-rescan.md and docs/curate-phh3.md and exits: ``case.png`` (a real
breast H&E image, MoNuSeg, with four real AMi-Br mitotic figures placed at the positions in
``labels.csv``), ``case_rescan.png`` (it rotated 3 deg, shifted, resampled to 0.24 um/px, one
area blurred by sigma 2 um over two figures), ``ihc_phh3.png`` (scikit-image's IHC image) and
``ihc_he.png`` (its haematoxylin-only rendering rotated 6 deg at 0.46 um/px).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _warp(img: np.ndarray, mpp_s: float, mpp_t: float, rot: float, shift: tuple[float, float]):
    from skimage.transform import SimilarityTransform, warp

    s = mpp_s / mpp_t
    true = SimilarityTransform(rotation=np.deg2rad(rot), scale=s, translation=shift)
    shape = (int(img.shape[0] * s) + 20, int(img.shape[1] * s) + 20)
    out = warp(img, true.inverse, output_shape=shape, cval=1.0, order=1)
    return (out * 255 + 0.5).astype(np.uint8), true


def registration_case(name, img, mpp_s, mpp_t, *, channel="od", n=40, seed=0):
    from mitoscope.curate.registration import transfer_points
    from mitoscope.slide.reader import ArraySlide

    warped, true = _warp(img, mpp_s, mpp_t, rot=5.0, shift=(40.0, -25.0))
    src = ArraySlide(img, mpp=mpp_s, path="source.png")
    tgt = ArraySlide(warped, mpp=mpp_t, path="target.png")
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    pts = np.column_stack([rng.uniform(0.15 * w, 0.85 * w, n), rng.uniform(0.15 * h, 0.85 * h, n)])
    t0 = time.perf_counter()
    moved = transfer_points(src, tgt, pts, channel=channel)
    dt = time.perf_counter() - t0
    slide_err = np.hypot(*(moved.slide.map(pts) - true(pts)).T) * mpp_t
    err = np.hypot(*(moved.xy - true(pts)).T) * mpp_t
    s = moved.summary()
    return {
        "case": name,
        "source_mpp": mpp_s,
        "target_mpp": mpp_t,
        "points": n,
        "patch_registered": s["patch_registered"],
        "true_error_um_slide_level": {
            "mean": round(float(slide_err.mean()), 3),
            "max": round(float(slide_err.max()), 3),
        },
        "true_error_um": {"mean": round(float(err.mean()), 3), "max": round(float(err.max()), 3)},
        "reported_residual_median_um": s["residual_median_um"],
        "seconds": round(dt, 1),
    }


def dab_numbers(quick: bool) -> dict:
    import csv

    from skimage import data
    from skimage.color import hed2rgb, rgb2hed

    from mitoscope.curate.phh3 import dab_mask, detect_dab

    ihc = data.immunohistochemistry()
    hed = rgb2hed(ihc)
    h, d = hed.copy(), hed.copy()
    h[..., 1:] = 0
    d[..., :2] = 0
    h_only, d_only = ((hed2rgb(x) * 255).clip(0, 255).astype(np.uint8) for x in (h, d))
    pos, d_pos = dab_mask(ihc), dab_mask(d_only)
    r, b = ihc[..., 0].astype(float), ihc[..., 2].astype(float)
    out = {
        "ihc_positive_fraction": round(float(pos.mean()), 4),
        "ihc_objects_10_250_um2_at_0.5um": len(detect_dab(ihc, 0.5)),
        "ihc_mean_rgb_positive": [round(float(v)) for v in ihc[pos].mean(axis=0)],
        "ihc_mean_rgb_negative": [round(float(v)) for v in ihc[~pos].mean(axis=0)],
        "ihc_red_minus_blue_positive": round(float((r - b)[pos].mean()), 1),
        "ihc_red_minus_blue_negative": round(float((r - b)[~pos].mean()), 1),
        "dab_only_rendering_mask_iou": round(float((pos & d_pos).sum() / (pos | d_pos).sum()), 4),
        "haematoxylin_only_rendering_positive_fraction": float(dab_mask(h_only).mean()),
        "haematoxylin_only_rendering_objects": len(detect_dab(h_only, 0.5)),
    }
    rows = list(csv.DictReader(open(SHARED / "tissue" / "images.csv")))
    if quick:
        rows = rows[:5]
    per = []
    for row in rows:
        img = _rgb(SHARED / "tissue" / row["file"])
        mpp = float(row["mpp"])
        obj = detect_dab(img, mpp)
        area_mm2 = img.shape[0] * img.shape[1] * (mpp / 1000.0) ** 2
        per.append((float(dab_mask(img).mean()), len(obj) / area_mm2, row["file"]))
    fr = np.array([p[0] for p in per])
    dens = np.array([p[1] for p in per])
    worst = max(per, key=lambda p: p[1])
    out["he_images"] = len(per)
    out["he_positive_fraction_median"] = round(float(np.median(fr)), 5)
    out["he_positive_fraction_max"] = round(float(fr.max()), 5)
    out["he_false_objects_per_mm2_median"] = round(float(np.median(dens)), 1)
    out["he_false_objects_per_mm2_max"] = round(float(dens.max()), 1)
    out["he_worst_image"] = worst[2]
    return out


def write_examples(d: Path) -> None:
    """The worked-example files of the docs (see the module docstring)."""
    import csv

    from PIL import Image
    from scipy import ndimage as ndi
    from skimage import data
    from skimage.color import hed2rgb, rgb2hed

    d.mkdir(parents=True, exist_ok=True)
    img = _rgb(SHARED / "tissue" / "images" / "TCGA-A7-A13E-01Z-00-DX1.png")[:800, :800].copy()
    table = SHARED / "amibr-train" / "labels.csv"
    rows = [r for r in csv.DictReader(open(table)) if r["dataset"] == "TUPAC16"]
    pts = [(220.0, 230.0), (360.0, 270.0), (560.0, 560.0), (660.0, 610.0)]
    for (x, y), i in zip(pts, (0, 4, 5, 7), strict=True):
        crop = _rgb(table.parent / rows[i]["file"])
        h = crop.shape[0] // 2
        img[int(y) - h : int(y) + h, int(x) - h : int(x) + h] = crop
    re, true = _warp(img, 0.2527, 0.24, rot=3.0, shift=(30.0, -15.0))
    ref = re.astype(np.float64)
    blurred = ndi.gaussian_filter(ref, (2.0 / 0.24, 2.0 / 0.24, 0))
    cx, cy = true(np.array(pts[2:])).mean(axis=0)
    yy, xx = np.mgrid[: re.shape[0], : re.shape[1]]
    area = np.hypot(xx - cx, yy - cy) < 40.0 / 0.24
    ref[area] = blurred[area]
    Image.fromarray(img).save(d / "case.png")
    Image.fromarray((ref + 0.5).clip(0, 255).astype(np.uint8)).save(d / "case_rescan.png")
    with open(d / "labels.csv", "w") as fh:
        fh.write("image,x,y,label\n")
        fh.writelines(f"case.png,{x},{y},mitotic figure\n" for x, y in pts)
    ihc = data.immunohistochemistry()
    hed = rgb2hed(ihc)
    hed[..., 1:] = 0
    h_only = (hed2rgb(hed) * 255).clip(0, 255).astype(np.uint8)
    he, _ = _warp(h_only, 0.5, 0.46, rot=-6.0, shift=(25.0, 30.0))
    Image.fromarray(ihc).save(d / "ihc_phh3.png")
    Image.fromarray(he).save(d / "ihc_he.png")
    np.savetxt(d / "true_rescan_matrix.txt", true.params)
    print(f"wrote the example files to {d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--examples", type=Path, help="write the docs' example files here and exit")
    ap.add_argument("--dab-only", action="store_true", help="only the DAB separation numbers")
    args = ap.parse_args()
    if args.examples:
        write_examples(args.examples)
        return
    if args.dab_only:
        dab = dab_numbers(args.quick)
        print(json.dumps(dab, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"dab": dab}, indent=2) + "\n")
        return
    from skimage import data

    from mitoscope.slide.reader import open_slide

    cases = []
    names = ["TCGA-18-5592-01Z-00-DX1.png"]
    if not args.quick:
        names += ["TCGA-A7-A13E-01Z-00-DX1.png", "TCGA-21-5784-01Z-00-DX1.png"]
    n = 15 if args.quick else 40
    for name in names:
        img = _rgb(SHARED / "tissue" / "images" / name)
        cases.append(registration_case(f"he/{name}", img, 0.2527, 0.23, n=n))
        print(json.dumps(cases[-1]), flush=True)
    with open_slide(SHARED / "slides" / "cmu_small_region.svs") as s:
        svs = s.read_region((0, 0), 0, (s.info.width, s.info.height))
        mpp = s.info.mpp
    if args.quick:
        svs = svs[:1000, :1000]
    cases.append(registration_case("he/cmu_small_region.svs", svs, mpp, 0.46, n=n))
    print(json.dumps(cases[-1]), flush=True)
    from skimage.color import hed2rgb, rgb2hed

    ihc = data.immunohistochemistry()
    hed = rgb2hed(ihc)
    hed[..., 1:] = 0
    h_only = (hed2rgb(hed) * 255).clip(0, 255).astype(np.uint8)
    # source: the IHC (the pHH3 slide); target: the haematoxylin rendering (the H&E)
    from mitoscope.curate.registration import transfer_points
    from mitoscope.slide.reader import ArraySlide

    warped, true = _warp(h_only, 0.5, 0.46, rot=5.0, shift=(40.0, -25.0))
    rng = np.random.default_rng(0)
    pts = rng.uniform(80, 430, (n, 2))
    moved = transfer_points(
        ArraySlide(ihc, mpp=0.5, path="ihc.png"),
        ArraySlide(warped, mpp=0.46, path="h.png"),
        pts,
        channel="haematoxylin",
    )
    err = np.hypot(*(moved.xy - true(pts)).T) * 0.46
    cases.append(
        {
            "case": "ihc-cross-stain (haematoxylin channel)",
            "points": n,
            "true_error_um": {
                "mean": round(float(err.mean()), 3),
                "max": round(float(err.max()), 3),
            },
            "reported_residual_median_um": moved.summary()["residual_median_um"],
        }
    )
    print(json.dumps(cases[-1]), flush=True)
    dab = dab_numbers(args.quick)
    print(json.dumps(dab, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"registration": cases, "dab": dab}, indent=2) + "\n")


if __name__ == "__main__":
    main()
