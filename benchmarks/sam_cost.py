"""CPU cost of the OMG-Net SAM proposer per 1024 x 1024 tile (random weights).

The weights do not change the amount of computation of the image encoder and the mask decoder
(4,096 point prompts x 3 masks per tile, each upsampled to the tile), so randomly initialised
models measure the cost of the configuration. What random weights do change: almost no mask passes
the predicted-IoU / stability / area filters, so RLE encoding and NMS (cheap next to the decoder)
are under-counted; the numbers are a lower bound for a real checkpoint.

Measures, on a real H&E image (``tiatoolbox_target_image.png`` reflect-padded to 1024 x 1024,
taken as 0.25 um/px):

* ``vit_b``: full automatic mask generation at the OMG-Net config (64 x 64 points, pred IoU > 0.8,
  stability > 0.8, area 2.25-225 um², NMS 0.7), CPU bfloat16 autocast, ``--tiles`` runs;
* ``vit_h``: the image encoder once (``--vit-h-full`` also runs the full generation).

Seconds per mm² are extrapolated from one tile (0.0655 mm² at 0.25 um/px) and from the tile's
core in ``propose_slide``'s default plan (256 um tiles with 32 um overlap -> 224 um cores,
0.0502 mm²).

Run (slow: minutes)::

    .venv/bin/python benchmarks/sam_cost.py --json /tmp/sam_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT.parent / "shared" / "data" / "slides" / "tiatoolbox_target_image.png"
MPP = 0.25
TILE_MM2 = (1024 * MPP / 1000.0) ** 2
CORE_MM2 = ((256.0 - 32.0) / 1000.0) ** 2


def _tile() -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(IMAGE).convert("RGB"))
    ph, pw = max(0, 1024 - img.shape[0]), max(0, 1024 - img.shape[1])
    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    return np.ascontiguousarray(img[:1024, :1024])


def _time_encoder(model, tile: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    import torch
    from segment_anything import SamPredictor

    pred = SamPredictor(model)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred.set_image(tile)
    return time.perf_counter() - t0


def _time_generate(model, tile: np.ndarray, reps: int) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    from mitoscope.candidates.sam import SamProposer

    prop = SamProposer(model=model, device="cpu")
    assert prop.config.points_per_side == 64
    times, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        c = prop.propose(tile, mpp=MPP)
        times.append(time.perf_counter() - t0)
        n = len(c)
    return times, n


def main(argv: list[str] | None = None) -> int:
    import torch

    from mitoscope.candidates.sam import build_sam_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=1, help="full vit_b runs to time")
    ap.add_argument("--vit-h-full", action="store_true", help="also time the full vit_h AMG")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    tile = _tile()
    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"torch threads {torch.get_num_threads()}, no GPU",
        "load_average_start": os.getloadavg(),
        "tile": "1024x1024 @ 0.25 um/px",
        "tile_mm2": TILE_MM2,
        "core_mm2": CORE_MM2,
    }
    for variant in ("vit_b", "vit_h"):
        t0 = time.perf_counter()
        model = build_sam_model(variant, seed=0).eval()
        build = time.perf_counter() - t0
        enc = _time_encoder(model, tile)
        row = {"build_seconds": build, "encoder_seconds": enc}
        print(f"{variant}: build {build:.1f} s, image encoder {enc:.1f} s", flush=True)
        if variant == "vit_b" or args.vit_h_full:
            times, n = _time_generate(model, tile, args.tiles)
            per = float(np.mean(times))
            row.update(
                {
                    "amg_seconds_per_tile": times,
                    "amg_candidates": n,
                    "seconds_per_mm2_tile": per / TILE_MM2,
                    "seconds_per_mm2_core": per / CORE_MM2,
                }
            )
            print(
                f"{variant}: AMG {per:.1f} s per tile -> {per / TILE_MM2:.0f} s/mm² "
                f"({per / CORE_MM2:.0f} s/mm² of tile cores), {n} candidates (random weights)",
                flush=True,
            )
        else:
            # extrapolate: encoder(vit_h) + (AMG(vit_b) - encoder(vit_b)); decoder is shared
            b = res["vit_b"]
            per = enc + float(np.mean(b["amg_seconds_per_tile"])) - b["encoder_seconds"]
            row.update(
                {
                    "amg_seconds_per_tile_estimate": per,
                    "seconds_per_mm2_tile_estimate": per / TILE_MM2,
                    "seconds_per_mm2_core_estimate": per / CORE_MM2,
                }
            )
            print(
                f"{variant}: estimated AMG {per:.1f} s per tile (vit_h encoder + vit_b decoder "
                f"part) -> {per / TILE_MM2:.0f} s/mm²",
                flush=True,
            )
        res[variant] = row
        del model
    res["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
