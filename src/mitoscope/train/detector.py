"""``train_detector(cfg)``: label sources -> scenes -> slide-grouped split -> FCOS -> thresholds.

The detector learns from the same label sources as the classifier (:mod:`.sources`:
``amibr``, ``midogpp``, ``sliderunner``, ``geojson``, ``csv``, ``tissue``), read as *scenes*:
images at the detector's pixel size with the mitotic figures they contain.

- ``amibr``: each crop is a scene; its figures are the centre and the mitotic neighbours of
  ``amibr_train_crop_neighbours.csv`` (the sources label every figure, so all else is
  background). Crops smaller than a training tile sit at a random place on a white canvas.
- labelled images (``midogpp``, ``sliderunner``, ``geojson``, ``csv``): the whole image, or on
  large images / whole slides the ``window_um`` squares around the labels (with context), as
  the classifier's builder reads them; every labelled mitotic figure inside is a box, labelled
  imposters are background like everything else.
- ``tissue``: images without figures (every box is a false positive).

Boxes are MIDOG's: a square of ``box_um`` (12.5 um = 50 px at 0.25 um/px) around each point.
Training tiles are drawn at random (``positive_fraction`` of them around a random figure), or with
``sampling = "event_tile"`` by Ji et al.'s sampling (:class:`~mitoscope.train.event_tiles.
EventTileSampler`: a labelled figure, then one of the ``event_tile_um`` / ``event_stride_um`` grid
tiles that contain its box), then flipped / rotated and stain-jittered. The split is by slide, exactly as the classifier's
(:func:`~mitoscope.train.train.source_split`); the score thresholds are chosen on the
validation scenes only: ``threshold`` maximises F1 (MIDOG matching within 7.5 um) and
``proposer_threshold`` is the highest score that keeps ``proposer_recall`` of the validation
figures (recall first, for candidates handed to a classifier).

Over 400 lines: the detector's training (config, scenes from the label sources, the tile dataset,
the Lightning module, the threshold sweep on validation slides, licences and checkpoint) is one
recipe around :class:`DetectorTrainConfig` and :class:`SceneSet`. A future split would move the
scene builders (``_amibr_scenes`` .. ``build_scenes``, about 160 lines) into their own module.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError


def _default_amibr() -> tuple[dict[str, Any], ...]:
    from .train import default_data_dir

    return ({"type": "amibr", "path": default_data_dir()},)


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything that defines a detector training run (``[detector]`` table of a config)."""

    sources: tuple[dict[str, Any], ...] = ()  # default: the AMi-Br crops of ../shared/data
    backbone: str = "effnet_lite0"
    pretrained: bool = True
    weights_path: str | None = None
    input_mpp: float = 0.25
    box_um: float = 12.5
    tile_px: int = 320
    infer_tile_px: int = 1024
    overlap_um: float = 16.0
    epochs: int = 8
    samples_per_epoch: int = 2048
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    positive_fraction: float = 0.6
    #: "random" (tiles at random, positive_fraction around a figure) | "event_tile" (Ji et al.)
    sampling: str = "random"
    event_tile_um: float = 62.5  # Ji's 250 px tiles at 40x (0.25 um/px)
    event_stride_um: float = 31.25  # and their 125 px stride
    event_weights: str = "uniform"  # "uniform" | "agreement": how events are drawn in a source
    stain_sigma: float = 0.1
    freeze_bn: bool = True
    val_fraction: float = 0.15
    split_seed: int = 0
    tissue_val_per_organ: int = 1
    seed: int = 0
    proposer_recall: float = 0.95
    match_um: float = 7.5
    score_floor: float = 0.05
    out: str = "mitoscope-detector.pt"
    fast_dev_run: bool = False
    threads: int | None = None
    progress: bool = True

    def validate(self) -> DetectorTrainConfig:
        """Check every field (one-line :class:`~mitoscope.errors.InvalidInputError`); imports no
        torch. The labels and images are checked by :func:`build_scenes` (:func:`scenes_for`)."""
        from ..detector import BACKBONES
        from ..units import validate_mpp
        from .sources import check_config_types, validate_sources

        check_config_types(self)
        if self.backbone not in BACKBONES:
            raise InvalidInputError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        validate_sources(self.sources or _default_amibr())
        validate_mpp(float(self.input_mpp), name="input_mpp")
        for name in ("epochs", "samples_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be at least 1")
        if not 32 <= int(self.tile_px) <= 4096 or not 64 <= int(self.infer_tile_px) <= 8192:
            raise InvalidInputError("tile_px must be in [32, 4096] and infer_tile_px in [64, 8192]")
        if not 0 < float(self.box_um) <= 200:
            raise InvalidInputError(f"box_um must be in (0, 200] um, got {self.box_um}")
        if not 0 <= float(self.overlap_um) < self.infer_tile_px * self.input_mpp:
            raise InvalidInputError("overlap_um must be at least 0 and smaller than a tile")
        for name in ("positive_fraction", "proposer_recall", "score_floor"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise InvalidInputError(f"{name} must be in [0, 1]")
        self._validate_sampling()
        if not 0 < self.val_fraction < 1:
            raise InvalidInputError("val_fraction must be between 0 and 1")
        if self.weights_path is not None and not Path(self.weights_path).is_file():
            raise InvalidInputError(f"weights_path not found: {self.weights_path}")
        if self.threads is not None and int(self.threads) < 1:
            raise InvalidInputError(f"threads must be at least 1, got {self.threads}")
        return self

    def _validate_sampling(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise InvalidInputError(
                f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLINGS)}"
            )
        if self.event_weights not in EVENT_WEIGHTS:
            raise InvalidInputError(
                f"unknown event_weights {self.event_weights!r}; choose one of "
                f"{', '.join(EVENT_WEIGHTS)}"
            )
        if self.sampling != "event_tile":
            if self.event_weights != "uniform":
                raise InvalidInputError(
                    f'event_weights = "{self.event_weights}" needs sampling = "event_tile"'
                )
            return
        tile_um, stride_um = float(self.event_tile_um), float(self.event_stride_um)
        if not (math.isfinite(tile_um) and tile_um > float(self.box_um)):
            raise InvalidInputError(
                f"event_tile_um must be larger than a figure's box (box_um = {self.box_um} um), "
                f"got {self.event_tile_um}"
            )
        if not (math.isfinite(stride_um) and 0 < stride_um <= tile_um):
            raise InvalidInputError(
                f"event_stride_um must be in (0, event_tile_um = {tile_um}] um, got "
                f"{self.event_stride_um}"
            )
        tile_px, _ = self.event_grid_px()
        if not 32 <= tile_px <= 4096:
            raise InvalidInputError(
                f"event_tile_um = {tile_um} um is {tile_px} px at input_mpp = {self.input_mpp} "
                "um/px; it must be 32 to 4096 px"
            )

    def event_grid_px(self) -> tuple[int, int]:
        """Ji's grid ``(tile, stride)`` in px: ``event_tile_um`` and ``event_stride_um`` at
        ``input_mpp``, the pixel size every scene is resampled to (62.5 / 31.25 um are 250 /
        125 px at 0.25 um/px, 125 / 62 px at 0.5 um/px)."""
        mpp = float(self.input_mpp)
        tile = max(1, int(round(float(self.event_tile_um) / mpp)))
        return tile, max(1, int(round(float(self.event_stride_um) / mpp)))


