"""Behaviour equality of ``mitoscope detect``: record its outputs once, compare later runs.

Usage::

    .venv/bin/python benchmarks/detect_equivalence.py record [--golden PATH] [--mosaic]
    .venv/bin/python benchmarks/detect_equivalence.py check [--golden PATH] [--mosaic]

``record`` runs ``mitoscope detect`` (one process, ``--workers 1``) on the bundled sample slide
and one tissue image of ``../shared/data/tissue/images`` (with ``--mosaic`` also a 2 x 2 mosaic of
four tissue images) and writes a fingerprint of every input to a JSON file: the detections
(level-0 x, y, MF and atypical probabilities from the MIDOG json and the CSV), the summary
counts, the output file names with the SHA-256 of the GeoJSON, MIDOG json and CSV, a
normalised hash of the HTML report (detection time blanked, white space folded, Grad-CAM images
counted but not hashed: their pixels depend on torch's thread count) and of the
SQLite database (times, random ids and the input's folder left out). ``check`` runs the same
again and lists every difference; exit code 1 when there is one.
``tests/test_detect_equivalence.py`` runs the same check.

The fingerprints hold for the bundled models they were recorded with (their SHA-256 is stored
under ``"_models"``). When a bundled model changes, record again at the commit before the change
being checked, e.g.::

    git worktree add /tmp/base <commit> && cp src/mitoscope/data/*.pt /tmp/base/src/mitoscope/data/
    PYTHONPATH=/tmp/base/src .venv/bin/python benchmarks/detect_equivalence.py record --mosaic
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "detect_equivalence.json"
SHARED = Path(os.environ.get("MITOSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TISSUE = SHARED / "tissue"
TISSUE_IMAGE = "TCGA-18-5592-01Z-00-DX1.png"
MOSAIC_IMAGES = (
    "TCGA-21-5784-01Z-00-DX1.png",
    "TCGA-21-5786-01Z-00-DX1.png",
    "TCGA-38-6178-01Z-00-DX1.png",
    "TCGA-49-4488-01Z-00-DX1.png",
)
#: summary.json keys that change from run to run (wall time, package version)
VOLATILE_SUMMARY = ("seconds", "timing_s", "version")
#: database columns that change from run to run (times, random ids, the input's folder)
VOLATILE_DB_COLUMNS = ("dateTime", "lastModified", "guid", "uuid", "directory")
#: probability and coordinate tolerance of ``check`` (the outputs are rounded already)
TOLERANCE = 1e-6


def tissue_mpp(name: str) -> float:
    """Pixel size of a tissue image (``images.csv``)."""
    import csv

    with open(TISSUE / "images.csv", newline="") as f:
        for row in csv.DictReader(f):
            if Path(row["file"]).name == name:
                return float(row["mpp"])
    raise KeyError(name)


def write_mosaic(path: Path) -> Path:
    """A 2 x 2 mosaic of four tissue images (cropped to the smallest), as a PNG."""
    import numpy as np
    from PIL import Image

    imgs = [np.asarray(Image.open(TISSUE / "images" / n).convert("RGB")) for n in MOSAIC_IMAGES]
    h = min(i.shape[0] for i in imgs)
    w = min(i.shape[1] for i in imgs)
    imgs = [i[:h, :w] for i in imgs]
    mosaic = np.concatenate(
        [np.concatenate(imgs[:2], axis=1), np.concatenate(imgs[2:], axis=1)], axis=0
    )
    Image.fromarray(mosaic).save(path)
    return path


def cases(*, mosaic: bool, work: Path) -> list[dict[str, Any]]:
    """The inputs: name, path and the ``mitoscope detect`` options of each."""
    from mitoscope.data import sample_slide

    out = [{"name": "sample", "path": sample_slide(), "args": []}]
    img = TISSUE / "images" / TISSUE_IMAGE
    out.append({"name": "tissue", "path": img, "args": ["--mpp", str(tissue_mpp(img.name))]})
    if mosaic:
        mpp = tissue_mpp(MOSAIC_IMAGES[0])
        path = write_mosaic(work / "mosaic.png")
        out.append({"name": "mosaic", "path": path, "args": ["--mpp", str(mpp)]})
    return out


def model_hashes() -> dict[str, str]:
    """SHA-256 of the bundled model files the detections depend on."""
    import mitoscope

    data = Path(mitoscope.__file__).parent / "data"
    return {p.name: _sha(p.read_bytes()) for p in sorted(data.glob("*.pt"))}


def run_detect(path: Path, out_dir: Path, args: list[str], *, workers: int = 1) -> int:
    """``mitoscope detect PATH --out OUT_DIR --workers N --quiet ARGS`` in this process."""
    from mitoscope.cli import main

    return main(
        ["detect", str(path), "--out", str(out_dir), "--workers", str(workers), "--quiet", *args]
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _db_fingerprint(path: Path) -> dict[str, Any]:
    """Row counts per table and one hash of all rows (volatile columns left out)."""
    con = sqlite3.connect(str(path))
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts, rows = {}, {}
        for t in sorted(tables):
            if t == "sqlite_sequence":
                continue
            cur = con.execute(f"SELECT * FROM `{t}` ORDER BY 1")
            cols = [d[0] for d in cur.description]
            keep = [i for i, c in enumerate(cols) if c not in VOLATILE_DB_COLUMNS]
            data = [[r[i] for i in keep] for r in cur.fetchall()]
            counts[t] = len(data)
            rows[t] = data
    finally:
        con.close()
    return {"rows": counts, "sha256": _sha(json.dumps(rows, default=str).encode())}


def fingerprint(out_dir: Path, stem: str, code: int) -> dict[str, Any]:
    """What one input's run produced (see the module docstring)."""
    import csv

    files = sorted(p.name for p in out_dir.iterdir() if p.name.startswith(stem + "."))
    fp: dict[str, Any] = {"exit_code": code, "files": files, "sha256": {}}
    for suffix in (".geojson", ".midog.json", ".csv"):
        p = out_dir / f"{stem}{suffix}"
        if p.exists():
            fp["sha256"][suffix] = _sha(p.read_bytes())
    report = out_dir / f"{stem}.report.html"
    if report.exists():
        text = report.read_text(encoding="utf-8")
        text = re.sub(r"<td>detection time</td><td>[^<]*</td>", "", text)
        # Grad-CAM pixels come from a torch backward pass whose float reductions depend on the
        # thread count (earlier tests in one pytest process change it): counted, not hashed
        fp["gradcam_images"] = len(re.findall(r'<img alt="Grad-CAM" src="data:', text))
        text = re.sub(r'(<img alt="Grad-CAM" src=")data:image/png;base64,[^"]*"', r'\1"', text)
        text = re.sub(r"\s+", " ", re.sub(r">\s+<", "><", text)).strip()
        fp["report_sha256"] = _sha(text.encode())
    summary_path = out_dir / f"{stem}.summary.json"
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        fp["summary"] = {k: v for k, v in s.items() if k not in VOLATILE_SUMMARY}
    midog = out_dir / f"{stem}.midog.json"
    if midog.exists():
        d = json.loads(midog.read_text())
        fp["midog_points"] = [
            [round(c, 9) for c in p["point"][:2]] + [p.get("probability"), p.get("name")]
            for p in d.get("points", [])
        ]
    csv_path = out_dir / f"{stem}.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            fp["mitoses"] = [
                [
                    float(r["x_px"]),
                    float(r["y_px"]),
                    float(r["mf_probability"]),
                    None if r["atypical_probability"] == "" else float(r["atypical_probability"]),
                ]
                for r in csv.DictReader(f)
            ]
    return fp


