"""Stop a local Ray instance whose driver died: no orphan processes after ``kill -9``.

``ray.init()`` starts the GCS, raylet, dashboard and log monitor as children of the driver;
they die with it (Ray sets ``PR_SET_PDEATHSIG``). Ray's workers follow within a few seconds,
but its dashboard and runtime-env agents (the raylet's children) wait about a minute trying to
report the raylet's death to the dead GCS (Ray 2.x, ray-project/ray#52385), and a worker
killed mid-slide leaves temporary files behind.

:func:`start_reaper` starts ``python -m mitoscope.cohort.reaper``: a small process that tracks
every process descending from the Ray processes the driver started, and, as soon as the driver
is gone (its pipe closes or its process disappears), sends them ``SIGTERM`` (Ray's workers then
raise ``SystemExit`` in the running slide, whose atomic outputs delete their temporary files)
and ``SIGKILL`` to what is left after a grace period. When the driver ends normally it closes
the pipe after ``ray.shutdown()`` and the reaper finds nothing (or a straggler) to stop.

Linux only (it reads ``/proc``); elsewhere :func:`start_reaper` returns ``None``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

#: seconds between scans of the process table while the driver lives
INTERVAL_S = 0.25
#: seconds between SIGTERM and SIGKILL
GRACE_S = 3.0


def process_table() -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, start time)}`` of every live (non-zombie) process, from ``/proc``."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def children(pid: int) -> set[int]:
    """The direct children of ``pid`` (live ones)."""
    return {p for p, (ppid, _) in process_table().items() if ppid == pid}


def available() -> bool:
    return sys.platform.startswith("linux") and Path("/proc/self/stat").exists()


def start_reaper(roots: set[int]) -> subprocess.Popen | None:
    """Start the reaper for the Ray processes ``roots`` (and all their descendants) of this
    process; ``None`` when there is nothing to watch or no ``/proc``.

    Stop it with :func:`stop_reaper` after ``ray.shutdown()``.
    """
    if not roots or not available():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "mitoscope.cohort.reaper", str(os.getpid()), *map(str, roots)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        close_fds=True,
    )


def stop_reaper(proc: subprocess.Popen | None, timeout_s: float = GRACE_S + 5) -> None:
    """Close the reaper's pipe (the driver is done) and wait for it to stop what Ray left."""
    if proc is None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _track(tracked: dict[int, str], table: dict[int, tuple[int, str]]) -> None:
    """Add every live descendant of a tracked process to ``tracked`` ({pid: start time})."""
    grew = True
    while grew:
        grew = False
        for pid, (ppid, start) in table.items():
            if pid not in tracked and ppid in tracked and tracked[ppid] == _start(table, ppid):
                tracked[pid] = start
                grew = True


def _start(table: dict[int, tuple[int, str]], pid: int) -> str | None:
    return table[pid][1] if pid in table else None


def _alive(tracked: dict[int, str]) -> list[int]:
    table = process_table()
    return [p for p, start in tracked.items() if _start(table, p) == start]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def reap(driver: int, roots: set[int], *, pipe_fd: int = 0) -> int:
    """Track ``roots`` and their descendants until ``driver`` is gone, then stop them all.

    Returns the number of processes that were still alive when the driver went.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    table = process_table()
    driver_start = _start(table, driver)
    tracked = {p: table[p][1] for p in roots if p in table}
    while True:
        _track(tracked, table)
        ready, _, _ = select.select([pipe_fd], [], [], INTERVAL_S)
        if ready and not os.read(pipe_fd, 4096):  # EOF: the driver closed it or died
            break
        table = process_table()
        if driver_start is None or _start(table, driver) != driver_start:
            break
    table = process_table()
    _track(tracked, table)
    left = _alive(tracked)
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and _alive(tracked):
        time.sleep(0.05)
    _signal(_alive(tracked), signal.SIGKILL)
    return len(left)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m mitoscope.cohort.reaper DRIVER_PID ROOT_PID...", file=sys.stderr)
        return 2
    reap(int(argv[0]), {int(a) for a in argv[1:]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
