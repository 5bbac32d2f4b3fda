"""``mitoscope review`` and ``mitoscope select``: registered from :mod:`mitoscope.review.cli`."""

from __future__ import annotations

from ..review.cli import register

__all__ = ["register"]
