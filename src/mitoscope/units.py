"""Unit conversions. Sizes are specified in micrometres and converted with the pixel size."""

from __future__ import annotations

import math

from .errors import InvalidInputError

#: Plausible range of pixel sizes (um/px) for brightfield slides at any pyramid level-0.
MPP_MIN = 0.05
MPP_MAX = 20.0


def validate_mpp(mpp: float, *, name: str = "mpp") -> float:
    """Return ``mpp`` as float if it is a plausible pixel size in um/px, else raise.

    >>> validate_mpp(0.25)
    0.25
    """
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number in um/px, got {mpp!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive pixel size in um/px, got {mpp!r}")
    if not MPP_MIN <= value <= MPP_MAX:
        raise InvalidInputError(
            f"{name}={value:g} um/px is outside the plausible range "
            f"{MPP_MIN}-{MPP_MAX} um/px (typical: 0.25 at 40x, 0.5 at 20x)"
        )
    return value


def um_to_px(length_um: float, mpp: float) -> float:
    """Length in micrometres to pixels at pixel size ``mpp`` (um/px)."""
    return float(length_um) / float(mpp)


def px_to_um(length_px: float, mpp: float) -> float:
    """Length in pixels to micrometres at pixel size ``mpp`` (um/px)."""
    return float(length_px) * float(mpp)


def area_um2_to_px(area_um2: float, mpp: float) -> float:
    """Area in um² to pixel count at pixel size ``mpp``."""
    return float(area_um2) / (float(mpp) ** 2)


def area_px_to_um2(area_px: float, mpp: float) -> float:
    """Pixel count to area in um²."""
    return float(area_px) * (float(mpp) ** 2)


def px_to_mm(coord_px: float, mpp: float) -> float:
    """Pixel coordinate to millimetres (MIDOG result format)."""
    return float(coord_px) * float(mpp) / 1000.0


def mm_to_px(coord_mm: float, mpp: float) -> float:
    """Millimetre coordinate to pixels."""
    return float(coord_mm) * 1000.0 / float(mpp)


def circle_radius_um(area_mm2: float) -> float:
    """Radius in um of a circle with the given area in mm² (2 mm² -> 797.9 um)."""
    return math.sqrt(float(area_mm2) / math.pi) * 1000.0
