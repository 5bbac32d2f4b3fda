"""Register two scans of one tissue section: slide level, then patch level (features + RANSAC).

Used by ``curate rescan`` (labels moved to a re-scan of the glass, Fick et al.) and ``curate
phh3`` (pHH3 re-stain -> H&E, OMG-Net's STMF). Everything geometric is scikit-image:
keypoints and descriptors (:class:`skimage.feature.ORB`, or :class:`skimage.feature.SIFT`),
:func:`skimage.feature.match_descriptors` (cross-checked, Lowe's ratio test) and
:func:`skimage.measure.ransac` fitting a :class:`~skimage.transform.SimilarityTransform` /
:class:`~skimage.transform.AffineTransform` / :class:`~skimage.transform.EuclideanTransform`.

Both images are read at one working pixel size in micrometres (each slide's own pixel size
from its metadata or ``--mpp``), so features look alike whatever the scanners' resolutions;
the fitted map is then expressed between the two slides' level-0 pixels. Features are computed
on a stain-agnostic image (``"od"``: total optical density, dark where there is tissue,
whatever the stain; ``"haematoxylin"``: the nuclear counterstain common to H&E and most IHC;
``"gray"``).

Checks that turn bad input into one-line errors (:class:`RegistrationError`, exit 2):

- too few consistent matches -> "no overlap found" (different sections, blank images);
- the fitted map changes physical size by more than ``max_scale_change`` (10%): scans of one
  glass slide have the same size in micrometres, so one of the pixel sizes is wrong (wrong
  units, a 20x scan declared 40x) or the slides do not match.

The *registration error* reported is the RANSAC inliers' residual (matched keypoint pairs after
the fit, in micrometres of the target slide): the spread of positions the fitted map leaves. The
tests measure the true error of transferred points on real images under known transforms.

Over 400 lines: slide-level registration, patch-level refinement and moving points through the
fitted maps share the feature images, the :class:`Match` / :class:`Transfer` records and the
micrometre working scale; ``curate rescan`` and ``curate phh3`` use all three. A future split would
move the point transfer (:class:`PointTransfer`, ``group_points``, ``transfer_points``,
``check_points_in_slide``, about 150 lines) into its own module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Region

#: feature detectors of the slide level ("brief" is the patch level's)
METHODS = ("orb", "sift")
#: images the features are computed on
CHANNELS = ("od", "haematoxylin", "gray")
#: transform families fitted by RANSAC
MODELS = ("euclidean", "similarity", "affine")
#: slide level: the longer side of the working image (px)
SLIDE_WORK_PX = 1024
#: patch level: side of the window read around a group of labels (um) and its pixel size
PATCH_UM = 160.0
PATCH_MPP = 0.5
#: extra target context around the slide-level position of a patch (um)
MARGIN_UM = 40.0


class RegistrationError(InvalidInputError):
    """The two images could not be registered (no overlap, wrong pixel size, other slide)."""


def _model_class(model: str) -> Any:
    from skimage.transform import AffineTransform, EuclideanTransform, SimilarityTransform

    classes = {
        "euclidean": EuclideanTransform,
        "similarity": SimilarityTransform,
        "affine": AffineTransform,
    }
    if model not in classes:
        raise InvalidInputError(f"unknown transform model {model!r}; choose {', '.join(MODELS)}")
    return classes[model]


def feature_image(rgb: np.ndarray, channel: str = "od") -> np.ndarray:
    """The float image in ``[0, 1]`` whose features are matched (bright = stained).

    ``"od"``: summed optical density of the three channels; ``"haematoxylin"``: the
    haematoxylin concentration (colour deconvolution); ``"gray"``: ``1 - luminance``. Scaled by
    the 99.5th percentile so two scans of different brightness look alike.
    """
    rgb = np.asarray(rgb)[..., :3]
    if channel == "od":
        img = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=-1)
    elif channel == "haematoxylin":
        from ..stain.hed import haematoxylin

        img = haematoxylin(rgb)
    elif channel == "gray":
        from skimage.color import rgb2gray

        img = 1.0 - rgb2gray(rgb).astype(np.float32)
    else:
        raise InvalidInputError(
            f"unknown feature channel {channel!r}; choose {', '.join(CHANNELS)}"
        )
    top = float(np.percentile(img, 99.5)) if img.size else 0.0
    if top <= 1e-6:
        return np.zeros(img.shape, dtype=np.float64)
    return np.clip(img / top, 0.0, 1.0).astype(np.float64)


@dataclass
class Match:
    """A fitted map between two working images (``x, y`` pixel coordinates)."""

    matrix: np.ndarray  # 3x3: moving work px -> fixed work px
    n_matches: int
    n_inliers: int
    residuals_px: np.ndarray  # inliers' residuals after the fit (fixed work px)


def _keypoints(img: np.ndarray, method: str, n_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 2)`` keypoints as ``x, y`` and their descriptors (none found -> empty arrays).

    ``"orb"`` and ``"sift"`` are rotation and scale invariant (slide level); ``"brief"``
    (Harris corners + BRIEF) is not, and ~10x faster: the patch level, whose images are
    already aligned by the slide-level map, uses it.
    """
    from skimage.feature import BRIEF, ORB, SIFT, corner_harris, corner_peaks

    if min(img.shape) < 32 or float(img.std()) < 1e-3:
        return np.zeros((0, 2)), np.zeros((0, 1))
    try:
        if method == "orb":
            det = ORB(n_keypoints=int(n_keypoints), fast_threshold=0.05, downscale=1.2, n_scales=8)
            det.detect_and_extract(img)
        elif method == "sift":
            det = SIFT(n_octaves=4, c_dog=0.01)
            det.detect_and_extract(img)
        elif method == "brief":
            peaks = corner_peaks(
                corner_harris(img, sigma=1.5), min_distance=3, threshold_rel=0.005,
                num_peaks=int(n_keypoints),
            )  # fmt: skip
            det = BRIEF(descriptor_size=256, patch_size=25, mode="normal", sigma=1.5, rng=0)
            det.extract(img, peaks)
            return peaks[det.mask][:, ::-1].astype(np.float64), np.asarray(det.descriptors)
        else:
            raise InvalidInputError(
                f"unknown feature method {method!r}; choose {', '.join(METHODS)}"
            )
    except RuntimeError:  # skimage: "ORB found no features"
        return np.zeros((0, 2)), np.zeros((0, 1))
    kp = np.asarray(det.keypoints, dtype=np.float64)
    if method == "sift" and len(kp) > n_keypoints:  # strongest first is not exposed: subsample
        keep = np.linspace(0, len(kp) - 1, int(n_keypoints)).astype(int)
        return kp[keep][:, ::-1], np.asarray(det.descriptors)[keep]
    return kp[:, ::-1], np.asarray(det.descriptors)


