"""``curate crowd``: several raters' votes per object -> consensus, agreement and soft labels.

Sources of votes (each object seen by several raters):

- **MIDOG++ JSON**: ``annotations[].labels`` holds the individual votes (category ids; two
  raters, a third when they disagreed); ``category_id`` is the dataset's consensus.
- **SlideRunner databases** (CCMCT, CMC, TUPAC alternative labels, ``mitoscope review``):
  ``Annotations_label`` holds each person's label (the latest per person counts); ``agreedClass``
  is the consensus. Pseudo-raters whose label is the outcome of a discussion (``Consensus``) are
  not counted as votes.
- **AMi-Br ``labels.csv``**: three experts' atypical / normal votes per mitotic figure
  (``expert1_atypical`` .. ``expert3_atypical``); ``label`` is the consensus.

Votes are binary for the task (mitosis: mitotic figure vs not; atypia: atypical vs normal);
uncertain classes (``Equivocal``, ...) abstain. Per object (Ji et al., ``papers/003_*``):
``soft_label`` = share of positive votes, ``consensus`` = majority vote (a tie takes the
dataset's stored consensus), ``agreement`` = share of votes equal to the consensus, in [0, 1].
Rules compared with the stored consensus: ``majority``, ``unanimous`` (positive only when every
rater said so), ``any`` (positive when one rater said so), ``first`` (the first rater alone).

Ji's sampling (:class:`EventTileSampler`, defined in :mod:`mitoscope.train.event_tiles` and
re-exported here): draw a labelled event, then one of the tiles (250 px, stride 125 in the paper)
that contain it, so every event is drawn equally often wherever it lies and moves around the tile;
tile regression targets ``s_t = sum_i r_i a_i``. ``mitoscope train-detector`` trains with it
(``sampling = "event_tile"``, docs/detector.md).
"""

from __future__ import annotations

import csv
import math
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..train.event_tiles import EventTileSampler as EventTileSampler  # re-export

RULES = ("majority", "unanimous", "any", "first")
#: vote classes that abstain (neither positive nor negative)
ABSTAIN = {"equivocal", "ignore", "unknown", "unsure", "uncertain", "not sure"}
COLUMNS = (
    "image", "x_px", "y_px", "uid", "source", "task", "raters", "votes", "n_raters",
    "n_positive", "soft_label", "consensus", "agreement", "stored", "label", "is_mitosis",
    "is_atypical", *(f"rule_{r}" for r in RULES),
)  # fmt: skip


def _mitosis_vote(name: Any) -> int | None:
    """1 mitotic figure, 0 anything else, None for an abstaining class."""
    from ..io.records import canonical_label

    if str(name).strip().lower() in ABSTAIN:
        return None
    return 1 if canonical_label(name)[1] else 0


# -- vote readers ----------------------------------------------------------------------------
def _rows(**cols: Any) -> dict[str, list[Any]]:
    return {k: list(v) for k, v in cols.items()}


def votes_midogpp(path: Path) -> dict[str, list[Any]]:
    """Per-annotation rater votes of a MIDOG++ COCO-like JSON."""
    from ..io.records import load_json

    data = load_json(path, "MIDOG++")
    try:
        cat = {int(c["id"]): _mitosis_vote(c["name"]) for c in data["categories"]}
        names = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = data["annotations"]
        out = _rows(image=[], x_px=[], y_px=[], uid=[], raters=[], votes=[], stored=[])
        for i, a in enumerate(anns):
            b = [float(v) for v in a["bbox"]]
            c = int(a["category_id"])
            raw = a.get("labels") or [c]
            raw = raw if isinstance(raw, list) else [raw]
            votes = [cat.get(int(v)) for v in raw]
            out["image"].append(names[int(a["image_id"])])
            out["x_px"].append(0.5 * (b[0] + b[2]))
            out["y_px"].append(0.5 * (b[1] + b[3]))
            out["uid"].append(str(a.get("id", i)))
            out["raters"].append([f"rater{k + 1}" for k in range(len(votes))])
            out["votes"].append(votes)
            out["stored"].append(cat.get(c))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInputError(
            f"{path.name}: not a MIDOG++ label file with rater votes ({type(exc).__name__}: {exc})"
        ) from None
    return out


