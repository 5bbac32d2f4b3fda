"""Bad input as users meet it (issue 18): every failure is exit 2, exactly one line on stderr
(``mitoscope: error: ...``), no traceback, and nothing left in ``--out``.

The corpus drives the real CLI (``mitoscope.cli.main`` in-process; a subprocess where stderr
must be seen exactly as a terminal does, e.g. Pillow's warnings). Real data where the issue
met the problem: a CMYK TIFF, a 16-bit greyscale PNG and a float32 TIFF made from a real
tissue image (``tissue/images``), and the real SVS truncated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from test_pipeline import make_tiny_classifier

TISSUE = "TCGA-18-5592-01Z-00-DX1.png"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    make_tiny_classifier(path, input_mpp=0.25, bias=-10.0, threshold=0.05)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> dict[str, Path]:
    """Bad and unusual inputs, made once per module (real tissue where it matters)."""
    import tifffile
    import torch
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    rgb = Image.open(shared_file("tissue", "images", TISSUE)).convert("RGB").crop((0, 0, 400, 400))
    f: dict[str, Path] = {}
    f["rgb"] = d / "tissue.png"
    rgb.save(f["rgb"])
    f["cmyk"] = d / "tissue_cmyk.tif"
    rgb.convert("CMYK").save(f["cmyk"])
    f["grey16"] = d / "tissue_grey16.png"
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(f["grey16"])
    f["float01"] = d / "tissue_float.tif"
    tifffile.imwrite(f["float01"], np.asarray(rgb).astype(np.float32) / 255.0, photometric="rgb")
    f["float_bad"] = d / "tissue_float_range.tif"
    tifffile.imwrite(
        f["float_bad"],
        np.asarray(rgb).astype(np.float32) * 1000.0 - 5.0,
        photometric="rgb",
    )
    f["black"] = d / "black.png"
    Image.new("RGB", (300, 300), (0, 0, 0)).save(f["black"])
    f["white"] = d / "glass.png"
    Image.new("RGB", (300, 300), (250, 250, 250)).save(f["white"])
    f["empty"] = d / "empty.svs"
    f["empty"].write_bytes(b"")
    f["garbage_png"] = d / "garbage.png"
    f["garbage_png"].write_bytes(b"\x89PNG not really" * 50)
    f["garbage_svs"] = d / "garbage.svs"
    f["garbage_svs"].write_bytes(os.urandom(4096))
    svs = shared_file("slides", "cmu_small_region.svs")
    f["truncated_svs"] = d / "truncated.svs"
    f["truncated_svs"].write_bytes(svs.read_bytes()[:600_000])
    # a flat TIFF declaring 100,000 x 100,000 pixels (its header patched, a few bytes of data)
    f["huge_tiff"] = d / "huge.tif"
    tifffile.imwrite(f["huge_tiff"], np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    with tifffile.TiffFile(f["huge_tiff"], mode="r+b") as tf:
        tf.pages[0].tags["ImageWidth"].overwrite(100_000)
        tf.pages[0].tags["ImageLength"].overwrite(100_000)
    # broken checkpoints: the tiny model with one field wrong or missing
    blob = torch.load(tiny, weights_only=True)
    for name, change in {
        "ck_version": {"version": "abc"},
        "ck_arch_kwargs": {"arch_kwargs": "x"},
        "ck_no_patch": {"patch_size_px": None},
        "ck_threshold": {"threshold": "x"},
        "ck_members": {"members": ["x"]},
        "ck_subtypes": {"arch_kwargs": {"n_subtypes": "many"}},
    }.items():
        bad = {k: v for k, v in blob.items() if change.get(k, 0) is not None}
        bad.update({k: v for k, v in change.items() if v is not None})
        f[name] = d / f"{name}.pt"
        torch.save(bad, f[name])
    from mitoscope.classify.screen import default_screen_path

    screen = torch.load(default_screen_path(), weights_only=True)
    for name, change in {"sc_width": {"width": "x"}, "sc_threshold": {"threshold": None}}.items():
        bad = {k: v for k, v in screen.items() if change.get(k, 0) is not None}
        bad.update({k: v for k, v in change.items() if v is not None})
        f[name] = d / f"{name}.pt"
        torch.save(bad, f[name])
    # train inputs
    f["no_labels"] = d / "no_labels"
    f["no_labels"].mkdir()
    for name, text in {
        "garbage_labels": b'\x00\xff\xfe;;"garbage\n',
        "header_labels": b"file,label,slide,dataset,uid,x,y,expert1_label\n",
        "wrong_labels": b"a,b\n1,2\n",
    }.items():
        f[name] = d / name
        f[name].mkdir()
        (f[name] / "labels.csv").write_bytes(text)
    for name, text in {
        "bad.toml": "epochs = [\n",
        "bad.yaml": "a: [1, 2\n b: }\n",
        "seeds.toml": '[train]\nseeds = ["one"]\n',
        "epochs.toml": '[train]\nepochs = "ten"\n',
        "epochs.yaml": "train:\n  epochs: [1]\n",
        "list.yaml": "- 1\n- 2\n",
    }.items():
        f[name.replace(".", "_")] = d / name
        (d / name).write_text(text)
    f["a_file"] = d / "a_file.txt"
    f["a_file"].write_text("x")
    f["bad_json"] = d / "bad.json"
    f["bad_json"].write_text("{not json")
    # MIDOG points files (mm) of one image, under different names
    f["mm_truth"] = d / "case_truth.json"
    f["mm_truth"].write_text(json.dumps(_points([(1.0, 1.0), (2.0, 2.5)])))
    f["mm_pred"] = d / "case_pred.json"
    f["mm_pred"].write_text(json.dumps(_points([(1.001, 1.0, 0.9), (3.0, 2.5, 0.8)])))
    f["px_pred"] = d / "pred_px.csv"
    f["px_pred"].write_text("x_px,y_px\n10,10\n")
    f["pred_dir"] = d / "preds"
    f["pred_dir"].mkdir()
    (f["pred_dir"] / "other.midog.json").write_text(f["mm_pred"].read_text())
    return f


def _points(pts: list[tuple[float, ...]]) -> dict:
    out = []
    for p in pts:
        pt = {"point": [p[0], p[1], 0], "name": "mitotic figure"}
        if len(p) > 2:
            pt["probability"] = p[2]
        out.append(pt)
    return {"type": "Multiple points", "points": out}


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def assert_one_line(rc: int, err: list[str], out: Path | None = None) -> None:
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("mitoscope: error: ") and "Traceback" not in err[0]
    if out is not None:
        assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], list(out.iterdir())


AMIBR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "amibr-train")

#: (id, argv with {name} placeholders for files, {out} the output, {model} the tiny model)
CASES = [
    # detect: options
    ("detect-mpp-abc", ["detect", "{rgb}", "--mpp", "abc"]),
    ("detect-mpp-zero", ["detect", "{rgb}", "--mpp", "0"]),
    ("detect-mpp-negative", ["detect", "{rgb}", "--mpp=-1"]),
    ("detect-mpp-absurd", ["detect", "{rgb}", "--mpp", "1e9"]),
    ("detect-mpp-nan", ["detect", "{rgb}", "--mpp", "nan"]),
    ("detect-no-mpp", ["detect", "{rgb}"]),
    ("detect-threshold", ["detect", "{rgb}", "--mpp", "0.25", "--threshold", "2"]),
    ("detect-device", ["detect", "{rgb}", "--mpp", "0.25", "--device", "tpu"]),
    ("detect-workers", ["detect", "{rgb}", "--mpp", "0.25", "--workers", "many"]),
    ("detect-unknown-option", ["detect", "{rgb}", "--no-such-option"]),
    ("detect-proposer", ["detect", "{rgb}", "--mpp", "0.25", "--proposer", "magic"]),
    # detect: files
    ("detect-missing", ["detect", "{rgb}.missing.svs", "--mpp", "0.25"]),
    ("detect-empty", ["detect", "{empty}", "--mpp", "0.25"]),
    ("detect-garbage-png", ["detect", "{garbage_png}", "--mpp", "0.25"]),
    ("detect-garbage-svs", ["detect", "{garbage_svs}", "--mpp", "0.25"]),
    ("detect-truncated-svs", ["detect", "{truncated_svs}", "--mpp", "0.5"]),
    ("detect-huge-tiff", ["detect", "{huge_tiff}", "--mpp", "0.25"]),
    ("detect-float-out-of-range", ["detect", "{float_bad}", "--mpp", "0.25"]),
    ("detect-greyscale-16bit", ["detect", "{grey16}", "--mpp", "0.25"]),
    ("detect-no-tissue", ["detect", "{white}", "--mpp", "0.25"]),
    ("detect-all-black", ["detect", "{black}", "--mpp", "0.25"]),
    ("detect-directory", ["detect", "{no_labels}", "--mpp", "0.25"]),
    # detect: models
    ("detect-model-missing", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{rgb}.pt"]),
    ("detect-model-garbage", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{garbage_svs}"]),
    ("detect-ck-version", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_version}"]),
    ("detect-ck-arch-kwargs", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_arch_kwargs}"]),
    ("detect-ck-no-patch", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_no_patch}"]),
    ("detect-ck-threshold", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_threshold}"]),
    ("detect-ck-members", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_members}"]),
    ("detect-ck-subtypes", ["detect", "{rgb}", "--mpp", "0.25", "--model", "{ck_subtypes}"]),
    ("detect-screen-width", ["detect", "{rgb}", "--mpp", "0.25", "--screen-model", "{sc_width}"]),
    (
        "detect-screen-threshold",
        ["detect", "{rgb}", "--mpp", "0.25", "--screen-model", "{sc_threshold}"],
    ),
    # info, candidates, classify
    ("info-missing", ["info", "{rgb}.missing.svs"]),
    ("info-garbage", ["info", "{garbage_svs}"]),
    ("info-mpp-abc", ["info", "{rgb}", "--mpp", "abc"]),
    ("candidates-missing", ["candidates", "{rgb}.missing.png", "--mpp", "0.25"]),
    ("candidates-float", ["candidates", "{float_bad}", "--mpp", "0.25"]),
    ("classify-garbage", ["classify", "{garbage_png}", "--mpp", "0.25"]),
    ("classify-ck-threshold", ["classify", "{rgb}", "--mpp", "0.25", "--model", "{ck_threshold}"]),
    # evaluate
    (
        "evaluate-bootstrap",
        ["evaluate", "--truth", "{bad_json}", "--pred", "{bad_json}", "--bootstrap", "-5"],
    ),  # fmt: skip
    (
        "evaluate-radius",
        ["evaluate", "--truth", "{bad_json}", "--pred", "{bad_json}", "--radius-um", "-1"],
    ),  # fmt: skip
    ("evaluate-bad-json", ["evaluate", "--truth", "{bad_json}", "--pred", "{bad_json}"]),
    ("evaluate-missing", ["evaluate", "--truth", "{rgb}.json", "--pred", "{bad_json}"]),
    ("evaluate-by", ["evaluate", "--truth", "{bad_json}", "--pred", "{bad_json}", "--by", "x"]),
    ("evaluate-mm-meets-px", ["evaluate", "--truth", "{mm_truth}", "--pred", "{px_pred}"]),
    ("evaluate-folder-unmatched", ["evaluate", "--truth", "{mm_truth}", "--pred", "{pred_dir}"]),
    # train (all fail before any training)
    ("train-no-labels", ["train", "--data-dir", "{no_labels}"]),
    ("train-garbage-labels", ["train", "--data-dir", "{garbage_labels}"]),
    ("train-header-only-labels", ["train", "--data-dir", "{header_labels}"]),
    ("train-wrong-labels", ["train", "--data-dir", "{wrong_labels}"]),
    ("train-bad-toml", ["train", "--config", "{bad_toml}"]),
    ("train-bad-yaml", ["train", "--config", "{bad_yaml}"]),
    ("train-seeds-type", ["train", "--config", "{seeds_toml}"]),
    ("train-epochs-type-toml", ["train", "--config", "{epochs_toml}"]),
    ("train-epochs-type-yaml", ["train", "--config", "{epochs_yaml}"]),
    ("train-config-not-a-table", ["train", "--config", "{list_yaml}"]),
    ("train-seeds-option", ["train", "--seeds", "a,b", "--data-dir", AMIBR]),
    ("train-epochs-option", ["train", "--epochs", "ten"]),
    ("train-out-unwritable", ["train", "--data-dir", AMIBR, "--out", "{a_file}/m.pt"]),
]


@pytest.mark.parametrize("argv", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(
    argv: list[str], files: dict[str, Path], tiny: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    cmd = args[0]
    if cmd in ("detect", "candidates", "classify"):
        if cmd != "detect":
            out.mkdir()
        target = out if cmd == "detect" else out / "result.csv"
        args += ["--out", str(target)]
        if "--model" not in args and cmd != "candidates":
            args += ["--model", str(tiny)]
        if cmd == "detect":
            args += ["-q", "--no-report"]
    elif cmd == "train" and "--out" not in args:
        args += ["--out", str(out / "m.pt"), "--fast-dev-run"]
    rc, err = run(args, capsys)
    assert_one_line(rc, err, out)


def test_usage_errors_name_the_whole_command(capsys: pytest.CaptureFixture) -> None:
    rc, err = run(["curate", "masks"], capsys)
    assert rc == 2 and len(err) == 1 and err[0].endswith("see: mitoscope curate masks --help"), err
    rc, err = run(["info", "x.svs", "--mpp", "abc"], capsys)
    assert rc == 2 and len(err) == 1 and err[0].endswith("see: mitoscope info --help"), err


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


# ----------------------------------------------------------------------------- read right
def test_cmyk_and_float_tiff_read_as_the_rgb_image(files: dict[str, Path]) -> None:
    """A CMYK TIFF and a float32 [0, 1] TIFF of real tissue hold the same pixels as the PNG."""
    from mitoscope.slide import open_slide

    with open_slide(files["rgb"], mpp=0.25) as s:
        ref = s.read_region((0, 0), 0, (400, 400))
    for name in ("cmyk", "float01"):
        with open_slide(files[name], mpp=0.25) as s:
            got = s.read_region((0, 0), 0, (400, 400))
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, name
    with open_slide(files["grey16"], mpp=0.25) as s:  # 16-bit scaled by its range, not clipped
        grey = s.read_region((0, 0), 0, (400, 400))
    assert 40 < grey.mean() < 230 and grey.std() > 10


def test_cmyk_tissue_is_detected_like_the_rgb_image(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys
) -> None:
    import json

    areas = []
    for name in ("rgb", "cmyk"):
        out = tmp_path / name
        argv = ["detect", str(files[name]), "--mpp", "0.25", "--out", str(out)]
        rc, err = run([*argv, "--model", str(tiny), "-q", "--no-report"], capsys)
        assert rc == 0 and err == []
        stem = files[name].stem
        s = json.loads((out / f"{stem}.summary.json").read_text())
        areas.append((s["tissue_area_mm2"], s["n_candidates"], s["n_mitoses"]))
    assert areas[0] == areas[1] and areas[0][0] > 0


def test_all_black_is_not_tissue() -> None:
    from mitoscope.slide.tissue import is_blank

    assert is_blank(np.zeros((64, 64, 3), np.uint8))
    assert is_blank(np.full((64, 64, 3), 128, np.uint8))  # one flat colour
    assert is_blank(np.full((64, 64, 3), 250, np.uint8))


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_mm_files_need_no_mpp_and_one_of_each_pairs(
    files: dict[str, Path], capsys
) -> None:
    """Two MIDOG points files (mm) of one image, different names: matched mm to mm without
    --mpp, paired and said so."""
    argv = ["evaluate", "--truth", str(files["mm_truth"]), "--pred", str(files["mm_pred"])]
    rc = main([*argv, "--json", "--bootstrap", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    d = json.loads(cap.out)
    assert (d["tp"], d["fp"], d["fn"]) == (1, 1, 1)
    assert d["paired"] == [["case_pred", "case_truth"]] and d["units"] == "mm"
    assert cap.err.strip().splitlines() == [
        "mitoscope: note: one truth image and one predicted image: case_pred is evaluated as "
        "case_truth"
    ]


# ----------------------------------------------------------------------------- names, database
def test_long_file_name_works_and_too_long_fails_before_detection(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys
) -> None:
    """244 characters (the longest whose outputs fit 255 bytes) work; 250 fail at once."""
    ok = tmp_path / ("a" * 240 + ".png")
    assert len(ok.name) == 244
    ok.write_bytes(files["rgb"].read_bytes())
    out = tmp_path / "o"
    rc, err = run(["detect", str(ok), "--mpp", "0.25", "--out", str(out), "--model", str(tiny),
                   "-q"], capsys)  # fmt: skip
    assert rc == 0 and err == []
    assert (out / f"{ok.stem}.summary.json").exists() and (out / f"{ok.stem}.report.html").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    long = tmp_path / ("b" * 246 + ".png")
    long.write_bytes(files["rgb"].read_bytes())
    out2 = tmp_path / "o2"
    t0 = time.perf_counter()
    rc, err = run(["detect", str(long), "--mpp", "0.25", "--out", str(out2), "--model", str(tiny),
                   "-q"], capsys)  # fmt: skip
    assert_one_line(rc, err, out2)
    assert "rename the input" in err[0] and time.perf_counter() - t0 < 5


def test_temporary_names_are_short() -> None:
    from mitoscope.io.atomic import temp_prefix

    assert temp_prefix("slide.csv") == ".slide.csv."
    assert len(temp_prefix("x" * 250 + ".report.html")) + len("12345678.tmp") < 130


def test_early_error_leaves_no_database(files: dict[str, Path], tiny: Path, tmp_path: Path,
                                        capsys) -> None:  # fmt: skip
    """The database appears only with the first slide's results (here: never)."""
    out = tmp_path / "o"
    out.mkdir()
    rc, err = run(["detect", str(files["garbage_png"]), "--mpp", "0.25", "--out", str(out),
                   "--model", str(tiny), "-q"], capsys)  # fmt: skip
    assert_one_line(rc, err, out)


