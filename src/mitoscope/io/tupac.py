"""TUPAC16 and ICPR 2012 (MITOS) mitosis label files.

Two headerless CSV conventions (one file per image):

- **TUPAC16** (auxiliary mitosis dataset, ``mitoses_ground_truth/01/01.csv``): one mitosis per
  line, ``row,column`` -- i.e. ``y,x`` in pixels, **y first**. Extra columns are ignored.
- **ICPR 2012 / MITOS** (``A00_00.csv``): one mitosis per line, the line lists the coordinates
  of all pixels of that mitosis as consecutive pairs; the mitosis is placed at the mean and
  ``bbox`` is the pixel extent. The pair order is ``x,y`` by default (``order="yx"`` swaps it).

A directory is read recursively; the image name is the CSV path relative to the directory
without ``.csv`` (``01/01``), matching the image file of the same stem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .records import PointAnnotations, check_file
from .registry import DIRECTORY, Peek, register_reader

_SPLIT = re.compile(r"[,;\s]+")


def _parse_lines(p: Path) -> list[list[float]]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {p} as a text CSV: {exc}") from None
    rows = []
    for i, line in enumerate(text.splitlines()):
        parts = [t for t in _SPLIT.split(line.strip()) if t]
        if not parts:
            continue
        try:
            rows.append([float(t) for t in parts])
        except ValueError:
            raise InvalidInputError(
                f"{p.name}: line {i + 1} is {line.strip()[:40]!r}; TUPAC/ICPR files hold only "
                "numbers (no header)"
            ) from None
    return rows


def _read_one(p: Path, image: str, fmt: str, order: str) -> PointAnnotations:
    rows = _parse_lines(p)
    kind = fmt
    if kind == "auto":
        kind = "icpr" if any(len(r) > 3 for r in rows) else "tupac"
    xs, ys, boxes = [], [], []
    for i, r in enumerate(rows):
        if kind == "tupac":
            if len(r) < 2:
                raise InvalidInputError(f"{p.name}: line {i + 1} needs 'row,column'")
            ys.append(r[0])
            xs.append(r[1])
        else:
            if len(r) < 2 or len(r) % 2:
                raise InvalidInputError(
                    f"{p.name}: line {i + 1} has {len(r)} values; ICPR lines list coordinate "
                    "pairs (an even number)"
                )
            pairs = np.asarray(r).reshape(-1, 2)
            if order == "yx":
                pairs = pairs[:, ::-1]
            xs.append(float(pairs[:, 0].mean()))
            ys.append(float(pairs[:, 1].mean()))
            (x0, y0), (x1, y1) = pairs.min(axis=0), pairs.max(axis=0)
            boxes.append((x0, y0, x1 + 1, y1 + 1))  # pixel extent, exclusive end
    return PointAnnotations.from_columns(
        image=image,
        x_px=xs,
        y_px=ys,
        label=None,
        bbox=np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if kind == "icpr" else None,
        meta={"format": np.array([kind] * len(xs), dtype=object)},
        images_all=[image],
        source=kind,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_headerless_numbers(peek: Peek) -> bool:
    if peek.suffix == DIRECTORY:
        return True
    head = peek.first_line
    return bool(head) and all(_is_number(c) for c in re.split(r"[,;\t\s]+", head) if c)


@register_reader(
    "tupac", suffixes=(DIRECTORY, ".csv", ".tsv", ".txt"), sniff=_is_headerless_numbers,
    priority=10, description="TUPAC16 / ICPR 2012 headerless x,y CSV (a file or a folder)",
)  # fmt: skip
def read_icpr_tupac(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    order: str = "xy",
    image: str | None = None,
) -> PointAnnotations:
    """Read TUPAC16 (``y,x`` per line) or ICPR 2012 (pixel list per line) mitosis CSVs.

    Parameters
    ----------
    path : path-like
        One CSV file, or a directory searched recursively for ``*.csv``.
    fmt : {"auto", "tupac", "icpr"}
        ``auto``: a file with any line of more than 3 values is ICPR, otherwise TUPAC.
    order : {"xy", "yx"}
        Pair order of ICPR pixel lists.
    image : str, optional
        Image name for a single file (default: the file name without ``.csv``).

    Returns
    -------
    PointAnnotations
        Every row is a mitotic figure; ``meta["format"]`` says which convention was used.
    """
    if fmt not in ("auto", "tupac", "icpr"):
        raise InvalidInputError(f"fmt must be 'auto', 'tupac' or 'icpr', got {fmt!r}")
    if order not in ("xy", "yx"):
        raise InvalidInputError(f"order must be 'xy' or 'yx', got {order!r}")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".csv" and f.is_file())
        if not files:
            raise InvalidInputError(f"no .csv label files found under {p}")
        parts = [
            _read_one(f, f.relative_to(p).with_suffix("").as_posix(), fmt, order) for f in files
        ]
        return PointAnnotations.cat(parts)
    p = check_file(p, "TUPAC/ICPR CSV")
    name = (
        image if image is not None else (p.name[:-4] if p.name.lower().endswith(".csv") else p.name)
    )
    return _read_one(p, name, fmt, order)
