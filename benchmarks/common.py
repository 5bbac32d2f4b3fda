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
    from mitoscope.synth import cached_mosaic_slide, mosaic_file_name

    opts = {"mpp": 0.25, "tissue_fraction": 0.5, **options}
    name = mosaic_file_name(width, height, seed=seed, **opts)
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


def tissue_slide(tissue_mm2: float, *, seed: int = 0, **options: object) -> Path:
    """Build once (cached in ``benchmarks/.cache``) a whole-slide TIFF of real tissue in islands
    on glass (:func:`mitoscope.synth.build_tissue_slide`, ../shared/data/tissue)."""
    from mitoscope.synth import cached_tissue_slide, tissue_slide_file_name

    name = tissue_slide_file_name(tissue_mm2, seed=seed, **options)
    if not (CACHE / name).exists():
        print(f"building {name} (real tissue from {SHARED_DATA / 'tissue'}) ...", flush=True)
        t0 = time.perf_counter()
        path = cached_tissue_slide(
            CACHE, tissue_mm2=tissue_mm2, seed=seed, source_dir=SHARED_DATA / "tissue", **options
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


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(cmd: list[str], *, poll_s: float = 0.1, env: dict | None = None) -> dict:
    """Run ``cmd``; return wall seconds, exit code and peak RSS of the process tree.

    ``peak_tree_rss_bytes`` is the largest sum of VmRSS over the process and all its
    descendants seen while polling /proc every ``poll_s`` seconds; ``peak_process_rss_bytes``
    the kernel's own high-water mark of the largest single process (getrusage children).
    """
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = 0
    while proc.poll() is None:
        pids = [proc.pid]
        i = 0
        while i < len(pids):
            pids += _children(pids[i])
            i += 1
        peak = max(peak, sum(_rss_bytes(p) for p in pids))
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "cmd": cmd,
        "exit_code": proc.returncode,
        "seconds": wall,
        "peak_tree_rss_bytes": peak,
        "peak_process_rss_bytes": maxrss if maxrss > before * 1024 else None,
    }


def benchmark_model() -> tuple[list[str], str]:
    """``--model`` arguments for ``mitoscope detect`` and a description of the model used.

    The bundled model when it is installed; otherwise a randomly initialised checkpoint of the
    same architecture family (OMG-Net ResNet18, one member): the cost of classification does not
    depend on the weights, only the number of figures called does.
    """
    from mitoscope.classify.classifier import default_model_path

    if default_model_path().is_file():
        return [], f"bundled model ({default_model_path().name})"
    path = CACHE / "random_omgnet_resnet18.pt"
    if not path.exists():
        import torch

        from mitoscope.classify.classifier import save_checkpoint
        from mitoscope.classify.registry import create_model, get_spec

        torch.manual_seed(0)
        net = create_model("omgnet_resnet18", use_mask=True, n_subtypes=0, pretrained=False)
        CACHE.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            path,
            arch="omgnet_resnet18",
            members=[net.state_dict()],
            arch_kwargs={"use_mask": True, "n_subtypes": 0},
            input_mpp=0.25,
            patch_size_px=get_spec("omgnet_resnet18").patch_size_px,
            threshold=0.5,
            atypical_threshold=0.5,
        )
    return ["--model", str(path)], "random-weight omgnet_resnet18 (bundled model not installed yet)"
