"""Training samples from labelled crops: positives at labels, negatives from the proposer.

For the AMi-Br crops (``amibr-train``; each a 128 x 128 px crop centred on a mitotic figure,
its source exhaustively labelled) every crop gives:

- the centre mitotic figure (positive; normal/atypical label and the three experts' votes),
- other labelled mitotic figures inside the crop (positives without an atypia label),
- labelled imposters / hard negatives inside the crop,
- every other object the proposer finds more than ``exclusion_um`` (7.5 um, the MIDOG match
  radius) from all labelled mitotic figures: real non-mitotic cells (negatives).

Crops are resampled to ``mpp`` (0.25 um/px) first. Patches centred near the crop edge are
filled by reflection (:func:`~mitoscope.classify.patches.extract_patches`). A labelled point's
mask is the proposer object nearest to it within ``match_um``; when the proposer found nothing
there a disc of radius 3 um is used (counted in ``SampleSet.meta["mask_fallbacks"]``).
The negative:positive ratio is applied when sampling batches
(:func:`mitoscope.train.data.make_sampler`), so the cache keeps every candidate.

Over 400 lines: :class:`SampleSet` (the training table every source produces), its save / load /
concatenation, and the builders that share its column layout and the proposer-negative rule (AMi-Br
crops, labelled images, ordinary-tissue negatives). A future split would move the ordinary-tissue
builders (``read_tissue_index`` .. ``build_tissue_samples``, about 75 lines) and the AMi-Br builder
into their own modules.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

KIND_CENTRE, KIND_MF_NEIGHBOUR, KIND_IMPOSTER, KIND_CANDIDATE = 0, 1, 2, 3
CACHE_VERSION = 2  # 2: the ``source`` column


@dataclass
class SampleSet:
    """Column container of training samples (patches at a fixed pixel size)."""

    patches: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) bool
    is_mf: np.ndarray  # (N,) int8
    atypical: np.ndarray  # (N,) int8: 1 atypical, 0 normal, -1 unknown / not an MF
    agreement: np.ndarray  # (N,) float32: fraction of raters agreeing with the atypia label
    subtype: np.ndarray  # (N,) int16: index into meta["subtypes"], -1 unknown
    kind: np.ndarray  # (N,) int8: KIND_* constants
    crop: np.ndarray  # (N,) int32: source crop index
    slide: np.ndarray  # (N,) str: "<dataset>/<slide>"
    group: np.ndarray  # (N,) str: scanner / dataset domain
    meta: dict[str, Any] = field(default_factory=dict)
    # (N,) str: the training source (``[[train.sources]]`` name; "" for a single source). Its
    # sampling weight is ``meta["source_weights"][name]`` (see train.data.mf_sample_weights).
    source: np.ndarray | None = None
    # (N,) float32: share of raters agreeing with the MF / non-MF label (1 when one label or
    # unknown; the AMi-Br crops' ``agreement`` is about atypia). Weights or softens the MF loss
    # with ``mf_loss = "agreement" | "soft"`` (Ji et al.; tables of ``mitoscope curate crowd``).
    mf_agreement: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = np.full(len(self.is_mf), "", dtype="<U1")
        if self.mf_agreement is None:
            self.mf_agreement = np.ones(len(self.is_mf), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.is_mf)

    def subset(self, idx: np.ndarray) -> SampleSet:
        idx = np.asarray(idx)
        return SampleSet(
            **{k: getattr(self, k)[idx] for k in SAMPLE_ARRAYS},
            meta=dict(self.meta),
        )


#: the per-sample array fields of :class:`SampleSet` (saved in, and loaded from, the cache)
SAMPLE_ARRAYS = (
    "patches",
    "masks",
    "is_mf",
    "atypical",
    "agreement",
    "subtype",
    "kind",
    "crop",
    "slide",
    "group",
    "source",
    "mf_agreement",
)


_DTYPES = {
    "is_mf": np.int8,
    "atypical": np.int8,
    "agreement": np.float32,
    "subtype": np.int16,
    "kind": np.int8,
    "crop": np.int32,
    "slide": str,
    "group": str,
}


def samples_from_columns(cols: dict[str, list[Any]], *, meta: dict[str, Any]) -> SampleSet:
    """A :class:`SampleSet` from per-sample column lists (``patches``, ``masks`` and the
    columns of :data:`_DTYPES`; ``source`` optional), with the container's dtypes."""
    arrays: dict[str, Any] = {
        "patches": np.stack(cols["patches"]).astype(np.uint8),
        "masks": np.stack(cols["masks"]).astype(bool),
    }
    arrays.update({k: np.asarray(cols[k], dtype=t) for k, t in _DTYPES.items()})
    if cols.get("source"):
        arrays["source"] = np.asarray(cols["source"], dtype=str)
    if cols.get("mf_agreement"):
        arrays["mf_agreement"] = np.asarray(cols["mf_agreement"], dtype=np.float32)
    return SampleSet(**arrays, meta=meta)


