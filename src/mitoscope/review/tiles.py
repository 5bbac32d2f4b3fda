"""Deep Zoom tiles of the slides under ``--slides``: OpenSlide's ``DeepZoomGenerator`` for
whole-slide files, the project's readers (:func:`mitoscope.slide.open_slide`) for plain images.

Only files inside the slide directory are ever opened: a slide's name comes from the run
database, is looked up under the directory (directly, else by file name anywhere below it), and
its resolved path must lie inside the resolved directory (no ``..``, no symbolic links out).
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path
from typing import Any

TILE = 254
OVERLAP = 1


class NotServable(Exception):
    """The slide is not under the slide directory, or cannot be read."""


def safe_slide_path(slides_dir: Path, name: str) -> Path:
    """The file ``name`` (from the database) under ``slides_dir``, or :class:`NotServable`."""
    root = slides_dir.resolve()
    name = str(name)
    if not name or "\x00" in name:
        raise NotServable(name)
    candidates = [root / name]
    base = Path(name).name
    if base and base not in (".", ".."):
        candidates += sorted(root.rglob(base))
    for cand in candidates:
        try:
            real = cand.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.is_file() and real.is_relative_to(root):
            return real
    raise NotServable(name)


class _ReaderDeepZoom:
    """Deep Zoom levels of a plain image read through the project's reader (in memory)."""

    def __init__(self, path: Path) -> None:
        from PIL import Image

        from ..slide import open_slide

        with open_slide(path, mpp=1.0) as reader:  # pixels only: the pixel size is unused
            w, h = reader.info.width, reader.info.height
            arr = reader.read_region((0, 0), 0, (w, h))
        self._base = Image.fromarray(arr)
        self.width, self.height = w, h
        self.level_count = int(math.ceil(math.log2(max(w, h, 1)))) + 1
        self._levels: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _level(self, level: int) -> Any:
        with self._lock:
            img = self._levels.get(level)
            if img is None:
                scale = 2 ** (self.level_count - 1 - level)
                size = (
                    max(1, math.ceil(self.width / scale)),
                    max(1, math.ceil(self.height / scale)),
                )
                img = self._base if scale == 1 else self._base.resize(size, 1)  # LANCZOS
                self._levels[level] = img
            return img

    def get_dzi(self, fmt: str) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
            f'Overlap="{OVERLAP}" TileSize="{TILE}"><Size Width="{self.width}" '
            f'Height="{self.height}"/></Image>'
        )

    def get_tile(self, level: int, address: tuple[int, int]) -> Any:
        if not 0 <= level < self.level_count:
            raise ValueError("level out of range")
        img = self._level(level)
        col, row = address
        x0, y0 = col * TILE, row * TILE
        if col < 0 or row < 0 or x0 >= img.width or y0 >= img.height:
            raise ValueError("tile out of range")
        box = (
            max(0, x0 - OVERLAP),
            max(0, y0 - OVERLAP),
            min(img.width, x0 + TILE + OVERLAP),
            min(img.height, y0 + TILE + OVERLAP),
        )
        return img.crop(box)


class TileServer:
    """Deep Zoom descriptors and JPEG tiles of the slides under one directory (cached)."""

    def __init__(self, slides_dir: str | Path) -> None:
        self.root = Path(slides_dir).resolve()
        self._gens: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def _generator(self, name: str) -> Any:
        path = safe_slide_path(self.root, name)
        with self._lock:
            gen = self._gens.get(path)
        if gen is not None:
            return gen
        gen = None
        try:
            import openslide
            from openslide.deepzoom import DeepZoomGenerator

            if openslide.OpenSlide.detect_format(str(path)) is not None:
                gen = DeepZoomGenerator(
                    openslide.OpenSlide(str(path)),
                    tile_size=TILE,
                    overlap=OVERLAP,
                    limit_bounds=False,
                )
        except Exception:
            gen = None
        if gen is None:
            try:
                gen = _ReaderDeepZoom(path)
            except Exception as exc:
                raise NotServable(f"{name}: {exc}") from None
        with self._lock:
            self._gens.setdefault(path, gen)
            return self._gens[path]

    def dzi(self, name: str) -> str:
        return self._generator(name).get_dzi("jpeg")

    def tile(self, name: str, level: int, col: int, row: int) -> bytes:
        gen = self._generator(name)
        try:
            img = gen.get_tile(level, (col, row))
        except ValueError as exc:
            raise NotServable(str(exc)) from None
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=85)
        return buf.getvalue()