SAMPLINGS = ("random", "event_tile")
EVENT_WEIGHTS = ("uniform", "agreement")


@dataclass
class Scene:
    """An image at the detector's pixel size and the mitotic figures in it (image px)."""

    image: np.ndarray
    points: np.ndarray  # (K, 2) x, y
    slide: str
    group: str
    source: str
    #: (K,) the raters' agreement with each figure's label (labelled sources with votes: MIDOG++
    #: ``labels``, SlideRunner persons, a crowd table's ``agreement``); None: 1 for every figure
    agreement: np.ndarray | None = None


@dataclass
class SceneSet:
    scenes: list[Scene]
    mpp: float
    weights: dict[str, float] = field(default_factory=dict)  # source name -> sampling weight
    summary: list[dict[str, Any]] = field(default_factory=list)

    def area_mm2(self, idx: Any = None) -> float:
        sel = self.scenes if idx is None else [self.scenes[i] for i in idx]
        return float(sum(s.image.shape[0] * s.image.shape[1] for s in sel)) * (self.mpp / 1e3) ** 2


# -- scenes per source type --------------------------------------------------------------------
def _amibr_scenes(spec: dict[str, Any], mpp: float, progress: bool) -> list[Scene]:
    from PIL import Image
    from tqdm.auto import tqdm

    from .samples import amibr_crop_neighbours, amibr_label_table, amibr_scanner, resample_rgb

    root = Path(spec["path"])  # checked by build_scenes
    guess = root.parent / "annotations" / "amibr_train_crop_neighbours.csv"
    neigh_path = spec.get("neighbours") or (guess if guess.is_file() else None)
    neigh = amibr_crop_neighbours(Path(neigh_path) if neigh_path else None)
    df = amibr_label_table(root)
    if spec.get("limit"):
        df = df.iloc[: int(spec["limit"])]
    out = []
    for row in tqdm(list(df.itertuples(index=False)), desc=spec["name"], disable=not progress):
        group, crop_mpp = amibr_scanner(str(row.dataset), str(row.slide))
        path = root / str(row.file)
        try:
            img = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read training crop {path}: {exc}") from None
        h0, w0 = img.shape[:2]
        scale = crop_mpp / mpp
        img = resample_rgb(img, scale)
        c = 64.0 * scale  # the crop centre, as the classifier's samples place it
        pts = [(c, c)]
        for cls, dx, dy, _ in neigh.get(Path(str(row.file)).name, []):
            if cls == "MF" and abs(dx) < w0 / 2 and abs(dy) < h0 / 2:
                pts.append((c + dx * scale, c + dy * scale))
        out.append(
            Scene(img, np.asarray(pts, dtype=np.float64).reshape(-1, 2),
                  f"{spec['name']}/{row.dataset}/{row.slide}", group, spec["name"])
        )  # fmt: skip
    return out


