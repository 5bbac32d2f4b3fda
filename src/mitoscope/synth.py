"""Synthetic whole-slide images made of real H&E, for tests and benchmarks.

:func:`build_he_mosaic_slide` writes a pyramidal tiled TIFF whose pixels are **real H&E**: a
mosaic of the 128 x 128 px crops of the AMi-Br training set (``../shared/data/amibr-train``,
MIT licence; human breast cancer scanned at 0.23-0.25 um/px, each crop centred on a mitotic
figure), laid out in smooth tissue islands on white glass so that tissue detection matters.
Because every crop holds a real mitotic figure, such a slide is far denser in mitoses than a
real tumour (about one per 32 x 32 um cell of tissue); it is meant for throughput, memory and
I/O measurements, not for accuracy.

:func:`build_tissue_slide` writes the realistic counterpart: the real images of ordinary tumour
tissue in ``../shared/data/tissue`` (MoNuSeg, 7 organs, CC BY-NC-SA 4.0), resampled to the
slide's pixel size by their own, tiled with random flips and rotations and shown only inside
irregular tissue islands on noisy white glass, so a slide of N mm² of tissue costs what a real
slide of N mm² of such tissue costs (mitoses are rare in it, as in real tumours).

This module is longer than ~400 lines because both builders share the TIFF pyramid layout and
the orientation helpers, and each is small on its own.

The files are written tile by tile through tifffile's tile iterator (the whole level is never held
in memory), as JPEG (or zlib) tiles with the pyramid levels as consecutive main IFDs
(``subfiletype=1`` for the reduced levels), so OpenSlide opens it as a ``generic-tiff`` pyramid
with the pixel size in the TIFF resolution tags.

Examples
--------
>>> from mitoscope.synth import build_he_mosaic_slide
>>> path = build_he_mosaic_slide("mosaic.tif", width=4096, height=4096, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, SlideOpenError
from .units import validate_mpp

#: Side of one mosaic cell (the AMi-Br crops are 128 x 128 px).
CELL_PX = 128
#: Colour of the glass between tissue islands.
GLASS_RGB = (242, 242, 240)
#: Downsample between consecutive pyramid levels (like Aperio SVS).
LEVEL_FACTOR = 4


def default_source_dir() -> Path:
    """``../shared/data/amibr-train`` beside the repository (or ``$MITOSCOPE_SHARED_DATA``)."""
    env = os.environ.get("MITOSCOPE_SHARED_DATA")
    if env:
        return Path(env) / "amibr-train"
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "amibr-train"


def load_crops(
    source_dir: str | Path | None = None, *, max_crops: int | None = None, seed: int = 0
) -> np.ndarray:
    """Load the real H&E crops (``*.png`` under ``source_dir``) as ``(N, 128, 128, 3)`` uint8.

    Crops of another size are centre-cropped or padded with glass to 128 x 128. With
    ``max_crops``, a seeded random subset is loaded.
    """
    from PIL import Image

    root = Path(source_dir) if source_dir is not None else default_source_dir()
    files = sorted(root.rglob("*.png"))
    if not files:
        raise SlideOpenError(
            f"no PNG crops found under {root}; pass source_dir= a folder of real H&E crops "
            f"(e.g. ../shared/data/amibr-train)"
        )
    if max_crops is not None and max_crops < len(files):
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_crops, replace=False))]
    out = np.empty((len(files), CELL_PX, CELL_PX, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"))
        out[i] = _fit_cell(arr)
    return out


def _fit_cell(arr: np.ndarray) -> np.ndarray:
    cell = np.empty((CELL_PX, CELL_PX, 3), dtype=np.uint8)
    cell[:] = GLASS_RGB
    h, w = arr.shape[:2]
    y0, x0 = max(0, (h - CELL_PX) // 2), max(0, (w - CELL_PX) // 2)
    sub = arr[y0 : y0 + CELL_PX, x0 : x0 + CELL_PX]
    oy, ox = (CELL_PX - sub.shape[0]) // 2, (CELL_PX - sub.shape[1]) // 2
    cell[oy : oy + sub.shape[0], ox : ox + sub.shape[1]] = sub
    return cell


def mosaic_layout(
    n_rows: int, n_cols: int, *, n_crops: int, tissue_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The cell grid of a mosaic: crop index per cell (-1 = glass) and orientation (0-7).

    Tissue forms smooth islands: Gaussian-filtered white noise thresholded at the quantile
    that leaves ``tissue_fraction`` of the cells as tissue.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_rows, n_cols))
    sigma = max(1.0, min(n_rows, n_cols) / 10.0)
    field = ndi.gaussian_filter(noise, sigma=sigma, mode="wrap")
    if tissue_fraction >= 1.0:
        tissue = np.ones_like(field, dtype=bool)
    else:
        tissue = field > np.quantile(field, 1.0 - tissue_fraction)
    index = rng.integers(0, n_crops, size=(n_rows, n_cols)).astype(np.int32)
    index[~tissue] = -1
    orient = rng.integers(0, 8, size=(n_rows, n_cols)).astype(np.int8)
    return index, orient


def _orient(cell: np.ndarray, o: int) -> np.ndarray:
    out = np.rot90(cell, k=o % 4)
    return out[:, ::-1] if o >= 4 else out


def _downsampled_variants(crops: np.ndarray, ds: int) -> np.ndarray:
    """``(N + 1, 8, c, c, 3)`` block-mean downsampled crops in all 8 orientations; the last
    entry is glass (index -1)."""
    c = CELL_PX // ds
    n = len(crops)
    small = crops.reshape(n, c, ds, c, ds, 3).mean(axis=(2, 4))
    small = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    out = np.empty((n + 1, 8, c, c, 3), dtype=np.uint8)
    for o in range(8):
        out[:n, o] = np.stack([_orient(s, o) for s in small])
    out[n] = GLASS_RGB
    return out


def _level_tiles(
    index: np.ndarray,
    orient: np.ndarray,
    crops: np.ndarray,
    *,
    ds: int,
    level_w: int,
    level_h: int,
    tile: int,
) -> Iterator[np.ndarray]:
    """Yield the ``tile x tile`` tiles of one level in row-major order."""
    c = CELL_PX // ds
    k = tile // c  # cells per tile side
    n = len(crops)
    variants = _downsampled_variants(crops, ds) if ds > 1 else None
    glass = np.empty((c, c, 3), dtype=np.uint8)
    glass[:] = GLASS_RGB
    rows, cols = index.shape
    for ty in range(math.ceil(level_h / tile)):
        for tx in range(math.ceil(level_w / tile)):
            r0, c0 = ty * k, tx * k
            idx = np.full((k, k), -1, dtype=np.int64)
            ori = np.zeros((k, k), dtype=np.int64)
            sub_i = index[r0 : r0 + k, c0 : c0 + k]
            idx[: sub_i.shape[0], : sub_i.shape[1]] = sub_i
            ori[: sub_i.shape[0], : sub_i.shape[1]] = orient[r0 : r0 + k, c0 : c0 + k]
            if variants is None:
                out = np.empty((tile, tile, 3), dtype=np.uint8)
                for i in range(k):
                    for j in range(k):
                        v = idx[i, j]
                        cell = glass if v < 0 else _orient(crops[v], int(ori[i, j]))
                        out[i * c : (i + 1) * c, j * c : (j + 1) * c] = cell
            else:
                flat = np.where(idx < 0, n, idx)
                cells = variants[flat, ori]  # (k, k, c, c, 3)
                out = cells.transpose(0, 2, 1, 3, 4).reshape(tile, tile, 3)
            yield np.ascontiguousarray(out)


def build_he_mosaic_slide(
    path: str | Path,
    *,
    width: int,
    height: int,
    mpp: float = 0.25,
    tissue_fraction: float = 0.5,
    seed: int = 0,
    source_dir: str | Path | None = None,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    max_crops: int | None = None,
    min_level_px: int = 512,
    crops: np.ndarray | None = None,
) -> Path:
    """Write a pyramidal tiled TIFF whose content is a mosaic of real H&E crops.

    Parameters
    ----------
    path : str or Path
        Output file (``.tif``); written atomically (temporary file, then rename).
    width, height : int
        Level-0 size in pixels (a 40,000 x 40,000 px slide at 0.25 um/px is 100 mm²).
    mpp : float
        Pixel size of level 0 in um/px, stored in the TIFF resolution tags.
    tissue_fraction : float
        Share of the 128 x 128 px cells that hold tissue (the rest is glass), in ``(0, 1]``.
    seed : int
        Seeds the layout, the crop choice and orientation; same seed, same file content.
    source_dir : str or Path, optional
        Folder of real H&E PNG crops; default ``../shared/data/amibr-train``.
    tile : int
        TIFF tile side in pixels (a multiple of 128).
    compression : {"jpeg", "zlib"}
        Tile compression (JPEG at ``quality``, or lossless zlib).
    max_crops : int, optional
        Use a random subset of the crops (faster to load for small slides).
    min_level_px : int
        Add reduced levels (each 4x smaller) while the smaller side stays at least this long.
    crops : ndarray, optional
        Pre-loaded ``(N, 128, 128, 3)`` crops (see :func:`load_crops`); overrides ``source_dir``.

    Returns
    -------
    Path
        ``path``.
    """

    path = Path(path)
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"width and height must be positive, got {width}x{height}")
    if not 0.0 < tissue_fraction <= 1.0:
        raise InvalidInputError(f"tissue_fraction must be in (0, 1], got {tissue_fraction}")
    if tile <= 0 or tile % CELL_PX:
        raise InvalidInputError(f"tile must be a positive multiple of {CELL_PX}, got {tile}")
    if compression not in ("jpeg", "zlib"):
        raise InvalidInputError(f"compression must be 'jpeg' or 'zlib', got {compression!r}")
    mpp = validate_mpp(mpp)
    if crops is None:
        crops = load_crops(source_dir, max_crops=max_crops, seed=seed)
    n_rows, n_cols = math.ceil(height / CELL_PX), math.ceil(width / CELL_PX)
    index, orient = mosaic_layout(
        n_rows, n_cols, n_crops=len(crops), tissue_fraction=tissue_fraction, seed=seed
    )
    comp: dict = {"compression": compression}
    if compression == "jpeg":
        comp["compressionargs"] = {"level": int(quality)}
    levels = [1]
    while (
        min(width, height) // (levels[-1] * LEVEL_FACTOR) >= min_level_px
        and levels[-1] * LEVEL_FACTOR <= CELL_PX // 2
    ):
        levels.append(levels[-1] * LEVEL_FACTOR)
    return _write_pyramid(
        path,
        width=width,
        height=height,
        levels=levels,
        tile=tile,
        mpp=mpp,
        comp=comp,
        description=(
            f"mitoscope synthetic mosaic of real H&E crops (AMi-Br); "
            f"mpp={mpp}; seed={seed}; tissue_fraction={tissue_fraction}"
        ),
        level_tiles=lambda ds, lw, lh: _level_tiles(
            index, orient, crops, ds=ds, level_w=lw, level_h=lh, tile=tile
        ),
    )


def _write_pyramid(
    path: Path,
    *,
    width: int,
    height: int,
    levels: list[int],
    tile: int,
    mpp: float,
    comp: dict,
    description: str,
    level_tiles: Callable[[int, int, int], Iterator[np.ndarray]],
) -> Path:
    """Write a tiled pyramidal BigTIFF atomically (temporary file, then rename): one page per
    downsample in ``levels`` from ``level_tiles(ds, level_w, level_h)``, the pixel size and
    ``description`` on level 0."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tifffile.TiffWriter(str(tmp), bigtiff=True) as tw:
            for ds in levels:
                lw, lh = math.ceil(width / ds), math.ceil(height / ds)
                extra: dict = {}
                if ds == 1:
                    extra = {
                        "resolution": (1e4 / mpp, 1e4 / mpp),
                        "resolutionunit": "CENTIMETER",
                        "description": description,
                    }
                tw.write(
                    level_tiles(ds, lw, lh),
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    subfiletype=0 if ds == 1 else 1,
                    metadata=None,
                    **comp,
                    **extra,
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def mosaic_file_name(width: int, height: int, *, seed: int = 0, **options: object) -> str:
    """The cache file name of a mosaic slide built with these parameters."""
    mpp = options.get("mpp", 0.25)
    frac = options.get("tissue_fraction", 0.5)
    comp = options.get("compression", "jpeg")
    name = f"he_mosaic_{width}x{height}_mpp{mpp}_t{frac}_s{seed}_{comp}"
    if "min_level_px" in options:
        name += f"_minlevel{options['min_level_px']}"
    return name + ".tif"


def cached_mosaic_slide(
    cache_dir: str | Path, *, width: int, height: int, seed: int = 0, **options: object
) -> Path:
    """Build (once) and return a mosaic slide in ``cache_dir`` named by its parameters."""
    path = Path(cache_dir) / mosaic_file_name(width, height, seed=seed, **options)
    if not path.exists():
        build_he_mosaic_slide(path, width=width, height=height, seed=seed, **options)  # type: ignore[arg-type]
    return path


# ------------------------------------------------------------------ realistic tissue slides
#: Glass of the realistic tissue slide: bright grey with slight per-pixel noise, as scanned.
TISSUE_GLASS_RGB = (240, 240, 240)
#: Standard deviation (grey levels) of the glass noise.
TISSUE_GLASS_NOISE = 1.5
#: Resampled tissue images are cropped to a multiple of this many pixels, so that every pyramid
#: level (4, 16, 64 x smaller) holds whole pixels of them.
TISSUE_CELL_MULTIPLE = 64
#: Grid step (um) of the island field; the field is bilinearly interpolated to every pixel.
ISLAND_GRID_UM = 16.0
#: Smallest slide side (level-0 px) of :func:`tissue_slide_size`: the issue's 40,000 px.
MIN_SLIDE_PX = 40000


def default_tissue_dir() -> Path:
    """``../shared/data/tissue`` beside the repository (or ``$MITOSCOPE_SHARED_DATA/tissue``)."""
    return default_source_dir().parent / "tissue"


def load_tissue_images(
    source_dir: str | Path | None = None, *, mpp: float = 0.25, limit: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """The real tissue images listed in ``source_dir/images.csv``, resampled to ``mpp``.

    Each image is resized by its own pixel size (the ``mpp`` column, e.g. MoNuSeg's
    0.2527 um/px) over ``mpp`` with a Lanczos filter, so one pixel of the result is ``mpp`` um,
    then centre-cropped to a square whose side is a multiple of :data:`TISSUE_CELL_MULTIPLE`
    (MoNuSeg's 1000 px at 0.2527 um/px -> 1011 px at 0.25 -> 960 px, 240 um). ``limit``: only
    the first images of the table.

    Returns
    -------
    images : ndarray
        ``(N, S, S, 3)`` uint8.
    names : list of str
        The image files, in the order of ``images``.
    """
    import csv

    from PIL import Image

    mpp = validate_mpp(mpp)
    root = Path(source_dir) if source_dir is not None else default_tissue_dir()
    table = root / "images.csv"
    if not table.is_file():
        raise SlideOpenError(
            f"{table} not found; pass source_dir= a folder with images.csv (file, mpp columns) "
            f"and the tissue images (e.g. ../shared/data/tissue)"
        )
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    if not rows or not {"file", "mpp"} <= set(rows[0]):
        raise InvalidInputError(f"{table} needs the columns file and mpp (um/px)")
    scaled: list[np.ndarray] = []
    names: list[str] = []
    for row in rows:
        src_mpp = validate_mpp(row["mpp"], name=f"mpp of {row['file']} in {table.name}")
        with Image.open(root / row["file"]) as im:
            rgb = im.convert("RGB")
            w, h = rgb.size
            size = (max(1, round(w * src_mpp / mpp)), max(1, round(h * src_mpp / mpp)))
            arr = np.asarray(rgb.resize(size, Image.Resampling.LANCZOS))
        scaled.append(arr)
        names.append(row["file"])
    side = min(min(a.shape[:2]) for a in scaled) // TISSUE_CELL_MULTIPLE * TISSUE_CELL_MULTIPLE
    if side < TISSUE_CELL_MULTIPLE:
        raise InvalidInputError(
            f"the tissue images are smaller than {TISSUE_CELL_MULTIPLE} px at {mpp} um/px"
        )
    out = np.empty((len(scaled), side, side, 3), dtype=np.uint8)
    for i, a in enumerate(scaled):
        y0, x0 = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        out[i] = a[y0 : y0 + side, x0 : x0 + side]
    return out, names


def tissue_slide_size(tissue_mm2: float, *, mpp: float = 0.25, fill: float = 0.4) -> int:
    """Side (px) of a square slide that holds ``tissue_mm2`` at about ``fill`` of its area,
    at least :data:`MIN_SLIDE_PX`, rounded up to a multiple of 1,024 px."""
    side_um = math.sqrt(float(tissue_mm2) / float(fill)) * 1000.0
    px = max(MIN_SLIDE_PX, math.ceil(side_um / validate_mpp(mpp)))
    return int(math.ceil(px / 1024) * 1024)


def island_field(
    n_rows: int, n_cols: int, *, tissue_fraction: float, n_islands: int, seed: int
) -> tuple[np.ndarray, float]:
    """A smooth field whose superlevel set ``field > threshold`` is tissue islands.

    ``n_islands`` elliptical blobs (random sizes from a Dirichlet split of the tissue area,
    aspect 1-3, random orientation, kept off the slide border) are combined with ``max`` and
    multiplied by smooth log-normal noise at two scales, which gives them lobed, irregular
    borders, small satellite fragments and notches. The threshold is the quantile that leaves
    ``tissue_fraction`` of the grid as tissue.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_rows, 0:n_cols].astype(np.float32)
    field = np.zeros((n_rows, n_cols), dtype=np.float32)
    areas = rng.dirichlet(np.full(n_islands, 3.0)) * tissue_fraction * n_rows * n_cols
    for a in areas:
        aspect = rng.uniform(1.0, 3.0)
        r_minor = math.sqrt(a / (math.pi * aspect))
        r_major = r_minor * aspect
        theta = rng.uniform(0.0, math.pi)
        reach = min(r_major, 0.45 * min(n_rows, n_cols))
        cy = rng.uniform(min(reach, n_rows / 2), max(n_rows - reach, n_rows / 2))
        cx = rng.uniform(min(reach, n_cols / 2), max(n_cols - reach, n_cols / 2))
        u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
        np.maximum(field, np.exp(-0.5 * ((u / r_major) ** 2 + (v / r_minor) ** 2)), out=field)
    scale = math.sqrt(max(1.0, float(areas.mean()))) / 4.0
    for sigma, weight in ((max(1.0, scale), 0.6), (max(1.0, scale / 4.0), 0.3)):
        n = ndi.gaussian_filter(rng.standard_normal((n_rows, n_cols)), sigma=sigma)
        field *= np.exp(weight * n / max(float(n.std()), 1e-9)).astype(np.float32)
    # taper to zero within 3% of the border: the slide's edge is glass, as on a real scan
    margin = max(1.0, 0.03 * min(n_rows, n_cols))
    ty = np.clip(np.minimum(yy[:, :1] + 0.5, n_rows - 0.5 - yy[:, :1]) / margin, 0.0, 1.0)
    tx = np.clip(np.minimum(xx[:1] + 0.5, n_cols - 0.5 - xx[:1]) / margin, 0.0, 1.0)
    field *= ty * tx
    thr = float(np.quantile(field, 1.0 - tissue_fraction))
    return field, thr


def _bilinear(field: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """``field`` at the grid coordinates ``gy`` (rows) x ``gx`` (columns), separably bilinear."""
    h, w = field.shape
    gy = np.clip(gy, 0, h - 1)
    gx = np.clip(gx, 0, w - 1)
    iy = np.minimum(gy.astype(np.int64), max(0, h - 2))
    ix = np.minimum(gx.astype(np.int64), max(0, w - 2))
    wy = (gy - iy)[:, None].astype(np.float32)
    wx = (gx - ix)[None, :].astype(np.float32)
    r0, c0 = int(iy.min()), int(ix.min())
    sub = field[r0 : int(iy.max()) + 2, c0 : int(ix.max()) + 2]  # the block the points need
    iy, ix = iy - r0, ix - c0
    y1 = np.minimum(iy + 1, sub.shape[0] - 1)
    x1 = np.minimum(ix + 1, sub.shape[1] - 1)
    rows = sub[iy] * (1 - wy) + sub[y1] * wy
    return rows[:, ix] * (1 - wx) + rows[:, x1] * wx


class _TissueLevel:
    """Renders the tiles of one pyramid level (``ds`` x smaller than level 0) of a tissue slide."""

    def __init__(
        self,
        images: np.ndarray,
        index: np.ndarray,
        orient: np.ndarray,
        field: np.ndarray,
        threshold: float,
        *,
        grid_px: float,
        ds: int,
        glass: np.ndarray,
    ) -> None:
        n, s = images.shape[:2]
        c = s // ds
        if ds > 1:  # block means: the level's own pixels of every image
            small = images.reshape(n, c, ds, c, ds, 3).mean(axis=(2, 4))
            images = np.clip(small + 0.5, 0, 255).astype(np.uint8)
        self.images = images
        self.cell = c
        self.index, self.orient = index, orient
        self.field, self.threshold = field, threshold
        self.grid_px, self.ds = grid_px, ds
        self.glass = glass
        self.n = 0

    def tile(self, x0: int, y0: int, tile: int, level_w: int, level_h: int) -> np.ndarray:
        ds, g = self.ds, self.grid_px
        gx = ((x0 + np.arange(tile) + 0.5) * ds) / g - 0.5
        gy = ((y0 + np.arange(tile) + 0.5) * ds) / g - 0.5
        h, w = self.field.shape
        r0, c0 = max(0, int(gy[0])), max(0, int(gx[0]))
        block = self.field[r0 : min(h, int(gy[-1]) + 2), c0 : min(w, int(gx[-1]) + 2)]
        inside = y0 + tile <= level_h and x0 + tile <= level_w
        out = self.glass[self.n % len(self.glass)].copy()
        self.n += 1
        if block.size == 0 or block.max() <= self.threshold:  # interpolation stays below
            return out
        if inside and block.min() > self.threshold:
            on = np.ones((tile, tile), dtype=bool)
        else:
            on = _bilinear(self.field, gy, gx) > self.threshold
            on[max(0, level_h - y0) :, :] = False
            on[:, max(0, level_w - x0) :] = False
            if not on.any():
                return out
        c = self.cell
        tex = np.empty((tile, tile, 3), dtype=np.uint8)
        rows, cols = self.index.shape
        for r in range(y0 // c, min(rows - 1, (y0 + tile - 1) // c) + 1):
            ya, yb = max(y0, r * c), min(y0 + tile, (r + 1) * c)
            for q in range(x0 // c, min(cols - 1, (x0 + tile - 1) // c) + 1):
                xa, xb = max(x0, q * c), min(x0 + tile, (q + 1) * c)
                img = _orient(self.images[self.index[r, q]], int(self.orient[r, q]))
                tex[ya - y0 : yb - y0, xa - x0 : xb - x0] = img[
                    ya - r * c : yb - r * c, xa - q * c : xb - q * c
                ]
        if on.all():
            return tex
        np.copyto(out, tex, where=on[..., None])
        return out


def build_tissue_slide(
    path: str | Path,
    *,
    tissue_mm2: float,
    width: int | None = None,
    height: int | None = None,
    mpp: float = 0.25,
    n_islands: int | None = None,
    seed: int = 0,
    source_dir: str | Path | None = None,
    tile: int = 256,
    quality: int = 90,
    min_level_px: int = 512,
    images: np.ndarray | None = None,
) -> Path:
    """Write a whole-slide TIFF of real tissue at realistic density: islands on white glass.

    The tissue is the real H&E images of ordinary tumour tissue in ``../shared/data/tissue``
    (MoNuSeg: 30 images of 7 organs at 0.2527 um/px, CC BY-NC-SA 4.0), resampled to ``mpp`` by
    their own pixel size (:func:`load_tissue_images`) and tiled over the slide plane in a grid,
    each grid cell a randomly chosen image in a random one of the 8 flips/rotations. Only the
    parts under irregular tissue islands (:func:`island_field`: blobs with lobed borders and
    small fragments, as sections and biopsies lie on a real slide) are tissue; the rest is
    glass, ``TISSUE_GLASS_RGB`` with slight noise. Unlike the mosaic
    (:func:`build_he_mosaic_slide`) the content is ordinary tissue, whose mitoses are rare:
    the cost of detection on it is that of a real slide of the same tissue area.

    Written like the mosaic: tile by tile with tifffile, JPEG tiles, pyramid levels 4x apart
    as consecutive IFDs (reduced levels rendered at their own size from block-averaged
    images), level 0's pixel size in the resolution tags, so OpenSlide opens it as a
    ``generic-tiff``; the whole level is never in memory.

    Parameters
    ----------
    path : str or Path
        Output ``.tif`` (written atomically).
    tissue_mm2 : float
        Tissue area; the islands cover this area of level 0 (to the island grid's resolution,
        :data:`ISLAND_GRID_UM`).
    width, height : int, optional
        Level-0 size in px; default a square of :func:`tissue_slide_size` (tissue on about
        40% of the slide, at least 40,000 px a side).
    mpp : float
        Level-0 pixel size (um/px).
    n_islands : int, optional
        Number of tissue islands; default ``max(2, round(0.8 * sqrt(tissue_mm2)))``.
    seed : int
        Seeds the islands, the image choice and orientations and the glass noise.
    source_dir : str or Path, optional
        A folder with ``images.csv`` (``file``, ``mpp``) and the images; default
        ``../shared/data/tissue``.
    tile : int
        TIFF tile side (px).
    quality : int
        JPEG quality.
    min_level_px : int
        Add reduced levels (each 4x smaller, at most 64x) while the smaller side stays at
        least this long; a huge value writes a single-level (flat) TIFF.
    images : ndarray, optional
        Pre-loaded ``(N, S, S, 3)`` images at ``mpp`` (:func:`load_tissue_images`).

    Returns
    -------
    Path
        ``path``.
    """

    path = Path(path)
    mpp = validate_mpp(mpp)
    if not math.isfinite(float(tissue_mm2)) or tissue_mm2 <= 0:
        raise InvalidInputError(f"tissue_mm2 must be positive, got {tissue_mm2}")
    side = tissue_slide_size(tissue_mm2, mpp=mpp)
    width, height = int(width or side), int(height or side)
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"width and height must be positive, got {width}x{height}")
    slide_mm2 = width * height * (mpp / 1000.0) ** 2
    if tissue_mm2 > 0.9 * slide_mm2:
        raise InvalidInputError(
            f"{tissue_mm2} mm² of tissue does not fit as islands on a {width} x {height} px "
            f"slide ({slide_mm2:.1f} mm²); use a larger slide"
        )
    if tile <= 0 or tile % 16:
        raise InvalidInputError(f"tile must be a positive multiple of 16, got {tile}")
    if images is None:
        images, _ = load_tissue_images(source_dir, mpp=mpp)
    s = images.shape[1]
    if n_islands is None:
        n_islands = max(2, round(0.8 * math.sqrt(tissue_mm2)))
    rng = np.random.default_rng(seed)
    grid_px = ISLAND_GRID_UM / mpp
    g_rows, g_cols = math.ceil(height / grid_px), math.ceil(width / grid_px)
    field, thr = island_field(
        g_rows, g_cols, tissue_fraction=tissue_mm2 / slide_mm2, n_islands=int(n_islands),
        seed=seed,
    )  # fmt: skip
    n_rows, n_cols = math.ceil(height / s), math.ceil(width / s)
    index = rng.integers(0, len(images), size=(n_rows, n_cols))
    orient = rng.integers(0, 8, size=(n_rows, n_cols)).astype(np.int8)
    noise = rng.normal(0.0, TISSUE_GLASS_NOISE, size=(8, tile, tile, 3))
    glass = np.clip(np.asarray(TISSUE_GLASS_RGB) + noise + 0.5, 0, 255).astype(np.uint8)
    built_mm2 = float((field > thr).sum()) * (ISLAND_GRID_UM / 1000.0) ** 2
    levels = [1]
    while (
        min(width, height) // (levels[-1] * LEVEL_FACTOR) >= min_level_px
        and levels[-1] * LEVEL_FACTOR <= min(64, s)
        and s % (levels[-1] * LEVEL_FACTOR) == 0
    ):
        levels.append(levels[-1] * LEVEL_FACTOR)

    def tiles(ds: int, lw: int, lh: int) -> Iterator[np.ndarray]:
        level = _TissueLevel(images, index, orient, field, thr, grid_px=grid_px, ds=ds, glass=glass)
        return (
            level.tile(tx * tile, ty * tile, tile, lw, lh)
            for ty in range(math.ceil(lh / tile))
            for tx in range(math.ceil(lw / tile))
        )

    return _write_pyramid(
        path,
        width=width,
        height=height,
        levels=levels,
        tile=tile,
        mpp=mpp,
        comp={"compression": "jpeg", "compressionargs": {"level": int(quality)}},
        description=(
            f"mitoscope synthetic slide of real tissue (MoNuSeg, "
            f"../shared/data/tissue) in islands on glass; mpp={mpp}; "
            f"seed={seed}; tissue_mm2={built_mm2:.3f}; "
            f"n_islands={n_islands}"
        ),
        level_tiles=tiles,
    )


def tissue_slide_file_name(tissue_mm2: float, *, seed: int = 0, **options: object) -> str:
    """The cache file name of a tissue slide built with these parameters."""
    mpp = options.get("mpp", 0.25)
    name = f"tissue_islands_{float(tissue_mm2):g}mm2_mpp{mpp}_s{seed}"
    for key in ("width", "height", "n_islands", "quality", "min_level_px"):
        if options.get(key) is not None:
            name += f"_{key}{options[key]}"
    return name + ".tif"


def cached_tissue_slide(
    cache_dir: str | Path, *, tissue_mm2: float, seed: int = 0, **options: object
) -> Path:
    """Build (once) and return a tissue slide in ``cache_dir`` named by its parameters."""
    path = Path(cache_dir) / tissue_slide_file_name(tissue_mm2, seed=seed, **options)
    if not path.exists():
        build_tissue_slide(path, tissue_mm2=tissue_mm2, seed=seed, **options)  # type: ignore[arg-type]
    return path
