"""Throughput of ``mitoscope detect`` against decoding the slide (issues 7 and 13).

Two kinds of benchmark slide, both pyramidal JPEG TIFFs at 0.25 um/px built once and cached in
``benchmarks/.cache``:

* ``--slide tissue`` (default, issue 13): **real tissue at realistic density**. The 30 MoNuSeg
  images of ordinary tumour tissue in ../shared/data/tissue (7 organs, 0.2527 um/px) are
  resampled to 0.25 um/px by their own pixel size and tiled over the slide, each 240 um cell a
  random image in a random flip/rotation, visible only inside irregular tissue islands (blobs
  with lobed borders and small fragments) on glass of (240, 240, 240) with slight noise, as
  sections lie on a real slide (:func:`mitoscope.synth.build_tissue_slide`). ``--tissue-mm2``
  sets the tissue area (several values: a sweep in one run, e.g. ``10,50,150``); the slide is
  square, tissue on about 40% of it and at least 40,000 px a side (10 mm² -> 40,960 px, 50 ->
  45,056 px, 150 -> 77,824 px).
* ``--slide mosaic`` (issue 7, the worst case, reported and not targeted): a mosaic of the
  AMi-Br crops, each centred on a mitotic figure (about 1,150 mitoses per mm², 50-1,000 times a
  real tumour), ``--size`` px a side, half of it tissue (:mod:`mitoscope.synth`).

For each slide, in one run:

(a) decode only: every tissue tile of the default plan (256 um tiles, 32 um overlap) read with bare
    OpenSlide, in ``--workers`` processes (the same cores ``detect`` gets) -> mm² of tissue / s;
(b) ``mitoscope detect SLIDE --out TMP --workers N --device cpu`` end to end in a subprocess
    (wall clock, including start-up, tissue detection, outputs and the HTML report) -> mm²/s,
    its share of (a), peak RSS of its process tree, and the stage split per tile from its own
    ``summary.json`` (``timing_s``: read, propose, screen, classify, contours, measured in the
    workers);
(c) optionally the OMG-Net SAM ViT-H proposer's cost per mm² on this CPU (random weights; image
    encoder + one 64-prompt batch of the 64 x 64 point grid on one 1024 x 1024 tile, extrapolated
    to the grid and to mm² of tile core), or read from ``benchmarks/sam_cost.py``'s JSON
    (``--sam-json``); ``--skip-sam`` leaves it out.

``--stages N`` also times the stages on N tiles in this process and the previous (issue 7)
path on the same tiles. ``--single-level`` builds the slide without reduced levels (a flat
tiled TIFF: tissue detection and the report must then shrink level 0 themselves) to check that
peak memory stays bounded and the tissue pass uses the workers when nothing is pyramidal;
``--report F`` re-prints the tables of a run saved with ``--json F``. Run::

    .venv/bin/python benchmarks/throughput.py --tissue-mm2 10,50,150 --workers 2 --skip-sam
    .venv/bin/python benchmarks/throughput.py --slide mosaic --size 40000 --workers 2 --skip-sam
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def _decode_part(args: tuple[str, list[tuple[int, int, int, int]]]) -> float:
    import numpy as np
    import openslide

    path, tiles = args
    s = openslide.OpenSlide(path)
    t0 = time.perf_counter()
    for x, y, w, h in tiles:
        np.asarray(s.read_region((x, y), 0, (w, h)))
    dt = time.perf_counter() - t0
    s.close()
    return dt


def decode_only(path: Path, workers: int) -> dict:
    """Read every tissue tile with bare OpenSlide in ``workers`` processes."""
    import multiprocessing as mp

    from mitoscope.slide import detect_tissue, open_slide, plan_tiles

    with open_slide(path) as r:
        tissue = detect_tissue(r)
        tiles = plan_tiles(r.info, tissue)
    boxes = [(t.x, t.y, t.width, t.height) for t in tiles]
    parts = [(str(path), boxes[i::workers]) for i in range(workers)]
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pool.map(_decode_part, [(str(path), boxes[:2])] * workers)  # warm-up (page cache)
        t0 = time.perf_counter()
        pool.map(_decode_part, parts)
        wall = time.perf_counter() - t0
    mpix = sum(w * h for _, _, w, h in boxes) / 1e6
    return {
        "tissue_mm2": tissue.area_mm2,
        "tiles": len(boxes),
        "mpix": mpix,
        "seconds": wall,
        "mm2_per_s": tissue.area_mm2 / wall,
    }


def detect_end_to_end(path: Path, workers: int, extra: list[str]) -> dict:
    model_args, model_desc = common.benchmark_model()
    exe = Path(sys.executable).with_name("mitoscope")
    with tempfile.TemporaryDirectory(dir=common.CACHE) as tmp:
        cmd = [str(exe), "detect", str(path), "--out", tmp, "--workers", str(workers)]
        cmd += ["--device", "cpu", "--quiet", *model_args, *extra]
        res = common.run_measured(cmd)
        summary = json.loads((Path(tmp) / f"{path.stem}.summary.json").read_text())
    res["cmd"] = " ".join(
        "SLIDE" if c == str(path) else ("OUT" if c == tmp else c) for c in res["cmd"]
    )
    res["model"] = model_desc
    res["summary"] = {
        k: summary.get(k)
        for k in (
            "tissue_area_mm2",
            "n_proposed",
            "n_screened_out",
            "n_candidates",
            "n_scored_above_floor",
            "n_mitoses",
            "n_tiles",
            "seconds",
            "timing_s",
        )
    }
    res["mm2_per_s"] = summary["tissue_area_mm2"] / res["seconds"]
    return res


def sam_vit_h_cost(points_per_side: int = 64, points_per_batch: int = 64) -> dict:
    """OMG-Net's SAM ViT-H proposer on this CPU: random weights (``vit_h`` built without a
    checkpoint: the same computation), image encoder once on a real 1024 x 1024 H&E tile, one
    batch of ``points_per_batch`` point prompts through the mask decoder (3 masks each,
    upsampled to the tile as the automatic mask generator does), extrapolated to the
    ``points_per_side``² grid; seconds per mm² over the tile core of the default plan."""
    import numpy as np
    import torch
    from PIL import Image
    from segment_anything import SamPredictor, sam_model_registry

    img = np.asarray(
        Image.open(common.SHARED_DATA / "slides" / "tiatoolbox_target_image.png").convert("RGB")
    )
    img = np.pad(img, ((0, 24), (0, 24), (0, 0)), mode="reflect")[:1024, :1024]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = sam_model_registry["vit_h"](checkpoint=None).eval()
    build = time.perf_counter() - t0
    pred = SamPredictor(model)
    with torch.inference_mode():
        t0 = time.perf_counter()
        pred.set_image(img)
        enc = time.perf_counter() - t0
        g = (np.arange(points_per_side) + 0.5) / points_per_side * 1024
        pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)[:points_per_batch]
        coords = pred.transform.apply_coords(pts, img.shape[:2])
        pc = torch.as_tensor(coords, dtype=torch.float)[:, None, :]
        pl = torch.ones(pc.shape[0], 1, dtype=torch.int)
        t0 = time.perf_counter()
        masks, iou, _ = pred.predict_torch(pc, pl, multimask_output=True, return_logits=True)
        dec = time.perf_counter() - t0
    n_batches = points_per_side**2 / points_per_batch
    per_tile = enc + dec * n_batches
    core_mm2 = ((256.0 - 32.0) / 1000.0) ** 2
    return {
        "source": "throughput.py sam_vit_h_cost (random-weight vit_h)",
        "build_seconds": build,
        "vit_h_encoder_seconds": enc,
        "decoder_seconds_per_batch": dec,
        "batches_per_tile": n_batches,
        "vit_h_seconds_per_tile": per_tile,
        "vit_h_seconds_per_mm2": per_tile / core_mm2,
        "mm2_per_s": core_mm2 / per_tile,
    }


def sam_cost(path: Path | None) -> dict:
    if path is None:
        return sam_vit_h_cost()
    d = json.loads(path.read_text())
    h = d["vit_h"]
    est = h["amg_estimate"]
    return {
        "source": str(path),
        "vit_h_encoder_seconds": h["encoder_float32"]["wall_s"],
        "vit_b_amg_seconds_per_tile": d["vit_b"]["amg"]["seconds_per_tile"]
        if "seconds_per_tile" in d["vit_b"]["amg"]
        else None,
        "vit_h_seconds_per_tile": est["seconds_per_tile_estimate"],
        "vit_h_seconds_per_mm2": est["seconds_per_mm2_core_estimate"],
        "mm2_per_s": 1.0 / est["seconds_per_mm2_core_estimate"],
    }


def stage_split(path: Path, n_tiles: int) -> dict:
    """Per-tile seconds of each stage, in this process, on the first ``n_tiles`` tissue tiles:
    the current path (read at 0.25 um/px, downsample + propose at 0.5, screen, classify the kept
    candidates with ONNX Runtime) and, on the same tiles, the previous path (propose at 0.25 um/px,
    classify every candidate with eager torch) as the baseline; plus one member's ms per crop in
    torch float32, torch bfloat16 autocast and ONNX Runtime. One thread, as in a detect worker."""
    import numpy as np
    import torch

    from mitoscope.candidates import get_proposer
    from mitoscope.candidates.tiles import downsample as _downsample
    from mitoscope.candidates.tiles import upscale_candidates as _upscale_candidates
    from mitoscope.classify import load_classifier
    from mitoscope.classify.patches import extract_patches
    from mitoscope.classify.screen import load_screen
    from mitoscope.slide import detect_tissue, open_slide, plan_tiles

    torch.set_num_threads(1)  # as in a detect worker process: one thread
    model_args, model_desc = common.benchmark_model()
    mpath = model_args[1] if model_args else None
    clf = load_classifier(mpath, device="cpu", backend="onnx")
    clf_torch = load_classifier(mpath, device="cpu", backend="torch")
    clf_torch.atypical_views = 1  # the previous path had no atypical test-time augmentation
    screen = load_screen()
    prop = get_proposer("classical")
    clock = time.perf_counter
    t = dict.fromkeys(("read", "downsample", "propose", "screen", "classify"), 0.0)
    base = {"propose": 0.0, "classify": 0.0}
    n_prop = n_kept = n_base = n_mit = 0
    wm = clf.input_mpp
    with open_slide(path) as r:
        tiles = plan_tiles(r.info, detect_tissue(r))[:n_tiles]
        for tile in tiles:
            a = clock()
            img = r.read_region_mpp(tile.region, wm)
            b = clock()
            small, fx, fy = _downsample(img, wm, screen.input_mpp)
            c = clock()
            cands = prop.propose(small, mpp=wm * fx)
            d = clock()
            p, m = extract_patches(
                small, cands.x_px, cands.y_px, screen.patch_size_px, candidates=cands
            )
            keep = screen.keep(p, m)
            kept = _upscale_candidates(cands.filter(keep), fx, fy, img.shape[:2])
            e = clock()
            mf, _ = clf.predict_candidates(
                img, kept, batch_size=256, atypical_min_mf=clf.threshold
            )  # as detect: test-time augmentation of the atypical head for the mitoses only
            f = clock()
            n_mit += int((mf >= clf.threshold).sum())
            for k, v in zip(t, (b - a, c - b, d - c, e - d, f - e), strict=True):
                t[k] += v
            n_prop += len(cands)
            n_kept += len(kept)
            # the previous path on the same tile
            g = clock()
            full = prop.propose(img, mpp=wm)
            h = clock()
            clf_torch.predict_candidates(img, full, batch_size=256)
            i = clock()
            base["propose"] += h - g
            base["classify"] += i - h
            n_base += len(full)
    n = max(1, len(tiles))
    rng = np.random.default_rng(0)
    size = clf.patch_size_px
    xs = rng.integers(0, 255, (256, size, size, 3), dtype=np.uint8)
    ms = rng.random((256, size, size)) > 0.7
    per_crop = {}
    views = clf.atypical_views
    clf.atypical_views = 1  # one forward pass per crop
    for name, c_, bf in (
        ("torch_float32", clf_torch, False),
        ("onnxruntime", clf, False),
        ("torch_bfloat16_autocast", clf_torch, True),
    ):
        c_.cpu_bf16 = bf
        c_.predict_patches(xs[:16], ms[:16])
        a = clock()
        c_.predict_patches(xs, ms)
        per_crop[name] = (clock() - a) * 1000 / len(xs)
        c_.cpu_bf16 = False
    clf.atypical_views = views
    cur = sum(t.values())
    prev = t["read"] + base["propose"] + base["classify"]
    return {
        "model": model_desc,
        "tiles": len(tiles),
        **{f"{k}_s_per_tile": v / n for k, v in t.items()},
        "candidates_per_tile": n_prop / n,
        "kept_per_tile": n_kept / n,
        "mitoses_per_tile": n_mit / n,
        "atypical_views": views,
        "baseline_propose_s_per_tile": base["propose"] / n,
        "baseline_classify_s_per_tile": base["classify"] / n,
        "baseline_candidates_per_tile": n_base / n,
        "current_s_per_tile": cur / n,
        "baseline_s_per_tile": prev / n,
        "speedup_vs_baseline": prev / max(cur, 1e-9),
        "ms_per_crop": per_crop,
        "torch_threads": torch.get_num_threads(),
    }


def _print_detect_split(e: dict, d: dict) -> None:
    """Rows from detect's own summary.json: mitoses, phases and the stage split per tile."""
    sm = e["summary"]
    area = max(float(sm["tissue_area_mm2"] or d["tissue_mm2"]), 1e-9)
    print(f"| (b) mitoses called / per mm² | {sm['n_mitoses']} / {sm['n_mitoses'] / area:.0f} |")
    t = sm.get("timing_s") or {}
    if "per_tile_s" not in t:  # a run saved before issue 13's timings
        return
    phases = ("tissue_s", "tiles_s", "count_s", "write_s")
    startup = e["seconds"] - sum(float(t.get(k, 0.0)) for k in phases)
    print(
        f"| (b) phases (wall) | start-up (process, imports, models) {startup:.1f} s, tissue "
        f"{t['tissue_s']:.1f} s, tile loop {t['tiles_s']:.1f} s, merge and count "
        f"{t['count_s']:.1f} s, outputs and report {t.get('write_s', 0.0):.1f} s |"
    )
    print(
        f"| (b) tile loop alone | {area / max(t['tiles_s'], 1e-9):.3f} mm²/s "
        f"({area / max(t['tiles_s'], 1e-9) / d['mm2_per_s']:.1%} of decode-only) |"
    )
    pt = t["per_tile_s"]
    total = sum(pt.values())
    parts = ", ".join(f"{k[:-2]} {v:.3f} s ({v / max(total, 1e-9):.0%})" for k, v in pt.items())
    print(
        f"| (b) stage split per tile ({sm['n_tiles']} tiles, in {t['workers']} worker "
        f"processes) | {parts}; {total:.3f} s per tile |"
    )


