"""Shared helpers of the benchmarks: the cached real-H&E mosaic slides and machine facts."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
SHARED_DATA = Path(os.environ.get("MITOSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: The large benchmark slide: 40,000 x 40,000 px at 0.25 um/px = 100 mm², half of it tissue.
LARGE = {"width": 40000, "height": 40000, "mpp": 0.25, "tissue_fraction": 0.5, "seed": 0}


def mosaic_slide(width: int, height: int, *, seed: int = 0, **options: object) -> Path:
    """Build once (cached in ``benchmarks/.cache``) a pyramidal TIFF mosaic of real H&E crops."""
    from mitoscope.synth import cached_mosaic_slide

    opts = {"mpp": 0.25, "tissue_fraction": 0.5, **options}
    name = (
        f"he_mosaic_{width}x{height}_mpp{opts['mpp']}_t{opts['tissue_fraction']}_s{seed}_"
        f"{opts.get('compression', 'jpeg')}.tif"
    )
    if not (CACHE / name).exists():
        print(
            f"building {name} (real H&E crops from {SHARED_DATA / 'amibr-train'}) ...", flush=True
        )
        t0 = time.perf_counter()
        path = cached_mosaic_slide(
            CACHE,
            width=width,
            height=height,
            seed=seed,
            source_dir=SHARED_DATA / "amibr-train",
            **opts,
        )
        print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
        return path
    return CACHE / name


def large_slide() -> Path:
    opts = {k: v for k, v in LARGE.items() if k not in ("width", "height", "seed")}
    return mosaic_slide(LARGE["width"], LARGE["height"], seed=LARGE["seed"], **opts)


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        kb = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
        mem = int(kb) / 2**20
    except (OSError, IndexError, ValueError):
        pass
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, no GPU, "
        f"Python {sys.version.split()[0]}, {platform.system()} {platform.release()}"
    )


def load_avg() -> str:
    """The 1-minute load average (the CPU is shared with other jobs)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"
