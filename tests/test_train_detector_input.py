"""``mitoscope train-detector`` with input a user can get wrong (issues 16 and 18): every mistake
is exit 2 and one ``mitoscope: error:`` line on stderr, found before any training work (the
scenes are not built, no network is made, no checkpoint is written), and the source checks
run without importing torch, so the answer comes at once even on a loaded machine.

Real data: a crop of a real tissue image (``tissue/images``) with point labels in a CSV.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_file
from mitoscope.cli import main

TISSUE = "TCGA-18-5592-01Z-00-DX1.png"  # 1000 x 1000 px, 0.2527 um/px (tissue/images.csv)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of one real tissue crop (a PNG without pixel size) and label CSVs for it."""
    from PIL import Image

    d = tmp_path_factory.mktemp("labels")
    imgs = d / "images"
    imgs.mkdir()
    crop = Image.open(shared_file("tissue", "images", TISSUE)).convert("RGB").crop((0, 0, 400, 400))
    crop.save(imgs / "region0.png")  # no dpi: the pixel size must come from the source's mpp
    f = {"images": imgs, "empty": d / "empty"}
    f["empty"].mkdir()

    def table(name: str, rows: list[str]) -> None:
        f[name] = d / f"{name}.csv"
        f[name].write_text("\n".join(["image,x,y,label", *rows]) + "\n")

    table("labels", ["region0.png,120,140,mitotic figure", "region0.png,300,90,non-mitotic figure"])
    table(
        "missing_image", ["region0.png,120,140,mitotic figure", "region7.png,50,50,mitotic figure"]
    )
    table("outside", ["region0.png,120,940,mitotic figure"])
    table("imposters_only", ["region0.png,300,90,non-mitotic figure"])
    table("header_only", [])
    f["broken_images"] = d / "broken"
    f["broken_images"].mkdir()
    (f["broken_images"] / "region0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    f["garbage_csv"] = d / "garbage.csv"
    f["garbage_csv"].write_bytes(os.urandom(600))
    f["garbage_json"] = d / "garbage.json"
    f["garbage_json"].write_text('{"images": [{"file_name": ')
    f["garbage_geojson"] = d / "region0.geojson"
    f["garbage_geojson"].write_text("not json at all")
    f["not_sqlite"] = d / "labels.sqlite"
    f["not_sqlite"].write_bytes(b"SQLite format 2\x00" + os.urandom(200))
    f["garbage_pt"] = d / "weights.pt"
    f["garbage_pt"].write_bytes(b"not a torch file")
    f["bad_toml"] = d / "bad.toml"
    f["bad_toml"].write_text("[detector\nepochs = 2\n")
    f["typed_toml"] = d / "typed.toml"
    f["typed_toml"].write_text('[detector]\nepochs = "many"\n')
    f["unknown_toml"] = d / "unknown.toml"
    f["unknown_toml"].write_text("[detector]\nepoch = 2\n")
    for name, body in {
        "evt_small": 'sampling = "event_tile"\nevent_tile_um = 10.0\n',  # box_um is 12.5
        "evt_stride": 'sampling = "event_tile"\nevent_stride_um = 70.0\n',  # tile 62.5 um
        "evt_px": 'sampling = "event_tile"\nevent_tile_um = 1100.0\n',  # 4400 px at 0.25
        "evt_weights": 'event_weights = "agreement"\n',  # sampling stays "random"
        "evt_weights_unknown": 'sampling = "event_tile"\nevent_weights = "votes"\n',
    }.items():
        f[name] = d / f"{name}.toml"
        f[name].write_text("[detector]\n" + body)
    f["folder_out"] = d / "a_folder.pt"
    f["folder_out"].mkdir()
    return f


def _csv(name: str, extra: str = ",mpp=0.25") -> str:
    return f"csv:{{{name}}},images={{images}}{extra}"


#: (id, train-detector arguments with {name} placeholders for the files above, what the
#: error line must say). Every case also gets --backbone tiny --out <tmp>/d.pt unless it sets them.
CASES = [
    # the source option itself
    ("unknown-type", ["--source", "magic:{empty}"], "unknown source type 'magic'"),
    ("no-colon", ["--source", "csv"], "expected TYPE:PATH"),
    ("no-path", ["--source", "csv:"], "expected TYPE:PATH"),
    ("not-key-value", ["--source", _csv("labels") + ",oops"], "is not key=value"),
    ("unknown-key", ["--source", _csv("labels") + ",colour=blue"], "unknown key(s) colour"),
    # folders and files that are not there
    ("labels-missing", ["--source", "csv:{empty}/labels.csv,images={images}"], "does not exist"),
    ("images-missing", ["--source", "csv:{labels},images={empty}/nope,mpp=0.25"], "does not exist"),
    ("tissue-missing", ["--source", "tissue:{empty}/tissue"], "does not exist"),
    ("amibr-missing", ["--source", "amibr:{empty}/amibr-train"], "does not exist"),
    ("amibr-no-labels", ["--source", "amibr:{empty}"], "no labels.csv"),
    ("amibr-a-file", ["--source", "amibr:{labels}"], "not a folder; give the amibr-train"),
    (
        "tissue-no-images",
        ["--source", _csv("labels"), "--source", "tissue:{empty},mpp=0.25"],
        "neither images.csv nor images",
    ),
    # labels that do not fit the images
    ("image-not-in-folder", ["--source", _csv("missing_image")], "region7.png"),
    ("image-corrupt", ["--source", "csv:{labels},images={broken_images},mpp=0.25"], "region0"),
    ("label-outside", ["--source", _csv("outside")], "outside the image"),
    ("no-mitoses", ["--source", _csv("imposters_only")], "no labelled mitotic figures"),
    ("header-only", ["--source", _csv("header_only")], "no labelled mitotic figures"),
    ("tissue-only", ["--source", "tissue:{images},mpp=0.25"], "no labelled mitotic figures"),
    ("garbage-csv", ["--source", _csv("garbage_csv")], ""),
    ("garbage-midogpp", ["--source", "midogpp:{garbage_json},images={images}"], ""),
    ("garbage-geojson", ["--source", "geojson:{garbage_geojson},images={images},mpp=0.25"], ""),
    ("not-sqlite", ["--source", "sliderunner:{not_sqlite},images={images},mpp=0.25"], ""),
    # pixel size
    ("mpp-missing", ["--source", _csv("labels", "")], "no pixel size"),
    ("mpp-zero", ["--source", _csv("labels", ",mpp=0")], "mpp"),
    ("mpp-negative", ["--source", _csv("labels", ",mpp=-0.25")], "mpp"),
    ("mpp-nan", ["--source", _csv("labels", ",mpp=nan")], "mpp"),
    ("mpp-text", ["--source", _csv("labels", ",mpp=fine")], "mpp"),
    # options and configs
    ("epochs-zero", ["--source", _csv("labels"), "--epochs", "0"], "epochs must be at least 1"),
    ("epochs-text", ["--source", _csv("labels"), "--epochs", "two"], "--epochs"),
    ("batch-zero", ["--source", _csv("labels"), "--batch-size", "0"], "batch_size"),
    ("tile-tiny", ["--source", _csv("labels"), "--tile-px", "8"], "tile_px"),
    ("threads-zero", ["--source", _csv("labels"), "--threads", "0"], "threads"),
    ("backbone", ["--source", _csv("labels"), "--backbone", "resnet9000"], "unknown backbone"),
    ("weights-missing", ["--source", _csv("labels"), "--weights", "{empty}/w.pt"], "weights"),
    # Ji et al.'s event-tile sampling (sampling = "event_tile")
    (
        "sampling-unknown",
        ["--source", _csv("labels"), "--sampling", "tiles"],
        "unknown sampling 'tiles'; choose one of random, event_tile",
    ),
    (
        "event-tile-smaller-than-box",
        ["--source", _csv("labels"), "--config", "{evt_small}"],
        "event_tile_um must be larger than a figure's box",
    ),
    (
        "event-stride-over-tile",
        ["--source", _csv("labels"), "--config", "{evt_stride}"],
        "event_stride_um must be in (0, event_tile_um = 62.5] um",
    ),
    (
        "event-tile-too-many-px",
        ["--source", _csv("labels"), "--config", "{evt_px}"],
        "is 4400 px at input_mpp = 0.25 um/px",
    ),
    (
        "event-weights-need-event-tile",
        ["--source", _csv("labels"), "--config", "{evt_weights}"],
        'event_weights = "agreement" needs sampling = "event_tile"',
    ),
    (
        "event-weights-unknown",
        ["--source", _csv("labels"), "--config", "{evt_weights_unknown}"],
        "unknown event_weights 'votes'",
    ),
    ("config-missing", ["--config", "{empty}/c.toml"], "c.toml"),
    ("config-bad-toml", ["--config", "{bad_toml}"], "bad.toml"),
    ("config-wrong-type", ["--config", "{typed_toml}"], "epochs"),
    ("config-unknown-key", ["--config", "{unknown_toml}"], "epoch"),
    ("out-is-folder", ["--source", _csv("labels"), "--out", "{folder_out}"], "is a folder"),
    ("out-unwritable", ["--source", _csv("labels"), "--out", "/proc/mitoscope/d.pt"], "d.pt"),
]


def _argv(args: list[str], data: dict[str, Path], out: Path) -> list[str]:
    argv = [a.format(**{k: str(v) for k, v in data.items()}) for a in args]
    if "--backbone" not in argv:
        argv += ["--backbone", "tiny"]
    if "--out" not in argv:
        argv += ["--out", str(out / "d.pt")]
    return ["train-detector", *argv]


@pytest.mark.parametrize("args,says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_detector_bad_input(
    args: list[str], says: str, data: dict[str, Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    import mitoscope.train.detector as train_detector

    def no_training(*a, **k):  # every check comes before training (and its network)
        raise AssertionError("train_detector ran on bad input")

    monkeypatch.setattr(train_detector, "train_detector", no_training)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(_argv(args, data, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("mitoscope: error: "), err
    assert "Traceback" not in err[0]
    assert says in err[0], err[0]
    assert list(out.iterdir()) == []


def test_valid_sources_pass_the_checks(data: dict[str, Path], tmp_path: Path, capsys, monkeypatch):
    """The same labels, right: the checks pass and training is reached with the scenes built."""
    import mitoscope.train.detector as train_detector

    seen = {}

    def fake_training(cfg, *, scenes=None, save=True):
        seen["scenes"] = scenes
        raise SystemExit(0)

    monkeypatch.setattr(train_detector, "train_detector", fake_training)
    rc = main(_argv(["--source", _csv("labels")], data, tmp_path))
    assert rc == 0, capsys.readouterr().err
    scenes = seen["scenes"]
    assert [len(s.points) for s in scenes.scenes] == [1]  # the mitotic figure, not the imposter
    assert scenes.scenes[0].image.shape[:2] == (400, 400)  # 0.25 um/px as given


def test_unknown_source_fails_at_once_without_torch(data: dict[str, Path], tmp_path: Path) -> None:
    """As a terminal sees it (issue 16: ``--source magic:dir`` printed nothing for minutes on a
    loaded machine): one line, exit 2, and torch is never imported for a source mistake."""
    code = (
        "import sys\n"
        "from mitoscope.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))\n"
    )
    for args in (["--source", "magic:dir"], ["--source", _csv("missing_image")],
                 ["--source", _csv("labels", "")],
                 ["--source", _csv("labels"), "--sampling", "tiles"]):  # fmt: skip
        p = subprocess.run(
            [sys.executable, "-c", "import json\n" + code, *_argv(args, data, tmp_path)],
            capture_output=True,
            text=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            timeout=300,
        )
        res = json.loads(p.stdout.strip().splitlines()[-1])
        assert res == {"rc": 2, "torch": False}, (args, p.stderr)
        assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert p.stderr.startswith("mitoscope: error: ")
    assert list(tmp_path.iterdir()) == []
