"""The dedicated atypical-vs-normal classifier: its checkpoint, loading and use in detection.

The candidate classifier decides *whether* an object is a mitotic figure from a small patch
(64 px at 0.25 um/px for the bundled model: 16 um, which cuts through anaphases and multipolar
figures). A dedicated second-stage model then decides *atypical vs normal* for every mitosis
from its own, larger crop (default 128 px at 0.25 um/px = 32 um, the AMi-Br crops' field),
trained by :mod:`mitoscope.train.atypical` (``mitoscope train-atypical``).

- :func:`load_atypical_model` reads a ``mitoscope-atypical`` checkpoint (the bundled
  ``mitoscope/data/mitoscope_atypical.pt`` when installed, else a user's path) into an
  :class:`AtypicalModel`; scoring reuses :class:`~mitoscope.classify.classifier.Classifier`
  (batches, ONNX Runtime on the CPU, dihedral test-time views, pickling for workers).
- :class:`WithAtypicalModel` wraps a candidate classifier: MF probabilities from it, the
  atypical probability of every mitosis (``mf >= atypical_min_mf``) from the dedicated model,
  on patches cut at the dedicated model's own size from the tile (``cut_size_px``), resampled
  to its pixel size when the two models' pixel sizes differ. Non-mitoses get NaN (not scored).
- :func:`attach_atypical_model` is what the CLI and :func:`~mitoscope.detect.detect_slide`
  call: ``"auto"`` uses the bundled model when it is installed, ``"head"`` keeps the
  classifier's own atypical head, anything else is a checkpoint path.

Checkpoint (``torch.save``, loaded with ``weights_only=True``)::

    {"format": "mitoscope-atypical", "version": 1, "name": ..., "arch": "effnet_lite0",
     "input_mpp": 0.25, "patch_size_px": 128, "threshold": ..., "tta_views": 8,
     "members": [state_dict (float16), ...], "card": {...}}

Over 400 lines: the dedicated model's checkpoint (write, read, check), the :class:`AtypicalModel`
that scores patches and the :class:`WithAtypicalModel` wrapper that puts it behind the classifier
protocol are one feature, reached by detection, ``classify`` and training through this module's
names. A future split would move the wrapper (:class:`WithAtypicalModel`,
:func:`attach_atypical_model`, :func:`atypical_source`, about 200 lines) into its own module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelLoadError
from .checkpoint import (
    Field,
    ensemble_fields,
    ensemble_header,
    known_arch,
    load_members,
    read_checkpoint,
    write_members_blob,
)
from .patches import CandidateScoring, centre_crop, rgb_patches

FORMAT = "mitoscope-atypical"
VERSION = 1
#: file name of the bundled dedicated atypical model inside ``mitoscope/data``
DEFAULT_ATYPICAL_MODEL = "mitoscope_atypical.pt"
#: ``--atypical-model`` value that keeps the candidate classifier's own atypical head
HEAD = "head"

ATYPICAL_FIELDS: dict[str, Field] = ensemble_fields(
    input_mpp=("float", True, (0.05, 20.0)),
    patch_size_px=("int", True, (16, 1024)),
    threshold=("float", True, (0.0, 1.0)),
    tta_views=("int", False, (1, 8)),
)


def default_atypical_model_path() -> Path:
    """Path of the bundled dedicated atypical model (it may not be installed)."""
    return Path(__file__).resolve().parents[1] / "data" / DEFAULT_ATYPICAL_MODEL


def build_network(arch: str, *, size_px: int, pretrained: bool = False) -> Any:
    """A registered architecture (:mod:`~mitoscope.classify.registry`) for RGB crops of
    ``size_px`` (no mask branch); only its ``atypical`` head is trained and used.

    ``pretrained`` loads the ImageNet weights that ship offline (EfficientNet-Lite0 only).
    """
    from .registry import get_spec

    spec = get_spec(arch)
    kwargs: dict[str, Any] = {"use_mask": False, "n_subtypes": 0}
    if spec.factory == "networks:effnet_lite0":
        kwargs.update(image_size=int(size_px), pretrained=bool(pretrained))
    elif pretrained:
        raise InvalidInputError(
            f"{arch} has no ImageNet weights offline; use effnet_lite0 or pretrained = false"
        )
    net = spec.build(**kwargs)
    net.arch = arch
    return net


def save_atypical_model(
    path: str | Path,
    *,
    arch: str,
    members: list[dict[str, Any]],
    input_mpp: float,
    patch_size_px: int,
    threshold: float,
    tta_views: int = 1,
    card: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write a dedicated atypical checkpoint atomically (members stored as float16)."""
    path = Path(path)
    fields = {
        **ensemble_header(path, fmt=FORMAT, version=VERSION, name=name, arch=arch),
        "input_mpp": float(input_mpp),
        "patch_size_px": int(patch_size_px),
        "threshold": float(threshold),
        "tta_views": int(tta_views),
    }
    return write_members_blob(path, fields, members, card)


