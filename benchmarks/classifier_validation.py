"""Re-measure a saved classifier (default: the bundled one) on its own validation slides.

The checkpoint's model card names the slide-grouped validation split it was trained with; this
script rebuilds those samples from the patch cache, loads the checkpoint exactly as users do
(float16 weights) and reports the metrics at the stored thresholds, plus inference speed.

    .venv/bin/python benchmarks/classifier_validation.py [MODEL.pt]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MITOSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from mitoscope.classify import load_classifier
    from mitoscope.train.samples import build_amibr_samples
    from mitoscope.train.train import evaluate_predictions

    clf = load_classifier(args[0] if args else None, device="cpu")
    samples = build_amibr_samples(DATA / "amibr-train", cache_dir=ROOT / "benchmarks" / ".cache")
    val_slides = set(clf.card["split"]["val_slides"])
    va = samples.subset(np.flatnonzero([s in val_slides for s in samples.slide]))
    t0 = time.time()
    mf, at = clf.predict_patches(va.patches, va.masks)
    dt = time.time() - t0
    m = evaluate_predictions(
        va, mf, at, threshold=clf.threshold, atypical_threshold=clf.atypical_threshold
    )
    m["threshold"] = clf.threshold
    m["atypical_threshold"] = clf.atypical_threshold
    m["patches_per_second"] = round(len(va) / dt, 1)
    m["ensemble_size"] = len(clf.models)
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
