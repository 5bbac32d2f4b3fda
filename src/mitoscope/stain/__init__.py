"""Stain tools: Ruifrok-Johnston colour deconvolution (``hed``), augmentation, normalisers.

Submodules are imported on demand (``from mitoscope.stain.hed import rgb_to_hed``); this package
imports nothing heavy at import time.
"""

from __future__ import annotations
