"""Peak memory of ``mitoscope detect`` versus slide size (issue 5).

Runs ``mitoscope detect`` in a subprocess on real-H&E mosaic slides (:mod:`mitoscope.synth`, cached
in ``benchmarks/.cache``) of different sizes and records the peak resident memory of the whole
process tree (the sum of VmRSS of the command and its worker processes, polled every 0.1 s) and
the kernel's high-water mark of the largest single process.

Default slides: 10,000 x 10,000 px and 40,000 x 40,000 px at 0.25 um/px with the *same tissue area*
(about 1 mm², so the run stays short): what differs is the slide's size (pyramid, thumbnail, tissue
mask, tiling plan), which is what must not make memory grow. ``--fraction`` sets the tissue share of
the large slide; the small one gets 16x that share.

Run::

    .venv/bin/python benchmarks/memory.py [--workers 2] [--fraction 0.01]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.01, help="tissue share of the large slide")
    ap.add_argument("--sizes", default="10000,40000")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    big = max(sizes)
    model_args, model_desc = common.benchmark_model()
    exe = Path(sys.executable).with_name("mitoscope")
    rows = []
    for size in sizes:
        frac = min(1.0, args.fraction * (big / size) ** 2)
        slide = common.mosaic_slide(size, size, tissue_fraction=round(frac, 4))
        with tempfile.TemporaryDirectory(dir=common.CACHE) as tmp:
            cmd = [str(exe), "detect", str(slide), "--out", tmp, "--workers", str(args.workers)]
            cmd += ["--device", "cpu", "--quiet", *model_args]
            res = common.run_measured(cmd)
            summary = json.loads((Path(tmp) / f"{slide.stem}.summary.json").read_text())
        row = {
            "size_px": size,
            "slide_mm2": (size * 0.25 / 1000) ** 2,
            "tissue_mm2": summary["tissue_area_mm2"],
            "n_tiles": summary.get("n_tiles"),
            "n_candidates": summary.get("n_candidates"),
            "seconds": res["seconds"],
            "exit_code": res["exit_code"],
            "peak_tree_rss_gib": res["peak_tree_rss_bytes"] / 2**30,
            "peak_process_rss_gib": (res["peak_process_rss_bytes"] or 0) / 2**30,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        f"Model: {model_desc}; `mitoscope detect SLIDE --out OUT --workers {args.workers} "
        f"--device cpu --quiet`; machine: {common.machine()}; load average at end "
        f"{common.load_avg()}."
    )
    print()
    print(
        "| slide (px) | slide mm² | tissue mm² | tiles | candidates | wall s | peak RSS, "
        "process tree (GiB) | peak RSS, largest process (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size_px']} x {r['size_px']} | {r['slide_mm2']:.1f} | {r['tissue_mm2']:.2f} | "
            f"{r['n_tiles']} | {r['n_candidates']} | {r['seconds']:.0f} | "
            f"{r['peak_tree_rss_gib']:.2f} | {r['peak_process_rss_gib']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    ok = all(r["exit_code"] == 0 and r["peak_tree_rss_gib"] < 3.0 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
