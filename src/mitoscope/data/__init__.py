"""Files that ship with mitoscope (sample slide, bundled model)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def sample_slide() -> Path:
    """Path of the bundled sample slide (a real CC0 Aperio SVS, 2220 x 2967 px, 0.499 um/px).

    >>> sample_slide().name
    'cmu_small_region.svs'
    """
    from ..errors import SlideOpenError

    path = DATA_DIR / "sample" / "cmu_small_region.svs"
    if not path.exists():
        raise SlideOpenError(f"the bundled sample slide is missing ({path}); reinstall mitoscope")
    return path