@dataclass
class AtypicalModel:
    """A dedicated atypical-vs-normal classifier (an ensemble with its validated threshold).

    ``engine`` is the :class:`~mitoscope.classify.classifier.Classifier` that scores the
    patches (its ``atypical`` output, averaged over ``tta_views`` dihedral views).
    """

    name: str
    arch: str
    input_mpp: float
    patch_size_px: int
    threshold: float
    tta_views: int
    engine: Any
    card: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def describe(self) -> str:
        """One line naming the model, for outputs (``atypical_model``)."""
        return (
            f"{self.name} (dedicated {self.arch}, {self.patch_size_px} px at "
            f"{self.input_mpp:g} um/px, {self.tta_views} view{'s' if self.tta_views > 1 else ''})"
        )

    def predict_patches(self, patches: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
        """Atypical probability of ``(N, S, S, 3)`` uint8 patches at :attr:`input_mpp`, each
        centred on a mitotic figure (larger patches are centre-cropped)."""
        arr = rgb_patches(patches)
        if len(arr) == 0:
            return np.zeros(0)
        _, at = self.engine.predict_patches(arr, None, batch_size=int(batch_size))
        return at

    def predict_images(
        self, images: list[np.ndarray], *, mpp: float, batch_size: int = 128
    ) -> np.ndarray:
        """Atypical probability of crops each centred on one figure, at pixel size ``mpp``."""
        from .crops import centred_input

        if not images:
            return np.zeros(0)
        patches = [
            centred_input(
                im,
                mpp=float(mpp),
                input_mpp=self.input_mpp,
                size_px=self.patch_size_px,
                with_mask=False,
            )[0]
            for im in images
        ]
        return self.predict_patches(np.stack(patches), batch_size=batch_size)

    def fingerprint(self) -> str:
        return str(self.engine.fingerprint())

    def for_workers(self) -> AtypicalModel:
        return replace(self, engine=self.engine.for_workers())


def atypical_model_from_networks(
    nets: list[Any],
    *,
    arch: str,
    input_mpp: float,
    patch_size_px: int,
    threshold: float = 0.5,
    tta_views: int = 1,
    name: str = "atypical",
    card: dict[str, Any] | None = None,
    device: Any = None,
    backend: str = "torch",
    path: str = "",
    checkpoint_sha256: str | None = None,
) -> AtypicalModel:
    """An :class:`AtypicalModel` around trained networks (eval mode, on ``device``).

    With ``backend="onnx"`` the members are exported to ONNX Runtime graphs, cached in the
    user cache under ``checkpoint_sha256`` (the file they were loaded from) when it is given.
    """
    import torch

    from .backends import member_graphs, resolve_device
    from .classifier import Classifier

    dev = resolve_device("auto") if device is None else device
    nets = [n.eval().to(dev) for n in nets]
    graphs: list[bytes] = []
    if backend == "onnx":
        graphs = member_graphs(
            nets,
            kind="atypical",
            checkpoint_sha256=checkpoint_sha256,
            arch=arch,
            patch_size_px=int(patch_size_px),
            uses_mask=False,
        )
    nets = [n.to(memory_format=torch.channels_last) for n in nets]
    engine = Classifier(
        name=name,
        arch=arch,
        models=nets,
        input_mpp=float(input_mpp),
        patch_size_px=int(patch_size_px),
        uses_mask=False,
        has_atypical=True,
        threshold=0.5,  # the MF output of these networks is untrained and never used
        atypical_threshold=float(threshold),
        device=dev,
        backend="onnx" if graphs else "torch",
        atypical_views=int(tta_views),
        _onnx=graphs,
    )
    return AtypicalModel(
        name=name,
        arch=arch,
        input_mpp=float(input_mpp),
        patch_size_px=int(patch_size_px),
        threshold=float(threshold),
        tta_views=int(tta_views),
        engine=engine,
        card=dict(card or {}),
        path=path,
    )


def load_atypical_model(
    path: str | Path | None = None, *, device: str = "auto", backend: str = "auto"
) -> AtypicalModel:
    """Load a dedicated atypical checkpoint (``None``: the bundled one).

    Raises
    ------
    ModelLoadError
        The file is missing, not a mitoscope atypical model, corrupt, or its weights do not
        match the architecture it names.
    """
    from .backends import file_sha256, onnx_available, resolve_backend, resolve_device

    p = default_atypical_model_path() if path is None else Path(path)
    blob = read_checkpoint(
        p, fmt=FORMAT, version=VERSION, what="atypical model file", kind="atypical model",
        fields=ATYPICAL_FIELDS,
    )  # fmt: skip
    arch = known_arch(p, str(blob["arch"]))
    members = blob.get("members") or []
    if not members or not all(isinstance(sd, dict) for sd in members):
        raise ModelLoadError(f"{p} holds no model weights (members must be state dicts)")
    size = int(blob["patch_size_px"])
    nets = load_members(
        p, arch, members, lambda: build_network(arch, size_px=size, pretrained=False)
    )
    dev = resolve_device(device)
    want = resolve_backend(backend)
    use_onnx = dev.type == "cpu" and (want == "onnx" or (want == "auto" and onnx_available()))
    return atypical_model_from_networks(
        nets,
        arch=arch,
        input_mpp=float(blob["input_mpp"]),
        patch_size_px=size,
        threshold=float(blob["threshold"]),
        tta_views=int(blob.get("tta_views") or 1),
        name=str(blob.get("name") or p.stem),
        card=dict(blob.get("card") or {}),
        device=dev,
        backend="onnx" if use_onnx else "torch",
        path=str(p),
        checkpoint_sha256=file_sha256(p) if use_onnx else None,
    )


def resample_patches(patches: np.ndarray, scale: float, size_px: int) -> np.ndarray:
    """Resample ``(N, S, S, 3)`` patches by ``scale`` (bilinear, anti-aliased when shrinking)
    and centre-crop them to ``size_px``."""
    arr = np.asarray(patches)
    if abs(float(scale) - 1.0) > 1e-3:
        from skimage.transform import rescale

        arr = np.stack(
            [
                np.clip(
                    rescale(
                        p, scale, order=1, channel_axis=-1, preserve_range=True,
                        anti_aliasing=scale < 1,
                    ) + 0.5, 0, 255,
                ).astype(np.uint8)
                for p in arr
            ]
        )  # fmt: skip
    return centre_crop(arr, int(size_px))


class WithAtypicalModel(CandidateScoring):
    """A candidate classifier whose atypical call comes from a dedicated model.

    MF probabilities (and the decision threshold) are the wrapped ``base`` classifier's; the
    atypical probability of each mitosis (``mf >= atypical_min_mf``; every patch when it is
    not given) is the dedicated model's, on the patch cut at :attr:`cut_size_px` (the larger
    of both models' fields, in the base model's pixels) and resampled to its pixel size.
    Patches below ``atypical_min_mf`` get NaN: they are not mitoses and are not scored.
    """

    def __init__(self, base: Any, atypical: AtypicalModel) -> None:
        self.base = base
        self.atypical_model = atypical

    # the candidate classifier's face (detection, report, cohort read these)
    @property
    def name(self) -> str:
        return str(getattr(self.base, "name", type(self.base).__name__))

    @property
    def arch(self) -> str:
        return str(getattr(self.base, "arch", ""))

    @property
    def input_mpp(self) -> float:
        return float(self.base.input_mpp)

    @property
    def threshold(self) -> float:
        return float(self.base.threshold)

    @property
    def atypical_threshold(self) -> float:
        return float(self.atypical_model.threshold)

    @property
    def has_atypical(self) -> bool:
        return True

    @property
    def uses_mask(self) -> bool:
        return bool(getattr(self.base, "uses_mask", False))

    @property
    def patch_size_px(self) -> int:
        return int(self.base.patch_size_px)

    @property
    def atypical_views(self) -> int:
        return int(self.atypical_model.tta_views)

    @property
    def models(self) -> list[Any]:
        return list(getattr(self.base, "models", None) or [])

    @property
    def device(self) -> Any:
        return getattr(self.base, "device", None)

    @property
    def card(self) -> dict[str, Any]:
        return dict(getattr(self.base, "card", None) or {})

    def gradcam_layer(self, model: Any) -> Any:
        return self.base.gradcam_layer(model)

    @property
    def cut_size_px(self) -> int:
        """Side of the patch cut per candidate (base model pixels): both fields fit in it."""
        at = self.atypical_model
        need = math.ceil(at.patch_size_px * at.input_mpp / self.input_mpp - 1e-6)
        return max(int(self.base.patch_size_px), int(need))

    @property
    def atypical_source(self) -> str:
        """Which model makes the atypical call (written to the outputs)."""
        return self.atypical_model.describe()

    def fingerprint(self) -> str:
        import hashlib

        base = self.base.fingerprint() if hasattr(self.base, "fingerprint") else self.name
        h = hashlib.sha256(f"{base}|{self.atypical_model.fingerprint()}".encode())
        return h.hexdigest()[:16]

    def for_workers(self) -> WithAtypicalModel:
        fn = getattr(self.base, "for_workers", None)
        base = fn() if callable(fn) else self.base
        return WithAtypicalModel(base, self.atypical_model.for_workers())

    def predict_patches(
        self,
        patches: np.ndarray,
        masks: np.ndarray | None = None,
        *,
        batch_size: int = 256,
        atypical_min_mf: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mf_probability, atypical_probability)`` of patches at :attr:`input_mpp` of at
        least :attr:`cut_size_px` (centred on the candidates)."""
        arr = rgb_patches(patches)
        n = arr.shape[0]
        if n == 0:
            return np.zeros(0), np.zeros(0)
        size = int(self.base.patch_size_px)
        mk = None if masks is None else centre_crop(np.asarray(masks), size)
        # the base's own atypical views are skipped (min MF above any probability)
        kw = (
            {"atypical_min_mf": math.inf}
            if int(getattr(self.base, "atypical_views", 1)) > 1
            else {}
        )
        mf, _ = self.base.predict_patches(centre_crop(arr, size), mk, batch_size=batch_size, **kw)
        at = np.full(n, np.nan)
        sel = np.arange(n) if atypical_min_mf is None else np.flatnonzero(mf >= atypical_min_mf)
        if len(sel):
            a = self.atypical_model
            scale = self.input_mpp / a.input_mpp
            need = math.ceil(a.patch_size_px / scale - 1e-6)
            if arr.shape[1] < need or arr.shape[2] < need:
                raise InvalidInputError(
                    f"patches are {arr.shape[1]} px but the atypical model needs {need} px at "
                    f"{self.input_mpp:g} um/px; cut them at cut_size_px"
                )
            crop = centre_crop(arr[sel], min(arr.shape[1], need + 2))
            at[sel] = a.predict_patches(
                resample_patches(crop, scale, a.patch_size_px), batch_size=batch_size
            )
        return mf, at


def atypical_source(classifier: Any) -> str:
    """Which model makes a classifier's atypical call: the dedicated model's description, or
    ``"<name> atypical head"`` (empty when it has no atypical output)."""
    src = getattr(classifier, "atypical_source", None)
    if src:
        return str(src)
    if not bool(getattr(classifier, "has_atypical", True)):
        return ""
    return f"{getattr(classifier, 'name', type(classifier).__name__)} atypical head"


def attach_atypical_model(
    classifier: Any, atypical: str | Path | None = "auto", *, device: str = "auto"
) -> Any:
    """The classifier detection and ``mitoscope classify`` use, given ``--atypical-model``.

    ``"auto"`` / ``None``: the bundled dedicated model when it is installed, else the
    classifier as it is (its own atypical head); ``"head"``: the classifier as it is; any other
    value: a dedicated atypical checkpoint's path.
    """
    if isinstance(classifier, WithAtypicalModel):
        classifier = classifier.base
    spec = "auto" if atypical is None else str(atypical)
    if spec.strip().lower() == HEAD:
        return classifier
    if spec.strip().lower() == "auto":
        if not default_atypical_model_path().is_file():
            return classifier
        model = load_atypical_model(None, device=device)
    else:
        model = load_atypical_model(Path(spec), device=device)
    return WithAtypicalModel(classifier, model)


__all__ = [
    "ATYPICAL_FIELDS",
    "DEFAULT_ATYPICAL_MODEL",
    "FORMAT",
    "HEAD",
    "AtypicalModel",
    "WithAtypicalModel",
    "atypical_model_from_networks",
    "atypical_source",
    "attach_atypical_model",
    "build_network",
    "default_atypical_model_path",
    "load_atypical_model",
    "resample_patches",
    "save_atypical_model",
]
