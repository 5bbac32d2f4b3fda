"""Reports: the per-slide HTML page and Grad-CAM overlays."""

from __future__ import annotations

from .gradcam import ensemble_gradcam, gradcam, spatial_layer
from .html import render_report

__all__ = ["ensemble_gradcam", "gradcam", "render_report", "spatial_layer"]
