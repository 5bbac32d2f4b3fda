"""Review detections in the browser and choose what to review (active learning).

``mitoscope review RUN --slides DIR`` serves :mod:`.app` (FastAPI + uvicorn, OpenSeadragon
shipped in ``static/``); answers go into the run's SlideRunner database (:mod:`.store`).
``mitoscope select RUNS... --budget N`` writes a review queue (:mod:`.select`).
Web libraries are imported inside functions: importing this package stays light.
"""

from __future__ import annotations

from .store import ANSWERS, CLASS_EQUIVOCAL, ReviewStore, resolve_database

__all__ = ["ANSWERS", "CLASS_EQUIVOCAL", "ReviewStore", "resolve_database"]
