"""Segment Anything proposer, configured as OMG-Net (``papers/001_*``).

OMG-Net runs SAM's automatic mask generation on 1024 x 1024 px tiles at about 0.25 um/px with a
64 x 64 grid of point prompts (4,096 per tile), keeps masks with predicted IoU > 0.8, stability
score > 0.8 and area 2.25-225 um², ranks them by predicted IoU and removes duplicates with
non-maximum suppression. The paper does not state the NMS threshold; SAM's default box-IoU 0.7 is
used. Here the area filter runs inside SAM's per-batch filtering (before the NMS), exactly in the
paper's order: filter -> rank by predicted IoU -> NMS.

Weights are user-supplied (``checkpoint=``, the official ``sam_vit_h_4b8939.pth``,
``sam_vit_l_0b3195.pth`` or ``sam_vit_b_01ec64.pth``); ``segment-anything`` is the optional extra
``sam``. The model runs on CUDA when present, otherwise on CPU under bfloat16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, ModelLoadError
from ..types import Candidates
from ..units import validate_mpp
from .base import MAX_AREA_UM2, MIN_AREA_UM2, check_image

#: encoder (embed_dim, depth, num_heads, global_attn_indexes) of the official variants
SAM_VARIANTS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
}
#: a randomly initialised miniature SAM for tests and cost smoke runs (meaningless proposals)
TINY_VARIANT = "tiny"


@dataclass(frozen=True)
class SamConfig:
    """Automatic-mask-generation settings (defaults: OMG-Net)."""

    points_per_side: int = 64
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.8
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area_um2: float = MIN_AREA_UM2
    max_area_um2: float = MAX_AREA_UM2
    #: autocast dtype on CPU: "bfloat16" (OMG-Net setting) or "float32" (no autocast; faster on
    #: CPUs without native bfloat16 support, see docs/benchmarks.md)
    cpu_dtype: str = "bfloat16"


def _import_sam() -> Any:
    try:
        import segment_anything
    except ImportError:
        raise MissingDependencyError("segment-anything", "sam") from None
    return segment_anything


def build_sam_model(variant: str = "vit_h", *, seed: int | None = None) -> Any:
    """A randomly initialised SAM of ``variant`` (``vit_h``, ``vit_l``, ``vit_b`` or ``tiny``).

    ``tiny`` is a miniature model (1-block, 32-dim encoder at 256 px, 32-dim decoder) that makes
    tests run in seconds; its proposals are meaningless.
    """
    _import_sam()
    import torch
    from segment_anything.build_sam import _build_sam

    if seed is not None:
        torch.manual_seed(seed)
    if variant == TINY_VARIANT:
        return _build_tiny()
    if variant not in SAM_VARIANTS:
        raise InvalidInputError(
            f"unknown SAM variant {variant!r}; choose one of {', '.join(SAM_VARIANTS)}"
        )
    dim, depth, heads, glob = SAM_VARIANTS[variant]
    return _build_sam(
        encoder_embed_dim=dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=list(glob),
        checkpoint=None,
    )


def _build_tiny() -> Any:
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    img, patch, dim = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img,
            patch_size=patch,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(img // patch, img // patch),
            input_image_size=(img, img),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _encoder_dim(state: dict[str, Any]) -> int | None:
    w = state.get("image_encoder.patch_embed.proj.weight")
    return int(w.shape[0]) if w is not None and hasattr(w, "shape") else None


def load_sam(checkpoint: str | Path, *, variant: str = "vit_h") -> Any:
    """Build a SAM of ``variant`` and load the state dict in ``checkpoint``.

    Raises
    ------
    ModelLoadError
        The file is missing or not a PyTorch checkpoint, or its weights belong to another
        variant (the message names the variant the file looks like).
    """
    _import_sam()
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise ModelLoadError(
            f"SAM checkpoint {path} not found; pass the path of a Segment Anything checkpoint "
            f"(e.g. sam_vit_h_4b8939.pth) with --sam-checkpoint"
        )
    if variant != TINY_VARIANT and variant not in SAM_VARIANTS:
        raise InvalidInputError(
            f"unknown SAM variant {variant!r}; choose one of {', '.join(SAM_VARIANTS)}"
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read SAM checkpoint {path.name} ({type(exc).__name__}); is it a "
            f"Segment Anything .pth file?"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ModelLoadError(f"{path.name} holds no state dict; expected a Segment Anything .pth")
    found = _encoder_dim(state)
    want = None if variant == TINY_VARIANT else SAM_VARIANTS[variant][0]
    if found is not None and want is not None and found != want:
        guess = [k for k, v in SAM_VARIANTS.items() if v[0] == found]
        hint = f"--sam-variant {guess[0]}" if guess else "the matching --sam-variant"
        raise ModelLoadError(
            f"{path.name} does not match SAM variant {variant} (encoder width {found}, "
            f"expected {want}); pass {hint}"
        )
    model = build_sam_model(variant)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path.name} does not match SAM variant {variant}: {first[:200]}; "
            f"check --sam-variant (vit_h, vit_l, vit_b)"
        ) from exc
    return model.eval()


def _generator_class() -> type:
    """SAM's mask generator with OMG-Net's area filter applied before the NMS.

    ``_process_batch`` follows ``SamAutomaticMaskGenerator._process_batch`` (segment-anything
    1.0) with one addition: masks outside ``[min_area_px, max_area_px]`` are dropped right after
    thresholding (before RLE encoding, which is the expensive part for large masks), and scores
    are kept in float32 (they are bfloat16 under CPU autocast).
    """
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (
        MaskData,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        mask_to_rle_pytorch,
        uncrop_masks,
    )

    class _AreaFilteredGenerator(SamAutomaticMaskGenerator):  # type: ignore[misc]
        min_area_px: float = 0.0
        max_area_px: float = float("inf")

        def _process_batch(self, points, im_size, crop_box, orig_size):  # type: ignore[no-untyped-def]
            orig_h, orig_w = orig_size
            pred = self.predictor
            transformed = pred.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(transformed, device=pred.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, _ = pred.predict_torch(
                in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
            )
            data = MaskData(
                masks=masks.flatten(0, 1),
                iou_preds=iou_preds.flatten(0, 1).float(),
                points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)),
            )
            del masks
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(
                data["masks"], pred.model.mask_threshold, self.stability_score_offset
            ).float()
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > pred.model.mask_threshold
            # OMG-Net: area 2.25-225 um² (converted to pixels by the caller)
            area = data["masks"].flatten(1).sum(1).float()
            data.filter((area >= self.min_area_px) & (area <= self.max_area_px))
            data["boxes"] = batched_mask_to_box(data["masks"])
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                data.filter(keep)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

    return _AreaFilteredGenerator


class SamProposer:
    """Segment Anything automatic mask generation as a candidate proposer (OMG-Net settings).

    Parameters
    ----------
    checkpoint : path, optional
        A Segment Anything checkpoint of ``variant``; required unless ``model`` is given.
    variant : {"vit_h", "vit_l", "vit_b"}
        The architecture of the checkpoint (OMG-Net: ``vit_h``).
    model : segment_anything.modeling.Sam, optional
        An already built model (e.g. :func:`build_sam_model` ``("tiny")`` in tests).
    config : SamConfig, optional
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"`` (bfloat16 autocast unless
        ``cpu_dtype="float32"``).
    **overrides
        Fields of :class:`SamConfig`, e.g. ``points_per_side=16``.
    """

    name = "sam"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        variant: str = "vit_h",
        model: Any = None,
        config: SamConfig | None = None,
        device: str | None = None,
        **overrides: Any,
    ) -> None:
        if model is None and checkpoint is None:  # before importing torch: fail fast
            raise ModelLoadError(
                "the sam proposer needs weights; pass a Segment Anything checkpoint with "
                "--sam-checkpoint (e.g. sam_vit_h_4b8939.pth) or use --proposer classical"
            )
        _import_sam()
        import torch

        cfg = config or SamConfig()
        self.config = replace(cfg, **overrides) if overrides else cfg
        if self.config.cpu_dtype not in ("bfloat16", "float32"):
            raise InvalidInputError(
                f"cpu_dtype must be 'bfloat16' or 'float32', got {self.config.cpu_dtype!r}"
            )
        if model is None:
            model = load_sam(checkpoint, variant=variant)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.variant = variant
        self._generator: Any = None

    def __repr__(self) -> str:
        return f"SamProposer(variant={self.variant!r}, device={self.device!r}, {self.config})"

    def _get_generator(self) -> Any:
        if self._generator is None:
            cfg = self.config
            cls = _generator_class()
            self._generator = cls(
                self.model,
                points_per_side=cfg.points_per_side,
                points_per_batch=cfg.points_per_batch,
                pred_iou_thresh=cfg.pred_iou_thresh,
                stability_score_thresh=cfg.stability_score_thresh,
                stability_score_offset=cfg.stability_score_offset,
                box_nms_thresh=cfg.box_nms_thresh,
                crop_n_layers=0,
                min_mask_region_area=0,
                output_mode="binary_mask",
            )
        return self._generator

    def generate(self, image: np.ndarray, *, mpp: float) -> list[dict[str, Any]]:
        """SAM's raw mask records (``segmentation``, ``predicted_iou``, ...) after filtering."""
        import torch

        mpp = validate_mpp(mpp)
        rgb = check_image(image)
        gen = self._get_generator()
        gen.min_area_px = self.config.min_area_um2 / (mpp * mpp)
        gen.max_area_px = self.config.max_area_um2 / (mpp * mpp)
        ctx: Callable[[], Any]
        if self.device == "cpu" and self.config.cpu_dtype == "bfloat16":
            ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
        else:
            import contextlib

            ctx = contextlib.nullcontext
        with torch.inference_mode(), ctx():
            return gen.generate(rgb)

    def propose(self, image: np.ndarray, *, mpp: float) -> Candidates:
        """Candidates of one RGB tile at pixel size ``mpp`` (um/px), in image pixels."""
        records = self.generate(image, mpp=mpp)
        return records_to_candidates(records, mpp=mpp, proposer=self.name)