def amibr_scanner(dataset: str, slide: str) -> tuple[str, float]:
    """Scanner group and pixel size (um/px) of an AMi-Br crop's source slide.

    MIDOG21 slides 001-050: Hamamatsu XR, 051-100: Hamamatsu S360 (both 0.23 um/px),
    101-150: Aperio CS2 (0.25 um/px); TUPAC16: Aperio (0.25 um/px).
    """
    if dataset.upper().startswith("MIDOG"):
        try:
            num = int(Path(slide).stem)
        except ValueError:
            return "midog21", 0.25
        if num <= 50:
            return "midog21_hamamatsu_xr", 0.23
        if num <= 100:
            return "midog21_hamamatsu_s360", 0.23
        return "midog21_aperio_cs2", 0.25
    return "tupac16", 0.25


def amibr_label_table(root: Path) -> Any:
    """The ``labels.csv`` table of the AMi-Br training folder ``root`` (a pandas DataFrame)."""
    import pandas as pd

    path = root / "labels.csv"
    if not path.is_file():
        raise InvalidInputError(f"{root} has no labels.csv; pass the amibr-train folder")
    return pd.read_csv(path)


def amibr_crop_neighbours(path: Path | None) -> dict[str, list[tuple[str, float, float, str]]]:
    """Crop file -> ``(class, dx_px, dy_px, "dataset:uid")`` of its neighbours in the AMi-Br
    neighbours CSV ``path`` (empty without the file)."""
    import pandas as pd

    out: dict[str, list[tuple[str, float, float, str]]] = {}
    if path is None or not Path(path).is_file():
        return out
    df = pd.read_csv(path)
    for r in df.itertuples(index=False):
        out.setdefault(str(r.crop_file), []).append(
            (
                str(r.neighbour_class),
                float(r.dx_px),
                float(r.dy_px),
                f"{r.dataset}:{r.neighbour_uid}",
            )
        )
    return out


def _cache_key(root: Path, mpp: float, size_px: int, proposer: str) -> str:
    lab = (root / "labels.csv").read_bytes()
    h = hashlib.sha1(lab + f"{mpp}:{size_px}:{proposer}:{CACHE_VERSION}".encode()).hexdigest()
    return h[:12]


def default_cache_dir() -> Path:
    """mitoscope's user cache (:func:`mitoscope.io.cache.user_cache_dir`)."""
    from ..io.cache import user_cache_dir

    return user_cache_dir()


