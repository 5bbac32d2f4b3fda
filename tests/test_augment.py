"""HED stain jitter and flips: range, reproducibility, identity at sigma 0."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_he
from mitoscope.errors import InvalidInputError
from mitoscope.stain.augment import flip_rotate, hed_jitter


def test_hed_jitter_in_range_and_shape():
    img = synthetic_he(64, 64, seed=1)
    out = hed_jitter(img, sigma=0.14, rng=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out.min() >= 0 and out.max() <= 255
    assert not np.array_equal(out, img)


def test_hed_jitter_reproducible_with_seed():
    img = synthetic_he(48, 48, seed=2)
    a = hed_jitter(img, rng=123)
    b = hed_jitter(img, rng=123)
    c = hed_jitter(img, rng=124)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_hed_jitter_sigma_zero_is_identity_up_to_rounding():
    img = synthetic_he(32, 32, seed=3)
    out = hed_jitter(img, sigma=0.0, rng=0)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 2


def test_hed_jitter_batch_gets_independent_draws():
    img = synthetic_he(32, 32, seed=4)
    batch = np.stack([img, img, img])
    out = hed_jitter(batch, rng=7)
    assert out.shape == batch.shape
    assert not np.array_equal(out[0], out[1])


def test_hed_jitter_extreme_pixels_stay_valid():
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4] = 255
    out = hed_jitter(img, sigma=0.9, rng=0)
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_hed_jitter_rejects_bad_input():
    with pytest.raises(InvalidInputError):
        hed_jitter(np.zeros((8, 8), np.uint8))
    with pytest.raises(InvalidInputError):
        hed_jitter(np.zeros((8, 8, 3), np.uint8), sigma=1.5)


def test_flip_rotate_keeps_channels_aligned():
    arr = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)
    arr[..., 3] = arr[..., 0]
    for seed in range(8):
        out = flip_rotate(arr, rng=seed)
        assert out.shape == arr.shape
        assert np.array_equal(out[..., 3], out[..., 0])
        assert sorted(out[..., 0].ravel()) == sorted(arr[..., 0].ravel())
