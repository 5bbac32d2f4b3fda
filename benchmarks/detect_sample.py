"""Wall time and per-stage timing of ``detect_slide`` on the bundled sample slide.

Usage::

    .venv/bin/python benchmarks/detect_sample.py [--model bundled|tiny] [--workers 1 2]
        [--input-mpp 0.25] [--repeat 1]

``--model bundled`` uses the bundled trained classifier; ``tiny`` a tiny random CNN checkpoint
(timing of the pipeline around a near-free classifier; its detections mean nothing). Prints one
markdown row per run: total seconds, stage seconds (tissue, read+propose, classify, counts),
outputs seconds, tiles, candidates, mitoses, peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tiny(path: Path, input_mpp: float):
    import torch

    from mitoscope.classify import create_model, load_classifier, save_checkpoint

    torch.manual_seed(0)
    net = create_model("tiny_cnn", use_mask=True)
    with torch.no_grad():
        net.mf_head.weight.mul_(40.0)
        net.mf_head.bias.fill_(-10.0)
    save_checkpoint(
        path,
        arch="tiny_cnn",
        members=[net.state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=input_mpp,
        patch_size_px=32,
        threshold=0.05,
        atypical_threshold=0.5,
        name="tiny_cnn-random",
    )
    return load_classifier(path, device="cpu")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=("bundled", "tiny"), default="bundled")
    ap.add_argument("--workers", type=int, nargs="+", default=[1])
    ap.add_argument("--input-mpp", type=float, default=0.25, help="tiny model only")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--slide", type=Path, default=None, help="default: the bundled sample")
    args = ap.parse_args()

    from mitoscope.classify import load_classifier
    from mitoscope.data import sample_slide
    from mitoscope.detect import DetectConfig, detect_slide

    slide = args.slide or sample_slide()
    tmp = Path(tempfile.mkdtemp(prefix="mitoscope-bench-"))
    if args.model == "bundled":
        clf = load_classifier(device="cpu")
    else:
        clf = _tiny(tmp / "tiny.pt", args.input_mpp)
    print(
        f"slide: {slide.name}; model: {clf.name} ({getattr(clf, 'arch', '?')}, "
        f"input {clf.input_mpp} um/px, {getattr(clf, 'patch_size_px', '?')} px); "
        f"torch threads: {__import__('torch').get_num_threads()}; cpus: {os.cpu_count()}"
    )
    print(
        "| workers | total s | tissue s | read+propose s | classify s | counts s | outputs s "
        "| tiles | candidates | mitoses | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        for _ in range(args.repeat):
            out = tmp / f"out{workers}"
            t = time.perf_counter()
            res = detect_slide(
                slide,
                classifier=clf,
                config=DetectConfig(workers=workers),
                out_dir=out,
                progress=False,
            )
            total = time.perf_counter() - t
            tm = res.stats.timing
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            print(
                f"| {workers} | {total:.1f} | {tm['tissue_s']:.1f} | {tm['propose_s']:.1f} | "
                f"{tm['classify_s']:.1f} | {tm['count_s']:.1f} | {total - res.seconds:.1f} | "
                f"{res.stats.n_tiles} | {res.stats.n_candidates} | "
                f"{res.counts.n_mitoses} | {rss:.0f} |"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
