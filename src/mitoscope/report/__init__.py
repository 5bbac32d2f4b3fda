"""Reports: the per-slide HTML page and Grad-CAM overlays."""

from __future__ import annotations

from .gradcam import ensemble_gradcam, gradcam
from .html import render_report

__all__ = ["ensemble_gradcam", "gradcam", "render_report"]
