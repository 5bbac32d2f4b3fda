"""mitoscope: find, count and grade mitotic figures in H&E whole-slide images."""

from .errors import MitoscopeError
from .slide import open_slide

__version__ = "0.1.0"

__all__ = ["MitoscopeError", "__version__", "open_slide"]
