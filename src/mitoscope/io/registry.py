"""The annotation-format registry: name -> reader / writer, and the content tests that sniff it.

Each format module registers its functions where they are defined (timm's ``register_model``
style)::

    @register_reader("geojson", suffixes=(".geojson", ".json"), sniff=_looks_like_geojson,
                     description="GeoJSON FeatureCollection (QuPath)")
    def read_geojson(path, ...): ...

    @register_writer("geojson")
    def write_qupath_geojson(path, detections, ...): ...

:func:`get_format` is the one lookup by name; :func:`sniff_format` picks the reader of a file
from its suffix and content (:func:`mitoscope.io.annotations.read_annotations` uses it). Format
modules import this module and :mod:`.records`, never each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

#: the pseudo-suffix of a directory input
DIRECTORY = "/"


class Peek:
    """What sniffing may look at in one input, each read at most once: the parsed JSON, the
    first text line (errors are the readers' one-line :class:`InvalidInputError`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.suffix = DIRECTORY if path.is_dir() else path.suffix.lower()

    @cached_property
    def json(self) -> Any:
        from .records import load_json

        return load_json(self.path, "annotation")

    @cached_property
    def first_line(self) -> str:
        try:
            with open(self.path, encoding="utf-8-sig") as fh:
                return fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read {self.path} as text: {exc}") from None


@dataclass(frozen=True)
class Format:
    """One annotation format: its reader and/or writer and how to recognise its files.

    ``sniff(peek) -> bool`` decides among the formats that share a suffix (``None``: the
    suffix is enough); higher ``priority`` is asked first. ``check(path, kwargs)`` raises a
    one-line error when the reader cannot work without an argument (MIDOG points need the
    pixel size).
    """

    name: str
    description: str = ""
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[Peek], bool] | None = None
    priority: int = 0
    check: Callable[[Path, dict[str, Any]], None] | None = None
    reader: Callable[..., Any] | None = None
    writer: Callable[..., Path] | None = None


_FORMATS: dict[str, Format] = {}


def _update(name: str, **fields: Any) -> None:
    key = name.strip().lower()
    old = _FORMATS.get(key, Format(name=key))
    _FORMATS[key] = replace(old, **{k: v for k, v in fields.items() if v is not None})


def register_reader(
    name: str,
    *,
    suffixes: tuple[str, ...],
    description: str = "",
    sniff: Callable[[Peek], bool] | None = None,
    priority: int = 0,
    check: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the function as the reader of format ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _update(
            name,
            reader=fn,
            suffixes=tuple(s.lower() for s in suffixes),
            description=description or None,
            sniff=sniff,
            priority=priority,
            check=check,
        )
        return fn

    return deco


def register_writer(
    name: str, *, description: str = ""
) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Decorator: register the function as the writer of format ``name``."""

    def deco(fn: Callable[..., Path]) -> Callable[..., Path]:
        _update(name, writer=fn, description=description or None)
        return fn

    return deco


def _load_all() -> None:
    """Import every format module (each registers itself on import)."""
    from . import amibr, csvpoints, geojson, midog, sliderunner, tupac  # noqa: F401


def formats() -> list[Format]:
    """Every registered format, by name."""
    _load_all()
    return [_FORMATS[k] for k in sorted(_FORMATS)]


def get_format(name: str) -> Format:
    """The format registered as ``name`` (case-insensitive).

    >>> get_format("GeoJSON").writer.__name__
    'write_qupath_geojson'
    """
    _load_all()
    key = str(name).strip().lower()
    if key not in _FORMATS:
        raise InvalidInputError(
            f"unknown annotation format {name!r}; choose one of {', '.join(sorted(_FORMATS))}"
        )
    return _FORMATS[key]


def sniff_format(path: str | os.PathLike[str]) -> Format:
    """The readable format of ``path``: the formats registered for its suffix, asked in
    priority order whether the content is theirs.

    Raises
    ------
    InvalidInputError
        Missing file, a suffix no reader knows, or content no reader of that suffix accepts.
    """
    _load_all()
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"annotation file not found: {p}")
    peek = Peek(p)
    options = sorted(
        (f for f in _FORMATS.values() if f.reader is not None and peek.suffix in f.suffixes),
        key=lambda f: -f.priority,
    )
    if not options:
        raise InvalidInputError(
            f"unsupported annotation file type {peek.suffix or '(none)'} for {p.name}; use "
            ".json, .geojson, .sqlite or .csv"
        )
    for fmt in options:
        if fmt.sniff is None or fmt.sniff(peek):
            return fmt
    names = "; ".join(f"{f.name} ({f.description})" for f in options)
    what = "JSON structure" if peek.suffix == ".json" else f"{peek.suffix} content"
    raise InvalidInputError(f"{p.name}: unrecognised {what}; expected {names}")


__all__ = [
    "DIRECTORY",
    "Format",
    "Peek",
    "formats",
    "get_format",
    "register_reader",
    "register_writer",
    "sniff_format",
]
