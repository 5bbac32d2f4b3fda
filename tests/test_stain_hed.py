"""Ruifrok-Johnston HED colour deconvolution helpers."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.errors import InvalidInputError
from mitoscope.stain.hed import (
    HED_FROM_RGB,
    OD_MAX,
    RGB_FROM_HED,
    haematoxylin,
    hed_to_rgb,
    od_to_rgb,
    rgb_to_hed,
    rgb_to_od,
)


def test_matches_scikit_image_up_to_the_log_base():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (64, 64, 3), dtype=np.uint8)
    # skimage: ln(I/255) / ln(1e-6) = log10 OD / 6
    np.testing.assert_allclose(rgb_to_hed(img) / 6.0, rgb2hed(img), atol=1e-5)
    np.testing.assert_allclose(RGB_FROM_HED @ HED_FROM_RGB, np.eye(3), atol=1e-12)


def test_round_trip_and_ranges():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert np.array_equal(hed_to_rgb(rgb_to_hed(img, clip_negative=False)), np.maximum(img, 1))
    od = rgb_to_od(img)
    assert od.dtype == np.float32 and od.min() >= 0 and od.max() <= OD_MAX + 1e-6
    assert np.array_equal(od_to_rgb(od), np.maximum(img, 1))
    assert float(rgb_to_hed(np.full((3, 3, 3), 255, np.uint8)).max()) == 0.0


def test_haematoxylin_separates_nuclei_from_eosin():
    nucleus = np.array([[[95, 55, 140]]], np.uint8)  # purple-blue
    eosin = np.array([[[232, 150, 190]]], np.uint8)  # pink
    assert haematoxylin(nucleus)[0, 0] > 3 * haematoxylin(eosin)[0, 0]
    hed = rgb_to_hed(eosin)
    assert hed[0, 0, 1] > hed[0, 0, 0]  # eosin dominates in pink
    np.testing.assert_allclose(haematoxylin(nucleus), rgb_to_hed(nucleus)[..., 0], atol=1e-6)


def test_float_input_and_bad_shapes():
    img = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_hed(img / 255.0), rgb_to_hed(img), atol=1e-6)
    assert rgb_to_hed(np.dstack([img, np.full((8, 8), 255, np.uint8)])).shape == (8, 8, 3)
    with pytest.raises(InvalidInputError, match="RGB"):
        rgb_to_hed(np.zeros((8, 8)))