def build_amibr_samples(
    root: str | Path,
    *,
    neighbours_csv: str | Path | None = None,
    mpp: float = 0.25,
    size_px: int = 100,
    proposer: str = "classical",
    exclusion_um: float = 7.5,
    match_um: float = 4.0,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> SampleSet:
    """Build (or load from cache) the MF / non-MF / atypia samples of the AMi-Br crops.

    Parameters
    ----------
    root : path
        The ``amibr-train`` folder (``labels.csv`` + ``Normal/`` and ``Atypical/`` PNGs).
    neighbours_csv : path, optional
        ``amibr_train_crop_neighbours.csv`` (other labelled objects in each crop); default: the
        file beside ``root`` in ``../annotations`` when it exists.
    mpp : float
        Pixel size the crops are resampled to (the model's input pixel size).
    size_px : int
        Side of the stored patches (models centre-crop to their own input size).
    proposer : str
        Proposer that finds the other nuclei (negatives).
    exclusion_um : float
        Candidates closer than this to any labelled MF are not used as negatives.
    match_um : float
        A proposer object within this distance of a labelled point provides its mask.
    limit : int, optional
        Use only the first ``limit`` crops (tests).
    cache_dir : path, optional
        Where the ``.npz`` cache goes (default ``~/.cache/mitoscope`` or ``$MITOSCOPE_CACHE``);
        ``False``-y string ``"none"`` disables caching.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from ..candidates import get_proposer
    from ..classify.patches import disc_mask

    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"training data folder not found: {root}")
    if neighbours_csv is None:
        guess = root.parent / "annotations" / "amibr_train_crop_neighbours.csv"
        neighbours_csv = guess if guess.is_file() else None
    use_cache = str(cache_dir).lower() != "none"
    cache_path = None
    if use_cache:
        cdir = Path(cache_dir) if cache_dir else default_cache_dir()
        key = _cache_key(root, mpp, size_px, proposer)
        cache_path = cdir / f"amibr_samples_{key}_{limit or 'all'}.npz"
        if cache_path.is_file():
            return load_samples(cache_path)

    df = amibr_label_table(root)
    if limit:
        df = df.iloc[: int(limit)]
    neigh = amibr_crop_neighbours(Path(neighbours_csv) if neighbours_csv else None)
    centre_ids = {f"{d}:{u}" for d, u in zip(df["dataset"], df["uid"], strict=True)}
    subtypes = sorted({str(s) for s in df["expert1_label"].dropna()})
    sub_index = {s: i for i, s in enumerate(subtypes)}
    prop = get_proposer(proposer)
    disc = disc_mask(size_px, 3.0 / mpp)

    cols: dict[str, list[Any]] = {k: [] for k in SAMPLE_ARRAYS if k != "source"}
    n_fallback = 0
    n_centre_matched = 0
    for ci, row in enumerate(
        tqdm(list(df.itertuples(index=False)), desc="samples", disable=not progress)
    ):
        group, crop_mpp = amibr_scanner(str(row.dataset), str(row.slide))
        path = root / str(row.file)
        try:
            img = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read training crop {path}: {exc}") from None
        scale = crop_mpp / mpp
        img = resample_rgb(img, scale)
        cy, cx = 64.0 * scale, 64.0 * scale
        votes = [bool(getattr(row, f"expert{i}_atypical")) for i in (1, 2, 3)]
        lab = 1 if str(row.label).lower().startswith("atyp") else 0
        st = getattr(row, "expert1_label", None)
        pts = [LabelPoint(cx, cy, KIND_CENTRE, lab, sum(v == bool(lab) for v in votes) / 3.0,
                          sub_index.get(str(st), -1))]  # fmt: skip
        for cls, dx, dy, nid in neigh.get(Path(str(row.file)).name, []):
            if cls == "MF":
                if nid in centre_ids:
                    continue  # that figure is its own crop's centre sample
                pts.append(LabelPoint(cx + dx * scale, cy + dy * scale, KIND_MF_NEIGHBOUR))
            else:
                pts.append(LabelPoint(cx + dx * scale, cy + dy * scale, KIND_IMPOSTER))
        part, stats = labelled_image_samples(
            img, pts, mpp=mpp, size_px=size_px, proposer=prop, exclusion_um=exclusion_um,
            match_um=match_um, disc=disc,
        )  # fmt: skip
        n_fallback += stats["mask_fallbacks"]
        n_centre_matched += stats["centres_matched_by_proposer"]
        for k, v in part.items():
            cols[k].extend(v)
        n_new = len(part["kind"])
        cols["crop"].extend([ci] * n_new)
        cols["slide"].extend([f"{row.dataset}/{row.slide}"] * n_new)
        cols["group"].extend([group] * n_new)

    samples = samples_from_columns(
        cols,
        meta={
            "source": str(root),
            "mpp": float(mpp),
            "size_px": int(size_px),
            "proposer": proposer,
            "exclusion_um": float(exclusion_um),
            "match_um": float(match_um),
            "n_crops": len(df),
            "subtypes": subtypes,
            "mask_fallbacks": int(n_fallback),
            "centres_matched_by_proposer": int(n_centre_matched),
        },
    )
    if cache_path is not None:
        save_samples(samples, cache_path)
    return samples


@dataclass
class LabelPoint:
    """A labelled object in an image (pixel coordinates at the model pixel size).

    ``kind`` is ``KIND_CENTRE`` / ``KIND_MF_NEIGHBOUR`` (mitotic figures) or ``KIND_IMPOSTER``;
    ``emit=False`` points give no sample but still exclude nearby candidates from the negatives
    (labels just outside a window of a larger image).
    """

    x: float
    y: float
    kind: int
    atypical: int = -1
    agreement: float = 1.0
    subtype: int = -1
    emit: bool = True
    mf_agreement: float = 1.0


def labelled_image_samples(
    img: np.ndarray,
    points: list[LabelPoint],
    *,
    mpp: float = 0.25,
    size_px: int = 100,
    proposer: Any = "classical",
    exclusion_um: float = 7.5,
    match_um: float = 4.0,
    disc: np.ndarray | None = None,
    candidate_ok: Any = None,
) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Samples of one exhaustively labelled image (or crop, or window of a slide).

    ``img`` is already at ``mpp`` (the model's pixel size) and ``points`` are in its pixels.
    Every emitted labelled point gives a patch centred on it (its mask: the proposer object
    nearest to it within ``match_um``, else a disc of radius 3 um). Negatives are every
    other proposer object more than ``exclusion_um`` from all labelled mitotic figures and more
    than ``match_um`` from every labelled point (imposters included); ``candidate_ok(x, y)``
    (boolean array) can restrict them further (e.g. to a window's core).

    Returns the columns ``patches, masks, is_mf, atypical, agreement, subtype, kind,
    mf_agreement`` (lists,
    labelled points first) and the counts ``mask_fallbacks``, ``centres_matched_by_proposer``.
    """
    from ..candidates import get_proposer
    from ..classify.patches import disc_mask, extract_patches, paste_mask

    prop = get_proposer(proposer) if isinstance(proposer, str) else proposer
    if disc is None:
        disc = disc_mask(size_px, 3.0 / mpp)
    exclusion_px = exclusion_um / mpp
    match_px = match_um / mpp
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "patches", "masks", "is_mf", "atypical", "agreement", "subtype", "kind", "mf_agreement"
        )
    }  # fmt: skip
    stats = {"mask_fallbacks": 0, "centres_matched_by_proposer": 0}
    cands = prop.propose(img, mpp=mpp)
    emit = [p for p in points if p.emit]
    mf_pts = np.array(
        [(p.x, p.y) for p in points if p.kind != KIND_IMPOSTER], dtype=np.float64
    ).reshape(-1, 2)
    all_pts = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2)
    cxy = np.stack([cands.x_px, cands.y_px], axis=1) if len(cands) else np.zeros((0, 2))
    # labelled points: patch centred on the label, mask from the nearest proposer object
    if emit:
        px_x = np.array([p.x for p in emit])
        px_y = np.array([p.y for p in emit])
        pts_patches, _ = extract_patches(img, px_x, px_y, size_px)
    half = size_px // 2
    for j, pt in enumerate(emit):
        x, y, kind = pt.x, pt.y, pt.kind
        m = np.zeros((size_px, size_px), dtype=bool)
        matched = False
        if len(cands):
            d = np.hypot(cxy[:, 0] - x, cxy[:, 1] - y)
            k = int(np.argmin(d))
            if d[k] <= match_px:
                b = cands.bbox[k]
                paste_mask(
                    m,
                    cands.masks[k],
                    int(b[0]) - (int(round(x)) - half),
                    int(b[1]) - (int(round(y)) - half),
                )
                matched = True
        if not matched:
            m = disc.copy()
            stats["mask_fallbacks"] += 1
        elif kind == KIND_CENTRE:
            stats["centres_matched_by_proposer"] += 1
        cols["patches"].append(pts_patches[j])
        cols["masks"].append(m)
        cols["is_mf"].append(0 if kind == KIND_IMPOSTER else 1)
        cols["atypical"].append(pt.atypical if kind != KIND_IMPOSTER else -1)
        cols["agreement"].append(pt.agreement)
        cols["subtype"].append(pt.subtype)
        cols["kind"].append(kind)
        cols["mf_agreement"].append(pt.mf_agreement)
    # negatives: every other proposer object far from all labelled MFs and imposters
    if len(cands):
        dmf = _nearest_distance(cxy, mf_pts)
        dall = _nearest_distance(cxy, all_pts)
        keep = (dmf > exclusion_px) & (dall > match_px)
        if candidate_ok is not None:
            keep &= np.asarray(candidate_ok(cxy[:, 0], cxy[:, 1]), dtype=bool)
        if keep.any():
            sub = cands.filter(keep)
            p, m = extract_patches(img, sub.x_px, sub.y_px, size_px, candidates=sub)
            for j in range(len(sub)):
                cols["patches"].append(p[j])
                cols["masks"].append(m[j])
                cols["is_mf"].append(0)
                cols["atypical"].append(-1)
                cols["agreement"].append(1.0)
                cols["subtype"].append(-1)
                cols["kind"].append(KIND_CANDIDATE)
                cols["mf_agreement"].append(1.0)
    return cols, stats