def _tissue_scenes(
    spec: dict[str, Any], mpp: float, progress: bool, images: list[tuple] | None = None
) -> list[Scene]:
    from PIL import Image
    from tqdm.auto import tqdm

    from .samples import resample_rgb
    from .sources import tissue_images

    out = []
    for path, img_mpp, group, slide in tqdm(
        tissue_images(spec) if images is None else images, desc=spec["name"], disable=not progress
    ):
        try:
            img = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{spec['name']}: cannot read {path.name}: {exc}") from None
        img = resample_rgb(img, img_mpp / mpp)
        out.append(Scene(img, np.zeros((0, 2)), slide, group, spec["name"]))
    return out


def _labelled_scenes(spec: dict[str, Any], mpp: float, progress: bool) -> list[Scene]:
    from tqdm.auto import tqdm

    from ..types import Region
    from .sources import (
        CONTEXT_UM,
        MAX_OBJECT_UM,
        MAX_WHOLE_PX,
        WINDOW_UM,
        check_label_positions,
        check_source_images,
        image_stem,
        open_source_image,
        plan_windows,
        source_labels,
    )

    lab = source_labels(spec)
    check_source_images(lab)
    window_um = float(spec.get("window_um", WINDOW_UM))
    out = []
    for name in tqdm(sorted(lab.files), desc=lab.name, disable=not progress):
        ann = lab.ann.for_image(name)
        with open_source_image(lab.files[name], lab.mpp, lab.name) as reader:
            info = reader.info
            img_mpp = float(info.mpp)
            check_label_positions(
                ann.x_px, ann.y_px, info.width, info.height, image=name, source=lab.name
            )
            if ann.bbox is not None:
                side = np.fmax(ann.bbox[:, 2] - ann.bbox[:, 0], ann.bbox[:, 3] - ann.bbox[:, 1])
                ann = ann.filter(~(np.isfinite(side) & (side * img_mpp > MAX_OBJECT_UM)))
            if not len(ann):
                continue
            x, y, is_mf = ann.x_px, ann.y_px, ann.is_mitosis.astype(bool)
            agree = np.where(np.isfinite(ann.agreement), ann.agreement, 1.0)  # as the classifier
            if max(info.width, info.height) <= MAX_WHOLE_PX:
                regions = [Region(0, 0, info.width, info.height)]
            else:
                ctx = CONTEXT_UM / img_mpp
                regions = []
                for (x0, y0, x1, y1), _ in plan_windows(
                    x, y, info.width, info.height, window_um / img_mpp
                ):
                    rx0, ry0 = int(math.floor(x0 - ctx)), int(math.floor(y0 - ctx))
                    rx1, ry1 = int(math.ceil(x1 + ctx)), int(math.ceil(y1 + ctx))
                    regions.append(Region(rx0, ry0, rx1 - rx0, ry1 - ry0))
            for r in regions:
                img = reader.read_region_mpp(r, mpp, clip=True)
                sx, sy = r.width / img.shape[1], r.height / img.shape[0]
                inside = is_mf & (x >= r.x) & (x < r.x1) & (y >= r.y) & (y < r.y1)
                u = (x[inside] - r.x + 0.5) / sx - 0.5
                v = (y[inside] - r.y + 0.5) / sy - 0.5
                out.append(
                    Scene(img, np.stack([u, v], axis=1).reshape(-1, 2),
                          f"{lab.name}/{image_stem(name)}", lab.groups[name], lab.name,
                          agreement=np.asarray(agree[inside], dtype=np.float64))
                )  # fmt: skip
    return out


