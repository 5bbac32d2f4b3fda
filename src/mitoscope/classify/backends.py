"""Inference backends: devices, torch and ONNX Runtime, and the export between them.

The classifier and the cascade screen share these: :func:`resolve_backend` (``auto`` / ``torch``
/ ``onnx``, or ``MITOSCOPE_BACKEND``), :func:`onnx_graph` / :func:`export_onnx` (a member as an
ONNX graph), :func:`cached_graph` (the exported graph kept in the user cache, so a checkpoint is
exported once per machine, not at every load), :func:`ort_session` (a quiet CPU session on a
set number of threads, shared by every load of the same graph in a process) and
:func:`sigmoid`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Without it PyTorch emulates bfloat16 and autocast is ~4x *slower* than float32 (ResNet18 on
    64 x 64 crops, AVX2 AMD EPYC: 82 vs 19 ms per crop under load; see docs/benchmarks.md,
    "Throughput").
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda requested but no CUDA GPU is available; use cpu")
    return dev


@dataclass(frozen=True)
class CpuDevice:
    """Stands for ``torch.device("cpu")`` in worker copies (pickles without torch)."""

    type: str = "cpu"


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (tanh form: no overflow warnings)."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def forward_onnx(
    sessions: list[Any], arr: np.ndarray, mk: np.ndarray | None, *, uses_mask: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Mean member probabilities (MF, atypical) of uint8 ``(N, S, S, 3)`` patches and bool
    masks through ONNX Runtime ``sessions`` (one per member): numpy only, no torch."""
    n, size = arr.shape[0], arr.shape[1]
    x = np.empty((n, 3, size, size), np.float32)
    np.multiply(arr.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x)
    feed = {"x": x}
    if uses_mask:
        m = np.zeros((n, 1, size, size), np.float32)
        if mk is not None:
            m[:, 0] = mk
        feed["m"] = m
    outs = [s.run(None, feed) for s in sessions]
    mfl = np.mean([sigmoid(o[0]) for o in outs], axis=0).reshape(-1)
    atl = np.mean([sigmoid(o[1]) for o in outs], axis=0).reshape(-1)
    return mfl.astype(np.float64), atl.astype(np.float64)


