"""The inference-side classifier: an ensemble of networks plus its validated thresholds.

:class:`Classifier` scores patches (members averaged; optional atypical test-time views) with
the torch or ONNX Runtime backend; :func:`load_classifier` builds one from a checkpoint. The
checkpoint format is in :mod:`~mitoscope.classify.checkpoint`, the backends in
:mod:`~mitoscope.classify.backends`, the ensemble policy in :mod:`~mitoscope.classify.ensemble`;
their public names stay importable from here.

Over 400 lines: the :class:`Classifier` (pickling for workers, fingerprint, batching, test-time
views, both backends' dispatch) and its loader are one concept that other modules reach through
this module's names; what could leave (checkpoint I/O, backends, ensemble policy) has left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelLoadError
from .backends import (
    CpuDevice,
    cpu_has_native_bf16,
    export_onnx,
    file_sha256,
    forward_onnx,
    forward_torch,
    member_graphs,
    onnx_available,
    onnx_graph,
    ort_session,
    resolve_backend,
    resolve_device,
    sigmoid,
)
from .checkpoint import (
    ARCH_KWARGS_FIELDS,
    CLASSIFIER_FIELDS,
    DEFAULT_MODEL,
    FORMAT,
    VERSION,
    check_fields,
    default_model_path,
    known_arch,
    load_members,
    read_checkpoint,
    save_checkpoint,
)
from .ensemble import atypical_tta, dihedral_views
from .patches import CandidateScoring, rgb_patches

#: former private names, kept for scripts that import them from here
_sigmoid = sigmoid
_dihedral_views = dihedral_views
_CpuDevice = CpuDevice


@dataclass
class Classifier(CandidateScoring):
    """An ensemble of candidate classifiers with validated decision thresholds.

    Use :func:`load_classifier` to build one from a checkpoint.
    """

    name: str
    arch: str
    models: list[Any]
    input_mpp: float
    patch_size_px: int
    uses_mask: bool
    has_atypical: bool
    threshold: float
    atypical_threshold: float
    device: Any
    card: dict[str, Any] = field(default_factory=dict)
    #: bfloat16 autocast on CPU (fast for ResNet18; slow for depthwise convolutions)
    cpu_bf16: bool = False
    #: "onnx" (ONNX Runtime on the CPU, the members exported at load time) or "torch"
    backend: str = "torch"
    #: dihedral views averaged for the atypical probability (1: none; 4: the rotations; 8: and
    #: their mirror images);
    #: the atypical threshold in the checkpoint was chosen with this many views
    atypical_views: int = 1
    _sessions: dict[int, list[Any]] = field(default_factory=dict, repr=False)
    _onnx: list[bytes] = field(default_factory=list, repr=False)

    def gradcam_layer(self, model: Any) -> Any:
        """The last convolutional block of ``model`` (a member of :attr:`models`)."""
        return model.cam_layer

    @property
    def cut_size_px(self) -> int:
        """Side of the patch cut per candidate: the network's input (:attr:`patch_size_px`)."""
        return int(self.patch_size_px)

    # ------------------------------------------------------------------ prediction
    def __getstate__(self) -> dict[str, Any]:
        import pickle

        state = dict(self.__dict__)
        state["_sessions"] = {}  # ONNX Runtime sessions do not pickle; rebuilt on first use
        # plain bytes: multiprocessing's pickler would share every tensor through its own file
        # descriptor (hundreds for an EfficientNet; the forkserver refuses more than 256)
        state["models"] = pickle.dumps(self.models, protocol=pickle.HIGHEST_PROTOCOL)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import pickle

        if isinstance(state.get("models"), bytes):
            state = dict(state, models=pickle.loads(state["models"]))
        self.__dict__.update(state)

    def fingerprint(self) -> str:
        """A digest of what decides this classifier's outputs: weights, thresholds, views.

        Resumed cohort runs compare it, so a model retrained under the same file name redoes
        the slides.
        """
        import hashlib

        h = hashlib.sha256()
        h.update(
            repr(
                (
                    self.arch,
                    self.input_mpp,
                    self.patch_size_px,
                    self.uses_mask,
                    round(float(self.threshold), 12),
                    round(float(self.atypical_threshold), 12),
                    int(self.atypical_views),
                )
            ).encode()
        )
        if self.models:
            for net in self.models:
                for k, v in sorted(net.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
        else:
            for g in self._onnx:
                h.update(g)
        return h.hexdigest()[:16]

    def for_workers(self) -> Classifier:
        """A copy for worker processes: with ONNX Runtime, without the torch members.

        Unpickling it does not import torch (~0.5 GB per process); it predicts exactly as this
        one. Torch-backed classifiers are returned as they are.
        """
        from dataclasses import replace

        if self.backend != "onnx" or not self._onnx:
            return self
        return replace(self, models=[], _sessions={}, device=CpuDevice())

    def _ort_sessions(self) -> list[Any]:
        """One ONNX Runtime session per member, for the current torch thread count (1 when
        torch is not loaded: a worker process)."""
        import sys

        torch = sys.modules.get("torch")
        n = max(1, torch.get_num_threads()) if torch is not None else 1
        if n not in self._sessions:
            self._sessions[n] = [ort_session(b, threads=n) for b in self._onnx]
        return self._sessions[n]

    def predict_patches(
        self,
        patches: np.ndarray,
        masks: np.ndarray | None = None,
        *,
        batch_size: int = 256,
        atypical_min_mf: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble probabilities for patches at :attr:`input_mpp`.

        Parameters
        ----------
        patches : (N, H, W, 3) uint8
            Centred patches; larger than :attr:`patch_size_px` is centre-cropped.
        masks : (N, H, W) bool, optional
            The candidates' binary masks (needed for good results when :attr:`uses_mask`;
            absent masks are treated as empty).
        batch_size : int
        atypical_min_mf : float, optional
            With :attr:`atypical_views` > 1, average the atypical probability over the extra
            views only for patches whose MF probability is at least this (detection passes its
            threshold: only mitoses need it); default: every patch.

        Returns
        -------
        mf_probability, atypical_probability : (N,) float64
            ``atypical_probability`` is NaN when the model has no atypical head.
        """
        from .patches import centre_crop

        arr = rgb_patches(patches)
        n = arr.shape[0]
        if n == 0:
            return np.zeros(0), np.zeros(0)
        size = self.patch_size_px
        arr = centre_crop(arr, size)
        if masks is not None:
            mk = np.asarray(masks)
            if mk.shape[0] != n or mk.ndim != 3:
                raise InvalidInputError(f"masks must be (N, H, W) with N={n}, got shape {mk.shape}")
            mk = centre_crop(mk, size)
        else:
            mk = None
        mf_all, at_all = self._score(arr, mk, batch_size)
        if not self.has_atypical:
            at_all[:] = np.nan
        elif int(self.atypical_views) > 1:
            sel = (
                np.arange(n)
                if atypical_min_mf is None
                else np.flatnonzero(mf_all >= atypical_min_mf)
            )
            if len(sel):
                at_all[sel] = self._atypical_tta(
                    arr[sel], None if mk is None else mk[sel], batch_size, identity=at_all[sel]
                )
        return mf_all, at_all

    def _score(
        self, arr: np.ndarray, mk: np.ndarray | None, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One view: ensemble probabilities of centre-cropped patches, in batches."""
        n, size = arr.shape[0], self.patch_size_px
        mf_all, at_all = np.empty(n), np.empty(n)
        for s in range(0, n, int(batch_size)):
            e = min(n, s + int(batch_size))
            if self.backend == "onnx" and self._onnx:
                mf_all[s:e], at_all[s:e] = forward_onnx(
                    self._ort_sessions(),
                    arr[s:e],
                    None if mk is None else mk[s:e],
                    uses_mask=self.uses_mask,
                )
                continue
            import torch

            x = torch.from_numpy(np.ascontiguousarray(arr[s:e])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            x = x.contiguous(memory_format=torch.channels_last)
            m = None
            if self.uses_mask:
                if mk is None:
                    m = torch.zeros((e - s, 1, size, size), device=self.device)
                else:
                    m = torch.from_numpy(np.ascontiguousarray(mk[s:e])).to(self.device)
                    m = m[:, None].float()
            mf_all[s:e], at_all[s:e] = forward_torch(
                self.models, x, m, device_type=self.device.type, cpu_bf16=self.cpu_bf16
            )
        return mf_all, at_all

    def _atypical_tta(
        self,
        arr: np.ndarray,
        mk: np.ndarray | None,
        batch_size: int,
        *,
        identity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Atypical probability averaged over the first :attr:`atypical_views` dihedral views
        (:func:`~mitoscope.classify.ensemble.atypical_tta`)."""
        return atypical_tta(
            lambda a, m: self._score(a, m, batch_size)[1],
            arr,
            mk,
            views=int(self.atypical_views),
            identity=identity,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (members stored as float16)."""
        return save_checkpoint(
            path,
            arch=self.arch,
            members=[m.state_dict() for m in self.models],
            arch_kwargs={
                "use_mask": self.uses_mask,
                "n_subtypes": int(self.card.get("n_subtypes", 0)),
            },
            input_mpp=self.input_mpp,
            patch_size_px=self.patch_size_px,
            threshold=self.threshold,
            atypical_threshold=self.atypical_threshold,
            has_atypical=self.has_atypical,
            card=self.card,
            name=self.name,
            atypical_views=self.atypical_views,
        )


def load_classifier(
    path: str | Path | None = None,
    *,
    device: str = "auto",
    cpu_bf16: bool | None = None,
    backend: str = "auto",
) -> Classifier:
    """Load a classifier checkpoint (``None`` -> the bundled default model).

    ``backend``: ``"auto"`` runs CPU inference in ONNX Runtime (~4x faster than eager torch on
    the bundled model) unless bfloat16 autocast is on or ``MITOSCOPE_BACKEND=torch`` is set;
    ``"torch"`` or ``"onnx"`` force one. The members are exported to ONNX once per checkpoint
    file (keyed by its SHA-256, the opset and the exporter versions) and kept in the user cache
    (:func:`~mitoscope.classify.backends.cached_graph`); later loads read the graph back.
    The torch members stay loaded either way (Grad-CAM, CUDA).

    Raises
    ------
    ModelLoadError
        The file is missing, not a mitoscope classifier, corrupt, or its weights do not match
        the architecture it names.
    """
    import torch

    from .registry import create_model

    p = default_model_path() if path is None else Path(path)
    if path is None and not p.is_file():
        raise ModelLoadError(
            f"the bundled default model is missing ({p}); reinstall mitoscope or pass --model"
        )
    blob = read_checkpoint(
        p, fmt=FORMAT, version=VERSION, what="model file", kind="classifier",
        fields=CLASSIFIER_FIELDS,
    )  # fmt: skip
    check_fields(blob.get("arch_kwargs") or {}, ARCH_KWARGS_FIELDS, path=p, kind="classifier")
    arch = known_arch(p, str(blob.get("arch")))
    kwargs = dict(blob.get("arch_kwargs") or {})
    members = blob.get("members") or []
    if not members:
        raise ModelLoadError(f"{p} holds no model weights")
    if not all(isinstance(sd, dict) for sd in members):
        raise ModelLoadError(f"{p}: 'members' must be a list of state dicts; re-save the model")
    dev = resolve_device(device)
    nets = load_members(
        p,
        arch,
        members,
        lambda: create_model(
            arch,
            use_mask=bool(kwargs.get("use_mask", True)),
            n_subtypes=int(kwargs.get("n_subtypes", 0)),
            pretrained=False,
        ),
    )
    models = [net.eval().to(dev).to(memory_format=torch.channels_last) for net in nets]
    if cpu_bf16 is None:
        cpu_bf16 = arch == "omgnet_resnet18" and cpu_has_native_bf16()
    card = dict(blob.get("card") or {})
    uses_mask = bool(kwargs.get("use_mask", True))
    want = resolve_backend(backend)
    use_onnx = dev.type == "cpu" and (
        want == "onnx" or (want == "auto" and not cpu_bf16 and onnx_available())
    )
    graphs = []
    if use_onnx:
        graphs = member_graphs(
            models,
            kind="classifier",
            checkpoint_sha256=file_sha256(p),
            arch=arch,
            patch_size_px=int(blob["patch_size_px"]),
            uses_mask=uses_mask,
        )
    return Classifier(
        backend="onnx" if use_onnx else "torch",
        _onnx=graphs,
        name=str(blob.get("name", p.stem)),
        arch=arch,
        models=models,
        input_mpp=float(blob["input_mpp"]),
        patch_size_px=int(blob["patch_size_px"]),
        uses_mask=uses_mask,
        has_atypical=bool(blob.get("has_atypical", True)),
        threshold=float(blob["threshold"]),
        atypical_threshold=float(blob["atypical_threshold"]),
        atypical_views=int(blob.get("atypical_views", 1)),
        device=dev,
        card=card,
        cpu_bf16=bool(cpu_bf16),
    )


__all__ = [
    "DEFAULT_MODEL",
    "FORMAT",
    "VERSION",
    "Classifier",
    "cpu_has_native_bf16",
    "default_model_path",
    "export_onnx",
    "load_classifier",
    "onnx_available",
    "onnx_graph",
    "ort_session",
    "read_checkpoint",
    "resolve_backend",
    "resolve_device",
    "save_checkpoint",
]
