"""detect_slide with the SAM proposer (a tiny randomly initialised SAM; no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mitoscope.detect import DetectConfig, detect_slide
from mitoscope.slide import ArraySlide
from test_pipeline import TinyClassifier


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyClassifier:
    return TinyClassifier(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_sam_proposer_composes(tiny: TinyClassifier, he_image: Path) -> None:
    pytest.importorskip("segment_anything")
    from PIL import Image

    from mitoscope.candidates import SamProposer
    from mitoscope.candidates.sam import build_sam_model

    sam = SamProposer(
        model=build_sam_model("tiny", seed=0),
        device="cpu",
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area_um2=0.0,
        max_area_um2=1e9,
    )
    img = np.asarray(Image.open(he_image).convert("RGB"))[:128, :128].copy()
    res = detect_slide(
        ArraySlide(img, mpp=0.25, path="he.png"),
        proposer=sam,
        classifier=tiny,
        config=DetectConfig(floor=0.0, threshold=0.0, report=False),
        progress=False,
    )
    assert res.proposer == "sam"
    assert res.stats.n_candidates > 0 and len(res.mitoses) == len(res.detections) > 0
    assert all(c is not None and len(c) >= 4 for c in res.detections.contours)
