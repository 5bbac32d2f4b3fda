"""Training from any labelled source: real AMi-Br crops tiled into region images whose labels are
written as MIDOG++ JSON, SlideRunner SQLite, GeoJSON and CSV; tissue negatives; parsing of the
real MIDOG++ JSON and TUPAC SlideRunner database; bad input through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError
from mitoscope.train.samples import KIND_CANDIDATE, KIND_CENTRE, KIND_IMPOSTER, SampleSet

pytest.importorskip("lightning")

CROP = 128  # AMi-Br crops: 128 x 128 px centred on the figure
GRID = 2  # crops per side of a region image
MPP = 0.25  # TUPAC16 crops are 0.25 um/px


# -- the test data: real crops tiled into region images, labels in every format ----------------
def _pick_crops() -> list[dict]:
    """12 TUPAC16 crops (0.25 um/px): first those with expert-labelled imposters inside."""
    import pandas as pd

    labels = pd.read_csv(shared_file("amibr-train", "labels.csv"))
    neigh = pd.read_csv(shared_file("annotations", "amibr_train_crop_neighbours.csv"))
    labels["name"] = labels["file"].str.split("/").str[-1]
    tupac = labels[labels["dataset"] == "TUPAC16"]
    with_hn = set(neigh.loc[neigh["neighbour_class"] == "HN", "crop_file"])
    first = tupac[tupac["name"].isin(with_hn)].head(8)
    rest = tupac[~tupac["name"].isin(with_hn) & (tupac["label"] == "Normal")].head(4)
    rows = []
    for r in pd.concat([first, rest]).itertuples(index=False):
        inside = neigh[(neigh["crop_file"] == r.name)]
        inside = inside[(inside["dx_px"].abs() < CROP // 2) & (inside["dy_px"].abs() < CROP // 2)]
        rows.append(
            {
                "file": r.file,
                "atypical": r.label == "Atypical",
                "neighbours": [
                    (str(c), int(dx), int(dy))
                    for c, dx, dy in zip(
                        inside["neighbour_class"], inside["dx_px"], inside["dy_px"], strict=True
                    )
                ],
            }
        )
    return rows


def _tile(root: Path, out: Path, n_images: int = 3) -> list[dict]:
    """Write ``n_images`` PNGs of GRID x GRID real crops; return their labels (px)."""
    from PIL import Image

    crops = _pick_crops()
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for k in range(n_images):
        canvas = np.zeros((GRID * CROP, GRID * CROP, 3), dtype=np.uint8)
        labels = []
        for j in range(GRID * GRID):
            c = crops[k * GRID * GRID + j]
            gy, gx = divmod(j, GRID)
            img = np.asarray(Image.open(root / c["file"]).convert("RGB"))
            canvas[gy * CROP : (gy + 1) * CROP, gx * CROP : (gx + 1) * CROP] = img
            cx, cy = gx * CROP + CROP // 2, gy * CROP + CROP // 2
            cls = "atypical mitotic figure" if c["atypical"] else "mitotic figure"
            labels.append((cx, cy, cls))
            for ncls, dx, dy in c["neighbours"]:
                labels.append(
                    (cx + dx, cy + dy, "mitotic figure" if ncls == "MF" else "not mitotic figure")
                )
        name = f"region{k}.png"
        Image.fromarray(canvas).save(out / name)
        images.append({"file": name, "width": canvas.shape[1], "height": canvas.shape[0],
                       "labels": labels})  # fmt: skip
    return images


def write_midogpp(images: list[dict], path: Path) -> Path:
    cats = {"mitotic figure": 1, "not mitotic figure": 2, "atypical mitotic figure": 3}
    data = {
        "images": [
            {"id": i + 1, "file_name": im["file"], "width": im["width"], "height": im["height"],
             "tumor_type": "human breast cancer"}
            for i, im in enumerate(images)
        ],
        "categories": [{"id": v, "name": k} for k, v in cats.items()],
        "annotations": [],
    }  # fmt: skip
    for i, im in enumerate(images):
        for x, y, cls in im["labels"]:
            data["annotations"].append(
                {"id": len(data["annotations"]) + 1, "image_id": i + 1,
                 "category_id": cats[cls], "bbox": [x - 25, y - 25, x + 25, y + 25],
                 "labels": [cats[cls]]}
            )  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def write_sliderunner(images: list[dict], path: Path, folder: Path) -> Path:
    """A SlideRunner database written with SlideRunnerDB's schema (its writer stores detections
    only), filled with the labels as spot annotations with one expert vote each."""
    from mitoscope.io.sliderunner import SlideRunnerDB

    names = {"mitotic figure": "Mitotic figure", "not mitotic figure": "Hard negative",
             "atypical mitotic figure": "Atypical mitotic figure"}  # fmt: skip
    with SlideRunnerDB(path, person="expert") as db:
        for im in images:
            db.add_slide(im["file"], width=im["width"], height=im["height"], directory=str(folder))
    con = sqlite3.connect(path)
    cls = {}
    for name in names.values():
        cls[name] = con.execute("INSERT INTO Classes (name) VALUES (?)", (name,)).lastrowid
    person = con.execute("SELECT uid FROM Persons WHERE name = 'expert'").fetchone()[0]
    slides = dict(con.execute("SELECT filename, uid FROM Slides"))
    for im in images:
        for x, y, c in im["labels"]:
            k = cls[names[c]]
            a = con.execute(
                "INSERT INTO Annotations (slide, type, agreedClass, deleted) VALUES (?, 1, ?, 0)",
                (slides[im["file"]], k),
            ).lastrowid
            con.execute(
                "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, slide, annoId, "
                "orderIdx) VALUES (?, ?, ?, ?, 1)",
                (x, y, slides[im["file"]], a),
            )
            con.execute(
                "INSERT INTO Annotations_label (person, class, annoId) VALUES (?, ?, ?)",
                (person, k, a),
            )
    con.commit()
    con.close()
    return path


def write_geojson(images: list[dict], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        feats = [
            {"type": "Feature", "id": f"{im['file']}-{i}",
             "geometry": {"type": "Point", "coordinates": [x, y]},
             "properties": {"objectType": "annotation",
                            "classification": {"name": c.capitalize()}}}
            for i, (x, y, c) in enumerate(im["labels"])
        ]  # fmt: skip
        (folder / f"{Path(im['file']).stem}.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": feats})
        )
    return folder


def write_csv(images: list[dict], path: Path, *, scale: float = 1.0) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x", "y", "label"])
        for im in images:
            for x, y, c in im["labels"]:
                w.writerow([im["file"], x * scale, y * scale, c])
    return path


@pytest.fixture(scope="module")
def regions(tmp_path_factory) -> dict:
    root = shared_file("amibr-train")
    base = tmp_path_factory.mktemp("regions")
    images = _tile(root, base / "images")
    n_mf = sum(1 for im in images for *_, c in im["labels"] if "not" not in c)
    n_imp = sum(1 for im in images for *_, c in im["labels"] if "not" in c)
    return {
        "dir": base / "images",
        "images": images,
        "n_mf": n_mf,
        "n_imposters": n_imp,
        "midogpp": write_midogpp(images, base / "labels.json"),
        "sliderunner": write_sliderunner(images, base / "labels.sqlite", base / "images"),
        "geojson": write_geojson(images, base / "geojson"),
        "csv": write_csv(images, base / "labels.csv"),
    }


def _cfg(tmp_path: Path, sources: list[dict], **kw):
    from mitoscope.train.train import TrainConfig

    base = dict(
        arch="tiny_cnn",
        fast_dev_run=True,
        batch_size=8,
        progress=False,
        cache_dir="none",
        val_fraction=0.34,
        out=str(tmp_path / "m.pt"),
        sources=tuple(sources),
    )
    base.update(kw)
    return TrainConfig(**base)


def _arrays(s: SampleSet) -> tuple:
    return (s.patches, s.masks, s.is_mf, s.kind, s.atypical)


# -- training from every format ---------------------------------------------------------------
_REFERENCE: dict[str, tuple] = {}


@pytest.mark.parametrize("fmt", ["csv", "midogpp", "sliderunner", "geojson"])
def test_fast_dev_run_from_each_label_format(regions, tmp_path, fmt):
    from mitoscope.classify import load_classifier
    from mitoscope.train.train import build_samples, train

    spec = {"type": fmt, "path": str(regions[fmt]), "images": str(regions["dir"]), "mpp": MPP}
    cfg = _cfg(tmp_path, [spec])
    s = build_samples(cfg.validate())
    # positives at every labelled figure, imposters at every labelled imposter, candidates rest
    assert int((s.kind == KIND_CENTRE).sum()) == regions["n_mf"]
    assert s.is_mf[s.kind == KIND_CENTRE].all()
    assert int((s.kind == KIND_IMPOSTER).sum()) == regions["n_imposters"] > 0
    cand = s.kind == KIND_CANDIDATE
    assert cand.sum() > 20 and not s.is_mf[cand].any()
    assert (s.atypical[s.kind == KIND_CENTRE] >= 0).sum() > 0  # the atypical class is read
    assert sorted(np.unique(s.slide)) == [f"{fmt}/region{k}" for k in range(3)]
    assert set(s.source.tolist()) == {fmt}
    # every format describes the same labels: the samples are identical
    ref = _REFERENCE.setdefault("samples", _arrays(s))
    for a, b in zip(ref, _arrays(s), strict=True):
        np.testing.assert_array_equal(a, b)
    res = train(cfg, samples=s)
    assert res.path is not None and res.path.is_file()
    card = load_classifier(res.path, device="cpu").card
    assert card["data"]["sample_meta"]["sources"][0]["type"] == fmt
    assert len(card["split"]["val_slides"]) == 1


def test_candidate_negatives_keep_the_midog_distance_from_labels(regions):
    from mitoscope.train.sources import build_source_samples

    spec = {"type": "csv", "path": str(regions["csv"]), "images": str(regions["dir"]), "mpp": MPP}
    s = build_source_samples([spec], cache_dir="none", progress=False)
    cand = s.kind == KIND_CANDIDATE
    # a candidate patch would show a labelled MF at its centre if it were within 7.5 um: the
    # centre pixel of every candidate mask is its own object; no candidate centre lies within
    # 7.5 um (30 px) of a labelled figure -- checked in the region images' coordinates
    im = regions["images"][0]
    mf = np.array([(x, y) for x, y, c in im["labels"] if "not" not in c], dtype=float)
    from PIL import Image

    from mitoscope.candidates import get_proposer

    img = np.asarray(Image.open(regions["dir"] / im["file"]).convert("RGB"))
    cands = get_proposer("classical").propose(img, mpp=MPP)
    d = np.hypot(cands.x_px[:, None] - mf[None, :, 0], cands.y_px[:, None] - mf[None, :, 1])
    far = (d.min(axis=1) > 7.5 / MPP).sum()
    n_region0 = int((cand & (s.slide == "csv/region0")).sum())
    assert 0 < n_region0 <= far


def test_tissue_source_weights_groups_and_training(regions, tmp_path):
    from mitoscope.train.data import mf_sample_weights
    from mitoscope.train.train import build_samples, is_tissue_slide, source_split, train

    tissue = shared_file("tissue")
    sources = [
        {"type": "csv", "path": str(regions["csv"]), "images": str(regions["dir"]), "mpp": MPP,
         "group": "tupac", "weight": 3},
        {"type": "tissue", "path": str(tissue), "limit": 2, "weight": 1},
    ]  # fmt: skip
    cfg = _cfg(tmp_path, sources)
    s = build_samples(cfg.validate())
    tis = is_tissue_slide(s.slide)
    assert tis.any() and not s.is_mf[tis].any()
    assert all(sl.startswith("tissue/lung/TCGA-") for sl in np.unique(s.slide[tis]))
    assert set(s.group[~tis].tolist()) == {"tupac"}
    assert set(s.group[tis].tolist()) == {"tissue_lung"}
    # negatives: the labelled source gets 3/4 of the negative mass, the tissue source 1/4
    w = mf_sample_weights(s, neg_ratio=1.0)
    neg = s.is_mf == 0
    assert w[neg & (s.source == "csv")].sum() / w[neg].sum() == pytest.approx(0.75)
    assert w[s.is_mf == 1].sum() == pytest.approx(0.5)
    tr, va = source_split(s.slide, val_fraction=0.34, seed=0)
    assert (va & tis).any() and (tr & tis).any()  # one of the two lung images validates
    res = train(cfg, samples=s)
    assert res.path.is_file() and res.metrics["tissue_val_candidates"] > 0


def test_tissue_folder_of_images_needs_a_pixel_size(tmp_path):
    from PIL import Image

    from mitoscope.train.sources import build_source_samples

    src = shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png")
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.open(src).convert("RGB").crop((0, 0, 400, 400)).save(folder / "a.png")
    s = build_source_samples(
        [{"type": "csv", "path": str(_one_label_csv(tmp_path, folder)), "mpp": MPP,
          "images": str(folder)},
         {"type": "tissue", "path": str(folder), "mpp": 0.2527, "organ": "lung", "name": "own"}],
        cache_dir="none", progress=False,
    )  # fmt: skip
    assert "tissue/lung/own-a" in set(s.slide.tolist())
    with pytest.raises(InvalidInputError, match="no pixel size"):
        build_source_samples(
            [{"type": "csv", "path": str(_one_label_csv(tmp_path, folder)), "mpp": MPP,
          "images": str(folder)},
             {"type": "tissue", "path": str(folder)}],
            cache_dir="none", progress=False,
        )  # fmt: skip


def _one_label_csv(tmp_path: Path, folder: Path) -> Path:
    p = tmp_path / "one.csv"
    p.write_text("image,x,y,label\na.png,200,200,mitotic figure\n")
    return p


def test_whole_slide_is_read_in_windows_around_labels(tmp_path):
    """A 6000 x 5000 px pyramidal TIFF: windows of 256 um around the label clusters."""
    from conftest import synthetic_he, write_pyramid_tiff
    from mitoscope.train.sources import build_source_samples, plan_windows

    write_pyramid_tiff(tmp_path / "big.tif", synthetic_he(5000, 6000, seed=3), mpp=0.5)
    pts = [(1000, 1000), (1100, 1050), (4000, 3000), (5990, 4990)]
    csvp = tmp_path / "big.csv"
    csvp.write_text("image,x,y\n" + "".join(f"big.tif,{x},{y}\n" for x, y in pts))
    x, y = np.array(pts, float).T
    wins = plan_windows(x, y, 6000, 5000, 256 / 0.5)
    assert len(wins) == 3 and sorted(len(i) for _, i in wins) == [1, 1, 2]
    s = build_source_samples([{"type": "csv", "path": str(csvp)}], cache_dir="none",
                             progress=False)  # fmt: skip
    assert int(s.is_mf.sum()) == 4 and s.meta["parts"][0]["n_windows"] == 3
    # each window is 256 um = 1024 px at 0.25 um/px: far less than the slide's 2.4 mm^2
    assert s.meta["parts"][0]["labelled_area_mm2"] < 3 * 0.256**2 + 1e-6


# -- AMi-Br: the refactored builder gives exactly the committed samples --------------------------
def test_amibr_builder_output_is_unchanged():
    """Hash of the first 360 crops' samples (crops resampled from 0.23 um/px, one labelled MF
    neighbour, one imposter) as built by the code before labelled_image_samples existed. If
    the proposer is changed on purpose, recompute it."""
    from mitoscope.train.samples import build_amibr_samples

    s = build_amibr_samples(
        shared_file("amibr-train"), limit=360, size_px=64, cache_dir="none", progress=False
    )
    h = hashlib.sha1()
    for k in ("patches", "masks", "is_mf", "atypical", "agreement", "subtype", "kind", "crop",
              "slide", "group"):  # fmt: skip
        a = np.ascontiguousarray(getattr(s, k))
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    assert np.bincount(s.kind).tolist() == [360, 1, 1, 2025]
    assert h.hexdigest() == "f4dd694fd77639d936024ae1e14c2543115cbb99"


def test_amibr_source_prefixes_slides_and_old_caches_load(tmp_path):
    from mitoscope.train.samples import load_samples, save_samples
    from mitoscope.train.sources import build_source_samples

    s = build_source_samples(
        [{"type": "amibr", "path": str(shared_file("amibr-train")), "limit": 4}],
        cache_dir="none", progress=False,
    )  # fmt: skip
    assert all(sl.startswith("amibr/MIDOG21/") for sl in s.slide.tolist())
    assert s.meta["subtypes"] and set(s.source.tolist()) == {"amibr"}
    save_samples(s, tmp_path / "x.npz")
    np.testing.assert_array_equal(load_samples(tmp_path / "x.npz").source, s.source)
    # a cache written before the source column: loads with the default (one unnamed source)
    arrays = {k: getattr(s, k) for k in ("patches", "masks", "is_mf", "atypical", "agreement",
                                         "subtype", "kind", "crop", "slide", "group")}  # fmt: skip
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps({"mpp": 0.25})), **arrays)
    old = load_samples(tmp_path / "old.npz")
    assert len(old) == len(s) and set(old.source.tolist()) == {""}


# -- parsing the real label files (images absent) ---------------------------------------------
def test_real_midogpp_json_counts_and_missing_images(tmp_path):
    from mitoscope.train.sources import source_labels

    js = shared_file("annotations", "MIDOGpp.json")
    split = shared_file("annotations", "MIDOGpp_datasets_xvalidation.csv")
    data = json.loads(js.read_text())
    cat = {c["id"]: c["name"] for c in data["categories"]}
    with split.open() as fh:
        train_ids = {int(r["Slide"]) for r in csv.DictReader(fh, delimiter=";")
                     if r["Dataset"] == "train"}  # fmt: skip
    fname = {im["id"]: im["file_name"] for im in data["images"]}
    want = {"mitotic figure": 0, "not mitotic figure": 0}
    for a in data["annotations"]:
        if int(Path(fname[a["image_id"]]).stem) in train_ids:
            want[cat[a["category_id"]]] += 1
    spec = {"type": "midogpp", "path": str(js), "split_csv": str(split), "split": "train",
            "images": str(tmp_path)}  # fmt: skip
    lab = source_labels(spec, check_images=False)
    c = lab.counts()
    assert c["mitotic_figures"] == want["mitotic figure"] > 5000
    assert c["imposters"] == want["not mitotic figure"]
    # domain groups: the scanner column of the split table
    groups = set(lab.groups.values())
    assert {"midogpp:3D Histech", "midogpp:Aperio CS2", "midogpp:Hamamatsu XR"} <= groups
    assert "midogpp:Hammamatsu XR" not in groups and "midogpp:Hamammatsu XR" not in groups
    every = source_labels({"type": "midogpp", "path": str(js), "images": str(tmp_path)},
                          check_images=False).counts()  # fmt: skip
    assert (every["mitotic_figures"], every["imposters"]) == (11937, 14349)
    canine = source_labels({**spec, "tumor_types": ["canine lymphosarcoma"]}, check_images=False)
    assert set(canine.ann.meta["tumor_type"].tolist()) == {"canine lymphosarcoma"}
    with pytest.raises(InvalidInputError) as err:
        source_labels(spec)
    msg = str(err.value)
    assert "\n" not in msg and f"{c['images']} of {c['images']} labelled images" in msg
    assert "are not in" in msg and "set images=" in msg


def test_real_tupac_sliderunner_counts_and_missing_images(tmp_path):
    from mitoscope.train.sources import source_labels

    db = shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT c.name, COUNT(*) FROM Annotations a JOIN Classes c ON c.uid = a.agreedClass "
        "WHERE a.deleted = 0 OR a.deleted IS NULL GROUP BY c.name"
    ).fetchall()
    n_slides = con.execute("SELECT COUNT(DISTINCT slide) FROM Annotations").fetchone()[0]
    con.close()
    spec = {"type": "sliderunner", "path": str(db), "images": str(tmp_path)}
    c = source_labels(spec, check_images=False).counts()
    by_class = dict(rows)
    assert c["mitotic_figures"] + c["imposters"] == sum(by_class.values())
    assert (c["mitotic_figures"], c["imposters"]) == (1999, 10483)
    assert c["images"] == n_slides == 73
    with pytest.raises(InvalidInputError, match="73 of 73 labelled images are not in"):
        source_labels(spec)


# -- config -----------------------------------------------------------------------------------
def test_toml_and_yaml_sources_and_one_line_validation(tmp_path, regions):
    from mitoscope.train.train import TrainConfig, load_config

    toml = tmp_path / "c.toml"
    toml.write_text(
        '[train]\narch = "tiny_cnn"\n'
        f'[[train.sources]]\ntype = "csv"\npath = "{regions["csv"]}"\nmpp = 0.25\nweight = 2\n'
        f'[[train.sources]]\ntype = "tissue"\npath = "{shared_file("tissue")}"\ngroup = "t"\n'
    )
    cfg = TrainConfig(**load_config(toml)).validate()
    assert [s["type"] for s in cfg.sources] == ["csv", "tissue"]
    bad = TrainConfig(sources=({"type": "csv", "path": str(tmp_path / "nope.csv"), "foo": 1,
                                "weight": -1}, {"type": "nosuch", "path": "x"}))  # fmt: skip
    with pytest.raises(InvalidInputError) as err:
        bad.validate()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("unknown key(s) foo", "nope.csv does not exist", "weight=-1",
                 "unknown source type 'nosuch'"):  # fmt: skip
        assert part in msg
    yaml = pytest.importorskip("yaml")
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"train": {"sources": [dict(s) for s in cfg.sources]}}))
    assert load_config(yml)["sources"] == cfg.sources


def test_parse_source_arg():
    from mitoscope.train.sources import parse_source_arg

    assert parse_source_arg("midogpp:/d/M.json,images=/d/i,split=train,tumor_types=a|b") == {
        "type": "midogpp", "path": "/d/M.json", "images": "/d/i", "split": "train",
        "tumor_types": "a|b",
    }  # fmt: skip
    with pytest.raises(InvalidInputError):
        parse_source_arg("just-a-path")


# -- the CLI: training with --source, and bad input ----------------------------------------------
def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    from mitoscope.cli import main

    rc = main(args)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_cli_trains_from_sources(regions, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    rc, err = _run(
        ["train", "--arch", "tiny_cnn", "--fast-dev-run", "--out", str(out), "--cache-dir",
         "none", "--source", f"csv:{regions['csv']},images={regions['dir']},mpp=0.25",
         "--source", f"tissue:{shared_file('tissue')},limit=2,weight=0.5"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert out.is_file()


def _bad(tmp_path: Path, capsys, args: list[str], expect: str) -> None:
    out = tmp_path / "bad.pt"
    rc, err = _run(["train", "--arch", "tiny_cnn", "--fast-dev-run", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache"), *args], capsys)  # fmt: skip
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mitoscope: error: "), err
    assert expect in err[0], err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_cli_bad_labels_outside_the_image(regions, tmp_path, capsys):
    p = tmp_path / "outside.csv"
    p.write_text("image,x,y\nregion0.png,100,100\nregion0.png,900,40\n")
    _bad(tmp_path, capsys, ["--source", f"csv:{p},images={regions['dir']},mpp=0.25"],
         "1 label(s) of region0.png lie outside the image (256x256 px)")  # fmt: skip


def test_cli_bad_image_missing_from_folder(regions, tmp_path, capsys):
    p = tmp_path / "missing.csv"
    p.write_text("image,x,y\nregion0.png,100,100\nno_such_region.png,40,40\n")
    _bad(tmp_path, capsys, ["--source", f"csv:{p},images={regions['dir']},mpp=0.25"],
         "1 of 2 labelled images are not in")  # fmt: skip


def test_cli_data_short_form_takes_the_new_types(regions, tmp_path, capsys):
    # --data csv --data-dir CSV: the images are looked up beside the CSV, where they are not
    _bad(tmp_path, capsys, ["--data", "csv", "--data-dir", str(regions["csv"])],
         "3 of 3 labelled images are not in")  # fmt: skip


def test_cli_bad_points_in_mm(regions, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "big"
    folder.mkdir()
    small = np.asarray(Image.open(regions["dir"] / "region0.png"))
    Image.fromarray(np.tile(small, (5, 5, 1))).save(folder / "region0.png")  # 1280 x 1280 px
    im = dict(regions["images"][0], file="region0.png")
    p = write_csv([im], tmp_path / "mm.csv", scale=MPP / 1000)  # px -> mm
    _bad(tmp_path, capsys, ["--source", f"csv:{p},images={folder},mpp=0.25"],
         "they look like millimetres")  # fmt: skip


def test_cli_bad_no_positives(tmp_path, capsys):
    _bad(tmp_path, capsys, ["--source", f"tissue:{shared_file('tissue')},limit=1"],
         "no labelled mitotic figures")  # fmt: skip


def test_cli_bad_unknown_type_and_key(regions, tmp_path, capsys):
    _bad(tmp_path, capsys, ["--source", "qupathx:/tmp"], "unknown source type 'qupathx'")
    _bad(tmp_path, capsys, ["--source", f"csv:{regions['csv']},colour=red"],
         "unknown key(s) colour")  # fmt: skip
    _bad(tmp_path, capsys, ["--data", "nosuch"], "unknown --data 'nosuch'")


def test_cli_bad_missing_pixel_size(regions, tmp_path, capsys):
    _bad(tmp_path, capsys, ["--source", f"csv:{regions['csv']},images={regions['dir']}"],
         "has no pixel size in its metadata; set the source's mpp")  # fmt: skip


def test_cli_bad_checkpoint_path_checked_before_training(regions, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "m.pt"
    rc, err = _run(["train", "--arch", "tiny_cnn", "--fast-dev-run", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache"), "--source",
                    f"csv:{regions['csv']},images={regions['dir']},mpp=0.25"], capsys)  # fmt: skip
    assert rc == 2 and len(err) == 1 and "is not a writable folder" in err[0]
    assert not (tmp_path / "cache").exists()