def save_samples(samples: SampleSet, path: str | Path) -> Path:
    """Write a :class:`SampleSet` to an ``.npz`` file (atomically)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        meta=np.array(json.dumps(samples.meta)),
        **{k: getattr(samples, k) for k in SAMPLE_ARRAYS},
    )
    os.replace(tmp, path)
    return path


def load_samples(path: str | Path) -> SampleSet:
    """Read a :class:`SampleSet` written by :func:`save_samples`."""
    import json

    with np.load(path, allow_pickle=False) as z:
        # files written before the ``source`` column get the default (one unnamed source)
        return SampleSet(
            **{k: z[k] for k in SAMPLE_ARRAYS if k in z.files}, meta=json.loads(str(z["meta"]))
        )


def _nearest_distance(points: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Distance from each of ``points`` (N, 2) to the nearest of ``to`` (M, 2); inf if M = 0."""
    if not len(to):
        return np.full(len(points), np.inf)
    return np.min(
        np.hypot(points[:, None, 0] - to[None, :, 0], points[:, None, 1] - to[None, :, 1]), axis=1
    )


def resample_rgb(img: np.ndarray, scale: float) -> np.ndarray:
    """Resample an RGB image by ``scale`` (bilinear), as the AMi-Br crops are."""
    from skimage.transform import rescale

    if abs(scale - 1.0) <= 1e-3:
        return img
    out = rescale(img, scale, order=1, channel_axis=-1, preserve_range=True, anti_aliasing=False)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def negative_image_samples(
    images: list[tuple[str | Path, float, str, str]],
    *,
    mpp: float = 0.25,
    size_px: int = 100,
    proposer: str = "classical",
    progress: bool = True,
    source: str = "negative images",
) -> SampleSet:
    """Samples of images in which **every** candidate is a negative (ordinary tissue).

    Parameters
    ----------
    images : list of (path, image_mpp, group, slide)
        Each image with its pixel size (um/px), its domain group (sampling balance) and its
        slide name (slide-grouped splits).
    mpp, size_px, proposer
        As :func:`build_amibr_samples`; images are resampled to ``mpp`` first.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from ..candidates import get_proposer
    from ..classify.patches import extract_patches

    prop = get_proposer(proposer)
    cols: dict[str, list[Any]] = {k: [] for k in SAMPLE_ARRAYS}
    n_px = 0.0
    for ci, (path, img_mpp, group, slide) in enumerate(
        tqdm(images, desc="negative images", disable=not progress)
    ):
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read negative image {path}: {exc}") from None
        if not img_mpp or not 0.05 <= float(img_mpp) <= 10:
            raise InvalidInputError(f"{path}: pixel size {img_mpp!r} um/px is not plausible")
        img = resample_rgb(img, float(img_mpp) / mpp)
        n_px += img.shape[0] * img.shape[1]
        cands = prop.propose(img, mpp=mpp)
        if not len(cands):
            continue
        p, m = extract_patches(img, cands.x_px, cands.y_px, size_px, candidates=cands)
        n = len(cands)
        cols["patches"].extend(p)
        cols["masks"].extend(m)
        cols["is_mf"].extend([0] * n)
        cols["atypical"].extend([-1] * n)
        cols["agreement"].extend([1.0] * n)
        cols["subtype"].extend([-1] * n)
        cols["kind"].extend([KIND_CANDIDATE] * n)
        cols["crop"].extend([ci] * n)
        cols["slide"].extend([slide] * n)
        cols["group"].extend([group] * n)
    if not cols["patches"]:
        raise InvalidInputError(f"the proposer found no candidates in the {source}")
    return samples_from_columns(
        cols,
        meta={
            "source": source,
            "mpp": float(mpp),
            "size_px": int(size_px),
            "proposer": proposer,
            "n_images": len(images),
            "area_mm2": n_px * (mpp / 1000.0) ** 2,
        },
    )


def read_tissue_index(root: str | Path) -> list[dict[str, str]]:
    """Rows of a tissue folder's ``images.csv`` (file, organ, section, mpp, ...)."""
    import csv

    root = Path(root)
    path = root / "images.csv"
    if not path.is_file():
        raise InvalidInputError(f"{root} has no images.csv (columns file, organ, mpp)")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for col in ("file", "organ", "mpp"):
            if not r.get(col):
                raise InvalidInputError(f"{path}: a row lacks {col!r}")
    return rows


