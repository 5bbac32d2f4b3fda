"""Slide I/O: readers, tissue detection and tiling."""

from .reader import ArraySlide, SlideReader, open_slide
from .tiling import plan_tiles
from .tissue import TissueMask, detect_tissue

__all__ = ["ArraySlide", "SlideReader", "TissueMask", "detect_tissue", "open_slide", "plan_tiles"]
