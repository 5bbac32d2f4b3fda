"""One slide-reader interface over real backends.

``open_slide(path)`` picks a backend: OpenSlide (SVS, NDPI, MRXS, SCN, generic pyramidal TIFF,
...), tiffslide (OME-TIFF and TIFF that OpenSlide cannot read), plain images (PNG/JPEG/TIFF/BMP
regions through Pillow/tifffile), DICOM WSI through wsidicom (extra ``dicom``), or an in-memory
array (:class:`ArraySlide`). Every backend returns RGB ``uint8`` arrays and uses level-0 pixel
coordinates.

Over 400 lines: the :class:`SlideReader` interface (with the reading and resampling every
backend inherits, ~180 lines), five backends of 10-80 lines (OpenSlide, tiffslide, plain image,
array, DICOM) and the one ``open_slide`` that picks among them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingMetadataError, RegionError, SlideOpenError
from ..types import Region, SlideInfo
from ..units import validate_mpp

#: read_region_mpp anti-aliases only when the output is smaller than this share of the source
ANTIALIAS_BELOW = 0.75

#: a thumbnail's source level larger than this (bytes of RGB) is read in bands of rows
THUMBNAIL_READ_BYTES = 256 * 1024 * 1024
#: ... in bands of at most this many bytes of RGB (in each process of a parallel pass) ...
THUMBNAIL_BAND_BYTES = 64 * 1024 * 1024
#: ... and then shrunk once to this size (longer side) and kept for later thumbnails
BANDED_THUMBNAIL_PX = 2048

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff", ".ome.tif", ".ome.tiff"}
BACKENDS = ("auto", "openslide", "tiffslide", "image", "dicom")
#: plain images larger than this (pixels) are refused (held in memory whole): 1.5 gigapixels
MAX_IMAGE_PIXELS = 1_500_000_000


class SlideReader(ABC):
    """Common interface of all slide backends (use as a context manager)."""

    info: SlideInfo
    #: ``(map, workers)``: run the banded pass over a big single level (see
    #: :meth:`get_thumbnail`) in ``workers`` processes, ``map(fn, items)`` yielding
    #: ``fn(item)`` in order (detection sets its worker pool here for its tissue pass)
    band_map: tuple[Callable[..., Any], int] | None = None

    @abstractmethod
    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Read an in-bounds region; ``x, y`` level-0, ``w, h`` at ``level``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int], *, clip: bool = False
    ) -> np.ndarray:
        """Read ``size = (w, h)`` pixels at ``level`` whose top-left is ``location`` (level 0).

        Returns an ``(h, w, 3)`` uint8 RGB array. A region that leaves the slide raises
        :class:`RegionError` unless ``clip=True``, in which case the outside is white.
        """
        info = self.info
        if not 0 <= level < info.levels:
            raise RegionError(
                f"level {level} does not exist (slide has levels 0-{info.levels - 1})"
            )
        x, y = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise RegionError(f"region size must be positive, got {w}x{h}")
        ds = info.level_downsamples[level]
        x1 = x + int(math.ceil(w * ds))
        y1 = y + int(math.ceil(h * ds))
        inside = x >= 0 and y >= 0 and x1 <= info.width + ds and y1 <= info.height + ds
        if inside:
            return self._checked_read(x, y, level, w, h)
        if not clip:
            raise RegionError(
                f"region x={x} y={y} {w}x{h} at level {level} lies outside the slide "
                f"({info.width}x{info.height} px at level 0)"
            )
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        cx0, cy0 = max(x, 0), max(y, 0)
        cx1, cy1 = min(x1, info.width), min(y1, info.height)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        ox, oy = int((cx0 - x) / ds), int((cy0 - y) / ds)
        cw = min(int((cx1 - cx0) / ds), w - ox)
        ch = min(int((cy1 - cy0) / ds), h - oy)
        if cw > 0 and ch > 0:
            out[oy : oy + ch, ox : ox + cw] = self._checked_read(cx0, cy0, level, cw, ch)
        return out

    def _checked_read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        try:
            arr = self._read(x, y, level, w, h)
        except RegionError:
            raise
        except Exception as exc:  # backend decode errors -> clear message
            raise SlideOpenError(
                f"cannot decode {self.info.path.name} at x={x} y={y} level={level}: "
                f"{type(exc).__name__}: {exc}".strip()
            ) from exc
        return _to_rgb(arr)

    def best_level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest level whose pixel size is still at most ``target_mpp`` (1% slack)."""
        best = 0
        for lvl in range(self.info.levels):
            if self.info.level_mpp(lvl) <= target_mpp * 1.01:
                best = lvl
        return best

    def read_region_mpp(
        self, region: Region, target_mpp: float, *, clip: bool = True
    ) -> np.ndarray:
        """Read a level-0 ``region`` resampled to pixel size ``target_mpp``.

        Reads from the coarsest level that is at least as fine as ``target_mpp`` and resizes
        bilinearly (Pillow, ~10x faster than scikit-image): point-sampled when enlarging or
        shrinking by less than :data:`ANTIALIAS_BELOW` (e.g. 0.23 -> 0.25 um/px, the same
        interpolation as the training crops), with Pillow's widened, anti-aliasing filter when
        shrinking more. The output has ``round(region.width * mpp / target_mpp)`` columns.
        """
        from PIL import Image

        info = self.info
        out_w = max(1, int(round(region.width * info.mpp / target_mpp)))
        out_h = max(1, int(round(region.height * info.mpp / target_mpp)))
        level = self.best_level_for_mpp(target_mpp)
        ds = info.level_downsamples[level]
        lw = max(1, int(math.ceil(region.width / ds)))
        lh = max(1, int(math.ceil(region.height / ds)))
        img = self.read_region((region.x, region.y), level, (lw, lh), clip=clip)
        if img.shape[0] == out_h and img.shape[1] == out_w:
            return img
        pil = Image.fromarray(np.ascontiguousarray(img))
        sx, sy = img.shape[1] / out_w, img.shape[0] / out_h  # source px per output px
        if max(sx, sy) <= 1.0 / ANTIALIAS_BELOW:
            # pixel centres map as in skimage.transform.resize(order=1); offsets are Pillow's
            out = pil.transform(
                (out_w, out_h),
                Image.Transform.AFFINE,
                (sx, 0.0, 0.0, 0.0, sy, 0.0),
                resample=Image.Resampling.BILINEAR,
            )
        else:
            out = pil.resize((out_w, out_h), Image.Resampling.BILINEAR)
        return np.array(out)

    def get_thumbnail(self, max_size: int = 2048) -> np.ndarray:
        """An RGB thumbnail whose longer side is at most ``max_size`` pixels.

        Read from the coarsest level that is still at least as large; a level larger than
        :data:`THUMBNAIL_READ_BYTES` (a big single-level image) is read and shrunk in bands of
        rows, so memory stays bounded whatever the slide size; that pass runs once per reader
        (the result, :data:`BANDED_THUMBNAIL_PX` on its longer side, serves later calls).
        """
        from PIL import Image

        info = self.info
        scale = max(info.width, info.height) / float(max_size)
        level = 0
        for lvl in range(info.levels):
            if info.level_downsamples[lvl] <= max(scale, 1.0):
                level = lvl
        lw, lh = info.level_dimensions[level]
        if max(lw, lh) <= max_size:
            return self.read_region((0, 0), level, (lw, lh), clip=True)
        if lw * lh * 3 > THUMBNAIL_READ_BYTES:
            # a whole pass over a big level: done once, at a size later calls can shrink
            cached = getattr(self, "_banded_thumb", None)
            if cached is None or cached[0] != level or max(cached[1].shape[:2]) < max_size:
                big = max(max_size, BANDED_THUMBNAIL_PX)
                self._banded_thumb = (level, self._thumbnail_of_level(level, big))
            thumb = self._banded_thumb[1]
            if max(thumb.shape[:2]) == max_size:
                return thumb
            f = max(thumb.shape[:2]) / float(max_size)
            size = (max(1, round(thumb.shape[1] / f)), max(1, round(thumb.shape[0] / f)))
            return np.asarray(
                Image.fromarray(thumb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            )
        return self._thumbnail_of_level(level, max_size)

    def _thumbnail_of_level(self, level: int, max_size: int) -> np.ndarray:
        """``level`` shrunk to ``max_size`` px on its longer side: in one piece up to
        :data:`THUMBNAIL_READ_BYTES`, else in bands of rows of at most
        :data:`THUMBNAIL_BAND_BYTES`, spread over :attr:`band_map`'s processes when set."""
        info = self.info
        lw, lh = info.level_dimensions[level]
        f = max(lw, lh) / float(max_size)
        tw, th = max(1, round(lw / f)), max(1, round(lh / f))
        tiled_file = info.backend in ("openslide", "tiffslide") and info.path.is_file()
        parallel = self.band_map if tiled_file else None  # (plain images are held whole)
        if lw * lh * 3 <= THUMBNAIL_READ_BYTES:
            bands = [(0, lh)]
        else:  # the same bands in one process or several (each holds one band at a time)
            budget = min(THUMBNAIL_READ_BYTES, THUMBNAIL_BAND_BYTES)
            rows = max(1, int(budget // (3 * lw)))
            rows = max(int(math.ceil(f)), rows - rows % int(math.ceil(f)))
            bands = [(y, min(lh, y + rows)) for y in range(0, lh, rows)]
        out = np.empty((th, tw, 3), np.uint8)
        jobs = []  # (level-0 row, rows at the level, output rows), output row range
        for y0, y1 in bands:
            o0, o1 = round(y0 * th / lh), round(y1 * th / lh)
            if o1 > o0:
                y = int(round(y0 * info.level_downsamples[level]))  # level-0 row of the band
                jobs.append(((y, y1 - y0, o1 - o0), (o0, o1)))
        if parallel is not None and len(jobs) > 1:
            items = [(str(info.path), info.mpp, level, lw, tw, *job) for job, _ in jobs]
            for (_, (o0, o1)), arr in zip(jobs, parallel[0](_band_of_file, items), strict=True):
                out[o0:o1] = arr
            return out
        for (y, rows, n_out), (o0, o1) in jobs:
            out[o0:o1] = _shrink_band(
                self.read_region((0, y), level, (lw, rows), clip=True), tw, n_out
            )
        return out

    def __repr__(self) -> str:
        i = self.info
        return f"<{type(self).__name__} {i.path.name} {i.width}x{i.height} mpp={i.mpp:g}>"


def _shrink_band(band: np.ndarray, width: int, rows: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(
        Image.fromarray(band).resize((width, rows), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )


#: the slides a band worker process has open (path, mpp) -> reader
_BAND_READERS: dict[tuple[str, float], SlideReader] = {}


def _band_of_file(item: tuple[str, float, int, int, int, int, int, int]) -> np.ndarray:
    """In a worker process: one band of rows of a level, shrunk (the banded thumbnail pass)."""
    path, mpp, level, width, out_width, y, rows, out_rows = item
    reader = _BAND_READERS.get((path, mpp))
    if reader is None:
        reader = _BAND_READERS[(path, mpp)] = open_slide(path, mpp=mpp)
    band = reader.read_region((0, y), level, (width, rows), clip=True)
    return _shrink_band(band, out_width, out_rows)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.shape[-1] == 4 and arr.dtype == np.uint8 and arr[..., 3].min() == 255:
        arr = arr[..., :3]  # opaque: nothing to composite
    elif arr.shape[-1] == 4:
        rgb = arr[..., :3].astype(np.float32)
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = rgb * alpha + 255.0 * (1.0 - alpha)  # transparent (outside scan) -> white
        arr = np.clip(arr + 0.5, 0, 255)
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def missing_mpp_error(name: str, option: str = "--mpp") -> MissingMetadataError:
    """The error for the slide file ``name`` without a usable pixel size; ``option`` is the
    command-line option that sets it (``--mpp``; ``--he-mpp`` ... where a command reads two)."""
    return MissingMetadataError(
        f"{name} has no usable pixel size in its metadata; pass it with {option} (um/px, "
        f"e.g. {option} 0.25 for a 40x scan)"
    )


def _resolve_mpp(found: float | None, user: float | None, path: Path) -> tuple[float, str]:
    if user is not None:
        return validate_mpp(user, name="--mpp"), "user"
    if found is not None and math.isfinite(found) and found > 0:
        try:
            return validate_mpp(found, name="pixel size in metadata"), "metadata"
        except Exception:
            pass
    raise missing_mpp_error(path.name)


# --------------------------------------------------------------------------------------------
class OpenSlideReader(SlideReader):
    """OpenSlide backend (``openslide-python`` with ``openslide-bin``)."""

    def __init__(self, path: Path, *, mpp: float | None = None) -> None:
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:
            raise SlideOpenError(f"cannot open {path.name} with OpenSlide: {exc}") from exc
        props = self._slide.properties
        found = None
        for key in ("openslide.mpp-x", "openslide.mpp-y"):
            if key in props:
                try:
                    found = float(props[key])
                    break
                except ValueError:
                    pass
        value, source = _resolve_mpp(found, mpp, path)
        obj = props.get("openslide.objective-power")
        self.info = SlideInfo(
            path=path,
            backend="openslide",
            width=int(self._slide.dimensions[0]),
            height=int(self._slide.dimensions[1]),
            level_dimensions=tuple((int(w), int(h)) for w, h in self._slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            mpp=value,
            mpp_source=source,
            vendor=props.get("openslide.vendor"),
            objective_power=_float_or_none(obj),
            format=props.get("openslide.vendor"),
        )

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        fast = _openslide_read_fast(self._slide, x, y, level, w, h)
        if fast is not None:
            return fast
        img = self._slide.read_region((x, y), level, (w, h))
        return np.asarray(img)

    def close(self) -> None:
        self._slide.close()


def _openslide_read_fast(slide: Any, x: int, y: int, level: int, w: int, h: int) -> Any:
    """Read a region through OpenSlide's C call straight into RGB (performance path).

    ``openslide.OpenSlide.read_region`` un-premultiplies the ARGB buffer into an RGBA image that
    then needs a copy and alpha compositing; for a fully opaque region (the usual case) the
    premultiplied buffer *is* the colour, so PIL unpacks it to RGB in one pass. Returns the
    RGB array, the RGBA array when the region has transparent pixels, or ``None`` when the
    low-level API is not available (then the caller uses the public API).
    See docs/benchmarks.md "Slide reading".
    """
    import sys
    from ctypes import c_uint32

    try:
        from openslide import lowlevel
        from PIL import Image

        read, load, osr = lowlevel._read_region, lowlevel._load_image, slide._osr
    except (ImportError, AttributeError):
        return None
    if sys.byteorder != "little" or w <= 0 or h <= 0:
        return None
    buf = (w * h * c_uint32)()
    read(osr, buf, x, y, level, w, h)
    if int(np.frombuffer(buf, dtype=np.uint32).min()) >= 0xFF000000:  # alpha 255 everywhere
        return np.asarray(Image.frombuffer("RGB", (w, h), buf, "raw", "BGRX", 0, 1))
    return np.asarray(load(buf, (w, h)))


class TiffSlideReader(SlideReader):
    """tiffslide backend (pure Python; OME-TIFF and TIFFs that OpenSlide reads badly)."""

    def __init__(self, path: Path, *, mpp: float | None = None) -> None:
        import tiffslide

        try:
            self._slide = tiffslide.TiffSlide(str(path))
            dims = self._slide.dimensions
        except Exception as exc:
            raise SlideOpenError(f"cannot open {path.name} with tiffslide: {exc}") from exc
        props = self._slide.properties
        found = _float_or_none(props.get("tiffslide.mpp-x"))
        value, source = _resolve_mpp(found, mpp, path)
        self.info = SlideInfo(
            path=path,
            backend="tiffslide",
            width=int(dims[0]),
            height=int(dims[1]),
            level_dimensions=tuple((int(w), int(h)) for w, h in self._slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            mpp=value,
            mpp_source=source,
            vendor=props.get("tiffslide.vendor"),
            objective_power=_float_or_none(props.get("tiffslide.objective-power")),
            format=props.get("tiffslide.vendor"),
        )

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide.read_region((x, y), level, (w, h), as_array=True))

    def close(self) -> None:
        self._slide.close()


class ArraySlide(SlideReader):
    """An in-memory RGB array that behaves like a one-level slide."""

    def __init__(
        self, image: np.ndarray, *, mpp: float, path: str | Path = "<array>", backend: str = "array"
    ) -> None:
        image = _to_rgb(np.asarray(image))
        if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise SlideOpenError(f"{Path(path).name}: image has no pixels")
        self._image = image
        h, w = image.shape[:2]
        self.info = SlideInfo(
            path=Path(path),
            backend=backend,
            width=w,
            height=h,
            level_dimensions=((w, h),),
            level_downsamples=(1.0,),
            mpp=validate_mpp(mpp),
            mpp_source="user",
            format=backend,
        )

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        sub = self._image[y : y + h, x : x + w]
        out[: sub.shape[0], : sub.shape[1]] = sub
        return out


class ImageReader(ArraySlide):
    """A plain region image (PNG, JPEG, BMP, flat TIFF) loaded into memory."""

    def __init__(self, path: Path, *, mpp: float | None = None) -> None:
        image, found = _load_plain_image(path)
        value, source = _resolve_mpp(found, mpp, path)
        super().__init__(image, mpp=value, path=path, backend="image")
        object.__setattr__(self.info, "mpp_source", source)
        object.__setattr__(self.info, "format", path.suffix.lower().lstrip(".") or "image")


class DicomReader(SlideReader):
    """DICOM WSI through ``wsidicom`` (extra ``dicom``); ``path`` is a folder or a .dcm file."""

    def __init__(self, path: Path, *, mpp: float | None = None) -> None:
        try:
            from wsidicom import WsiDicom
        except ImportError:
            from ..errors import MissingDependencyError

            raise MissingDependencyError("wsidicom", "dicom") from None
        try:
            self._slide = WsiDicom.open(str(path))
        except Exception as exc:
            raise SlideOpenError(f"cannot open {path.name} as DICOM WSI: {exc}") from exc
        levels = list(self._slide.levels)
        dims = tuple((int(lv.size.width), int(lv.size.height)) for lv in levels)
        w0 = dims[0][0]
        found = None
        try:
            found = float(self._slide.levels[0].mpp.width)  # SizeMm, but in um per pixel
        except Exception:
            found = None
        value, source = _resolve_mpp(found, mpp, path)
        self._levels = levels
        self.info = SlideInfo(
            path=path,
            backend="dicom",
            width=dims[0][0],
            height=dims[0][1],
            level_dimensions=dims,
            level_downsamples=tuple(w0 / float(d[0]) for d in dims),
            mpp=value,
            mpp_source=source,
            vendor="DICOM",
            format="dicom",
        )

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        from wsidicom.geometry import Point, Size
        from wsidicom.geometry import Region as DicomRegion

        lvl = self._levels[level]
        ds = self.info.level_downsamples[level]
        img = lvl.get_region(DicomRegion(Point(int(x / ds), int(y / ds)), Size(w, h)))
        return np.asarray(img)

    def close(self) -> None:
        self._slide.close()


# --------------------------------------------------------------------------------------------
def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _scaled_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """A whole image of any integer or float pixel type as uint8, by its range.

    Integers above 8 bits are scaled by the bit depth their largest value needs (a 16-bit
    image by 65535, 12-bit data in 16-bit words by 4095; values up to 255 stay as they are);
    floats in [0, 1] are scaled by 255, floats in [0, 255] kept. Anything else (negative,
    NaN, complex) is refused: never turn tissue silently into black or white.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0:
            raise SlideOpenError(
                f"{name} has negative pixel values ({arr.dtype}); save it as 8-bit RGB"
            )
        if hi <= 255:
            return arr.astype(np.uint8)
        full = float(2 ** int(math.ceil(math.log2(hi + 1))) - 1)
        return np.clip(arr.astype(np.float64) * (255.0 / full) + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float64)
        if a.size and not np.isfinite(a).all():
            raise SlideOpenError(f"{name} has NaN or infinite pixel values; save it as 8-bit RGB")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1.0:
            a = a * 255.0
        elif lo < 0 or hi > 255.0:
            raise SlideOpenError(
                f"{name} has {arr.dtype} pixel values in [{lo:.3g}, {hi:.3g}], neither [0, 1] "
                "nor [0, 255]; save it as 8-bit RGB"
            )
        return np.clip(a + 0.5, 0, 255).astype(np.uint8)
    raise SlideOpenError(f"{name} has unsupported pixel type {arr.dtype}; save it as 8-bit RGB")


def _tiff_to_rgb(page: Any, image: np.ndarray, name: str) -> np.ndarray:
    """The RGB(A) pixels of a flat TIFF page by its photometric interpretation."""
    photometric = int(getattr(page, "photometric", 2))
    samples = image.shape[-1] if image.ndim == 3 else 1
    if image.ndim == 3 and samples not in (1, 2, 3, 4):  # e.g. planar or multi-page stacks
        raise SlideOpenError(
            f"{name} has {samples} channels of {image.shape}; give an RGB or greyscale image"
        )
    if photometric == 5:  # SEPARATED: CMYK (inks), converted as Pillow does
        if samples != 4:
            raise SlideOpenError(f"{name}: separated (ink) TIFF with {samples} inks; save as RGB")
        from PIL import Image

        return np.asarray(Image.fromarray(_scaled_to_uint8(image, name), "CMYK").convert("RGB"))
    if photometric not in (0, 1, 2):  # palette, YCbCr, CIELab, ...: let Pillow convert
        raise SlideOpenError(
            f"{name}: TIFF colour space {photometric} is not supported; save it as RGB"
        )
    if samples == 2:  # grey + alpha
        image = np.concatenate([image[..., :1]] * 3 + [image[..., 1:]], axis=-1)
    image = _scaled_to_uint8(image, name)
    if photometric == 0:  # MINISWHITE: 0 is white
        image = 255 - image
    return image


def _load_plain_image(path: Path) -> tuple[np.ndarray, float | None]:
    """Load a flat image and the pixel size its metadata states (um/px), if any.

    Pixel formats are read as they are meant (CMYK, 16-bit, float, greyscale, alpha) or refused
    with :class:`SlideOpenError`; Pillow's warnings (e.g. "Corrupt EXIF data") are not shown.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with warnings.catch_warnings(), tifffile.TiffFile(str(path)) as tf:
                warnings.simplefilter("ignore")
                page = tf.pages[0]
                _check_pixels(int(np.prod(page.shape[:2])) if page.shape else 0, path.name)
                image = page.asarray()
                found = _tiff_mpp(page)
                image = _tiff_to_rgb(page, image, path.name)
        except SlideOpenError:
            raise
        except Exception as exc:
            raise SlideOpenError(f"cannot read {path.name} as TIFF: {_first_line(exc)}") from exc
        return image, found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            with im:
                _check_pixels(im.width * im.height, path.name)
                im.load()
                dpi = im.info.get("dpi")
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit / float
                    image = _scaled_to_uint8(np.asarray(im), path.name)
                elif im.mode in ("RGBA", "LA", "P", "PA"):
                    image = np.asarray(im.convert("RGBA"))
                else:
                    image = np.asarray(im.convert("RGB"))
    except SlideOpenError:
        raise
    except Image.DecompressionBombError as exc:
        raise SlideOpenError(
            f"{path.name} is too large to load as a plain image ({_first_line(exc)[:80]}); "
            "convert it to a pyramidal TIFF"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        if suffix not in IMAGE_SUFFIXES:
            raise SlideOpenError(
                f"cannot open {path.name}: neither OpenSlide nor an image reader can read it "
                "(corrupt, truncated or an unsupported format)"
            ) from exc
        raise SlideOpenError(f"cannot read {path.name} as an image: {_first_line(exc)}") from exc
    found = None
    if dpi and dpi[0] and float(dpi[0]) > 1.5:  # 1 dpi / 72 dpi defaults carry no information
        candidate = 25400.0 / float(dpi[0])
        if candidate < 20:  # a real microscope resolution, not a screen default (72/96 dpi)
            found = candidate
    return image, found


def _check_pixels(n: int, name: str) -> None:
    if n > MAX_IMAGE_PIXELS:
        raise SlideOpenError(
            f"{name} declares {n / 1e6:.0f} megapixels, too many for a plain image held in "
            f"memory (at most {MAX_IMAGE_PIXELS / 1e6:.0f}); convert it to a pyramidal TIFF"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tiff_mpp(page: Any) -> float | None:
    tags = page.tags
    res = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    if res is None or unit is None:
        return None
    num, den = res.value if isinstance(res.value, tuple) else (res.value, 1)
    if not num:
        return None
    per_unit = float(num) / float(den or 1)
    unit_v = int(unit.value)
    if unit_v == 3:  # centimetre
        mpp = 1e4 / per_unit
    elif unit_v == 2:  # inch
        mpp = 25400.0 / per_unit
    else:
        return None
    return mpp if mpp < 20 else None


def _detect_backend(path: Path) -> str:
    if path.is_dir():
        if any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            return "dicom"
        raise SlideOpenError(f"{path} is a directory, not a slide (DICOM folders need .dcm files)")
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        return "dicom"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    import openslide

    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        fmt = None
    if fmt is not None and not (fmt == "generic-tiff" and not _is_tiled_tiff(path)):
        return "openslide"
    if suffix in (".tif", ".tiff"):
        return "tiffslide" if _is_tiled_tiff(path) else "image"
    # last resort: can Pillow read it?
    return "image"


def _is_tiled_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            return bool(tf.pages[0].is_tiled) or len(tf.series[0].levels) > 1
    except Exception:
        return False


def open_slide(path: str | Path, *, mpp: float | None = None, backend: str = "auto") -> SlideReader:
    """Open a whole-slide image or a region image.

    Parameters
    ----------
    path : str or Path
        The slide (SVS, NDPI, MRXS, SCN, pyramidal TIFF, OME-TIFF, DICOM folder, ...) or a
        plain image (PNG, JPEG, TIFF, BMP).
    mpp : float, optional
        Pixel size of level 0 in um/px. Overrides the metadata; required when the file has none.
    backend : {"auto", "openslide", "tiffslide", "image", "dicom"}

    Raises
    ------
    SlideOpenError, MissingMetadataError, InvalidInputError

    Examples
    --------
    >>> with open_slide("slide.svs") as s:  # doctest: +SKIP
    ...     tile = s.read_region((0, 0), 0, (512, 512))
    """
    path = Path(path)
    if backend not in BACKENDS:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise SlideOpenError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise SlideOpenError(f"{path.name} is empty (0 bytes)")
    if mpp is not None:
        mpp = validate_mpp(mpp, name="--mpp")
    kind = _detect_backend(path) if backend == "auto" else backend
    if kind == "openslide":
        reader: SlideReader = OpenSlideReader(path, mpp=mpp)
    elif kind == "tiffslide":
        reader = TiffSlideReader(path, mpp=mpp)
    elif kind == "dicom":
        reader = DicomReader(path, mpp=mpp)
    else:
        reader = ImageReader(path, mpp=mpp)
    _probe(reader)
    return reader


def _probe(reader: SlideReader) -> None:
    """Decode one small region of the coarsest level so corrupt files fail at open time."""
    info = reader.info
    lvl = info.levels - 1
    w, h = info.level_dimensions[lvl]
    try:
        reader.read_region((0, 0), lvl, (min(w, 64), min(h, 64)))
        reader.read_region(
            (
                int((w - min(w, 64)) * info.level_downsamples[lvl]),
                int((h - min(h, 64)) * info.level_downsamples[lvl]),
            ),
            lvl,
            (min(w, 64), min(h, 64)),
        )
    except SlideOpenError as exc:
        reader.close()
        raise SlideOpenError(f"{info.path.name} is corrupt or truncated: {exc}") from exc