def build_scenes(sources: Any, *, mpp: float = 0.25, progress: bool = True) -> SceneSet:
    """The scenes of every source; every source is checked before any image is read (labelled
    sources' labels, images, pixel sizes and positions; AMi-Br folders; tissue image lists)."""
    from .sources import check_amibr_folder, check_source_labels, tissue_images, validate_sources

    specs = validate_sources(sources)
    check_source_labels(specs)  # fail before any work: labels, images, pixel sizes, positions
    tissue = {}
    for spec in specs:
        if spec["type"] == "amibr":
            if not Path(spec["path"]).is_dir():
                raise InvalidInputError(
                    f"{spec['name']}: {spec['path']} is not a folder; give the amibr-train folder"
                )
            check_amibr_folder(spec["path"])
        elif spec["type"] == "tissue":
            tissue[spec["name"]] = tissue_images(spec)
    scenes: list[Scene] = []
    summary = []
    for spec in specs:
        if spec["type"] == "amibr":
            part = _amibr_scenes(spec, mpp, progress)
        elif spec["type"] == "tissue":
            part = _tissue_scenes(spec, mpp, progress, tissue[spec["name"]])
        else:
            part = _labelled_scenes(spec, mpp, progress)
        if spec.get("group"):
            for s in part:
                s.group = str(spec["group"])
        scenes += part
        summary.append({"name": spec["name"], "type": spec["type"], "path": spec["path"],
                        "weight": spec["weight"], "n_scenes": len(part),
                        "n_mf": int(sum(len(s.points) for s in part))})  # fmt: skip
    if not any(len(s.points) for s in scenes):
        raise InvalidInputError(
            "the training sources have no labelled mitotic figures; add a labelled source "
            "(amibr, midogpp, sliderunner, geojson or csv)"
        )
    return SceneSet(scenes, float(mpp), {s["name"]: float(s["weight"]) for s in specs}, summary)


def scenes_for(cfg: DetectorTrainConfig) -> SceneSet:
    """The scenes of ``cfg``'s sources (default: the AMi-Br crops) at its pixel size; every
    label, image, pixel size and position is checked first. Imports no torch: the CLI runs it
    before training, so a mistake in the data is found before any network is built."""
    return build_scenes(cfg.sources or _default_amibr(), mpp=cfg.input_mpp,
                        progress=cfg.progress)  # fmt: skip