def match_images(
    moving: np.ndarray,
    fixed: np.ndarray,
    *,
    method: str = "orb",
    model: str = "similarity",
    n_keypoints: int = 1500,
    residual_px: float = 2.0,
    min_inliers: int = 12,
    seed: int = 0,
    what: str = "the images",
) -> Match:
    """Fit ``model`` mapping feature image ``moving`` onto ``fixed`` (both ``[0, 1]`` floats).

    Raises
    ------
    RegistrationError
        Fewer than ``min_inliers`` matches agree with one transform: no overlap found.
    """
    from skimage.feature import match_descriptors
    from skimage.measure import ransac

    cls = _model_class(model)
    kp_m, d_m = _keypoints(moving, method, n_keypoints)
    kp_f, d_f = _keypoints(fixed, method, n_keypoints)
    pairs = np.zeros((0, 2), dtype=int)
    if len(kp_m) >= 3 and len(kp_f) >= 3:
        pairs = match_descriptors(d_m, d_f, cross_check=True, max_ratio=0.85)
    n = len(pairs)
    hint = "are they scans of the same tissue section, and do they overlap?"
    if n < max(min_inliers, 3):
        raise RegistrationError(
            f"no overlap found by registration between {what}: {n} feature matches "
            f"(at least {min_inliers} needed); {hint}"
        )
    src, dst = kp_m[pairs[:, 0]], kp_f[pairs[:, 1]]
    min_samples = 2 if model in ("euclidean", "similarity") else 3
    fit, inliers = ransac(
        (src, dst),
        cls,
        min_samples=min_samples,
        residual_threshold=float(residual_px),
        max_trials=1000,
        stop_probability=0.999,
        rng=int(seed),
    )
    n_in = 0 if inliers is None else int(inliers.sum())
    if fit is None or n_in < min_inliers:
        raise RegistrationError(
            f"no overlap found by registration between {what}: {n_in} of {n} feature matches "
            f"agree on one {model} transform (at least {min_inliers} needed); {hint}"
        )
    # refit on all inliers (least squares)
    refit = cls.from_estimate(src[inliers], dst[inliers])
    if refit:
        fit = refit
    res = np.hypot(*(fit(src[inliers]) - dst[inliers]).T)
    return Match(np.asarray(fit.params, dtype=np.float64), n, n_in, res)


