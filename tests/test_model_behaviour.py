"""The bundled model's behaviour on real data, with margins (not only 0 <= p <= 1).

- It calls labelled mitotic figures in crops of its held-out validation slides (AMi-Br; the
  slides named in the model card's split, never trained on).
- It should not call ordinary nuclei in ordinary tumour tissue (../shared/data/tissue, run
  through ``detect_slide`` as users run it). The bundled model (96 px, trained with the tissue
  images as negatives) still does: >= 125 per mm² of organs left out of training at its shipped
  threshold (leave-organ-out, docs/benchmarks.md "Credible counts"; issue 12 is open), and ~100
  per mm² even on these (training) images. That test is a strict expected
  failure: it passes the day a bundled model stops over-calling, and then the marker must go.

The margins leave room for run-to-run noise of the ONNX/torch backends, not for another model.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file

#: share of held-out labelled figures the bundled model must call (its threshold keeps 0.93
#: of the validation figures end to end, 0.95+ as centred crops; 80 of them are drawn here)
MIN_RECALL = 0.85
#: detections per mm² of ordinary tissue the bundled model may report (measured: see docs)
MAX_PER_MM2 = 25.0


@pytest.fixture(scope="module")
def bundled():
    from mitoscope.classify import load_classifier

    return load_classifier()


def test_bundled_model_calls_labelled_mitoses_in_held_out_crops(bundled):
    import pandas as pd

    from mitoscope.classify.crops import crop_inputs

    root = shared_file("amibr-train")
    labels = pd.read_csv(root / "labels.csv")
    val = set(bundled.card["split"]["val_slides"])
    held = labels[[f"{d}/{s}" in val for d, s in zip(labels.dataset, labels.slide, strict=True)]]
    assert len(held) >= 100, "the model card's validation slides are not in amibr-train"
    take = held.sample(n=80, random_state=0)
    mpps = [
        0.23 if d == "MIDOG21" and int(str(s)[:3]) <= 100 else 0.25
        for d, s in zip(take.dataset, take.slide, strict=True)
    ]
    called = []
    for mpp in sorted(set(mpps)):
        files = [root / f for f, m in zip(take.file, mpps, strict=True) if m == mpp]
        patches, masks = crop_inputs(files, bundled, mpp=mpp)
        mf, _ = bundled.predict_patches(patches, masks)
        called.extend((mf >= bundled.threshold).tolist())
    recall = float(np.mean(called))
    assert recall >= MIN_RECALL, f"recall {recall:.3f} on held-out labelled figures"


@pytest.mark.xfail(
    strict=True,
    reason="issue 12: the bundled model still calls dark interphase / pyknotic nuclei in "
    "ordinary tissue (~100 per mm², benchmarks/tissue_loo.py), above real mitotic densities",
)
def test_bundled_model_does_not_call_ordinary_nuclei_in_tissue(bundled):
    from PIL import Image

    from mitoscope import DetectConfig, detect_slide
    from mitoscope.slide import ArraySlide
    from mitoscope.train.samples import read_tissue_index

    root = shared_file("tissue")
    rows = read_tissue_index(root)
    # one FFPE image of each of two organs and a frozen section (stomach)
    pick = [next(r for r in rows if r["organ"] == o) for o in ("breast", "kidney", "stomach")]
    area = 0.0
    n = 0
    for r in pick:
        img = np.asarray(Image.open(root / r["file"]).convert("RGB"))
        res = detect_slide(
            ArraySlide(img, mpp=float(r["mpp"]), path=root / r["file"]),
            config=DetectConfig(report=False),
            progress=False,
        )
        area += res.tissue_area_mm2
        n += len(res.mitoses)
    assert area > 0.15
    assert n / area <= MAX_PER_MM2, f"{n} detections in {area:.3f} mm² of ordinary tissue"