# -- training tiles ----------------------------------------------------------------------------
def _flip_rotate_points(
    img: np.ndarray, pts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random horizontal flip and 90-degree rotation of a square tile and its points."""
    n = img.shape[1]
    pts = pts.copy()
    if rng.random() < 0.5:
        img = img[:, ::-1]
        pts[:, 0] = n - 1 - pts[:, 0]
    for _ in range(int(rng.integers(0, 4))):  # np.rot90: (x, y) -> (y, n - 1 - x)
        img = np.rot90(img, 1, axes=(0, 1))
        pts = np.stack([pts[:, 1], n - 1 - pts[:, 0]], axis=1)
    return np.ascontiguousarray(img), pts


def event_sampler(
    scenes: list[Scene],
    source_weights: dict[str, float],
    *,
    tile_px: int,
    stride_px: int,
    box_px: float,
    weights: str = "uniform",
) -> Any:
    """Ji et al.'s :class:`~mitoscope.train.event_tiles.EventTileSampler` over the figures of
    ``scenes`` (its image keys are the scenes' indices, as strings). Each source keeps its
    sampling weight, shared by its figures equally (``weights="uniform"``) or in proportion to
    their agreement (``"agreement"``); scenes without figures (tissue) are not drawn."""
    from .event_tiles import EventTileSampler

    if weights not in EVENT_WEIGHTS:
        raise InvalidInputError(f"unknown event weights {weights!r}")
    keys: list[str] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    agree: list[np.ndarray] = []
    srcs: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}
    for j, s in enumerate(scenes):
        k = len(s.points)
        if not k:
            continue
        a = np.ones(k) if s.agreement is None else np.asarray(s.agreement, dtype=np.float64)
        keys += [str(j)] * k
        xs.append(s.points[:, 0])
        ys.append(s.points[:, 1])
        agree.append(a)
        srcs += [s.source] * k
        sizes[str(j)] = (int(s.image.shape[1]), int(s.image.shape[0]))
    if not keys:
        raise InvalidInputError(
            'sampling = "event_tile": the training slides have no mitotic figures to draw'
        )
    a = np.concatenate(agree)
    share = a if weights == "agreement" else np.ones(len(a))
    src = np.array(srcs)
    w = np.zeros(len(a))
    for name in np.unique(src).tolist():
        sel = src == name
        if share[sel].sum() > 0:
            w[sel] = float(source_weights.get(name, 1.0)) * share[sel] / share[sel].sum()
    if not w.sum() > 0:
        raise InvalidInputError(
            'event_weights = "agreement": every training figure has agreement 0'
        )
    return EventTileSampler(keys, np.concatenate(xs), np.concatenate(ys), sizes,
                            tile_px=tile_px, stride_px=stride_px, box_px=box_px,
                            agreement=a, weights=w)  # fmt: skip


class TileDataset:
    """Random training tiles of the scenes (a map-style dataset; a new draw every epoch).

    With ``events`` (:func:`event_sampler`, Ji et al.) each tile is a grid tile around a
    figure drawn by the sampler instead (``tile_px`` must be the sampler's tile);
    ``positive_fraction`` and ``weights`` then do not apply."""

    def __init__(
        self,
        scenes: list[Scene],
        weights: np.ndarray,
        *,
        tile_px: int,
        box_px: float,
        n: int,
        positive_fraction: float,
        stain_sigma: float,
        seed: int,
        events: Any = None,
    ) -> None:
        self.scenes, self.p = scenes, np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.tile, self.box, self.n = int(tile_px), float(box_px), int(n)
        self.pf, self.sigma, self.seed = float(positive_fraction), float(stain_sigma), int(seed)
        self.events = events
        if events is not None and int(events.tile) != self.tile:
            raise InvalidInputError(
                f"tile_px {self.tile} differs from the event sampler's tile {events.tile} px"
            )
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def tile_at(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile ``i`` of the current epoch: ``(image (T, T, 3) uint8, points (K, 2))``."""
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self.events is not None:  # Ji et al.: a figure, then a grid tile containing it
            _, key, x0, y0 = self.events.draw(rng)
            s = self.scenes[int(key)]
            return self._finish(s, x0, y0, rng)
        s = self.scenes[int(rng.choice(len(self.scenes), p=self.p))]
        h, w = s.image.shape[:2]
        t, half = self.tile, self.box / 2.0
        if len(s.points) and rng.random() < self.pf:
            px, py = s.points[int(rng.integers(len(s.points)))]
            lo_x, hi_x = max(0, int(px + half) - t + 1), min(max(w - t, 0), int(px - half))
            lo_y, hi_y = max(0, int(py + half) - t + 1), min(max(h - t, 0), int(py - half))
            x0 = (
                int(rng.integers(lo_x, hi_x + 1))
                if hi_x >= lo_x
                else int(np.clip(px - t / 2, 0, max(w - t, 0)))
            )
            y0 = (
                int(rng.integers(lo_y, hi_y + 1))
                if hi_y >= lo_y
                else int(np.clip(py - t / 2, 0, max(h - t, 0)))
            )
        else:
            x0, y0 = (
                int(rng.integers(0, max(w - t, 0) + 1)),
                int(rng.integers(0, max(h - t, 0) + 1)),
            )
        return self._finish(s, x0, y0, rng)

    def _finish(
        self, s: Scene, x0: int, y0: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The tile of ``s`` at ``(x0, y0)`` (a small scene on a white canvas), its points,
        flipped / rotated and stain-jittered."""
        t = self.tile
        crop = s.image[y0 : y0 + t, x0 : x0 + t]
        pts = s.points - [x0, y0]
        if crop.shape[:2] != (t, t):  # a small scene: on a white canvas at a random place
            canvas = np.full((t, t, 3), 255, dtype=np.uint8)
            ox = int(rng.integers(0, t - crop.shape[1] + 1))
            oy = int(rng.integers(0, t - crop.shape[0] + 1))
            canvas[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
            crop, pts = canvas, pts + [ox, oy]
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < t) & (pts[:, 1] >= 0) & (pts[:, 1] < t)]
        img, pts = _flip_rotate_points(crop, pts.reshape(-1, 2), rng)
        if self.sigma > 0:
            from ..stain.augment import hed_jitter

            img = hed_jitter(img, sigma=self.sigma, rng=rng)
        return img, pts

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        import torch

        img, pts = self.tile_at(i)
        return torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0), point_targets(
            pts, box_px=self.box, size=self.tile
        )


def point_targets(pts: np.ndarray, *, box_px: float, size: int) -> dict[str, Any]:
    """FCOS targets of points: ``box_px`` squares (clipped to the tile), class 0."""
    import torch

    half = box_px / 2.0
    b = np.stack(
        [pts[:, 0] - half, pts[:, 1] - half, pts[:, 0] + half + 1, pts[:, 1] + half + 1], 1
    )
    b = np.clip(b.reshape(-1, 4), 0, size)
    return {
        "boxes": torch.as_tensor(b, dtype=torch.float32),
        "labels": torch.zeros(len(b), dtype=torch.int64),
    }


def collate(batch: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def _module(model: Any, *, lr: float, weight_decay: float, epochs: int, freeze_bn: bool,
            dataset: TileDataset | None = None) -> Any:  # fmt: skip
    import lightning as L
    import torch

    class DetectorModule(L.LightningModule):
        """FCOS losses (focal classification, GIoU boxes, centre-ness) with AdamW + cosine."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def on_train_epoch_start(self) -> None:
            if dataset is not None:
                dataset.epoch = int(self.current_epoch)
            if freeze_bn:  # small batches: keep the backbone's (ImageNet) batch statistics
                for m in self.model.backbone.body.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            images, targets = batch
            losses = self.model(images, targets)
            for k, v in losses.items():
                self.log(f"loss_{k}", v, prog_bar=True, batch_size=len(images))
            return sum(losses.values())

        def configure_optimizers(self) -> Any:
            params = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return DetectorModule()


# -- thresholds on validation ------------------------------------------------------------------
def score_scenes(detector: Any, scenes: list[Scene], mpp: float, floor: float) -> list[tuple]:
    """Detections ``(xy, scores)`` of ``detector`` on each scene (scores >= ``floor``)."""
    out = []
    for s in scenes:
        xy, _, sc = detector.detect(s.image, mpp=mpp, score_threshold=floor)
        out.append((xy, sc))
    return out


def sweep_thresholds(
    scenes: list[Scene], dets: list[tuple], *, mpp: float, match_um: float, floor: float
) -> dict[str, np.ndarray]:
    """TP / FP / FN summed over scenes at each threshold of a grid (MIDOG matching)."""
    from ..evaluate.matching import match_points

    allsc = np.concatenate([d[1] for d in dets]) if dets else np.zeros(0)
    grid = np.unique(np.round(np.concatenate([[floor], np.quantile(allsc, np.linspace(0, 1, 201))
                                              if len(allsc) else []]), 4))  # fmt: skip
    grid = grid[grid >= floor]
    tp = np.zeros(len(grid), np.int64)
    fp = np.zeros(len(grid), np.int64)
    fn = np.zeros(len(grid), np.int64)
    r = match_um / mpp
    for s, (xy, sc) in zip(scenes, dets, strict=True):
        for k, t in enumerate(grid):
            keep = sc >= t
            m = match_points(s.points, xy[keep], radius=r)
            tp[k] += m.tp
            fp[k] += m.fp
            fn[k] += m.fn
    return {"threshold": grid, "tp": tp, "fp": fp, "fn": fn}


def choose_thresholds(sweep: dict[str, np.ndarray], *, proposer_recall: float) -> dict[str, Any]:
    """``threshold`` = max F1 (ties: the higher), ``proposer_threshold`` = the highest with
    recall >= ``proposer_recall`` (else the lowest of the grid)."""
    t, tp, fp, fn = (sweep[k] for k in ("threshold", "tp", "fp", "fn"))
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    recall = tp / np.maximum(tp + fn, 1)
    k = int(np.flatnonzero(f1 == f1.max())[-1])
    ok = np.flatnonzero(recall >= proposer_recall)
    kp = int(ok[-1]) if len(ok) else 0
    return {"k": k, "kp": min(kp, k), "f1": f1, "recall": recall}


# -- train --------------------------------------------------------------------------------------
def _licences(slides: np.ndarray, summary: list[dict[str, Any]]) -> tuple[str, bool]:
    """The licence line of the training data (as the classifier's card states it) and whether
    it restricts the weights to non-commercial use (ordinary-tissue images)."""
    from .train import DATA_LICENCE, TISSUE_LICENCE, is_tissue_slide

    parts = []
    labelled = [s for s in summary if s["type"] != "tissue"]
    if all(s["type"] == "amibr" for s in labelled) and labelled:
        parts.append(DATA_LICENCE)
    elif labelled:
        parts.append("labelled sources: " + json.dumps(labelled, default=str)[:400])
    tis = bool(is_tissue_slide(slides).any())
    if tis:
        parts.append(TISSUE_LICENCE)
    return "; ".join(parts), tis


@dataclass
class DetectorTrainResult:
    path: Path | None
    metrics: dict[str, Any]
    detector: Any
    config: DetectorTrainConfig


def train_detector(
    cfg: DetectorTrainConfig, *, scenes: SceneSet | None = None, save: bool = True
) -> DetectorTrainResult:
    """Train a detector and (optionally) write its checkpoint with its model card to ``cfg.out``."""
    import lightning as L
    import torch

    from ..detector.detector import Detector, resolve_device, save_detector
    from ..detector.model import BACKBONES, build_detector
    from .module import make_trainer
    from .train import source_split

    cfg = cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t_start = time.time()
    if scenes is None:
        scenes = scenes_for(cfg)
    slides = np.array([s.slide for s in scenes.scenes], dtype=str)
    tr_mask, va_mask = source_split(slides, val_fraction=cfg.val_fraction, seed=cfg.split_seed,
                                    tissue_val_per_organ=cfg.tissue_val_per_organ)  # fmt: skip
    tr_idx, va_idx = np.flatnonzero(tr_mask), np.flatnonzero(va_mask)
    train_scenes = [scenes.scenes[i] for i in tr_idx]
    val_scenes = [scenes.scenes[i] for i in va_idx]
    if not any(len(s.points) for s in val_scenes):
        raise InvalidInputError(
            "the validation slides have no mitotic figures; add labelled slides"
        )
    # sampling: each source gets its weight, shared by its scenes in proportion to their area
    src = np.array([s.source for s in train_scenes])
    area = np.array([s.image.shape[0] * s.image.shape[1] for s in train_scenes], dtype=np.float64)
    w = np.zeros(len(train_scenes))
    for name, wt in scenes.weights.items():
        sel = src == name
        if sel.any():
            w[sel] = wt * area[sel] / area[sel].sum()
    box_px = cfg.box_um / cfg.input_mpp
    tile_px, events = cfg.tile_px, None
    if cfg.sampling == "event_tile":  # Ji et al.: a figure, then a grid tile containing it
        tile_px, stride_px = cfg.event_grid_px()
        events = event_sampler(train_scenes, scenes.weights, tile_px=tile_px, stride_px=stride_px,
                               box_px=box_px, weights=cfg.event_weights)  # fmt: skip
    ds = TileDataset(train_scenes, w, tile_px=tile_px, box_px=box_px, n=cfg.samples_per_epoch,
                     positive_fraction=cfg.positive_fraction, stain_sigma=cfg.stain_sigma,
                     seed=cfg.seed, events=events)  # fmt: skip
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_detector(cfg.backbone, pretrained=cfg.pretrained, weights_path=cfg.weights_path,
                           score_thresh=cfg.score_floor)  # fmt: skip
    dev = resolve_device("auto")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate, num_workers=0
    )
    module = _module(model, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                     freeze_bn=cfg.freeze_bn, dataset=ds)  # fmt: skip
    trainer = make_trainer(
        dev, epochs=cfg.epochs, progress=cfg.progress, fast_dev_run=cfg.fast_dev_run
    )
    model.train()
    trainer.fit(module, train_dataloaders=loader)
    train_s = time.time() - t_start
    overlap_px = int(round(cfg.overlap_um / cfg.input_mpp))
    det = Detector(model=module.model.cpu(), input_mpp=cfg.input_mpp, box_um=cfg.box_um,
                   tile_px=cfg.infer_tile_px, overlap_px=overlap_px, device=dev)  # fmt: skip
    # thresholds: validation scenes only
    dets = score_scenes(det, val_scenes, cfg.input_mpp, cfg.score_floor)
    sweep = sweep_thresholds(val_scenes, dets, mpp=cfg.input_mpp, match_um=cfg.match_um,
                             floor=cfg.score_floor)  # fmt: skip
    ch = choose_thresholds(sweep, proposer_recall=cfg.proposer_recall)
    k, kp = ch["k"], ch["kp"]
    thr, pthr = float(sweep["threshold"][k]), float(sweep["threshold"][kp])
    det.threshold, det.proposer_threshold = thr, pthr
    is_tis = np.char.startswith(np.array([s.slide for s in val_scenes], dtype=str), "tissue/")
    lab_area = scenes.area_mm2(va_idx[~is_tis])
    tis_area = scenes.area_mm2(va_idx[is_tis]) if is_tis.any() else 0.0

    def per_mm2(t: float, sel: np.ndarray, area: float) -> float | None:
        if area <= 0:
            return None
        return (
            float(sum(int((d[1] >= t).sum()) for d, s in zip(dets, sel, strict=True) if s)) / area
        )

    tp, fp, fn = (int(sweep[x][k]) for x in ("tp", "fp", "fn"))
    metrics: dict[str, Any] = {
        "threshold": thr,
        "proposer_threshold": pthr,
        "f1": float(ch["f1"][k]),
        "precision": tp / max(tp + fp, 1),
        "recall": float(ch["recall"][k]),
        "recall_at_proposer_threshold": float(ch["recall"][kp]),
        "n_val_mf": int(tp + fn),
        "detections_per_mm2_labelled_val": per_mm2(thr, ~is_tis, lab_area),
        "candidates_per_mm2_labelled_val": per_mm2(pthr, ~is_tis, lab_area),
        "detections_per_mm2_tissue_val": per_mm2(thr, is_tis, tis_area),
        "candidates_per_mm2_tissue_val": per_mm2(pthr, is_tis, tis_area),
        "val_area_mm2": {"labelled": lab_area, "tissue": tis_area},
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
    }
    licence, non_commercial = _licences(slides, scenes.summary)
    card = {
        "backbone": cfg.backbone,
        "description": f"torchvision FCOS, one class (mitotic figure), {BACKBONES[cfg.backbone]}",
        "input_mpp": cfg.input_mpp,
        "box_um": cfg.box_um,
        "tile_px": cfg.infer_tile_px,
        "overlap_px": overlap_px,
        "data": {
            "licence": licence,
            "non_commercial": non_commercial,
            "sources": scenes.summary,
            "n_train_scenes": len(train_scenes),
            "n_val_scenes": len(val_scenes),
            "n_train_mf": int(sum(len(s.points) for s in train_scenes)),
            "n_train_slides": len(set(slides[tr_mask].tolist())),
            "n_val_slides": len(set(slides[va_mask].tolist())),
        },
        "split": {
            "by": "slide",
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
            "val_slides": sorted(set(slides[va_mask].tolist())),
        },  # fmt: skip
        "validation_metrics": metrics,
        "threshold_choice": f"maximum F1 on the validation slides (MIDOG matching within "
        f"{cfg.match_um} um); proposer: the highest score keeping recall >= "
        f"{cfg.proposer_recall} of the validation figures",
        "config": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in asdict(cfg).items()},
    }
    det.card, det.name = card, Path(cfg.out).stem
    path = None
    if save:
        path = save_detector(
            cfg.out, det.model, input_mpp=cfg.input_mpp, box_um=cfg.box_um,
            tile_px=cfg.infer_tile_px, overlap_px=overlap_px, threshold=thr,
            proposer_threshold=pthr, card=json.loads(json.dumps(card, default=str)),
        )  # fmt: skip
    return DetectorTrainResult(path=path, metrics=metrics, detector=det, config=replace(cfg))


__all__ = [
    "DetectorTrainConfig",
    "DetectorTrainResult",
    "Scene",
    "SceneSet",
    "TileDataset",
    "EVENT_WEIGHTS",
    "SAMPLINGS",
    "build_scenes",
    "choose_thresholds",
    "event_sampler",
    "point_targets",
    "sweep_thresholds",
    "train_detector",
]