def print_sweep(out: dict) -> None:
    """One row per slide of a run: time per mm² against size (``out``: what ``--json`` writes)."""
    print()
    print(
        "| slide | tissue | tiles | decode only | `mitoscope detect` | s per mm² | share of "
        "decode-only | tile loop s per mm² | mitoses per mm² | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in out["runs"]:
        d, e = r["decode"], r.get("detect")
        row = (
            f"| {r['slide_short']} | {d['tissue_mm2']:.1f} mm² | {d['tiles']} | "
            f"{d['seconds']:.1f} s ({d['mm2_per_s']:.3f} mm²/s) |"
        )
        if e:
            sm = e["summary"]
            area = max(float(sm["tissue_area_mm2"]), 1e-9)
            t = sm.get("timing_s") or {}
            loop = f"{t['tiles_s'] / area:.2f}" if "tiles_s" in t else "n/a"
            row += (
                f" {e['seconds']:.1f} s ({e['mm2_per_s']:.3f} mm²/s) | {e['seconds'] / area:.2f} |"
                f" {e['mm2_per_s'] / d['mm2_per_s']:.1%} | {loop} | {sm['n_mitoses'] / area:.0f} |"
                f" {e['peak_tree_rss_bytes'] / 2**30:.2f} GiB |"
            )
        else:
            row += " - | - | - | - | - | - |"
        print(row)


def print_table(out: dict) -> None:
    """The markdown table of one run (``out``: what ``--json`` writes)."""
    workers = out["workers"]
    d, s = out["decode"], out.get("sam")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| slide | {out['slide']}, {d['tissue_mm2']:.1f} mm² tissue, {d['tiles']} tiles |")
    print(
        f"| (a) decode only, bare OpenSlide, {workers} processes | {d['seconds']:.1f} s, "
        f"**{d['mm2_per_s']:.3f} mm²/s** |"
    )
    if "detect" in out:
        e = out["detect"]
        print(
            f"| (b) `mitoscope detect` end to end ({e['model']}) | {e['seconds']:.1f} s, "
            f"**{e['mm2_per_s']:.4f} mm²/s** |"
        )
        print(
            f"| (b) candidates classified / per mm² | {e['summary']['n_candidates']} / "
            f"{e['summary']['n_candidates'] / max(d['tissue_mm2'], 1e-9):.0f} |"
        )
        print(f"| (b) / (a): share of decode-only speed | {e['mm2_per_s'] / d['mm2_per_s']:.1%} |")
        if s:
            print(
                f"| (b) / (c): speed-up over SAM ViT-H proposal alone | "
                f"{e['mm2_per_s'] / s['mm2_per_s']:.0f}x |"
            )
        print(f"| peak RSS of detect (process tree) | {e['peak_tree_rss_bytes'] / 2**30:.2f} GiB |")
        _print_detect_split(e, d)
    if s:
        print(
            f"| (c) SAM ViT-H proposer (random weights) | {s['vit_h_seconds_per_tile']:.0f} s "
            f"per tile, {s['vit_h_seconds_per_mm2']:.0f} s/mm² |"
        )
    if "stages" in out:
        st = out["stages"]
        print(
            f"| stages per 1024² tile ({st['tiles']} tiles, 1 process, "
            f"{st['torch_threads']} threads) | read {st['read_s_per_tile']:.3f} s, downsample "
            f"{st['downsample_s_per_tile']:.3f} s, propose at 0.5 um/px "
            f"{st['propose_s_per_tile']:.3f} s, screen {st['screen_s_per_tile']:.3f} s "
            f"({st['candidates_per_tile']:.0f} -> {st['kept_per_tile']:.0f} candidates), "
            f"classify {st['classify_s_per_tile']:.3f} s (with the atypical head's "
            f"{st['atypical_views']}-view test-time augmentation for the "
            f"{st['mitoses_per_tile']:.0f} mitoses) |"
        )
        print(
            f"| previous path on the same tiles: propose at 0.25 um/px, classify all in torch | "
            f"propose {st['baseline_propose_s_per_tile']:.3f} s, classify "
            f"{st['baseline_classify_s_per_tile']:.3f} s "
            f"({st['baseline_candidates_per_tile']:.0f} candidates) |"
        )
        print(
            f"| per tile: current / previous path | {st['current_s_per_tile']:.3f} s / "
            f"{st['baseline_s_per_tile']:.3f} s (**{st['speedup_vs_baseline']:.1f}x**) |"
        )
        pc = st["ms_per_crop"]
        print(
            "| one classifier member, ms per crop: torch float32 / ONNX Runtime / torch bf16 "
            f"autocast | {pc['torch_float32']:.2f} / {pc['onnxruntime']:.2f} / "
            f"{pc['torch_bfloat16_autocast']:.2f} |"
        )
    if "stages" in out and "detect" in out:
        st, e = out["stages"], out["detect"]
        per_mm2 = e["summary"]["n_candidates"] / max(d["tissue_mm2"], 1e-9)
        mit_mm2 = e["summary"]["n_mitoses"] / max(d["tissue_mm2"], 1e-9)
        extra = st["atypical_views"] - 1
        passes = per_mm2 + extra * mit_mm2
        # ms per forward pass on the real tiles of the stage split (one thread, as in a worker)
        tile_passes = st["kept_per_tile"] + extra * st["mitoses_per_tile"]
        ms = 1000.0 * st["classify_s_per_tile"] / max(tile_passes, 1e-9)
        cpu_s = passes * ms / 1000.0
        print(
            f"| classifier alone, lower bound | {per_mm2:.0f} candidates + {extra} x "
            f"{mit_mm2:.0f} mitoses = {passes:.0f} forward passes per mm² x {ms:.2f} ms (the "
            f"stage split's classify time per pass, patch cutting included) = {cpu_s:.2f} CPU-s "
            f"per mm²: at most **{workers / cpu_s:.2f} mm²/s** on {workers} cores even if "
            "reading, proposal and outputs were free |"
        )
        tiles_mm2 = d["tiles"] / max(d["tissue_mm2"], 1e-9)
        pre = sum(st[f"{k}_s_per_tile"] for k in ("read", "downsample", "propose", "screen"))
        no_tta = tiles_mm2 * pre + per_mm2 * ms / 1000.0
        print(
            f"| every stage, without the atypical augmentation, lower bound | {tiles_mm2:.1f} "
            f"tiles per mm² x {pre:.3f} s (read, downsample, propose, screen) + {per_mm2:.0f} "
            f"passes x {ms:.2f} ms = {no_tta:.2f} CPU-s per mm²: at most "
            f"**{workers / no_tta:.2f} mm²/s** on {workers} cores "
            f"({workers / no_tta / d['mm2_per_s']:.0%} of decode-only) |"
        )
    print(f"| load average start / end | {out['load_average_start']} / {out['load_average_end']} |")
    print(f"| machine | {out['machine']} |")


def build_slides(args: argparse.Namespace) -> list[tuple[Path, str, str]]:
    """The run's slides: (path, description, short name)."""
    flat = " single-level" if args.single_level else ""
    levels = {"min_level_px": 10**9} if args.single_level else {}
    if args.slide == "mosaic":
        path = common.mosaic_slide(args.size, args.size, **levels)
        desc = f"{args.size} x {args.size} px{flat}, 0.25 um/px, real-H&E mosaic (AMi-Br crops)"
        return [(path, desc, f"mosaic {args.size} px{flat}")]
    out = []
    for mm2 in args.tissue_mm2:
        path = common.tissue_slide(mm2, seed=args.seed, **levels)
        import openslide

        with openslide.OpenSlide(str(path)) as sl:
            w, h = sl.dimensions
        desc = (
            f"{w:,} x {h:,} px{flat}, 0.25 um/px, real tissue (MoNuSeg, 7 organs) in islands on "
            f"glass, {mm2:g} mm² tissue built"
        )
        out.append((path, desc, f"{mm2:g} mm² on {w:,} px{flat}"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", choices=("tissue", "mosaic"), default="tissue")
    ap.add_argument(
        "--tissue-mm2",
        default="50",
        help="tissue area of the tissue slide, mm² (comma-separated: one slide each, e.g. 10,50,150)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the tissue slide")
    ap.add_argument("--size", type=int, default=40000, help="mosaic side in px (>= 40000: issue)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sam-json", type=Path, default=None, help="output of sam_cost.py --json")
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--detect-args", default="", help="extra arguments for mitoscope detect")
    ap.add_argument("--stages", type=int, default=0, help="also time the stages on N tiles")
    ap.add_argument("--skip-sam", action="store_true")
    ap.add_argument(
        "--single-level",
        action="store_true",
        help="build the slide without reduced levels (peak memory when nothing is pyramidal)",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--report", type=Path, default=None, help="only print the table of a saved --json run"
    )
    args = ap.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        if "runs" not in saved:  # a run saved before issue 13: one slide
            print_table(saved)
            return 0
        for r in saved["runs"]:
            print_table({**saved, **r})
        print_sweep(saved)
        return 0
    try:
        args.tissue_mm2 = [float(v) for v in str(args.tissue_mm2).split(",") if v.strip()]
    except ValueError:
        ap.error(f"--tissue-mm2 needs numbers, e.g. 10,50,150; got {args.tissue_mm2!r}")
    if args.slide == "tissue" and (not args.tissue_mm2 or min(args.tissue_mm2) <= 0):
        ap.error("--tissue-mm2 needs positive areas")

    out: dict = {
        "machine": common.machine(),
        "load_average_start": common.load_avg(),
        "workers": args.workers,
        "runs": [],
    }
    for slide, desc, short in build_slides(args):
        run: dict = {"slide": desc, "slide_short": short, "slide_file": slide.name}
        run["decode"] = d = decode_only(slide, args.workers)
        print(
            f"[{short}] (a) decode only: {d['tissue_mm2']:.1f} mm² tissue, {d['tiles']} tiles in "
            f"{d['seconds']:.1f} s -> {d['mm2_per_s']:.3f} mm²/s",
            flush=True,
        )
        if not args.skip_detect:
            run["detect"] = e = detect_end_to_end(slide, args.workers, args.detect_args.split())
            print(
                f"[{short}] (b) detect end to end: {e['seconds']:.1f} s -> {e['mm2_per_s']:.4f} "
                f"mm²/s (exit {e['exit_code']}, peak RSS {e['peak_tree_rss_bytes'] / 2**30:.2f} "
                f"GiB, {e['summary']})",
                flush=True,
            )
        if args.stages:
            st = run["stages"] = stage_split(slide, args.stages)
            print(f"stages on {st['tiles']} tiles: {json.dumps(st, indent=1)}", flush=True)
        out["runs"].append(run)
    s = out["sam"] = None if args.skip_sam else sam_cost(args.sam_json)
    if s:
        print(
            f"(c) SAM ViT-H proposer: {s['vit_h_seconds_per_tile']:.0f} s per 1024² tile -> "
            f"{s['vit_h_seconds_per_mm2']:.0f} s per mm² ({s['mm2_per_s']:.2e} mm²/s)",
            flush=True,
        )
    out["load_average_end"] = common.load_avg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    for r in out["runs"]:
        print_table({**out, **r})
    print_sweep(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
