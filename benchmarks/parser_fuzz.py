"""Fuzz the annotation parsers for many examples (issue 18): examples/s, crashes, wall time.

Runs the hypothesis fuzz targets of ``tests/test_parsers_fuzz.py`` (malformed and adversarial
MIDOG points JSON, MIDOG++ JSON, GeoJSON, CSV points, SlideRunner databases, arbitrary bytes
in every format) for ``--examples`` examples in total, split evenly over the targets.

A crash is anything other than a parse or the documented one-line ``MitoscopeError``: another
exception type, or an error message of more than one line. Crashes are counted (and the first
example of each kind kept) instead of stopping the run, so one bug cannot hide another; the
script exits 1 when any was found. Wall time depends on what else runs on the machine; the CPU
seconds of this process (and examples per CPU-second) much less.

Usage::

    .venv/bin/python benchmarks/parser_fuzz.py --examples 100000 --json benchmarks/results/parser_fuzz.json
    .venv/bin/python benchmarks/parser_fuzz.py --quick          # 600 examples, a smoke test
    .venv/bin/python benchmarks/parser_fuzz.py --report benchmarks/results/parser_fuzz.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))


def _crash_kind(exc: BaseException) -> str:
    """``Type at file:line`` of the innermost mitoscope frame (or the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [
        f for f in frames if "mitoscope" in f.filename and "test_parsers_fuzz" not in f.filename
    ]
    f = (ours or frames or [None])[-1]
    where = f"{Path(f.filename).name}:{f.lineno}" if f is not None else "?"
    return f"{type(exc).__name__} at {where}"


def fuzz_target(name: str, examples: int, *, seed: int) -> dict:
    """Run one target for ``examples`` examples; its counts, time and crash kinds."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from test_parsers_fuzz import TARGETS

    strategy, check = TARGETS[name]
    stats = {"examples": 0, "crashes": 0}
    kinds: dict[str, dict] = {}

    def body(data) -> None:
        stats["examples"] += 1
        try:
            check(data)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            stats["crashes"] += 1
            kind = _crash_kind(exc)
            entry = kinds.setdefault(
                kind, {"count": 0, "message": str(exc)[:300], "example": repr(data)[:300]}
            )
            entry["count"] += 1

    run = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )(given(strategy)(body))
    run = hseed(seed)(run)
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "target": name,
        "requested": examples,
        "examples": stats["examples"],
        "crashes": stats["crashes"],
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "examples_per_s": round(stats["examples"] / seconds, 1) if seconds else None,
        "examples_per_cpu_s": round(stats["examples"] / cpu, 1) if cpu else None,
        "crash_kinds": kinds,
    }


def report(res: dict) -> str:
    lines = [
        f"machine: {res['machine']}",
        f"command: {res['command']}",
        "",
        "| target | examples | crashes | wall s | examples/s | CPU s | examples/CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["targets"]:
        lines.append(
            f"| {r['target']} | {r['examples']:,} | {r['crashes']} | {r['seconds']:.1f} | "
            f"{r['examples_per_s']:,.0f} | {r['cpu_seconds']:.1f} | {r['examples_per_cpu_s']:,.0f} |"
        )
    t = res["total"]
    lines.append(
        f"| **total** | **{t['examples']:,}** | **{t['crashes']}** | **{t['seconds']:.1f}** | "
        f"**{t['examples_per_s']:,.0f}** | **{t['cpu_seconds']:.1f}** | "
        f"**{t['examples_per_cpu_s']:,.0f}** |"
    )
    for r in res["targets"]:
        for kind, k in r["crash_kinds"].items():
            lines.append(
                f"- {r['target']}: {k['count']} x {kind}: {k['message']!r} on {k['example']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from common import machine
    from test_parsers_fuzz import TARGETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=100_000, help="in total, over all targets")
    ap.add_argument("--quick", action="store_true", help="600 examples (a smoke test)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="save the results here")
    ap.add_argument("--report", type=Path, help="print a saved run and exit")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    total = 600 if args.quick else int(args.examples)
    if total < len(names):
        ap.error(f"--examples must be at least {len(names)} (one per target)")
    share = [total // len(names) + (1 if i < total % len(names) else 0) for i in range(len(names))]
    results = []
    t0 = time.perf_counter()
    for name, n in zip(names, share, strict=True):
        r = fuzz_target(name, n, seed=args.seed)
        print(
            f"{name}: {r['examples']:,} examples, {r['crashes']} crashes, {r['seconds']:.1f} s "
            f"({r['examples_per_s']:,.0f}/s; {r['cpu_seconds']:.1f} CPU-s)",
            flush=True,
        )
        results.append(r)
    seconds = time.perf_counter() - t0
    cpu = sum(r["cpu_seconds"] for r in results)
    n_ex = sum(r["examples"] for r in results)
    res = {
        "machine": machine(),
        "command": "python benchmarks/parser_fuzz.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "targets": results,
        "total": {
            "examples": n_ex,
            "crashes": sum(r["crashes"] for r in results),
            "seconds": round(seconds, 3),
            "examples_per_s": round(n_ex / seconds, 1),
            "cpu_seconds": round(cpu, 3),
            "examples_per_cpu_s": round(n_ex / cpu, 1) if cpu else None,
        },
    }
    print()
    print(report(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 1 if res["total"]["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