def votes_sliderunner(
    path: Path, *, exclude_persons: tuple[str, ...] = ("consensus",)
) -> dict[str, list[Any]]:
    """Per-annotation person labels of a SlideRunner database (latest label per person)."""
    from ..io.sliderunner import read_sliderunner

    ann = read_sliderunner(path, exclude_persons=exclude_persons)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:  # pragma: no cover - read_sliderunner opened it
        raise InvalidInputError(f"{path.name}: {exc}") from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"Annotations_label", "Persons"} <= tables:
            raise InvalidInputError(
                f"{path.name} has no per-person labels (Annotations_label, Persons): nothing to "
                "aggregate"
            )
        classes = dict(con.execute("SELECT uid, name FROM Classes"))
        persons = dict(con.execute("SELECT uid, name FROM Persons"))
        low = {e.lower() for e in exclude_persons}
        votes: dict[int, dict[int, int]] = {}
        for anno, person, cls in con.execute(
            "SELECT annoId, person, class FROM Annotations_label ORDER BY uid"
        ):
            if str(persons.get(person, "")).strip().lower() in low:
                continue
            votes.setdefault(int(anno), {})[int(person)] = cls
    finally:
        con.close()
    out = _rows(image=[], x_px=[], y_px=[], uid=[], raters=[], votes=[], stored=[])
    for i in range(len(ann)):
        uid = int(ann.uid[i])
        mine = votes.get(uid, {})
        people = sorted(mine)
        out["image"].append(str(ann.image[i]))
        out["x_px"].append(float(ann.x_px[i]))
        out["y_px"].append(float(ann.y_px[i]))
        out["uid"].append(str(uid))
        out["raters"].append([str(persons.get(p, p)) for p in people])
        out["votes"].append([_mitosis_vote(classes.get(mine[p], "")) for p in people])
        out["stored"].append(_mitosis_vote(ann.meta["class_name"][i]))
    return out