def records_to_candidates(
    records: list[dict[str, Any]], *, mpp: float, proposer: str = "sam"
) -> Candidates:
    """SAM mask records -> :class:`Candidates` ranked by predicted IoU (masks cropped to bbox)."""
    if not records:
        return Candidates.empty(proposer)
    records = sorted(records, key=lambda r: -float(r["predicted_iou"]))
    n = len(records)
    xs, ys, areas, scores = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    bbox = np.zeros((n, 4), dtype=np.int64)
    masks = []
    for k, r in enumerate(records):
        seg = np.asarray(r["segmentation"], dtype=bool)
        rows = np.flatnonzero(seg.any(axis=1))
        cols = np.flatnonzero(seg.any(axis=0))
        if not len(rows):
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        m = seg[y0:y1, x0:x1]
        yy, xx = np.nonzero(m)
        xs[k], ys[k] = xx.mean() + x0, yy.mean() + y0
        areas[k] = m.sum() * mpp * mpp
        scores[k] = float(r["predicted_iou"])
        bbox[k] = (x0, y0, x1, y1)
        masks.append(m)
    if len(masks) != n:  # drop empty masks (cannot happen after SAM's filters)
        keep = areas > 0
        xs, ys, areas, scores, bbox = xs[keep], ys[keep], areas[keep], scores[keep], bbox[keep]
    return Candidates(
        x_px=xs,
        y_px=ys,
        bbox=bbox,
        area_um2=areas,
        score=scores,
        masks=masks,
        proposer=proposer,
        mask_downsample=1.0,
    )
