"""Small image helpers for the report: colour maps, overlays, PNG data URIs (Pillow only)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

#: anchor colours of a perceptually ordered "inferno"-like map (black -> purple -> orange -> yellow)
_INFERNO = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)

MF_RGB = (220, 20, 60)
AMF_RGB = (255, 140, 0)
HOT2_RGB = (0, 200, 255)
HOT10_RGB = (60, 230, 60)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with an inferno-like colour map."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(_INFERNO) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(_INFERNO) - 1)
    t = (pos - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - t) + _INFERNO[hi] * t
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def blend(base: np.ndarray, overlay: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``base * (1 - alpha) + overlay * alpha`` for RGB uint8 images."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    out = base.astype(np.float64) * (1 - a) + overlay.astype(np.float64) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def resize_to(image: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize an image (2-D float or RGB uint8) to ``size = (w, h)``."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 2 and arr.dtype != np.uint8:
        pil = Image.fromarray(arr.astype(np.float32), mode="F")
        res = pil.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
        return np.asarray(res)
    pil = Image.fromarray(arr)
    res = pil.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return np.asarray(res)


def png_data_uri(image: np.ndarray) -> str:
    """An RGB uint8 image as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def draw_marks(
    image: np.ndarray,
    *,
    points: Sequence[tuple[float, float, tuple[int, int, int]]] = (),
    circles: Sequence[tuple[float, float, float, tuple[int, int, int], int]] = (),
    polygons: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
    point_radius: float = 4.0,
) -> np.ndarray:
    """Draw detection markers, circles ``(x, y, r, rgb, width)`` and polygons on a copy."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    d = ImageDraw.Draw(pil)
    for x, y, r, rgb, width in circles:
        d.ellipse([x - r, y - r, x + r, y + r], outline=tuple(rgb), width=int(width))
    for poly, rgb in polygons:
        pts = [(float(a), float(b)) for a, b in np.asarray(poly).reshape(-1, 2)]
        if len(pts) >= 2:
            d.line(pts + [pts[0]], fill=tuple(rgb), width=2)
    pr = point_radius
    for x, y, rgb in points:
        d.ellipse([x - pr, y - pr, x + pr, y + pr], outline=tuple(rgb), width=2)
    return np.asarray(pil)
