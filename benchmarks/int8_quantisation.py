"""Static int8 quantisation of the bundled classifier in ONNX Runtime: speed and how much it moves.

Calibrates QDQ per-channel int8 on 300 real AMi-Br patches (randomly chosen from the cached
training samples), then on 256 others compares float32 and int8 ONNX Runtime (1 thread):
ms per crop, the largest change of the MF probability, and the share of MF decisions at the
model's threshold that flip. (Rejected for the product: see docs/benchmarks.md.)

Run::

    .venv/bin/python benchmarks/int8_quantisation.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def main() -> int:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
        shape_inference,
    )

    from mitoscope.classify import load_classifier
    from mitoscope.classify.classifier import _sigmoid, ort_session
    from mitoscope.classify.patches import centre_crop
    from mitoscope.train.samples import build_amibr_samples

    clf = load_classifier(device="cpu", backend="onnx")
    s = build_amibr_samples(common.SHARED_DATA / "amibr-train", cache_dir=common.CACHE)
    idx = np.random.default_rng(0).choice(len(s.is_mf), 556, replace=False)
    size = clf.patch_size_px
    x = centre_crop(s.patches[idx], size).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    m = centre_crop(s.masks[idx], size)[:, None].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):  # type: ignore[override]
            if self.i >= 300:
                return None
            d = {"x": x[self.i : self.i + 50], "m": m[self.i : self.i + 50]}
            self.i += 50
            return d

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(clf._onnx[0])
        shape_inference.quant_pre_process(str(fp32), str(pre))
        quantize_static(
            str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        sessions = {
            "float32": ort_session(fp32.read_bytes()),
            "int8": ort_session(int8.read_bytes()),
        }
        feed = {"x": x[300:], "m": m[300:]}
        probs, ms = {}, {}
        for name, sess in sessions.items():
            sess.run(None, feed)
            t = time.perf_counter()
            out = sess.run(None, feed)
            ms[name] = (time.perf_counter() - t) / len(x[300:]) * 1000
            probs[name] = _sigmoid(out[0]).reshape(-1)
    _ = ort
    diff = np.abs(probs["float32"] - probs["int8"]).max()
    flips = np.mean((probs["float32"] >= clf.threshold) != (probs["int8"] >= clf.threshold))
    print(f"ms per crop: float32 {ms['float32']:.2f}, int8 {ms['int8']:.2f}")
    print(f"largest MF probability change {diff:.3f}; decisions flipped {flips:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