def tissue_slide_name(organ: str, file: str) -> str:
    """Slide name of a tissue image: ``tissue/<organ>/<file stem>`` (organ recoverable)."""
    return f"tissue/{organ}/{Path(file).stem}"


def build_tissue_samples(
    root: str | Path,
    *,
    organs: list[str] | None = None,
    mpp: float = 0.25,
    size_px: int = 100,
    proposer: str = "classical",
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> SampleSet:
    """Ordinary-tissue negatives from a folder with ``images.csv`` (e.g. ``../shared/data/tissue``).

    Every candidate the proposer finds is a negative (mitoses are rare in such tissue; see the
    data's README). Groups are ``tissue_<organ>``, slides ``tissue/<organ>/<stem>``.
    """
    root = Path(root)
    rows = read_tissue_index(root)
    if organs is not None:
        rows = [r for r in rows if r["organ"] in set(organs)]
    use_cache = str(cache_dir).lower() != "none"
    cache_path = None
    if use_cache:
        cdir = Path(cache_dir) if cache_dir else default_cache_dir()
        names = ",".join(r["file"] for r in rows)
        h = hashlib.sha1(
            f"{names}:{mpp}:{size_px}:{proposer}:{CACHE_VERSION}".encode()
        ).hexdigest()[:12]
        cache_path = cdir / f"tissue_samples_{h}.npz"
        if cache_path.is_file():
            return load_samples(cache_path)
    images = [
        (
            root / r["file"],
            float(r["mpp"]),
            f"tissue_{r['organ']}",
            tissue_slide_name(r["organ"], r["file"]),
        )
        for r in rows
    ]
    samples = negative_image_samples(
        images,
        mpp=mpp,
        size_px=size_px,
        proposer=proposer,
        progress=progress,
        source=str(root),
    )
    if cache_path is not None:
        save_samples(samples, cache_path)
    return samples


def concat_samples(*sets: SampleSet) -> SampleSet:
    """One :class:`SampleSet` of several (same patch size); ``crop`` indices stay unique."""
    sets = tuple(s for s in sets if len(s))
    if not sets:
        raise InvalidInputError("no training samples")
    sizes = {s.patches.shape[1] for s in sets}
    if len(sizes) != 1:
        raise InvalidInputError(f"sample sets have different patch sizes: {sorted(sizes)}")
    cols: dict[str, Any] = {}
    offset = 0
    crops = []
    for s in sets:
        crops.append(s.crop + offset)
        offset += int(s.crop.max()) + 1 if len(s.crop) else 0
    for k in SAMPLE_ARRAYS:
        cols[k] = (
            np.concatenate([getattr(s, k) for s in sets]) if k != "crop" else np.concatenate(crops)
        )
    meta = dict(sets[0].meta)
    meta["parts"] = [{k: v for k, v in s.meta.items() if k != "subtypes"} for s in sets]
    return SampleSet(**cols, meta=meta)
