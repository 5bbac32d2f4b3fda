"""Exception hierarchy. Every error a user can cause is a :class:`MitoscopeError`.

The CLI maps any ``MitoscopeError`` to one line on stderr and exit code 2.
Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class MitoscopeError(Exception):
    """Base class for all user-facing errors (bad input, missing files, ...).

    The message is always one line: line breaks (say, from a file's content quoted in the
    message) become spaces.
    """

    def __str__(self) -> str:
        text = super().__str__()
        lines = text.splitlines()
        return " ".join(s.strip() for s in lines if s.strip()) if len(lines) > 1 else text


class SlideOpenError(MitoscopeError):
    """A slide or image could not be opened (missing, corrupt, unsupported)."""


class MissingMetadataError(MitoscopeError):
    """Required metadata (usually the pixel size) is absent."""


class InvalidInputError(MitoscopeError):
    """An argument or input file has a wrong value or format."""


class NoTissueError(InvalidInputError):
    """A slide or region image has no tissue: nothing to detect.

    :func:`~mitoscope.detect.detect_slide` returns the empty result, marked
    (``SlideResult.stats.no_tissue``), but writes no outputs for it; the CLI reports this error
    for it (one line) and exits 2.
    """

    #: the note stored in the result (``summary.json`` ``notes``) of a slide without tissue
    NOTE = "no tissue found: nothing to detect (empty result)"

    def __init__(self, path: object = "") -> None:
        prefix = f"{path}: " if path else ""
        super().__init__(f"{prefix}{self.NOTE}; check the slide, or pass a region image of tissue")


class RegionError(InvalidInputError):
    """A requested region lies (partly) outside the slide."""


class ModelLoadError(MitoscopeError):
    """A model checkpoint is missing, corrupt or does not match the architecture."""


class OutputError(MitoscopeError):
    """Results cannot be written (directory not writable, disk full, ...)."""


class MissingDependencyError(MitoscopeError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f'{package} is not installed; run: pip install "mitoscope[{extra}]"')
        self.package = package
        self.extra = extra
