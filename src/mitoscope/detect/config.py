"""The detection options: one frozen dataclass, the source of the API's and the CLI's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError


@dataclass(frozen=True)
class DetectConfig:
    """Options of :func:`detect_slide` (sizes in micrometres).

    Attributes
    ----------
    tile_um, overlap_um : float
        Tile size and the overlap shared by neighbouring tiles (256 / 32 um = 1024 / 128 px at
        0.25 um/px, OMG-Net).
    work_mpp : float, optional
        Pixel size tiles are read at; default: the classifier's ``input_mpp``.
    threshold : float, optional
        Decision threshold on the MF probability; default: the classifier's validated one.
    atypical_threshold : float, optional
        Threshold on the atypical probability; default: the classifier's.
    floor : float
        Candidates with an MF probability below this are dropped (keeps outputs small); all
        others are kept for the MIDOG json / AP.
    batch_size : int
        Classifier batch size.
    workers : int
        Processes for tile reading + proposal (1 = in process).
    merge_radius_um : float
        Detections closer than this (from neighbouring tiles) are one object.
    thumb_mpp : float
        Pixel size of the tissue-detection thumbnail.
    contour_tolerance_px : float
        Polygon simplification tolerance in work pixels.
    hotspot_area_mm2, hpf10_area_mm2 : float
        Field areas of the two hotspots (2 mm², Fick et al./CAP; 10 HPF = 2.37 mm², SlideRunner).
    report : bool
        Write the HTML report with ``out_dir``.
    gallery_size : int
        Top detections shown (with Grad-CAM) in the report.
    mpp_tolerance : float
        When the slide's pixel size is within this relative distance of ``work_mpp`` (e.g.
        0.2527 vs 0.25), tiles are read natively instead of resampled.
    cascade : bool, optional
        Screen candidates with the tiny cascade model (:mod:`mitoscope.classify.screen`) before
        the classifier. Default (``None``): on when the classifier is the bundled default model.
    propose_mpp : float, optional
        Pixel size the proposer works at (the tile is downsampled from ``work_mpp``); default:
        the screen's pixel size (0.5 um/px) with the cascade, else ``work_mpp``.
    screen_model : str, optional
        Path of the cascade screen checkpoint; default: the bundled ``mitoscope_screen.pt``.
    stain_normalize : {"reinhard", "macenko"}, optional
        Stain-normalise every tile right after reading (before proposal, screen and
        classifier) to ``stain_target``'s colours (:mod:`mitoscope.stain.normalize`). Off by
        default: the bundled models were trained without it.
    stain_target : str, optional
        RGB image (PNG, JPEG, TIFF) whose stain the tiles are mapped to; needs
        ``stain_normalize``.
    """

    tile_um: float = 256.0
    overlap_um: float = 32.0
    work_mpp: float | None = None
    threshold: float | None = None
    atypical_threshold: float | None = None
    floor: float = 0.05
    batch_size: int = 256
    workers: int = 1
    merge_radius_um: float = 4.0
    thumb_mpp: float = 8.0
    contour_tolerance_px: float = 0.75
    hotspot_area_mm2: float = 2.0
    hpf10_area_mm2: float = 2.37
    report: bool = True
    gallery_size: int = 16
    mpp_tolerance: float = 0.03
    cascade: bool | None = None
    propose_mpp: float | None = None
    screen_model: str | None = None
    stain_normalize: str | None = None
    stain_target: str | None = None

    def __post_init__(self) -> None:
        if self.tile_um <= 0 or self.overlap_um < 0 or self.overlap_um >= self.tile_um:
            raise InvalidInputError(
                f"tile_um must be positive and larger than overlap_um (got {self.tile_um}, "
                f"{self.overlap_um})"
            )
        for name in ("threshold", "atypical_threshold", "floor"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= float(v) <= 1.0):
                raise InvalidInputError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if int(self.batch_size) < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if int(self.workers) < 1:
            raise InvalidInputError(f"--workers must be at least 1, got {self.workers}")
        if (self.stain_normalize is None) != (self.stain_target is None):
            raise InvalidInputError(
                "--stain-normalize METHOD and --stain-target IMAGE go together; give both"
            )
        if self.stain_normalize is not None:
            from ..stain.normalize import FIT_ON_TARGET

            if str(self.stain_normalize).strip().lower() not in FIT_ON_TARGET:
                raise InvalidInputError(
                    f"--stain-normalize must be one of {', '.join(FIT_ON_TARGET)}, got "
                    f"{self.stain_normalize!r}"
                )
        if self.propose_mpp is not None and not (0.05 <= float(self.propose_mpp) <= 10.0):
            raise InvalidInputError(
                f"--propose-mpp must be between 0.05 and 10 um/px, got {self.propose_mpp}"
            )


#: the defaults (``mitoscope detect`` takes its option defaults from here)
DEFAULTS = DetectConfig()

__all__ = ["DEFAULTS", "DetectConfig"]
