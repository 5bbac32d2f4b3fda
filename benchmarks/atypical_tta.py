"""Atypical test-time augmentation of the bundled model: how many views, on its validation slides.

Scores every labelled figure of the bundled classifier's 22 validation slides (listed in its
card) in each of the 8 dihedral views with one forward pass per view, then reports the atypical
ROC AUC and the best balanced accuracy (threshold chosen on these same slides: optimistic) for
1 view, the first 4 views in the order the classifier uses (the 4 rotations), the first 4 in
"rotation x flip" order, and all 8.

Run::

    .venv/bin/python benchmarks/atypical_tta.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def main() -> int:
    import torch

    from mitoscope.classify import load_classifier
    from mitoscope.classify.classifier import _dihedral_views
    from mitoscope.evaluate.stats import roc_auc
    from mitoscope.train.metrics import best_balanced_accuracy_threshold
    from mitoscope.train.samples import build_amibr_samples

    torch.set_num_threads(1)
    clf = load_classifier(device="cpu")
    s = build_amibr_samples(common.SHARED_DATA / "amibr-train", cache_dir=common.CACHE)
    val = set(clf.card["split"]["val_slides"])
    idx = np.flatnonzero(
        [(sl in val) and (a >= 0) for sl, a in zip(s.slide, s.atypical, strict=True)]
    )
    p, m, y = s.patches[idx], s.masks[idx], s.atypical[idx] == 1
    clf.atypical_views = 1
    views = {}
    for k, flip in _dihedral_views(8):
        a, b = np.rot90(p, k, axes=(1, 2)), np.rot90(m, k, axes=(1, 2))
        if flip:
            a, b = a[:, :, ::-1], b[:, :, ::-1]
        views[(k, flip)] = clf.predict_patches(np.ascontiguousarray(a), np.ascontiguousarray(b))[1]
    sets = {
        "1 view": [(0, False)],
        "4 rotations (the classifier's first 4 views)": _dihedral_views(4),
        "2 rotations x 2 flips": [(0, False), (0, True), (1, False), (1, True)],
        "all 8": _dihedral_views(8),
    }
    print(f"{len(y)} figures ({int(y.sum())} atypical) on {len(val)} validation slides")
    print("| views | atypical ROC AUC | best balanced accuracy (threshold on these slides) |")
    print("|---|---|---|")
    for name, vs in sets.items():
        score = np.mean([views[v] for v in vs], axis=0)
        _, ba = best_balanced_accuracy_threshold(y, score)
        print(f"| {name} | {roc_auc(y, score):.3f} | {ba:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
