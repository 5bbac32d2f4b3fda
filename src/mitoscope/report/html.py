"""The per-slide HTML report: one self-contained page (inline CSS, base64 PNG images).

Sections: the summary numbers, the slide thumbnail with every mitosis and the two hotspot
fields drawn, the mitotic density heatmap, and a gallery of the top detections (context crop
with the candidate contour, the classifier's input patch with its Grad-CAM overlay, the
probabilities). The page is ``templates/report.html.j2`` (Jinja2); this module computes the
numbers and the images it shows.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Region, SlideResult
from .draw import (
    AMF_RGB,
    HOT2_RGB,
    HOT10_RGB,
    MF_RGB,
    blend,
    colormap,
    draw_marks,
    png_data_uri,
    resize_to,
)

if TYPE_CHECKING:
    from ..slide.reader import SlideReader
    from ..slide.tissue import TissueMask

THUMB_MAX_PX = 1100
CARD_PX = 128


def render_report(
    result: SlideResult,
    *,
    reader: SlideReader,
    tissue: TissueMask | None = None,
    classifier: Any = None,
    config: Any = None,
) -> str:
    """The report of one slide as an HTML string (self-contained).

    Parameters
    ----------
    result : SlideResult
    reader : SlideReader
        The open slide (thumbnail and crops are read from it).
    tissue : TissueMask, optional
        Drawn as an outline; the density is shown over tissue.
    classifier : Classifier, optional
        For the Grad-CAM overlays (``models``, ``gradcam_layer``) and the patch geometry.
    config : DetectConfig, optional
        ``gallery_size`` and ``work_mpp``.
    """
    from ..summary import summary_dict

    summary = summary_dict(result)
    info = result.info
    thumb = reader.get_thumbnail(THUMB_MAX_PX)
    s = thumb.shape[1] / float(info.width)
    mit = result.mitoses
    atyp_thr = _atypical_threshold(result)

    overview = _overview_png(thumb, s, mit, result, atyp_thr, tissue)
    heat_png, dens_max = _heatmap_png(thumb, s, mit, result, tissue)
    gallery_size = int(getattr(config, "gallery_size", 24) or 0)
    cards, cam_note = _gallery(
        result, reader=reader, classifier=classifier, config=config, k=gallery_size
    )

    notes = list(summary.get("notes") or [])
    for key in ("hotspot_2mm2", "hotspot_10hpf"):
        h = summary.get(key) or {}
        if h.get("note"):
            notes.append(f"{key}: {h['note']}")
    if cam_note:
        notes.append(cam_note)

    per_mm2 = summary["mitoses_per_mm2"]
    ratio = summary["atypical_ratio"]
    h2 = summary["hotspot_2mm2"]
    h10 = summary["hotspot_10hpf"]
    kpis = [
        (str(summary["n_mitoses"]), "mitotic figures"),
        ("n/a" if per_mm2 is None else f"{per_mm2:.2f}", "mitoses per mm² of tissue"),
        (str(h2["count"]), f"hotspot count, {h2['area_mm2']:g} mm² field"),
        (str(h10["count"]), f"hotspot count, 10 HPF ({h10['area_mm2']:g} mm²)"),
        ("n/a" if ratio is None else f"{ratio:.1%}", "atypical / all mitoses"),
        (f"{summary['tissue_area_mm2']:.3f}", "tissue area (mm²)"),
    ]
    facts = [
        ("slide", f"{info.path.name} ({info.width} x {info.height} px, {info.backend})"),
        ("pixel size", f"{info.mpp:g} um/px ({info.mpp_source})"),
        ("model", f"{summary['model']} (threshold {summary['threshold']:.6g})"),
        ("proposer", summary["proposer"]),
        ("candidates scored", f"{summary['n_candidates']} in {summary['n_tiles']} tiles"),
        (
            "hotspot 2 mm² centre",
            f"({h2['center_px'][0]:.0f}, {h2['center_px'][1]:.0f}) px, radius {h2['radius_um']:.1f} um",
        ),
        (
            "hotspot 10 HPF centre",
            f"({h10['center_px'][0]:.0f}, {h10['center_px'][1]:.0f}) px, radius {h10['radius_um']:.1f} um",
        ),
        ("detection time", f"{summary['seconds']:.1f} s"),
        ("mitoscope", summary["version"]),
    ]
    return _template().render(
        slide=info.path.name,
        kpis=kpis,
        facts=facts,
        notes=notes,
        overview=overview,
        heatmap=heat_png,
        density_max=f"{dens_max:.1f}",
        colours={"mf": MF_RGB, "amf": AMF_RGB, "hot2": HOT2_RGB, "hot10": HOT10_RGB},
        cards=cards,
    )


def _template() -> Any:
    """The page template (``templates/report.html.j2``); ``esc`` is :func:`html.escape`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mitoscope.report", "templates"),
        autoescape=False,  # values are escaped with ``esc`` where they are text
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["esc"] = html.escape
    return env.get_template("report.html.j2")