def record_case(case: dict[str, Any], work: Path, *, workers: int = 1) -> dict[str, Any]:
    """Run one case into a fresh directory and return its fingerprint (with the database's)."""
    from mitoscope.detect import output_stem

    out = work / f"out-{case['name']}-{workers}"
    code = run_detect(Path(case["path"]), out, list(case["args"]), workers=workers)
    fp = fingerprint(out, output_stem(case["path"]), code)
    db = out / "mitoscope.sqlite"
    if db.exists():
        fp["database"] = _db_fingerprint(db)
    return fp


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= TOLERANCE
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def differences(golden: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints of one input (empty: equal)."""
    out = []
    for key in sorted(set(golden) | set(now)):
        a, b = golden.get(key), now.get(key)
        if _close(a, b):
            continue
        if key == "summary" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not _close(a.get(k), b.get(k)):
                    out.append(f"summary.{k}: {a.get(k)!r} -> {b.get(k)!r}")
        elif isinstance(a, list) and isinstance(b, list):
            out.append(f"{key}: {len(a)} -> {len(b)} rows (or values differ)")
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=("record", "check"))
    ap.add_argument("--golden", type=Path, default=GOLDEN)
    ap.add_argument("--mosaic", action="store_true", help="also a 2 x 2 mosaic of tissue images")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mitoscope-equiv-") as tmp:
        work = Path(tmp)
        results = {
            c["name"]: record_case(c, work, workers=args.workers)
            for c in cases(mosaic=args.mosaic, work=work)
        }
    if args.action == "record":
        args.golden.parent.mkdir(parents=True, exist_ok=True)
        args.golden.write_text(
            json.dumps({**results, "_models": model_hashes()}, indent=1, sort_keys=True) + "\n"
        )
        for name, fp in results.items():
            s = fp.get("summary", {})
            print(
                f"{name}: exit {fp['exit_code']}, {s.get('n_mitoses')} mitoses, "
                f"{s.get('n_scored_above_floor')} scored, {len(fp['files'])} files"
            )
        print(f"recorded -> {args.golden}")
        return 0
    golden = json.loads(args.golden.read_text())
    bad = 0
    if golden.get("_models") != model_hashes():
        print(
            "the bundled models differ from those of the golden file: record it again (see above)"
        )
        bad += 1
    for name, fp in results.items():
        if name not in golden:
            print(f"{name}: not in {args.golden}; run record first")
            bad += 1
            continue
        diff = differences(golden[name], fp)
        print(f"{name}: {'same' if not diff else 'DIFFERENT'}")
        for line in diff:
            print(f"  {line}")
        bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
