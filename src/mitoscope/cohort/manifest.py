"""Completion markers: what makes a slide's outputs "complete" for a resumed run.

After all of a slide's output files exist (and its rows are in the run's database), the driver
writes ``<stem>.done.json`` atomically. It lists every output file with its size and SHA-256,
the slide file's identity (name, size, modification time), the options that shape the results
and the slide's summary. A re-run skips a slide only when its marker parses, names the same
slide and options, and every listed file still exists with the same size and hash; anything
else (no marker, a missing or changed file, a half-written run killed before the marker) is
redone from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

MARKER_SUFFIX = ".done.json"
MARKER_VERSION = 1


def marker_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}{MARKER_SUFFIX}"


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def slide_identity(path: Path) -> dict[str, Any]:
    """Name, size and modification time of an input slide (a folder for DICOM: its name only)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"name": p.name}
    if p.is_dir():
        return {"name": p.name}
    return {"name": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_marker(
    out_dir: Path,
    stem: str,
    *,
    slide: Path,
    files: list[Path],
    options_key: str,
    summary: dict[str, Any] | None,
) -> Path:
    """Write ``<stem>.done.json`` atomically (temporary file, fsync, rename)."""
    record = {
        "version": MARKER_VERSION,
        "stem": stem,
        "slide": slide_identity(slide),
        "options": options_key,
        "files": {
            f.name: {"size": f.stat().st_size, "sha256": file_digest(f)} for f in sorted(files)
        },
        "summary": summary,
        "completed_unix": round(time.time(), 3),
    }
    dest = marker_path(out_dir, stem)
    from ..io.atomic import temp_prefix

    tmp = dest.with_name(f"{temp_prefix(dest.name)}{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def read_complete_marker(
    out_dir: Path, stem: str, *, slide: Path, options_key: str, verify_hashes: bool = True
) -> dict[str, Any] | None:
    """The marker record when the slide's outputs are complete and current, else ``None``."""
    path = marker_path(out_dir, stem)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != MARKER_VERSION:
        return None
    if record.get("options") != options_key or record.get("slide") != slide_identity(slide):
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for name, meta in files.items():
        f = Path(out_dir) / name
        try:
            if f.stat().st_size != meta.get("size"):
                return None
        except OSError:
            return None
        if verify_hashes and file_digest(f) != meta.get("sha256"):
            return None
    return record