# ------------------------------------------------------------------------------ figures
def _hot_circle(h: Any, s: float, mpp: float, rgb: tuple[int, int, int]) -> tuple:
    r = h.radius_um / mpp * s
    return (h.center_px[0] * s, h.center_px[1] * s, r, rgb, 3)


def _tissue_outline(thumb_shape: tuple[int, ...], tissue: TissueMask | None) -> np.ndarray | None:
    if tissue is None or not np.asarray(tissue.mask).any() or np.asarray(tissue.mask).all():
        return None
    from scipy import ndimage as ndi

    m = resize_to(np.asarray(tissue.mask, dtype=np.float32), (thumb_shape[1], thumb_shape[0])) > 0.5
    return m & ~ndi.binary_erosion(m, iterations=2)


def _overview_png(
    thumb: np.ndarray,
    s: float,
    mit: Any,
    result: SlideResult,
    atyp_thr: float,
    tissue: TissueMask | None,
) -> str:
    img = thumb.copy()
    edge = _tissue_outline(img.shape, tissue)
    if edge is not None:
        img[edge] = (90, 90, 200)
    pts = []
    for x, y, a in zip(mit.x_px, mit.y_px, mit.atypical_probability, strict=True):
        rgb = AMF_RGB if (math.isfinite(a) and a >= atyp_thr) else MF_RGB
        pts.append((x * s, y * s, rgb))
    circles = []
    mpp = result.info.mpp
    if result.hotspot_10hpf is not None:
        circles.append(_hot_circle(result.hotspot_10hpf, s, mpp, HOT10_RGB))
    if result.hotspot_2mm2 is not None:
        circles.append(_hot_circle(result.hotspot_2mm2, s, mpp, HOT2_RGB))
    pr = max(3.0, 6.0 / mpp * s)  # ~6 um, at least 3 px
    return png_data_uri(draw_marks(img, points=pts, circles=circles, point_radius=pr))


def _heatmap_png(
    thumb: np.ndarray, s: float, mit: Any, result: SlideResult, tissue: TissueMask | None
) -> tuple[str, float]:
    from ..count import density_map

    info = result.info
    h, w = thumb.shape[:2]
    extent_um = min(info.width, info.height) * info.mpp
    sigma_um = float(np.clip(0.1 * extent_um, 5.0, 250.0))
    # density on a grid ~sigma/3 per cell (cheap smoothing), shown at thumbnail size
    ds = max(info.width / w, sigma_um / info.mpp / 3.0)
    gh = max(1, int(math.ceil(info.height / ds)))
    gw = max(1, int(math.ceil(info.width / ds)))
    dens = density_map(
        mit.x_px, mit.y_px, shape=(gh, gw), downsample=ds, mpp=info.mpp, sigma_um=sigma_um
    )
    if dens.shape != (h, w):
        dens = np.clip(resize_to(dens.astype(np.float32), (w, h)), 0, None)
    dmax = float(dens.max()) if dens.size else 0.0
    norm = dens / dmax if dmax > 0 else dens
    grey = thumb.mean(axis=2, keepdims=True).repeat(3, axis=2).astype(np.uint8)
    grey = blend(grey, np.full_like(grey, 255), 0.35)
    alpha = np.where(norm > 0.02, 0.25 + 0.65 * norm, 0.0)
    if tissue is not None and np.asarray(tissue.mask).any():
        on_tissue = resize_to(np.asarray(tissue.mask, dtype=np.float32), (w, h)) > 0.5
        alpha = alpha * on_tissue  # density is shown over tissue only
    img = blend(grey, colormap(norm), alpha)
    circles = []
    if result.hotspot_2mm2 is not None:
        circles.append(_hot_circle(result.hotspot_2mm2, s, info.mpp, HOT2_RGB))
    return png_data_uri(draw_marks(img, circles=circles)), dmax


# ------------------------------------------------------------------------------ gallery
def _patch_size(classifier: Any) -> int:
    for name in ("patch_size_px", "patch_size", "input_size"):
        v = getattr(classifier, name, None)
        if isinstance(v, (int, np.integer)) and v > 0:
            return int(v)
        if isinstance(v, (tuple, list)) and v and int(v[0]) > 0:
            return int(v[0])
    return 64


