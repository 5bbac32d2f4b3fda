"""CPU cost of the OMG-Net SAM proposer per 1024 x 1024 tile (random weights).

The weights do not change the amount of computation of the image encoder and the mask decoder
(4,096 point prompts x 3 masks per tile, each upsampled to the tile), so randomly initialised
models measure the cost of the configuration. What random weights do change: almost no mask passes
the predicted-IoU / stability / area filters, so RLE encoding and NMS (cheap next to the decoder)
are under-counted; the numbers are a lower bound for a real checkpoint.

Measured on a real H&E image (``tiatoolbox_target_image.png`` reflect-padded to 1024 x 1024,
taken as 0.25 um/px), at the OMG-Net config (64 x 64 points, pred IoU > 0.8, stability > 0.8,
area 2.25-225 um², NMS 0.7):

* ``vit_b`` image encoder in float32;
* ``vit_b`` full automatic mask generation (``SamProposer.propose``) in ``--amg-dtype``
  (``float32`` by default), ``--tiles`` runs;
* ``vit_h`` image encoder once in float32; a vit_h tile is estimated as vit_h encoder +
  (vit_b tile - vit_b encoder), since the mask decoder is the same for all variants;
* last, in a subprocess limited to ``--bf16-timeout`` seconds, the ``vit_b`` image encoder under
  CPU bfloat16 autocast (``0`` skips it): on CPUs without native bfloat16 (no AVX512-BF16 /
  AMX) it is emulated and much slower.

Seconds per mm² are extrapolated from one tile (0.0655 mm² at 0.25 um/px) and from the tile core
of ``propose_slide``'s default plan (256 um tiles with 32 um overlap -> 224 um cores, 0.0502 mm²).

Run (slow: minutes)::

    .venv/bin/python benchmarks/sam_cost.py --json /tmp/sam_cost.json
"""

from __future__ import annotations

import argparse
import contextlib
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


def _ctx(dtype: str):  # type: ignore[no-untyped-def]
    import torch

    if dtype == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _timed(fn) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _encoder(model, tile: np.ndarray, dtype: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import torch
    from segment_anything import SamPredictor

    pred = SamPredictor(model)

    def run() -> None:
        with torch.inference_mode(), _ctx(dtype):
            pred.set_image(tile)

    wall, cpu, _ = _timed(run)
    return wall, cpu


def _bf16_probe(timeout_s: float) -> dict:
    """Time the vit_b encoder under bfloat16 autocast in a subprocess (killed at the timeout)."""
    import subprocess

    here = str(Path(__file__).resolve().parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import sam_cost as b; "
        "from mitoscope.candidates.sam import build_sam_model; "
        "m = build_sam_model('vit_b', seed=0).eval(); "
        "w, c = b._encoder(m, b._tile(), 'bfloat16'); "
        "print(json.dumps({'wall_s': w, 'cpu_s': c}))"
    )
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"timeout_s": timeout_s, "note": "did not finish (build + encoder) in time"}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:], "wall_s": time.perf_counter() - t0}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _vit_b(args, tile: np.ndarray, b: dict, save) -> float:  # type: ignore[no-untyped-def]
    """vit_b encoder and full AMG timings into ``b``; returns seconds per tile."""
    from mitoscope.candidates.sam import SamProposer, build_sam_model

    model = build_sam_model("vit_b", seed=0).eval()
    wall, cpu = _encoder(model, tile, "float32")
    b["encoder_float32"] = {"wall_s": wall, "cpu_s": cpu}
    print(f"vit_b encoder float32: {wall:.1f} s wall, {cpu:.1f} s cpu", flush=True)
    save()
    times = []
    n = 0
    for _ in range(args.tiles):
        prop = SamProposer(model=model, device="cpu", cpu_dtype=args.amg_dtype)
        assert prop.config.points_per_side == 64
        wall, cpu, c = _timed(lambda prop=prop: prop.propose(tile, mpp=MPP))
        times.append({"wall_s": wall, "cpu_s": cpu})
        n = len(c)  # type: ignore[arg-type]
        print(
            f"vit_b AMG {args.amg_dtype}: {wall:.1f} s wall, {cpu:.1f} s cpu, {n} cand.", flush=True
        )
    per = float(np.mean([t["wall_s"] for t in times]))
    b["amg"] = {
        "dtype": args.amg_dtype,
        "runs": times,
        "candidates": n,
        "seconds_per_tile": per,
        "seconds_per_mm2_tile": per / TILE_MM2,
        "seconds_per_mm2_core": per / CORE_MM2,
    }
    save()
    return per


def main(argv: list[str] | None = None) -> int:
    import torch

    from mitoscope.candidates.sam import build_sam_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=1, help="full vit_b AMG runs to time")
    ap.add_argument("--amg-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--bf16-timeout", type=float, default=600.0, help="0 = skip the bf16 probe")
    ap.add_argument("--skip-vit-h", action="store_true")
    ap.add_argument("--skip-vit-b", action="store_true", help="only vit_h encoder / bf16 probe")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    tile = _tile()
    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"torch {torch.__version__} threads {torch.get_num_threads()}, no GPU",
        "load_average_start": os.getloadavg(),
        "tile": "1024x1024 @ 0.25 um/px",
        "tile_mm2": TILE_MM2,
        "core_mm2": CORE_MM2,
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))

    b: dict = {}
    res["vit_b"] = b
    per = float("nan")
    if not args.skip_vit_b:
        per = _vit_b(args, tile, b, save)
    if not args.skip_vit_h:
        model = build_sam_model("vit_h", seed=0).eval()
        h: dict = {}
        res["vit_h"] = h
        wall, cpu = _encoder(model, tile, "float32")
        h["encoder_float32"] = {"wall_s": wall, "cpu_s": cpu}
        print(f"vit_h encoder float32: {wall:.1f} s wall, {cpu:.1f} s cpu", flush=True)
        save()
        del model
        if "encoder_float32" in b:
            est = h["encoder_float32"]["wall_s"] + per - b["encoder_float32"]["wall_s"]
        else:
            est = float("nan")
        h["amg_estimate"] = {
            "dtype": args.amg_dtype,
            "seconds_per_tile_estimate": est,
            "seconds_per_mm2_tile_estimate": est / TILE_MM2,
            "seconds_per_mm2_core_estimate": est / CORE_MM2,
        }
        print(f"vit_h AMG estimate: {est:.0f} s per tile -> {est / TILE_MM2:.0f} s/mm²", flush=True)
    if args.bf16_timeout > 0:
        b["encoder_bfloat16"] = _bf16_probe(args.bf16_timeout)
        print(f"vit_b encoder bfloat16 (subprocess): {b['encoder_bfloat16']}", flush=True)
    res["load_average_end"] = os.getloadavg()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