def forward_torch(
    models: list[Any],
    x: torch.Tensor,
    m: torch.Tensor | None,
    *,
    device_type: str,
    cpu_bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean member probabilities (MF, atypical) of a float batch through the torch members
    (float16 autocast on CUDA, bfloat16 on CPU with ``cpu_bf16``)."""
    import torch

    mf, at = [], []
    cuda = device_type == "cuda"
    use_amp = cuda or cpu_bf16
    dtype = torch.float16 if cuda else torch.bfloat16
    with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=use_amp):
        for net in models:
            out = net(x, m)
            mf.append(torch.sigmoid(out["mf"].float()))
            at.append(torch.sigmoid(out["atypical"].float()))
    mfp = torch.stack(mf).mean(0).cpu().numpy().astype(np.float64)
    atp = torch.stack(at).mean(0).cpu().numpy().astype(np.float64)
    return mfp, atp


def export_onnx(net: Any, *, patch_size_px: int, uses_mask: bool) -> bytes:
    """One member as an ONNX graph (inputs ``x`` (N,3,S,S) and ``m`` (N,1,S,S); logits out)."""
    import torch

    class Heads(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any, m: Any = None) -> tuple[Any, Any]:
            out = self.inner(x, m)
            return out["mf"], out["atypical"]

    s = int(patch_size_px)
    x = torch.rand(2, 3, s, s)
    args: tuple[Any, ...] = (x, torch.zeros(2, 1, s, s)) if uses_mask else (x,)
    names = ["x", "m"] if uses_mask else ["x"]
    return onnx_graph(Heads(net), args, input_names=names, output_names=["mf", "atypical"])


#: the ONNX opset of every exported graph (torch 2.14's default; part of the cache key)
ONNX_OPSET = 20
#: bump when the export wrappers change what a graph computes (invalidates cached graphs)
EXPORT_REVISION = 1


def onnx_graph(
    module: Any, args: tuple[Any, ...], *, input_names: list[str], output_names: list[str]
) -> bytes:
    """``module`` (eval mode) as ONNX bytes, with a dynamic batch axis on every input."""
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            buf,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={k: {0: "batch"} for k in input_names},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_versions() -> dict[str, Any]:
    """What besides the weights decides an exported graph's bytes: opset, exporter versions.

    Versions come from the installed distributions (importing ``onnx`` costs seconds).
    """
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def dist(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    return {
        "opset": ONNX_OPSET,
        "export_revision": EXPORT_REVISION,
        "torch": dist("torch"),
        "onnx": dist("onnx"),
        "mitoscope": __version__,
    }


def graph_cache_path(key: dict[str, Any]) -> Path:
    """Where the graph for ``key`` (checkpoint hash, member, input shape) is cached."""
    from ..io.cache import user_cache_dir

    blob = json.dumps({**key, **export_versions()}, sort_keys=True, default=str)
    name = hashlib.sha256(blob.encode()).hexdigest()[:40]
    return user_cache_dir() / "onnx" / f"{name}.onnx"


def cached_graph(key: dict[str, Any] | None, build: Callable[[], bytes]) -> bytes:
    """The ONNX graph for ``key`` from the user cache, or ``build()`` it and store it.

    ``key`` must name everything the graph depends on besides :func:`export_versions` (which
    is added): the checkpoint file's SHA-256, the member, the input size and mask input. With
    ``key=None`` (no checkpoint file) the graph is built and not cached. Damaged entries read
    as missing; concurrent writers are safe (:mod:`mitoscope.io.cache`).
    """
    if key is None:
        return build()
    from ..io.cache import read_entry, write_entry

    path = graph_cache_path(key)
    graph = read_entry(path)
    if graph is None:
        graph = build()
        write_entry(path, graph)
    return graph


def member_graphs(
    nets: list[Any],
    *,
    kind: str,
    checkpoint_sha256: str | None,
    arch: str,
    patch_size_px: int,
    uses_mask: bool,
) -> list[bytes]:
    """The ONNX graph of each ensemble member of a ``kind`` model ("classifier", "atypical"),
    from the user cache under the checkpoint file's ``checkpoint_sha256`` (not cached without
    it). A member is exported in the contiguous memory format and left in ``channels_last``
    (``nets`` is updated in place)."""
    import torch

    def export(i: int) -> bytes:
        net = nets[i].to(memory_format=torch.contiguous_format)
        try:
            return export_onnx(net, patch_size_px=int(patch_size_px), uses_mask=uses_mask)
        finally:
            nets[i] = net.to(memory_format=torch.channels_last)

    return [
        cached_graph(
            None
            if checkpoint_sha256 is None
            else {
                "kind": kind,
                "checkpoint_sha256": checkpoint_sha256,
                "member": i,
                "arch": arch,
                "patch_size_px": int(patch_size_px),
                "uses_mask": uses_mask,
            },
            lambda i=i: export(i),
        )
        for i in range(len(nets))
    ]


def onnx_available() -> bool:
    """ONNX export and ONNX Runtime are importable (both are core dependencies)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve_backend(backend: str | None = "auto") -> str:
    """``auto``, ``torch`` or ``onnx``: the CPU inference backend asked for (``auto`` defers
    to the ``MITOSCOPE_BACKEND`` environment variable); classifier and screen share it."""
    want = (backend or "auto").strip().lower()
    if want == "auto":
        want = os.environ.get("MITOSCOPE_BACKEND", "auto").strip().lower() or "auto"
    if want not in ("auto", "torch", "onnx"):
        raise InvalidInputError(f"unknown classifier backend {backend!r}; use auto, torch or onnx")
    return want


#: sessions by (graph digest, threads): loading the same checkpoint again in a process (one
#: classifier per cohort slide, tests) reuses them; ONNX Runtime sessions are thread-safe
_SESSIONS: OrderedDict[tuple[str, int], Any] = OrderedDict()
_SESSIONS_MAX = 8
_SESSIONS_LOCK = threading.Lock()


def ort_session(graph: bytes, *, threads: int = 1) -> Any:
    """A quiet CPU ONNX Runtime session on ``threads`` intra-op threads (shared per process)."""
    n = max(1, int(threads))
    key = (hashlib.sha256(graph).hexdigest(), n)
    with _SESSIONS_LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    with _SESSIONS_LOCK:
        sess = _SESSIONS.setdefault(key, sess)
        _SESSIONS.move_to_end(key)
        while len(_SESSIONS) > _SESSIONS_MAX:
            _SESSIONS.popitem(last=False)
    return sess


__all__ = [
    "ONNX_OPSET",
    "CpuDevice",
    "cached_graph",
    "cpu_has_native_bf16",
    "export_onnx",
    "export_versions",
    "file_sha256",
    "forward_onnx",
    "forward_torch",
    "graph_cache_path",
    "member_graphs",
    "onnx_available",
    "onnx_graph",
    "ort_session",
    "resolve_backend",
    "resolve_device",
    "sigmoid",
]
