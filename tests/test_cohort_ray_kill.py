"""``kill -9`` of a Ray cohort run's driver (issue 18): within seconds no Ray process of the run
is left (workers, raylet, GCS, Ray's agents, mitoscope's reaper), no temporary file and no
slide with only some of its outputs; the next run completes the cohort.

Real processes: ``mitoscope detect`` with ``--executor ray`` in its own session, killed while a
worker is writing a slide's outputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import shared_file
from mitoscope.cohort import reaper
from test_pipeline import make_tiny_classifier

TISSUE = "TCGA-18-5592-01Z-00-DX1.png"  # 1000 x 1000 px, 0.2527 um/px (tissue/images.csv)
OUTPUTS = (".geojson", ".midog.json", ".csv", ".summary.json", ".report.html")


def _session(sid: int) -> dict[int, str]:
    """Live (non-zombie) processes of session ``sid``: {pid: command name}."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            found[int(entry.name)] = head.split("(", 1)[1]
    return found


def _cli(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "mitoscope", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def test_killed_ray_driver_leaves_no_process_and_no_partial_output(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    if not reaper.available():
        pytest.skip("the reaper needs /proc (Linux)")
    from PIL import Image

    tiny = tmp_path / "tiny.pt"
    make_tiny_classifier(tiny, input_mpp=0.25, bias=-10.0, threshold=0.05)
    inputs = tmp_path / "in"
    inputs.mkdir()
    crop = Image.open(shared_file("tissue", "images", TISSUE)).convert("RGB").crop((0, 0, 640, 640))
    crop.save(inputs / "s0.png")
    slides = [str(inputs / "s0.png")]
    for i in range(1, 4):  # four slides, two at a time
        (inputs / f"s{i}.png").symlink_to(inputs / "s0.png")
        slides.append(str(inputs / f"s{i}.png"))
    out = tmp_path / "out"
    common = [*slides, "--mpp", "0.2527", "--model", str(tiny), "--out", str(out), "-q"]

    p = _cli(["detect", *common, "--executor", "ray", "--workers", "2"], tmp_path / "ray.log")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None:
            if out.is_dir() and any(n.endswith(".tmp") for n in os.listdir(out)):
                break  # a worker is writing a slide's outputs right now: kill
            time.sleep(0.005)
        ray_procs = {pid: n for pid, n in _session(p.pid).items() if n.startswith("ray::")}
        p.send_signal(signal.SIGKILL)  # the driver only, as the OOM killer would
    finally:
        p.wait()
    log = (tmp_path / "ray.log").read_text(errors="replace")
    if not ray_procs:  # finished too fast, or Ray could not start on an overloaded machine
        pytest.skip(f"no Ray worker ran at the kill (exit {p.returncode}): {log[-300:]}")

    left: dict[int, str] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = _session(p.pid)
        if not left:
            break
        time.sleep(0.2)
    assert left == {}, f"processes left {time.monotonic() - deadline + 15:.0f} s after the kill"

    names = sorted(os.listdir(out))
    assert [n for n in names if n.endswith(".tmp")] == [], names
    for s in ("s0", "s1", "s2", "s3"):
        have = [f"{s}{suffix}" in names for suffix in OUTPUTS]
        assert all(have) or not any(have), (s, names)  # all of a slide's outputs or none

    done = subprocess.run(
        [sys.executable, "-m", "mitoscope", "detect", *common, "--workers", "1"],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.startswith(".")], names
    for s in ("s0", "s1", "s2", "s3"):
        assert all(f"{s}{suffix}" in names for suffix in OUTPUTS), (s, names)