def test_two_inputs_one_corrupt_one_line_per_failure(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys
) -> None:
    """The rule: one ``mitoscope: error:`` line per failed input; with -q nothing else."""
    out = tmp_path / "o"
    argv = ["detect", str(files["truncated_svs"]), str(files["rgb"]), "--mpp", "0.25"]
    rc, err = run([*argv, "--out", str(out), "--model", str(tiny), "-q", "--no-report"], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mitoscope: error: ") and "truncated" in err[0]
    assert (out / "tissue.summary.json").exists() and not list(out.glob("truncated*"))


# ----------------------------------------------------------------------------- real processes
def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="default")
    return subprocess.Popen(
        [sys.executable, "-m", "mitoscope", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def test_truncated_svs_no_warnings_leak(files: dict[str, Path], tmp_path: Path) -> None:
    """As a terminal sees it: no Pillow "Corrupt EXIF data" warnings before the one line."""
    p = _cli(["info", str(files["truncated_svs"])])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("mitoscope: error: ")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the children of each of its threads: a pool started from
    another thread than the main one has its processes there)."""
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids + [g for k in kids for g in _children(k)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _interrupt(args: list[str], sig: signal.Signals) -> tuple[int, str, list[int]]:
    """Start ``mitoscope``, send ``sig`` as soon as its worker processes run (the observable
    start of the tile pass) and wait for it to end: (rc, stderr, the processes it had started).

    ``args`` must make a run whose tile pass lasts many seconds: the signal then always lands
    mid-run, however fast or loaded the machine (the run and this loop share the CPU alike).
    """
    p = _cli(args, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None and len(_children(p.pid)) < 3:
        time.sleep(0.02)  # the fork server, the resource tracker and a worker
    kids = _children(p.pid)
    if p.poll() is not None or len(kids) < 3:
        _, err = p.communicate()
        pytest.fail(f"no worker processes ran (exit {p.returncode}): {err[-500:]}")
    if sig == signal.SIGINT:
        os.killpg(p.pid, sig)  # Ctrl-C in a terminal: the whole process group
    else:
        p.send_signal(sig)  # kill -9 of the main process only
    _, err = p.communicate(timeout=300)
    deadline = time.monotonic() + 10  # orphans notice the main process is gone
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    return p.returncode, err, kids


def test_sigkill_and_sigint_during_detect_leave_nothing(tmp_path: Path, tiny: Path) -> None:
    """Killed (SIGKILL), then interrupted (Ctrl-C) while detecting: no process, no partial
    output and no database left; the next run completes and leaves no temporary file.

    The interrupted runs tile the real slide with 192 of each 256 um overlapping: 203 tiles
    instead of 26, 7.9x the pixels read and proposed (the default run alone took 16 CPU-s on the
    development machine), so the signal, sent as soon as the workers appear, always comes
    mid-run however fast the machine; the run that completes uses the default tiling.
    """
    out = tmp_path / "o"
    svs = shared_file("slides", "cmu_small_region.svs")
    args = ["detect", str(svs), "--out", str(out), "--model", str(tiny), "--workers", "2", "-q"]
    long_run = [*args, "--overlap-um", "192"]
    for sig in (signal.SIGKILL, signal.SIGINT):
        rc, err, kids = _interrupt(long_run, sig)
        assert rc != 0, f"the run ended before {sig.name}: the test input is too small"
        assert [k for k in kids if _alive(k)] == [], sig  # no worker, fork server or tracker
        left = sorted(q.name for q in out.iterdir()) if out.exists() else []
        if sig == signal.SIGINT:
            assert rc == 130, err  # documented in mitoscope.cli.main
            assert err.strip().splitlines() == ["mitoscope: interrupted"], err
            assert left == [], left  # not even a temporary file or an empty database
        else:
            assert rc == -signal.SIGKILL
            assert [n for n in left if not n.startswith(".")] == [], left
    p = _cli([*args, "--no-report"])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    left = sorted(q.name for q in out.iterdir())
    assert not [n for n in left if n.startswith(".")], left  # stale temporaries removed
    assert "cmu_small_region.summary.json" in left and "mitoscope.sqlite" in left


def test_ctrl_c_while_workers_launch_is_acted_on_after_the_launch() -> None:
    """Ctrl-C during a pool's worker launch (the window in which a half-started worker used to
    print a traceback after "mitoscope: interrupted") waits until the launch is done, then
    interrupts as usual; a handler that ignores Ctrl-C still ignores it."""
    from mitoscope.detect.parallel import sigint_deferred

    done = []
    with pytest.raises(KeyboardInterrupt), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal has been delivered: the block still runs to its end
        done.append(1)
    assert done == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
