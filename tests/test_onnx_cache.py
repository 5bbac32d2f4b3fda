"""The exported ONNX graph is cached per checkpoint (user cache dir), checked on read, and safe
under concurrent writers; ONNX Runtime sessions are shared within a process."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from mitoscope.classify import backends
from mitoscope.io.cache import read_entry, user_cache_dir, write_entry


def _tiny_checkpoint(path: Path, *, seed: int = 0) -> Path:
    import torch

    from mitoscope.classify import create_model, save_checkpoint

    torch.manual_seed(seed)
    net = create_model("tiny_cnn", use_mask=True)
    return save_checkpoint(
        path,
        arch="tiny_cnn",
        members=[net.state_dict(), create_model("tiny_cnn", use_mask=True).state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=0.25,
        patch_size_px=32,
        threshold=0.5,
        atypical_threshold=0.5,
        name="tiny-random",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("MITOSCOPE_CACHE", str(d))
    return d


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the classifier's ONNX exports."""
    calls: list[int] = []
    real = backends.export_onnx

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(backends, "export_onnx", counting)  # member_graphs exports there
    return calls


def _patches(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.integers(0, 255, (n, 40, 40, 3), dtype=np.uint8)
    m = np.zeros((n, 40, 40), bool)
    m[:, 12:28, 12:28] = True
    return p, m


def test_second_load_reads_the_cached_graph_and_predicts_the_same(
    tmp_path: Path, cache: Path, exports: list[int]
) -> None:
    from mitoscope.classify import load_classifier

    ck = _tiny_checkpoint(tmp_path / "m.pt")
    a = load_classifier(ck, device="cpu", backend="onnx")
    assert len(exports) == 2  # two members, each exported once
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(files) == 2
    b = load_classifier(ck, device="cpu", backend="onnx")
    assert len(exports) == 2  # nothing exported again
    assert a._onnx == b._onnx
    p, m = _patches()
    np.testing.assert_array_equal(a.predict_patches(p, m)[0], b.predict_patches(p, m)[0])
    # the same probabilities as the torch members
    t = load_classifier(ck, device="cpu", backend="torch")
    np.testing.assert_allclose(a.predict_patches(p, m)[0], t.predict_patches(p, m)[0], atol=1e-5)


def test_key_follows_the_checkpoint_bytes_and_the_exporter_versions(
    tmp_path: Path, cache: Path, exports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mitoscope.classify import load_classifier

    load_classifier(_tiny_checkpoint(tmp_path / "a.pt", seed=0), device="cpu", backend="onnx")
    load_classifier(_tiny_checkpoint(tmp_path / "b.pt", seed=1), device="cpu", backend="onnx")
    assert len(exports) == 4  # other weights: other graphs
    real = backends.export_versions
    monkeypatch.setattr(backends, "export_versions", lambda: {**real(), "torch": "9.9"})
    load_classifier(tmp_path / "a.pt", device="cpu", backend="onnx")
    assert len(exports) == 6  # another torch exports again
    assert len(list((cache / "onnx").glob("*.onnx"))) == 6


def test_a_damaged_entry_is_rebuilt(tmp_path: Path, cache: Path, exports: list[int]) -> None:
    from mitoscope.classify import load_classifier

    ck = _tiny_checkpoint(tmp_path / "m.pt")
    good = load_classifier(ck, device="cpu", backend="onnx")._onnx
    for f in (cache / "onnx").glob("*.onnx"):
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte
        f.write_bytes(bytes(data))
    assert load_classifier(ck, device="cpu", backend="onnx")._onnx == good
    assert len(exports) == 4
    assert all(read_entry(f) is not None for f in (cache / "onnx").glob("*.onnx"))  # repaired


def test_the_screen_graph_is_cached_too(cache: Path) -> None:
    from mitoscope.classify.screen import load_screen

    a = load_screen()
    assert a.onnx is not None and len(list((cache / "onnx").glob("*.onnx"))) == 1
    b = load_screen()
    assert b.onnx == a.onnx


def test_unwritable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mitoscope.classify import load_classifier

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("MITOSCOPE_CACHE", str(blocker))
    clf = load_classifier(_tiny_checkpoint(tmp_path / "m.pt"), device="cpu", backend="onnx")
    assert clf.backend == "onnx" and len(clf._onnx) == 2


def test_cache_dir_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MITOSCOPE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "mitoscope"
    monkeypatch.setenv("MITOSCOPE_CACHE", str(tmp_path / "x"))
    assert user_cache_dir() == tmp_path / "x"


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path: Path) -> None:
    """Writers of different (complete) payloads race on one entry while readers read it: a
    read returns one complete payload or nothing, never a mixture or a truncated file."""
    path = tmp_path / "c" / "entry.onnx"
    payloads = [bytes([k]) * (2 << 20) for k in range(4)]  # 2 MB each
    bad: list[int] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        for _ in range(15):
            assert write_entry(path, payloads[k])

    def reader() -> None:
        while not stop.is_set():
            got = read_entry(path)
            if got is not None and got not in payloads:
                bad.append(len(got))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not bad
    assert read_entry(path) in payloads
    assert not list(path.parent.glob("*.tmp"))  # no temporary files left


def test_sessions_are_shared_per_graph_and_thread_count(tmp_path: Path, cache: Path) -> None:
    from mitoscope.classify import load_classifier

    ck = _tiny_checkpoint(tmp_path / "m.pt")
    a = load_classifier(ck, device="cpu", backend="onnx")
    b = load_classifier(ck, device="cpu", backend="onnx")
    g = a._onnx[0]
    assert backends.ort_session(g, threads=1) is backends.ort_session(b._onnx[0], threads=1)
    assert backends.ort_session(g, threads=1) is not backends.ort_session(g, threads=2)
