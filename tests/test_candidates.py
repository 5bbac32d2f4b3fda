"""Classical proposer, merging and slide-level proposing."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.candidates import (
    ClassicalProposer,
    Proposer,
    get_proposer,
    merge_candidates,
    propose_image,
    propose_slide,
)
from mitoscope.errors import InvalidInputError
from mitoscope.slide import ArraySlide
from mitoscope.types import Candidates

PINK = (232, 170, 200)
NUCLEUS = (95, 55, 140)
MITOSIS = (45, 25, 75)


def render(
    nuclei: list[tuple[float, float, float]],
    *,
    size_um: float,
    mpp: float,
    colour=NUCLEUS,
    background=PINK,
) -> np.ndarray:
    """An H&E-like image of discs ``(x_um, y_um, radius_um)`` rendered at pixel size ``mpp``."""
    n = int(round(size_um / mpp))
    img = np.empty((n, n, 3), dtype=np.uint8)
    img[:] = background
    c = (np.arange(n) + 0.5) * mpp
    yy, xx = np.meshgrid(c, c, indexing="ij")
    for x, y, r in nuclei:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = colour
    return img


GRID = [
    (15.0 + 20.0 * i, 15.0 + 20.0 * j, 2.0 + 0.6 * ((i + j) % 5))
    for i in range(6)
    for j in range(6)
]


def test_protocol_and_factory():
    p = get_proposer()
    assert isinstance(p, Proposer)
    assert isinstance(p, ClassicalProposer) and p.name == "classical"
    with pytest.raises(InvalidInputError, match="unknown proposer"):
        get_proposer("watershed-magic")
    assert ClassicalProposer(dark_levels=(0.5,)).config.dark_levels == (0.5,)


def test_candidates_fields_and_masks():
    img = render(GRID, size_um=130.0, mpp=0.25)
    c = ClassicalProposer().propose(img, mpp=0.25)
    assert len(c) == len(GRID)
    assert c.proposer == "classical" and c.mask_downsample == 1.0
    assert c.masks is not None and len(c.masks) == len(c)
    for k in range(len(c)):
        x0, y0, x1, y1 = c.bbox[k]
        m = c.masks[k]
        assert m.dtype == bool and m.shape == (y1 - y0, x1 - x0)
        assert x0 <= c.x_px[k] < x1 and y0 <= c.y_px[k] < y1
        assert m.sum() * 0.25**2 == pytest.approx(c.area_um2[k])
    assert np.all(c.score > 0)


@pytest.mark.parametrize("mpp", [0.23, 0.25, 0.5])
def test_area_in_micrometres_is_resolution_independent(mpp):
    """The same physical nuclei give the same count and areas at 0.23, 0.25 and 0.5 um/px."""
    img = render(GRID, size_um=130.0, mpp=mpp)
    c = ClassicalProposer().propose(img, mpp=mpp)
    assert len(c) == len(GRID)
    truth = {(round(x), round(y)): np.pi * r * r for x, y, r in GRID}
    for x, y, a in zip(c.x_px * mpp, c.y_px * mpp, c.area_um2, strict=True):
        key = min(truth, key=lambda k: (k[0] - x) ** 2 + (k[1] - y) ** 2)
        assert np.hypot(key[0] - x, key[1] - y) < 0.5  # um
        assert a == pytest.approx(truth[key], rel=0.2, abs=1.5)


def test_area_filter_bounds_in_um():
    # 1.0 um radius (3.1 um²) kept; 0.6 um (1.1 um², below 2.25) dropped; 10 um (314 um²) dropped
    objs = [(20.0, 20.0, 1.0), (50.0, 20.0, 0.6), (40.0, 60.0, 10.0)]
    for mpp in (0.25, 0.5):
        c = ClassicalProposer().propose(render(objs, size_um=90.0, mpp=mpp), mpp=mpp)
        assert len(c) == 1
        assert c.x_px[0] * mpp == pytest.approx(20.0, abs=0.6)
        assert 2.25 <= c.area_um2[0] <= 225


def test_touching_nuclei_are_split():
    pair = [(30.0, 30.0, 4.0), (37.0, 30.0, 4.0)]  # overlapping discs, one blob of ~90 um²
    c = ClassicalProposer().propose(render(pair, size_um=60.0, mpp=0.25), mpp=0.25)
    assert len(c) == 2
    xs = np.sort(c.x_px * 0.25)
    assert xs[0] == pytest.approx(29.5, abs=1.5) and xs[1] == pytest.approx(37.5, abs=1.5)


def test_dark_mitosis_inside_a_pale_blob_is_proposed():
    """A small dark chromatin clump touching a large pale nucleus still gets its own candidate."""
    img = render([(30.0, 30.0, 7.0)], size_um=60.0, mpp=0.25, colour=(150, 110, 170))
    yy, xx = np.mgrid[0:240, 0:240]
    img[((xx - 150) / 10.0) ** 2 + ((yy - 120) / 3.0) ** 2 <= 1] = MITOSIS  # elongated plate
    c = ClassicalProposer().propose(img, mpp=0.25)
    d = np.hypot(c.x_px - 150, c.y_px - 120) * 0.25
    assert d.min() < 2.0
    assert c.score[np.argmin(d)] == c.score.max()  # the darkest object scores highest


@pytest.mark.parametrize(
    "fill", [(255, 255, 255), (245, 245, 245), (0, 0, 0), (12, 10, 14), PINK, (128, 128, 128)]
)
def test_uniform_tiles_give_nothing(fill):
    img = np.empty((512, 512, 3), dtype=np.uint8)
    img[:] = fill
    c = ClassicalProposer().propose(img, mpp=0.25)
    assert len(c) == 0 and c.masks == []


def test_noise_and_degenerate_inputs():
    rng = np.random.default_rng(0)
    white_noise = np.clip(rng.normal(245, 4, (512, 512, 3)), 0, 255).astype(np.uint8)
    assert len(ClassicalProposer().propose(white_noise, mpp=0.25)) <= 2
    dark_noise = np.clip(rng.normal(20, 8, (512, 512, 3)), 0, 255).astype(np.uint8)
    assert len(ClassicalProposer().propose(dark_noise, mpp=0.25)) <= 5
    assert len(ClassicalProposer().propose(np.zeros((1, 1, 3), np.uint8), mpp=0.25)) == 0
    with pytest.raises(InvalidInputError):
        ClassicalProposer().propose(np.zeros((10, 10), np.uint8), mpp=0.25)
    with pytest.raises(InvalidInputError):
        ClassicalProposer().propose(np.zeros((10, 10, 3), np.uint8), mpp=0.0)


def test_black_border_does_not_hide_a_mitosis():
    """Scanner borders / crop padding (pure black) must not push the threshold up."""
    img = render([(20.0, 16.0, 1.5)], size_um=32.0, mpp=0.25, colour=MITOSIS)
    img[96:] = 0
    c = ClassicalProposer().propose(img, mpp=0.25)
    assert len(c) == 1 and np.hypot(c.x_px[0] - 80, c.y_px[0] - 64) < 4


# -- merging -------------------------------------------------------------------------------
def _cands(xy, score, masks=None, bbox=None):
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    return Candidates(
        x_px=xy[:, 0],
        y_px=xy[:, 1],
        bbox=np.zeros((n, 4)) if bbox is None else bbox,
        area_um2=np.full(n, 10.0),
        score=score,
        masks=masks,
    )


def test_merge_by_centroid_keeps_higher_score():
    c = _cands([(0, 0), (10, 0), (100, 0), (100, 15)], [0.2, 0.9, 0.5, 0.4])
    m = merge_candidates(c, mpp=0.25, radius_um=4.0)  # 16 px
    assert m.x_px.tolist() == [10, 100]
    assert m.score.tolist() == pytest.approx([0.9, 0.5])
    assert len(merge_candidates(c, mpp=0.25, radius_um=1.0)) == 4
    assert len(merge_candidates(Candidates.empty(), mpp=0.25)) == 0


def test_merge_by_mask_overlap():
    big = np.ones((40, 40), bool)
    # same object, centroids 24 px = 6 um apart (beyond the radius) but mask IoU 0.6
    masks = [big, big, np.ones((10, 10), bool)]
    bbox = np.array([[0, 0, 40, 40], [10, 0, 50, 40], [200, 200, 210, 210]])
    c = _cands([(20, 20), (30, 20), (205, 205)], [0.5, 0.7, 0.1], masks=masks, bbox=bbox)
    m = merge_candidates(c, mpp=0.25, radius_um=2.0, iou_threshold=0.5)
    assert m.x_px.tolist() == [30, 205]
    assert len(merge_candidates(c, mpp=0.25, radius_um=2.0, iou_threshold=0.7)) == 3


# -- slides and tiles ------------------------------------------------------------------------
def test_object_across_tile_border_reported_once():
    mpp = 0.25
    tile_um, overlap_um = 64.0, 16.0
    border_um = tile_um - overlap_um  # first core boundary (level-0 px 192)
    nuclei = [
        (border_um, 30.0, 4.0),  # centred on the vertical core border
        (border_um + 0.3, border_um - 0.2, 3.0),  # on the corner of four cores
        (20.0, border_um + 0.1, 2.5),  # on a horizontal border
        (80.0, 80.0, 3.5),
        (20.0, 20.0, 3.0),
    ]
    img = render(nuclei, size_um=128.0, mpp=mpp)
    reader = ArraySlide(img, mpp=mpp)
    c = propose_slide(
        reader, proposer="classical", tile_um=tile_um, overlap_um=overlap_um, work_mpp=mpp
    )
    assert len(c) == len(nuclei)
    for x, y, _ in nuclei:
        assert np.sum(np.hypot(c.x_px * mpp - x, c.y_px * mpp - y) < 3.0) == 1
    whole = ClassicalProposer().propose(img, mpp=mpp)
    assert len(whole) == len(c)


def test_propose_slide_level0_coordinates_at_coarser_work_mpp():
    """Work at 0.5 um/px on a 0.25 um/px slide: positions, boxes and masks map to level 0."""
    nuclei = [(30.0, 40.0, 3.0), (70.0, 90.0, 4.0), (100.0, 20.0, 3.5)]
    reader = ArraySlide(render(nuclei, size_um=128.0, mpp=0.25), mpp=0.25)
    c = propose_slide(reader, tile_um=64.0, overlap_um=16.0, work_mpp=0.5)
    assert len(c) == 3
    assert c.mask_downsample == pytest.approx(2.0)
    for x, y, r in nuclei:
        k = np.argmin(np.hypot(c.x_px * 0.25 - x, c.y_px * 0.25 - y))
        assert np.hypot(c.x_px[k] * 0.25 - x, c.y_px[k] * 0.25 - y) < 0.6
        assert c.area_um2[k] == pytest.approx(np.pi * r * r, rel=0.25)
        x0, y0, x1, y1 = c.bbox[k]
        assert x0 <= c.x_px[k] <= x1 and y0 <= c.y_px[k] <= y1
        assert (x1 - x0) == pytest.approx(c.masks[k].shape[1] * 2, abs=2)


def test_propose_slide_respects_tissue_and_empty():
    from mitoscope.slide.tissue import TissueMask

    img = render([(20.0, 20.0, 3.0), (100.0, 100.0, 3.0)], size_um=128.0, mpp=0.25)
    reader = ArraySlide(img, mpp=0.25)
    mask = np.zeros((16, 16), bool)
    mask[:4, :4] = True  # tissue only in the top-left 32 um
    tissue = TissueMask(mask=mask, downsample=32.0, mpp=8.0)
    c = propose_slide(reader, tissue=tissue, tile_um=64.0, overlap_um=16.0, work_mpp=0.25)
    assert len(c) == 1 and c.x_px[0] * 0.25 == pytest.approx(20.0, abs=0.6)
    blank = ArraySlide(np.full((300, 300, 3), 250, np.uint8), mpp=0.25)
    e = propose_slide(blank, tile_um=64.0, overlap_um=16.0)
    assert len(e) == 0


def test_propose_image_matches_tile_proposer():
    img = render(GRID, size_um=130.0, mpp=0.25)
    a = propose_image(img, mpp=0.25, tile_um=64.0, overlap_um=16.0)
    b = ClassicalProposer().propose(img, mpp=0.25)
    assert len(a) == len(b)
    ia, ib = np.lexsort((a.x_px, a.y_px)), np.lexsort((b.x_px, b.y_px))
    np.testing.assert_allclose(a.x_px[ia], b.x_px[ib], atol=0.5)
    np.testing.assert_allclose(a.area_um2[ia], b.area_um2[ib], rtol=0.05)


# -- real images -----------------------------------------------------------------------------
def test_real_he_image_gives_plausible_nuclei(he_image):
    """tiatoolbox_target_image.png, taken as 0.25 um/px (40x; lymphocytes ~ 6 um across)."""
    from PIL import Image

    img = np.asarray(Image.open(he_image).convert("RGB"))
    c = ClassicalProposer().propose(img, mpp=0.25)
    # about 400 nuclei are visible; fragments and small dark debris add some
    assert 300 <= len(c) <= 900
    assert np.all((c.area_um2 >= 2.25) & (c.area_um2 <= 225))
    assert np.median(c.area_um2) > 8
    assert np.all((c.score >= 0) & (c.score <= 2.42))


def test_real_mitosis_crops_recalled():
    """First 60 AMi-Br crops: the centred mitotic figure has a candidate within 7.5 um."""
    import pandas as pd
    from PIL import Image

    labels = pd.read_csv(shared_file("amibr-train", "labels.csv")).iloc[:60]
    root = shared_file("amibr-train")
    hits = 0
    for row in labels.itertuples():
        mpp = 0.23 if row.dataset == "MIDOG21" and int(row.slide[:3]) <= 100 else 0.25
        rgb = np.asarray(Image.open(root / row.file).convert("RGB"))
        img = np.pad(rgb, ((32, 32), (32, 32), (0, 0)), mode="reflect")
        c = ClassicalProposer().propose(img, mpp=mpp)
        d = np.hypot(c.x_px - 32 - 64, c.y_px - 32 - 64) * mpp
        hits += bool(d.size and d.min() <= 7.5)
    assert hits >= 58


def test_ink_speck_is_dropped_nucleus_next_to_nothing_is_kept():
    """Green / cyan marking ink is not stain: a dark speck with an ink rim is no candidate, a
    nucleus of the same darkness elsewhere is (sizes in um, at two pixel sizes)."""
    from mitoscope.candidates.base import ink_fraction

    for mpp in (0.25, 0.5):
        img = render([(30.0, 30.0, 3.0), (90.0, 90.0, 3.0)], size_um=128.0, mpp=mpp, colour=MITOSIS)
        n = img.shape[0]
        c = (np.arange(n) + 0.5) * mpp
        yy, xx = np.meshgrid(c, c, indexing="ij")
        rim = (np.hypot(xx - 90.0, yy - 90.0) > 3.0) & (np.hypot(xx - 90.0, yy - 90.0) <= 4.5)
        img[rim] = (40, 150, 150)  # teal ink around the second dark object
        raw = ClassicalProposer().propose(img, mpp=mpp)
        assert ink_fraction(img, raw, mpp=mpp).max() > 0.05
        got = propose_slide(ArraySlide(img, mpp=mpp), tile_um=128.0, overlap_um=0.0, work_mpp=mpp)
        assert len(got) >= 1
        d_nuc = np.hypot(got.x_px * mpp - 30.0, got.y_px * mpp - 30.0)
        d_ink = np.hypot(got.x_px * mpp - 90.0, got.y_px * mpp - 90.0)
        assert (d_nuc < 2.0).sum() == 1, "the nucleus must stay a candidate"
        assert (d_ink < 6.0).sum() == 0, "the ink speck must not be a candidate"


def test_real_mitoses_are_never_taken_for_ink():
    """On expert-labelled mitotic figures (AMi-Br crops, several scanners), the candidate at
    the centre keeps an ink share far below the cut."""
    from PIL import Image

    from mitoscope.candidates.base import MAX_INK_FRACTION, ink_fraction

    root = shared_file("amibr-train")
    files = sorted(root.glob("*/*.png"))[::40]
    assert len(files) > 60
    worst = 0.0
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        c = ClassicalProposer().propose(img, mpp=0.25)
        if len(c):
            k = int(np.argmin(np.hypot(c.x_px - img.shape[1] / 2, c.y_px - img.shape[0] / 2)))
            worst = max(worst, float(ink_fraction(img, c, mpp=0.25)[k]))
    assert worst < MAX_INK_FRACTION / 2, worst
