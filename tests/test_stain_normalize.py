"""Stain normalisers: Reinhard, Macenko, learned (StainNet-style)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitoscope.errors import InvalidInputError
from mitoscope.stain.hed import od_to_rgb
from mitoscope.stain.normalize import get_normalizer, macenko_stains

H = np.array([0.65, 0.70, 0.29])
E = np.array([0.07, 0.99, 0.11])


def synth_stained(stains: np.ndarray, *, seed: int, scale: float = 1.0) -> np.ndarray:
    """An image made from known stain vectors and random concentrations (+ some glass)."""
    rng = np.random.default_rng(seed)
    stains = stains / np.linalg.norm(stains, axis=1, keepdims=True)
    c = rng.gamma(2.0, 0.25, size=(96 * 96, 2)) * scale
    c[rng.random(96 * 96) < 0.1] = 0.0  # glass
    return od_to_rgb((c @ stains).reshape(96, 96, 3))


@pytest.fixture(scope="module")
def real_he(shared_data) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "slides" / "stardist_histo.jpg").convert("RGB"))


def test_macenko_recovers_known_stain_vectors() -> None:
    img = synth_stained(np.stack([H, E]), seed=1)
    stains, max_c = macenko_stains(img)
    cos_h = stains[0] @ (H / np.linalg.norm(H))
    cos_e = stains[1] @ (E / np.linalg.norm(E))
    assert cos_h > 0.98 and cos_e > 0.98
    assert (max_c > 0).all()


def test_macenko_maps_source_onto_target_stains() -> None:
    target = synth_stained(np.stack([H, E]), seed=2)
    h2 = np.array([0.45, 0.80, 0.40])  # a bluer haematoxylin, a lab with different stains
    e2 = np.array([0.20, 0.95, 0.25])
    source = synth_stained(np.stack([h2, e2]), seed=3, scale=0.6)
    out = get_normalizer("macenko").fit(target).transform(source)
    stains_out, max_out = macenko_stains(out)
    stains_t, max_t = macenko_stains(target)
    assert (stains_out * stains_t).sum(axis=1).min() > 0.98
    np.testing.assert_allclose(max_out, max_t, rtol=0.15)


def test_reinhard_matches_lab_statistics(real_he: np.ndarray) -> None:
    from skimage.color import rgb2lab

    target = real_he
    source = np.clip(real_he.astype(int) * [0.8, 0.9, 1.1] + [10, -5, 0], 0, 255).astype(np.uint8)
    norm = get_normalizer("reinhard").fit(target)
    out = norm.transform(source)
    assert out.dtype == np.uint8 and out.shape == source.shape
    before = np.abs(rgb2lab(source).mean((0, 1)) - rgb2lab(target).mean((0, 1))).max()
    after = np.abs(rgb2lab(out).mean((0, 1)) - rgb2lab(target).mean((0, 1))).max()
    assert after < before / 3


def test_learned_normaliser_reproduces_teacher(real_he: np.ndarray) -> None:
    source = np.clip(real_he.astype(int) * [0.85, 0.95, 1.05], 0, 255).astype(np.uint8)
    learned = get_normalizer("learned", teacher="reinhard", epochs=150).fit(real_he, [source])
    teacher = get_normalizer("reinhard").fit(real_he).transform(source)
    out = learned.transform(source)
    err = np.abs(out.astype(float) - teacher.astype(float)).mean()
    base = np.abs(source.astype(float) - teacher.astype(float)).mean()
    assert err < base / 2
    clone = get_normalizer("learned").load_state_dict(learned.state_dict())
    np.testing.assert_array_equal(clone.transform(source), out)


def test_errors() -> None:
    glass = np.full((64, 64, 3), 250, dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="tissue"):
        get_normalizer("macenko").fit(glass)
    with pytest.raises(InvalidInputError, match="fit"):
        get_normalizer("reinhard").transform(glass)
    with pytest.raises(InvalidInputError, match="unknown stain normaliser"):
        get_normalizer("vahadane")