def votes_amibr(path: Path) -> dict[str, list[Any]]:
    """The three experts' atypical (1) / normal (0) votes of the AMi-Br ``labels.csv``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"cannot read {path} as a CSV table: {exc}") from None
    cols = sorted(c for c in fields if c.startswith("expert") and c.endswith("_atypical"))
    need = {"label", "slide", "x", "y"}
    if not cols or not need <= set(fields):
        raise InvalidInputError(
            f"{path.name} is not an AMi-Br label table (needs label, slide, x, y and "
            "expertN_atypical columns)"
        )

    def vote(v: str) -> int | None:
        key = (v or "").strip().lower()
        return (
            1
            if key in ("true", "1", "atypical")
            else 0
            if key in ("false", "0", "normal")
            else None
        )

    out = _rows(image=[], x_px=[], y_px=[], uid=[], raters=[], votes=[], stored=[])
    for i, r in enumerate(rows):
        try:
            x, y = float(r["x"]), float(r["y"])
        except (TypeError, ValueError):
            raise InvalidInputError(f"{path.name}: row {i + 2} has non-numeric x/y") from None
        out["image"].append(str(r["slide"]))
        out["x_px"].append(x)
        out["y_px"].append(y)
        out["uid"].append(str(r.get("uid") or i))
        out["raters"].append([c.replace("_atypical", "") for c in cols])
        out["votes"].append([vote(r.get(c, "")) for c in cols])
        out["stored"].append(vote(r["label"]))
    return out


def read_votes(path: str | os.PathLike[str]) -> tuple[dict[str, list[Any]], str, str]:
    """``(columns, source, task)`` of a file with several raters' votes per object."""
    from ..io.records import check_file

    p = check_file(path, "label")
    suffix = p.suffix.lower()
    if suffix in (".sqlite", ".sqlite3", ".db"):
        return votes_sliderunner(p), "sliderunner", "mitosis"
    if suffix == ".json":
        head = p.read_text(encoding="utf-8", errors="replace")[:200_000]
        if '"annotations"' in head and '"images"' in head:
            return votes_midogpp(p), "midog++", "mitosis"
        raise InvalidInputError(
            f"{p.name}: no rater votes in this JSON; curate crowd reads MIDOG++ JSON (with "
            "'labels' votes), SlideRunner databases and the AMi-Br labels.csv"
        )
    if suffix == ".csv":
        with open(p, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
        if "expert1_atypical" in header:
            return votes_amibr(p), "amibr", "atypia"
    raise InvalidInputError(
        f"{p.name}: unknown vote format; curate crowd reads MIDOG++ JSON, SlideRunner "
        ".sqlite databases and the AMi-Br labels.csv"
    )


# -- aggregation -----------------------------------------------------------------------------
def aggregate(cols: dict[str, list[Any]], *, source: str, task: str) -> Any:
    """One :class:`pandas.DataFrame` row per object with the consensus, agreement, soft label
    and the label of every rule (:data:`COLUMNS`)."""
    import pandas as pd

    n = len(cols["image"])
    npos = np.zeros(n, dtype=np.int64)
    nvote = np.zeros(n, dtype=np.int64)
    first = np.full(n, -1, dtype=np.int64)
    for i, votes in enumerate(cols["votes"]):
        v = [int(x) for x in votes if x is not None]
        nvote[i], npos[i] = len(v), sum(v)
        first[i] = v[0] if v else -1
    stored = np.array([-1 if s is None else int(s) for s in cols["stored"]], dtype=np.int64)
    nneg = nvote - npos
    has = nvote > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        soft = np.where(has, npos / np.maximum(nvote, 1), np.nan)
    majority = np.where(npos > nneg, 1, np.where(nneg > npos, 0, stored))  # tie -> stored
    majority = np.where(has, majority, stored)
    agree_n = np.where(majority == 1, npos, np.where(majority == 0, nneg, 0))
    agreement = np.where(has & (majority >= 0), agree_n / np.maximum(nvote, 1), np.nan)
    rules = {
        "majority": majority,
        "unanimous": np.where(has, (npos == nvote).astype(np.int64), -1),
        "any": np.where(has, (npos > 0).astype(np.int64), -1),
        "first": first,
    }
    if task == "atypia":
        label = np.full(n, "mitotic figure", dtype=object)
        is_mitosis = np.ones(n, dtype=bool)
        is_atypical = np.where(majority >= 0, majority, np.nan)
    else:
        label = np.where(majority == 1, "mitotic figure", "non-mitotic figure").astype(object)
        label[majority < 0] = "uncertain"
        is_mitosis = majority == 1
        is_atypical = np.full(n, np.nan)  # unknown: an empty cell in the CSV
    df = pd.DataFrame(
        {
            "image": cols["image"],
            "x_px": np.asarray(cols["x_px"], dtype=np.float64),
            "y_px": np.asarray(cols["y_px"], dtype=np.float64),
            "uid": cols["uid"],
            "source": source,
            "task": task,
            "raters": [";".join(r) for r in cols["raters"]],
            "votes": [
                ";".join("" if v is None else str(int(v)) for v in vs) for vs in cols["votes"]
            ],
            "n_raters": nvote,
            "n_positive": npos,
            "soft_label": soft,
            "consensus": majority,
            "agreement": agreement,
            "stored": stored,
            "label": label,
            "is_mitosis": is_mitosis,
            "is_atypical": is_atypical,
            **{f"rule_{k}": v for k, v in rules.items()},
        }
    )
    return df


def crowd_table(paths: Sequence[str | os.PathLike[str]]) -> Any:
    """The aggregated table of one or more vote files (rows of all files, in order)."""
    import pandas as pd

    if not paths:
        raise InvalidInputError("give at least one label file with rater votes")
    seen: set[Path] = set()
    parts = []
    for p in paths:
        rp = Path(p).resolve()
        if rp in seen:
            raise InvalidInputError(f"{Path(p).name} is given twice")
        seen.add(rp)
        cols, source, task = read_votes(p)
        if not cols["image"]:
            raise InvalidInputError(f"{Path(p).name} holds no labelled objects")
        parts.append(aggregate(cols, source=source, task=task))
    return pd.concat(parts, ignore_index=True)


def crowd_summary(df: Any) -> dict[str, Any]:
    """Per source and task: objects, raters per object, the agreement distribution, and how
    many labels each rule changes relative to the stored consensus (positive -> negative and
    negative -> positive), plus Cohen's kappa between rater pairs (scikit-learn)."""
    from sklearn.metrics import cohen_kappa_score

    out: dict[str, Any] = {}
    for (source, task), g in df.groupby(["source", "task"], sort=False):
        known = g["stored"] >= 0
        rules = {}
        for r in RULES:
            lab = g[f"rule_{r}"]
            ok = known & (lab >= 0)
            rules[r] = {
                "changed": int((ok & (lab != g["stored"])).sum()),
                "pos_to_neg": int((ok & (g["stored"] == 1) & (lab == 0)).sum()),
                "neg_to_pos": int((ok & (g["stored"] == 0) & (lab == 1)).sum()),
            }
        agree = g["agreement"].dropna()
        vals, counts = np.unique(np.round(agree.to_numpy(), 3), return_counts=True)
        kappas = {}
        pairs: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for raters, votes in zip(g["raters"], g["votes"], strict=True):
            rs, vs = raters.split(";"), votes.split(";")
            d = {a: int(b) for a, b in zip(rs, vs, strict=False) if b != ""}
            names = sorted(d)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    pa, pb = pairs.setdefault((a, b), ([], []))
                    pa.append(d[a])
                    pb.append(d[b])
        for (a, b), (va, vb) in pairs.items():
            if len(va) >= 50 and len(set(va) | set(vb)) > 1:
                kappas[f"{a}~{b}"] = {"n": len(va), "kappa": float(cohen_kappa_score(va, vb))}
        npos, nvote = g["n_positive"], g["n_raters"]
        out[f"{source}/{task}"] = {
            "objects": int(len(g)),
            "ties_resolved_by_stored": int(((2 * npos == nvote) & (nvote > 0)).sum()),
            "positives_stored": int((g["stored"] == 1).sum()),
            "raters_per_object": {int(k): int(v) for k, v in g["n_raters"].value_counts().items()},
            "agreement_mean": float(agree.mean()) if len(agree) else math.nan,
            "agreement_unanimous_share": float((agree >= 1.0 - 1e-9).mean()) if len(agree) else 0,
            "agreement_histogram": {f"{v:.3f}": int(c) for v, c in zip(vals, counts, strict=True)},
            "agreement_mean_positives": float(g.loc[g["consensus"] == 1, "agreement"].mean()),
            "agreement_mean_negatives": float(g.loc[g["consensus"] == 0, "agreement"].mean()),
            "rules_vs_stored": rules,
            "cohen_kappa": kappas,
        }
    return out


def write_crowd_table(df: Any, path: str | os.PathLike[str]) -> Path:
    """Write the table as CSV (atomically); ``mitoscope train`` reads it as a ``csv`` source
    (``image``, ``x_px``, ``y_px``, ``label``, ``is_atypical``, ``agreement``)."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


# -- Ji et al.'s sampling --------------------------------------------------------------------
# EventTileSampler lives in mitoscope.train.event_tiles (train-detector's sampling = "event_tile"
# uses it; train may not import curate) and is re-exported here.
