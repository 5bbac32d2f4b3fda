"""Synthetic whole-slide images made of real H&E, for tests and benchmarks.

:func:`build_he_mosaic_slide` writes a pyramidal tiled TIFF whose pixels are **real H&E**: a
mosaic of the 128 x 128 px crops of the AMi-Br training set (``../shared/data/amibr-train``,
MIT licence; human breast cancer scanned at 0.23-0.25 um/px, each crop centred on a mitotic
figure), laid out in smooth tissue islands on white glass so that tissue detection matters.
Because every crop holds a real mitotic figure, such a slide is far denser in mitoses than a
real tumour (about one per 32 x 32 um cell of tissue); it is meant for throughput, memory and
I/O measurements, not for accuracy.

The file is written tile by tile through tifffile's tile iterator (the whole level is never held
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
from collections.abc import Iterator
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
    import tifffile

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
                        "description": (
                            f"mitoscope synthetic mosaic of real H&E crops (AMi-Br); "
                            f"mpp={mpp}; seed={seed}; tissue_fraction={tissue_fraction}"
                        ),
                    }
                tw.write(
                    _level_tiles(index, orient, crops, ds=ds, level_w=lw, level_h=lh, tile=tile),
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