def _grid(x0: float, y0: float, f: float) -> np.ndarray:
    """Work-image pixel -> level-0 pixel (pixel centres, ``f`` level-0 px per work px)."""
    return np.array([[f, 0.0, x0 + 0.5 * f - 0.5], [0.0, f, y0 + 0.5 * f - 0.5], [0, 0, 1.0]])


@dataclass
class Transfer:
    """A map from the moving slide's level-0 pixels to the fixed slide's level-0 pixels."""

    matrix: np.ndarray  # 3x3
    moving_mpp: float
    fixed_mpp: float
    level: str  # "slide" | "patch"
    n_matches: int
    n_inliers: int
    residual_um: np.ndarray = field(repr=False)  # inliers' residuals, fixed-slide um

    def map(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` moving level-0 ``x, y`` -> fixed level-0 ``x, y``."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        h = np.column_stack([xy, np.ones(len(xy))]) @ self.matrix.T
        return h[:, :2] / h[:, 2:3]

    @property
    def physical(self) -> np.ndarray:
        """The 2x2 linear part between micrometres (moving um -> fixed um)."""
        return self.matrix[:2, :2] * (self.fixed_mpp / self.moving_mpp)

    @property
    def scale_change(self) -> float:
        """Area-preserving scale of :attr:`physical` (1.0: same size in micrometres)."""
        return float(math.sqrt(abs(np.linalg.det(self.physical))))

    @property
    def rotation_deg(self) -> float:
        a = self.physical
        return float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))

    @property
    def residual_median_um(self) -> float:
        return float(np.median(self.residual_um)) if len(self.residual_um) else math.nan

    def summary(self) -> dict[str, Any]:
        r = self.residual_um
        return {
            "level": self.level,
            "matches": self.n_matches,
            "inliers": self.n_inliers,
            "residual_median_um": round(self.residual_median_um, 3),
            "residual_p95_um": round(float(np.percentile(r, 95)), 3) if len(r) else None,
            "scale_change": round(self.scale_change, 4),
            "rotation_deg": round(self.rotation_deg, 3),
            "matrix": np.round(self.matrix, 6).tolist(),
        }


def _read_work(reader: Any, region: Region, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """A level-0 region read at ``mpp`` and its work-px -> level-0 px matrix."""
    img = reader.read_region_mpp(region, mpp, clip=True)
    f = region.width / img.shape[1]  # the resampler's exact factor
    return img, _grid(region.x, region.y, f)


def _check_scale(t: Transfer, max_scale_change: float, moving: Any, fixed: Any) -> None:
    s = t.scale_change
    if abs(s - 1.0) > max_scale_change:
        mi, fi = moving.info, fixed.info
        raise RegistrationError(
            f"registration found a {s:.2f}x size change between {mi.path.name} "
            f"({mi.mpp:g} um/px, {mi.mpp_source}) and {fi.path.name} ({fi.mpp:g} um/px, "
            f"{fi.mpp_source}): one pixel size is wrong or the slides do not match; "
            "pass the right --mpp / --target-mpp"
        )


def _overlap_check(t: Transfer, moving: Any, fixed: Any) -> None:
    """The moving slide, mapped, must overlap the fixed slide."""
    mi, fi = moving.info, fixed.info
    corners = np.array([[0, 0], [mi.width, 0], [mi.width, mi.height], [0, mi.height]], float)
    c = t.map(corners)
    x0, y0 = c.min(axis=0)
    x1, y1 = c.max(axis=0)
    ox = min(x1, fi.width) - max(x0, 0.0)
    oy = min(y1, fi.height) - max(y0, 0.0)
    if ox <= 0 or oy <= 0:
        raise RegistrationError(
            f"no overlap found by registration: {mi.path.name} maps outside {fi.path.name}; "
            "are they scans of the same section?"
        )


def register_slides(
    moving: Any,
    fixed: Any,
    *,
    method: str = "orb",
    model: str = "similarity",
    channel: str = "od",
    work_px: int = SLIDE_WORK_PX,
    max_scale_change: float = 0.1,
    n_keypoints: int = 1500,
    min_inliers: int = 12,
    seed: int = 0,
) -> Transfer:
    """Slide-level registration of two opened slides (:class:`~mitoscope.slide.SlideReader`).

    Both whole slides are read at one pixel size (the larger physical extent over ``work_px``
    pixels, never finer than either slide's own pixel size) and registered there.
    """
    mi, fi = moving.info, fixed.info
    extent_um = max(mi.width * mi.mpp, mi.height * mi.mpp, fi.width * fi.mpp, fi.height * fi.mpp)
    mpp = max(extent_um / float(work_px), mi.mpp, fi.mpp)
    img_m, g_m = _read_work(moving, Region(0, 0, mi.width, mi.height), mpp)
    img_f, g_f = _read_work(fixed, Region(0, 0, fi.width, fi.height), mpp)
    m = match_images(
        feature_image(img_m, channel),
        feature_image(img_f, channel),
        method=method,
        model=model,
        n_keypoints=n_keypoints,
        residual_px=max(2.0, 2.0 * max(mi.mpp, fi.mpp) / mpp),
        min_inliers=min_inliers,
        seed=seed,
        what=f"{mi.path.name} and {fi.path.name}",
    )
    matrix = g_f @ m.matrix @ np.linalg.inv(g_m)
    t = Transfer(matrix, mi.mpp, fi.mpp, "slide", m.n_matches, m.n_inliers, m.residuals_px * mpp)
    _check_scale(t, max_scale_change, moving, fixed)
    _overlap_check(t, moving, fixed)
    return t


def register_patch(
    moving: Any,
    fixed: Any,
    coarse: Transfer,
    centre_xy: tuple[float, float],
    *,
    size_um: float = PATCH_UM,
    margin_um: float = MARGIN_UM,
    mpp: float | None = None,
    method: str = "orb",
    model: str = "affine",
    channel: str = "od",
    n_keypoints: int = 800,
    min_inliers: int = 12,
    max_scale_change: float = 0.1,
    seed: int = 0,
) -> Transfer:
    """Refine ``coarse`` in a ``size_um`` window of the moving slide centred on ``centre_xy``.

    The fixed window covers the window's slide-level position plus ``margin_um``; both are read
    at ``mpp``, the fixed one resampled onto the moving one's grid by ``coarse``, and the
    correction is fitted on Harris corners with BRIEF descriptors (``method`` is not used:
    the slide level already removed rotation and scale); ``mpp`` (default: :data:`PATCH_MPP`, or the coarser slide's pixel size). The local map
    must keep the window's centre within ``margin_um`` of the slide-level position and its size
    within ``max_scale_change``; otherwise :class:`RegistrationError`.
    """
    mi, fi = moving.info, fixed.info
    work = max(mpp or PATCH_MPP, mi.mpp, fi.mpp)
    half = size_um / 2.0 / mi.mpp
    cx, cy = float(centre_xy[0]), float(centre_xy[1])
    r_m = Region(
        int(round(cx - half)), int(round(cy - half)), int(round(2 * half)), int(round(2 * half))
    )
    corners = np.array(
        [[r_m.x, r_m.y], [r_m.x1, r_m.y], [r_m.x1, r_m.y1], [r_m.x, r_m.y1]], dtype=np.float64
    )
    c = coarse.map(corners)
    pad = margin_um / fi.mpp
    x0, y0 = np.floor(c.min(axis=0) - pad)
    x1, y1 = np.ceil(c.max(axis=0) + pad)
    r_f = Region(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    img_m, g_m = _read_work(moving, r_m, work)
    img_f, g_f = _read_work(fixed, r_f, work)
    # the fixed window resampled onto the moving window's grid by the slide-level map: what
    # is left is a small correction, which Harris corners + BRIEF find fast
    from skimage.transform import AffineTransform, warp

    c_work = np.linalg.inv(g_f) @ coarse.matrix @ g_m
    feat_f = warp(
        feature_image(img_f, channel), AffineTransform(matrix=c_work),
        output_shape=img_m.shape[:2], order=1, cval=0.0,
    )  # fmt: skip
    m = match_images(
        feature_image(img_m, channel),
        feat_f,
        method="brief",
        model=model,
        n_keypoints=n_keypoints,
        residual_px=2.0,
        min_inliers=min_inliers,
        seed=seed,
        what=f"a {size_um:g} um window at x={cx:.0f}, y={cy:.0f} of {mi.path.name} and "
        f"{fi.path.name}",
    )
    matrix = g_f @ c_work @ m.matrix @ np.linalg.inv(g_m)
    t = Transfer(matrix, mi.mpp, fi.mpp, "patch", m.n_matches, m.n_inliers, m.residuals_px * work)
    shift_um = float(np.hypot(*(t.map([[cx, cy]]) - coarse.map([[cx, cy]]))[0])) * fi.mpp
    if abs(t.scale_change - 1.0) > max_scale_change or shift_um > margin_um:
        raise RegistrationError(
            f"patch registration at x={cx:.0f}, y={cy:.0f} disagrees with the slide level "
            f"({shift_um:.1f} um apart, size x{t.scale_change:.2f})"
        )
    return t


@dataclass
class PointTransfer:
    """Points moved from the moving slide to the fixed slide, with how each was registered."""

    xy: np.ndarray  # (N, 2) fixed level-0 px
    level: np.ndarray  # (N,) "patch" | "slide" (patch registration failed: slide-level map)
    residual_um: np.ndarray  # (N,) median inlier residual of the map used (fixed um)
    window: np.ndarray  # (N,) index into ``transforms``
    transforms: list[Transfer]
    slide: Transfer

    def summary(self) -> dict[str, Any]:
        """Counts and the registration error over the points (um)."""
        r = self.residual_um[np.isfinite(self.residual_um)]
        patch = self.level == "patch"
        return {
            "points": int(len(self.xy)),
            "patch_registered": int(patch.sum()),
            "slide_level_only": int((~patch).sum()),
            "windows": len(self.transforms),
            "residual_median_um": round(float(np.median(r)), 3) if len(r) else None,
            "residual_p95_um": round(float(np.percentile(r, 95)), 3) if len(r) else None,
            "slide_level": self.slide.summary(),
        }


def group_points(xy: np.ndarray, window_px: float) -> np.ndarray:
    """Group points for windows of side ``window_px`` (greedy, in order of position): the
    group index of each point. A group spans at most ``window_px / 2`` in each axis, so the
    window centred on it holds every point with at least ``window_px / 4`` of context."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    group = np.full(len(xy), -1, dtype=np.int64)
    order = np.lexsort((xy[:, 0], xy[:, 1]))
    k = 0
    for i in order:
        if group[i] >= 0:
            continue
        # the square whose top-left corner is this point's (x - w/4, y): greedy, covers it
        x0, y0 = xy[i, 0] - window_px / 4.0, xy[i, 1]
        inside = (
            (group < 0)
            & (xy[:, 0] >= x0)
            & (xy[:, 0] < x0 + window_px / 2.0)
            & (xy[:, 1] >= y0)
            & (xy[:, 1] < y0 + window_px / 2.0)
        )
        inside[i] = True
        group[inside] = k
        k += 1
    return group


def transfer_points(
    moving: Any,
    fixed: Any,
    xy: np.ndarray,
    *,
    slide: Transfer | None = None,
    patch: bool = True,
    size_um: float = PATCH_UM,
    margin_um: float = MARGIN_UM,
    patch_mpp: float | None = None,
    method: str = "orb",
    channel: str = "od",
    slide_model: str = "similarity",
    patch_model: str = "affine",
    max_scale_change: float = 0.1,
    seed: int = 0,
) -> PointTransfer:
    """Move level-0 points of ``moving`` onto ``fixed``: slide level, then one patch-level
    registration per group of points (a ``size_um`` window holding them in its central half).

    A window whose patch registration fails keeps the slide-level map for its points
    (``level == "slide"``); the slide-level registration itself must succeed.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if slide is None:
        slide = register_slides(
            moving, fixed, method=method, model=slide_model, channel=channel,
            max_scale_change=max_scale_change, seed=seed,
        )  # fmt: skip
    out = slide.map(xy) if len(xy) else np.zeros((0, 2))
    level = np.full(len(xy), "slide", dtype=object)
    resid = np.full(len(xy), slide.residual_median_um)
    window = np.zeros(len(xy), dtype=np.int64)
    transforms: list[Transfer] = [slide]
    if patch and len(xy):
        groups = group_points(xy, size_um / moving.info.mpp)
        for g in range(int(groups.max()) + 1):
            sel = np.flatnonzero(groups == g)
            lo, hi = xy[sel].min(axis=0), xy[sel].max(axis=0)
            centre = (0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]))
            try:
                t = register_patch(
                    moving, fixed, slide, centre, size_um=size_um, margin_um=margin_um,
                    mpp=patch_mpp, method=method, model=patch_model, channel=channel,
                    max_scale_change=max_scale_change, seed=seed,
                )  # fmt: skip
            except RegistrationError:
                continue
            transforms.append(t)
            out[sel] = t.map(xy[sel])
            level[sel] = "patch"
            resid[sel] = t.residual_median_um
            window[sel] = len(transforms) - 1
    return PointTransfer(out, level, resid, window, transforms, slide)


def check_points_in_slide(xy: np.ndarray, info: Any, what: str = "labels") -> None:
    """Labels must lie on the slide they were made on (level-0 px); a file in other units
    (micrometres, millimetres, a lower pyramid level) fails here with one line."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if not len(xy):
        return
    if not np.isfinite(xy).all():
        raise InvalidInputError(f"{what}: some positions are not numbers")
    out = (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > info.width) | (xy[:, 1] > info.height)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InvalidInputError(
            f"{what}: {int(out.sum())} of {len(xy)} positions lie outside {info.path.name} "
            f"({info.width}x{info.height} px), e.g. x={xy[i, 0]:.1f}, y={xy[i, 1]:.1f}: they "
            "must be level-0 pixels of that slide (not um or mm)"
        )
    big = min(info.width, info.height) >= 1000
    ext = xy.max(axis=0)
    if big and len(xy) >= 3 and (ext[0] < 0.01 * info.width and ext[1] < 0.01 * info.height):
        raise InvalidInputError(
            f"{what}: all {len(xy)} positions lie within the top-left 1% of {info.path.name}: "
            "they look like millimetres; give level-0 pixels"
        )


def open_scan(path: Any, mpp: float | None, option: str) -> Any:
    """:func:`~mitoscope.slide.reader.open_slide` for one slide of a pair, its pixel-size errors
    naming the option that sets this slide's pixel size (``--target-mpp``, ``--he-mpp``, ...)
    instead of the reader's generic ``--mpp``, which sets the other slide's in some commands."""
    from ..errors import MissingMetadataError
    from ..slide.reader import missing_mpp_error, open_slide
    from ..units import validate_mpp

    if mpp is not None:
        validate_mpp(mpp, name=option)
    try:
        return open_slide(path, mpp=mpp)
    except MissingMetadataError:
        raise missing_mpp_error(Path(path).name, option) from None


def check_transfer_settings(cfg: Any) -> None:
    """Check the registration settings a ``curate`` config carries (``method``, ``channel``,
    ``patch_um``, ``margin_um``, ``max_scale_change``); one clear error for the first bad one."""
    if cfg.method not in METHODS:
        raise InvalidInputError(f"--method must be one of {', '.join(METHODS)}")
    if cfg.channel not in CHANNELS:
        raise InvalidInputError(f"--channel must be one of {', '.join(CHANNELS)}")
    for name in ("patch_um", "margin_um", "max_scale_change"):
        v = float(getattr(cfg, name))
        if not math.isfinite(v) or v <= 0:
            raise InvalidInputError(f"{name} must be a positive number, got {v}")


def transfer_with(cfg: Any, moving: Any, fixed: Any, xy: np.ndarray) -> PointTransfer:
    """:func:`transfer_points` with the registration settings of a ``curate`` config."""
    return transfer_points(
        moving, fixed, xy, patch=cfg.patch, size_um=cfg.patch_um, margin_um=cfg.margin_um,
        method=cfg.method, channel=cfg.channel, max_scale_change=cfg.max_scale_change,
        seed=cfg.seed,
    )  # fmt: skip


__all__ = [
    "check_transfer_settings",
    "transfer_with",
    "CHANNELS",
    "METHODS",
    "MODELS",
    "Match",
    "PointTransfer",
    "RegistrationError",
    "Transfer",
    "check_points_in_slide",
    "open_scan",
    "feature_image",
    "group_points",
    "match_images",
    "register_patch",
    "register_slides",
    "transfer_points",
]
