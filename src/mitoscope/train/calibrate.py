"""Turn on atypical test-time augmentation in a trained checkpoint and re-choose its threshold.

Run (from the repository root)::

    .venv/bin/python -m mitoscope.train.calibrate src/mitoscope/data/mitoscope_default_classifier.pt --atypical-tta 4

The atypical probability becomes the mean over ``--atypical-tta`` views of the patch (the 90-degree
rotations first, then their mirror images)
(only for mitoses during detection). Its threshold is re-chosen, as in training, for the largest
balanced accuracy on the checkpoint's own validation slides (listed in its card), and the card's
validation metrics are updated. The weights and the MF threshold do not change. ``train`` does
the same at the end of training when ``atypical_tta`` is set in the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def calibrate_atypical_tta(
    path: str | Path, *, views: int, data_dir: str | Path, cache_dir: str | Path | None = None
) -> dict:
    """Re-choose the atypical threshold of the checkpoint at ``path`` with ``views`` views."""
    from ..classify import load_classifier
    from ..classify.classifier import save_checkpoint
    from ..errors import InvalidInputError
    from .metrics import best_balanced_accuracy_threshold
    from .samples import build_amibr_samples
    from .train import evaluate_predictions

    if not 1 <= int(views) <= 8:
        raise InvalidInputError("--atypical-tta must be between 1 and 8 views")
    clf = load_classifier(path, device="cpu")
    card = dict(clf.card)
    val_slides = set(card.get("split", {}).get("val_slides", []))
    if not val_slides:
        raise InvalidInputError(f"{path}: its card lists no validation slides")
    samples = build_amibr_samples(data_dir, cache_dir=cache_dir)
    va = samples.subset(np.flatnonzero([s in val_slides for s in samples.slide]))
    clf.atypical_views = int(views)
    mf, at = clf.predict_patches(va.patches, va.masks)
    has = va.atypical >= 0
    athr, _ = best_balanced_accuracy_threshold(va.atypical[has] == 1, at[has])
    metrics = evaluate_predictions(va, mf, at, threshold=clf.threshold, atypical_threshold=athr)
    old = dict(card.get("validation_metrics", {}))
    new = dict(old)
    for k in ("atypical_balanced_accuracy", "atypical_roc_auc"):
        new[k] = metrics[k]
        new[f"{k}_single_view"] = old.get(k)
    new["atypical_threshold"] = athr
    card["validation_metrics"] = new
    card["atypical_tta"] = int(views)
    card.setdefault("config", {})["atypical_tta"] = int(views)
    card["threshold_choice"] = (
        "MF: max F1 on validation slides; atypical: max balanced accuracy on validation slides, "
        f"probability averaged over {views} views (rotations first, then mirrored)"
    )
    save_checkpoint(
        path,
        arch=clf.arch,
        members=[m.state_dict() for m in clf.models],
        arch_kwargs={"use_mask": clf.uses_mask, "n_subtypes": int(card.get("n_subtypes", 0))},
        input_mpp=clf.input_mpp,
        patch_size_px=clf.patch_size_px,
        threshold=clf.threshold,
        atypical_threshold=athr,
        has_atypical=clf.has_atypical,
        card=json.loads(json.dumps(card, default=str)),
        name=clf.name,
        atypical_views=int(views),
    )
    return {
        "atypical_threshold": athr,
        "atypical_balanced_accuracy": metrics["atypical_balanced_accuracy"],
        "atypical_roc_auc": metrics["atypical_roc_auc"],
        "single_view": {
            "atypical_balanced_accuracy": old.get("atypical_balanced_accuracy"),
            "atypical_roc_auc": old.get("atypical_roc_auc"),
        },
        "n_figures": int(has.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--atypical-tta", type=int, default=8)
    ap.add_argument("--data", default="../shared/data/amibr-train")
    ap.add_argument("--cache-dir", default="benchmarks/.cache")
    args = ap.parse_args(argv)
    out = calibrate_atypical_tta(
        args.model, views=args.atypical_tta, data_dir=args.data, cache_dir=args.cache_dir
    )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
