"""Stage 2: classify candidates as mitotic figure (and atypical vs normal).

>>> from mitoscope.classify import list_models
>>> "effnet_lite0" in list_models()
True

``load_classifier()`` loads the bundled default model; ``Classifier.predict_candidates``
scores the candidates of an image at the model's pixel size.
"""

from __future__ import annotations

from .classifier import Classifier, default_model_path, load_classifier, save_checkpoint
from .patches import extract_patches
from .registry import ModelSpec, create_model, get_spec, list_models, register_model

__all__ = [
    "Classifier",
    "ModelSpec",
    "create_model",
    "default_model_path",
    "extract_patches",
    "get_spec",
    "list_models",
    "load_classifier",
    "register_model",
    "save_checkpoint",
]
