"""AMi-Br crop label table (``amibr-train/labels.csv``): mitotic-figure crops with atypia votes.

Columns: ``file`` (crop path relative to the table), ``label`` (``Normal`` | ``Atypical``, the
consensus), ``slide`` (source image), ``dataset`` (``MIDOG21`` | ``TUPAC16``), ``uid`` (annotation
id in the source database), ``x, y`` (crop centre in the source image, level-0 px),
``expert1_label``, ``expert2_label`` (phase or atypia subtype, e.g. ``"NMF metaphase"``,
``"AMF segregation"``), ``expert1_atypical`` .. ``expert3_atypical`` (each expert's vote) and
``majority_atypical``.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from ..errors import InvalidInputError
from .records import MITOTIC, PointAnnotations, check_file, str_array
from .registry import Peek, register_reader

_REQUIRED = ("file", "label", "slide", "x", "y")


def _vote(v: str) -> float:
    key = (v or "").strip().lower()
    if key in ("true", "1", "yes", "atypical"):
        return 1.0
    if key in ("false", "0", "no", "normal"):
        return 0.0
    return math.nan


def _is_amibr_table(peek: Peek) -> bool:
    import re

    cols = {c.strip().lower() for c in re.split(r"[,;\t]", peek.first_line)}
    return {"file", "label", "expert1_atypical"} <= cols


@register_reader(
    "amibr", suffixes=(".csv", ".tsv", ".txt"), sniff=_is_amibr_table, priority=20,
    description="AMi-Br crop table: file,label,...,expert1_atypical",
)  # fmt: skip
def read_amibr_labels(csv_path: str | os.PathLike[str]) -> PointAnnotations:
    """Read the AMi-Br ``labels.csv`` into :class:`PointAnnotations` (one row per crop).

    Every row is a mitotic figure (``label == "mitotic figure"``); ``atypical`` is 1 for
    ``Atypical``, 0 for ``Normal``. The rater columns are votes on *atypia*, so ``agreement``
    is the share of ``expertN_atypical`` votes equal to the consensus and ``n_raters`` the
    number of votes. ``image`` is the source image (``slide``), ``x_px, y_px`` the centre there.

    ``meta`` columns: ``file`` (absolute crop path), ``crop`` (path as in the table),
    ``slide``, ``dataset``, ``subtype`` (``expert1_label``), ``expert1_label``,
    ``expert2_label``, ``majority_atypical`` (1/0).
    """
    p = check_file(csv_path, "AMi-Br labels")
    try:
        with open(p, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"cannot read {p} as a CSV table: {exc}") from None
    missing = [c for c in _REQUIRED if c not in fields]
    if missing:
        raise InvalidInputError(
            f"{p.name} is not an AMi-Br label table: missing column(s) {', '.join(missing)}"
        )
    vote_cols = sorted(c for c in fields if c.startswith("expert") and c.endswith("_atypical"))
    n = len(rows)
    x = np.empty(n)
    y = np.empty(n)
    atyp = np.empty(n)
    agreement = np.ones(n)
    n_raters = np.ones(n, dtype=np.int64)
    for i, r in enumerate(rows):
        try:
            x[i] = float(r["x"])
            y[i] = float(r["y"])
        except (TypeError, ValueError):
            raise InvalidInputError(f"{p.name}: row {i + 2} has non-numeric x/y") from None
        lab = (r["label"] or "").strip().lower()
        if lab not in ("normal", "atypical"):
            raise InvalidInputError(
                f"{p.name}: row {i + 2} label is {r['label']!r}; expected Normal or Atypical"
            )
        atyp[i] = 1.0 if lab == "atypical" else 0.0
        votes = [v for v in (_vote(r.get(c, "")) for c in vote_cols) if not math.isnan(v)]
        if votes:
            n_raters[i] = len(votes)
            agreement[i] = sum(1 for v in votes if v == atyp[i]) / len(votes)
    root = p.parent.resolve()
    crop = [r["file"] for r in rows]
    meta = {
        "file": str_array(str(root / c) for c in crop),
        "crop": str_array(crop),
        "slide": str_array(r["slide"] for r in rows),
        "dataset": str_array(r.get("dataset", "") for r in rows),
        "subtype": str_array(r.get("expert1_label", "") for r in rows),
        "expert1_label": str_array(r.get("expert1_label", "") for r in rows),
        "expert2_label": str_array(r.get("expert2_label", "") for r in rows),
    }
    if "majority_atypical" in fields:
        meta["majority_atypical"] = np.array([_vote(r["majority_atypical"]) for r in rows])
    return PointAnnotations.from_columns(
        image=str_array(r["slide"] for r in rows),
        x_px=x,
        y_px=y,
        label=[MITOTIC] * n,
        is_mitosis=np.ones(n, dtype=bool),
        atypical=atyp,
        agreement=agreement,
        n_raters=n_raters,
        uid=[r.get("uid", str(i)) for i, r in enumerate(rows)],
        meta=meta,
        source="amibr",
    )
