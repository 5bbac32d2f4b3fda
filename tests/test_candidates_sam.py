"""SAM proposer with a tiny randomly initialised Segment Anything model (no download)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("segment_anything")
torch = pytest.importorskip("torch")

from mitoscope.candidates import SamProposer, get_proposer  # noqa: E402
from mitoscope.candidates.sam import (  # noqa: E402
    SamConfig,
    build_sam_model,
    load_sam,
    records_to_candidates,
)
from mitoscope.errors import (  # noqa: E402
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
)


@pytest.fixture(scope="module")
def tiny():
    return build_sam_model("tiny", seed=0)


@pytest.fixture(scope="module")
def tile(he_image):
    from PIL import Image

    return np.asarray(Image.open(he_image).convert("RGB"))[:96, :96].copy()


def test_default_config_is_omgnet():
    cfg = SamConfig()
    assert cfg.points_per_side == 64  # 64 x 64 = 4,096 prompts per 1024 x 1024 tile
    assert cfg.pred_iou_thresh == 0.8 and cfg.stability_score_thresh == 0.8
    assert (cfg.min_area_um2, cfg.max_area_um2) == (2.25, 225.0)
    assert cfg.box_nms_thresh == 0.7


@pytest.fixture(scope="module")
def wide(tiny, tile):
    """Candidates of the tiny model with every filter off (random weights)."""
    p = SamProposer(
        model=tiny,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area_um2=0.0,
        max_area_um2=1e9,
    )
    assert p.device == ("cuda" if torch.cuda.is_available() else "cpu")
    return p.propose(tile, mpp=0.25)


def test_tiny_model_proposes_ranked_masked_candidates(wide):
    c = wide
    assert c.proposer == "sam" and len(c) >= 1
    assert np.all(np.diff(c.score) <= 0)  # ranked by predicted IoU
    for k in range(len(c)):
        x0, y0, x1, y1 = c.bbox[k]
        assert c.masks[k].shape == (y1 - y0, x1 - x0) and c.masks[k].any()
        assert c.area_um2[k] == pytest.approx(c.masks[k].sum() * 0.0625)


def test_area_filter_in_um_is_applied(tiny, tile, wide):
    bound = float(np.median(wide.area_um2))
    p = SamProposer(
        model=tiny,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area_um2=0.0,
        max_area_um2=bound,
    )
    c = p.propose(tile, mpp=0.25)
    # the smallest unfiltered mask survives (it has fewer NMS competitors after filtering)
    assert 1 <= len(c) and np.all(c.area_um2 <= bound)
    assert np.isclose(c.area_um2, wide.area_um2.min()).any()


def test_records_to_candidates():
    seg_a = np.zeros((50, 60), bool)
    seg_a[10:20, 30:34] = True  # 40 px
    seg_b = np.zeros((50, 60), bool)
    seg_b[0:5, 0:5] = True
    recs = [
        {"segmentation": seg_b, "predicted_iou": 0.85},
        {"segmentation": seg_a, "predicted_iou": 0.95},
    ]
    c = records_to_candidates(recs, mpp=0.5)
    assert c.score.tolist() == pytest.approx([0.95, 0.85])
    assert c.bbox[0].tolist() == [30, 10, 34, 20]
    assert (c.x_px[0], c.y_px[0]) == pytest.approx((31.5, 14.5))
    assert c.area_um2.tolist() == pytest.approx([10.0, 6.25])
    assert len(records_to_candidates([], mpp=0.5)) == 0


def test_checkpoint_round_trip(tiny, tmp_path, tile):
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny.state_dict(), path)
    loaded = load_sam(path, variant="tiny")
    for (k, v), (k2, v2) in zip(
        tiny.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": tiny.state_dict()}, wrapped)
    assert load_sam(wrapped, variant="tiny") is not None
    p = get_proposer("sam", checkpoint=path, variant="tiny", points_per_side=2)
    assert isinstance(p, SamProposer)
    assert p.propose(tile, mpp=0.25).proposer == "sam"


def test_checkpoint_errors(tiny, tmp_path):
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(ModelLoadError, match="does not match SAM variant vit_b"):
        load_sam(path, variant="vit_b")
    fake_b = tmp_path / "looks_like_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, fake_b)
    with pytest.raises(ModelLoadError, match="--sam-variant vit_b"):
        load_sam(fake_b, variant="vit_h")
    with pytest.raises(ModelLoadError, match="not found"):
        load_sam(tmp_path / "missing.pth", variant="vit_h")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_sam(corrupt, variant="vit_h")
    partial = tmp_path / "partial.pth"
    sd = dict(tiny.state_dict())
    sd.pop(next(iter(sd)))
    torch.save(sd, partial)
    with pytest.raises(ModelLoadError, match="does not match"):
        load_sam(partial, variant="tiny")
    with pytest.raises(ModelLoadError, match="--sam-checkpoint"):
        get_proposer("sam")
    with pytest.raises(InvalidInputError, match="cpu_dtype"):
        SamProposer(model=tiny, cpu_dtype="float16")
    with pytest.raises(InvalidInputError, match="unknown SAM variant"):
        load_sam(path, variant="vit_x")


def test_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(MissingDependencyError, match=r"mitoscope\[sam\]"):
        SamProposer(checkpoint="x.pth")


def test_sam_through_propose_slide(tiny):
    from mitoscope.candidates import propose_slide
    from mitoscope.slide import ArraySlide

    rng = np.random.default_rng(0)
    img = rng.integers(100, 250, (100, 200, 3), dtype=np.uint8)
    p = SamProposer(model=tiny, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    c = propose_slide(ArraySlide(img, mpp=0.25), proposer=p, tile_um=40.0, overlap_um=8.0)
    assert c.proposer == "sam" and c.mask_downsample == 1.0
    assert np.all((c.x_px >= 0) & (c.x_px < 200) & (c.y_px >= 0) & (c.y_px < 100))
    assert np.all((c.area_um2 >= 2.25) & (c.area_um2 <= 225.0))


def test_cli_with_sam_checkpoint(tiny, tmp_path):
    from PIL import Image

    from mitoscope.cli import main

    ckpt = tmp_path / "tiny_sam.pth"
    torch.save(tiny.state_dict(), ckpt)
    img = tmp_path / "region.png"
    Image.fromarray(np.random.default_rng(0).integers(100, 250, (64, 64, 3), np.uint8)).save(img)
    out = tmp_path / "c.csv"
    args = ["candidates", str(img), "--mpp", "0.25", "--proposer", "sam", "--out", str(out)]
    args += ["--sam-checkpoint", str(ckpt), "--all-tiles"]
    assert main([*args, "--sam-variant", "tiny", "--sam-cpu-dtype", "float32"]) == 0
    assert out.read_text().startswith("x_px,y_px,area_um2,score")
    out.unlink()
    assert main([*args, "--sam-variant", "vit_b"]) == 2  # checkpoint of another variant
    assert not out.exists()