def _gallery(
    result: SlideResult, *, reader: SlideReader, classifier: Any, config: Any, k: int
) -> tuple[list[dict[str, Any]], str]:
    from skimage.draw import polygon as fill_polygon

    dets = result.detections
    if k <= 0 or len(dets) == 0:
        return [], ""
    info = result.info
    order = np.argsort(-dets.mf_probability, kind="stable")[:k]
    work_mpp = float(
        (result.stats.work_mpp if result.stats is not None else None)
        or getattr(config, "work_mpp", None)
        or getattr(classifier, "input_mpp", None)
        or info.mpp
    )
    ps = _patch_size(classifier)
    scale = work_mpp / info.mpp  # level-0 px per work px
    side0 = ps * scale
    patches, masks, contexts = [], [], []
    for i in order.tolist():
        x, y = float(dets.x_px[i]), float(dets.y_px[i])
        x0, y0 = int(round(x - side0 / 2)), int(round(y - side0 / 2))
        reg = Region(x0, y0, max(1, int(round(side0))), max(1, int(round(side0))))
        patch = reader.read_region_mpp(reg, work_mpp, clip=True)
        if patch.shape[:2] != (ps, ps):
            patch = resize_to(patch, (ps, ps))
        mask = np.zeros((ps, ps), dtype=bool)
        contour = None if dets.contours is None else dets.contours[i]
        if contour is not None and len(contour) >= 3:
            rr, cc = fill_polygon(
                (contour[:, 1] - y0) / scale, (contour[:, 0] - x0) / scale, shape=(ps, ps)
            )
            mask[rr, cc] = True
        patches.append(patch)
        masks.append(mask)
        # context: 3x the classifier input, contour and input square drawn
        cside0 = 3 * side0
        cx0, cy0 = int(round(x - cside0 / 2)), int(round(y - cside0 / 2))
        creg = Region(cx0, cy0, max(1, int(round(cside0))), max(1, int(round(cside0))))
        ctx_mpp = max(work_mpp, cside0 * info.mpp / CARD_PX)
        ctx = reader.read_region_mpp(creg, ctx_mpp, clip=True)
        ctx = resize_to(ctx, (CARD_PX, CARD_PX))
        f = CARD_PX / cside0
        polys = []
        if contour is not None and len(contour) >= 3:
            polys.append(
                (
                    np.column_stack([(contour[:, 0] - cx0) * f, (contour[:, 1] - cy0) * f]),
                    (0, 230, 120),
                )
            )
        q0, q1 = side0 * f, 2 * side0 * f
        square = np.array([[q0, q0], [q1, q0], [q1, q1], [q0, q1]])
        polys.append((square, (255, 255, 255)))
        contexts.append(draw_marks(ctx, polygons=polys))

    cams, note = _cams(classifier, np.stack(patches), np.stack(masks))
    cards = []
    thr = result.threshold
    atyp_thr = _atypical_threshold(result)
    for n, i in enumerate(order.tolist()):
        p = float(dets.mf_probability[i])
        a = float(dets.atypical_probability[i])
        big = resize_to(patches[n], (CARD_PX, CARD_PX))
        no_cam = False
        if cams is not None and float(cams[n].max()) > 0:
            cam = resize_to(cams[n], (CARD_PX, CARD_PX))
            right = blend(big, colormap(cam), 0.15 + 0.5 * np.clip(cam, 0, 1))
        else:
            right = big
            no_cam = cams is not None
        if p >= thr:
            label = "atypical MF" if (math.isfinite(a) and a >= atyp_thr) else "MF"
        else:
            label = "below threshold"
        cards.append(
            {
                "context": png_data_uri(contexts[n]),
                "cam": png_data_uri(right),
                "p_mf": _prob_text(p),
                "label": label,
                "p_atypical": f"{a:.3f}" if math.isfinite(a) else "n/a",
                "area": f"{float(dets.area_um2[i]):.1f}",
                "x": f"{float(dets.x_px[i]):.0f}",
                "y": f"{float(dets.y_px[i]):.0f}",
                "no_cam": no_cam,
            }
        )
    return cards, note


def _atypical_threshold(result: SlideResult) -> float:
    return 0.5 if result.counts is None else float(result.counts.atypical_threshold)


def _prob_text(p: float) -> str:
    """A probability with enough digits to tell 0.9999 from 1 (thresholds can be that high)."""
    if p >= 0.999:
        return "> 0.999999" if p > 0.9999995 else f"{p:.6f}"
    return f"{p:.3f}"


def _cams(classifier: Any, patches: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray | None, str]:
    models = list(getattr(classifier, "models", None) or [])
    layer_of = getattr(classifier, "gradcam_layer", None)
    if not models or layer_of is None:
        return None, "Grad-CAM not available for this classifier (no models exposed)"
    from .gradcam import ensemble_gradcam

    try:
        from .gradcam import spatial_layer

        size = patches.shape[1]
        layers = [spatial_layer(m, layer_of(m), size) for m in models]
        return ensemble_gradcam(models, layers, patches, masks), ""
    except Exception as exc:
        return None, f"Grad-CAM failed: {type(exc).__name__}: {exc}"
