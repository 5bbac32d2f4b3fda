"""Worker processes: how many, how they start, their thread caps, and the ordered tile pool.

One process per core: each worker caps its BLAS/OpenMP pools (threadpoolctl) and torch at one
thread, and the main process keeps torch to the cores the workers leave. The cohort's slide
workers use :func:`pool_context` and :func:`cap_threads` too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import InvalidInputError

#: ``--workers auto``: one process per usable core, at most this many (each holds a reader,
#: the proposer and ONNX Runtime copies of the models, ~0.3 GB)
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, int(cores or 1))


def resolve_workers(value: str | int) -> int:
    """``--workers``: a positive integer, or ``auto`` (usable cores, at most
    :data:`MAX_AUTO_WORKERS`)."""
    text = str(value).strip().lower()
    if text == "auto":
        return min(usable_cores(), MAX_AUTO_WORKERS)
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidInputError(f"--workers must be a positive integer or auto, got {value!r}")
    return n


def main_threads(workers: int) -> int:
    """Torch threads for the main process while ``workers`` processes run."""
    return max(1, usable_cores() - int(workers))


def cap_threads(n: int) -> None:
    """Cap this process's BLAS/OpenMP pools and, when torch is loaded, torch at ``n`` threads.

    For worker processes (one per core): torch is never imported here, only capped when a
    torch-backed stage came with the pickle.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(n))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))


@contextlib.contextmanager
def limited_torch_threads(n: int) -> Iterator[None]:
    """Torch threads of this process at most ``n`` inside the block (restored after); nothing
    when torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pool_context() -> Any:
    """The multiprocessing start method of every mitoscope pool (``forkserver``; ``spawn`` on
    Windows): workers start clean, without the parent's threads or open files."""
    import multiprocessing as mp

    return mp.get_context("spawn" if os.name == "nt" else "forkserver")


def process_start_time(pid: int) -> str | None:
    """``"<start time>"`` of a live process, ``None`` when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return "?"
    return None if fields[0] in ("Z", "X") else fields[19]


def watch_parent(main_pid: int, interval_s: float = 0.5) -> None:
    """In a worker process: ignore Ctrl-C (the main process handles it and stops the pool), and
    exit at once when the main process ``main_pid`` is gone.

    Needed because a ``forkserver`` worker's parent is the fork server, and the fork server
    lives as long as any worker does: after ``kill -9`` of ``mitoscope detect`` neither would
    ever exit on its own (nor the resource tracker, whose pipe they hold).
    """
    import signal
    import threading
    import time

    with contextlib.suppress(ValueError, OSError):  # not in the main thread, or no signals
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    identity = process_start_time(main_pid)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if process_start_time(main_pid) != identity:
                os._exit(1)

    if identity is None:
        os._exit(1)
    threading.Thread(target=watch, name="mitoscope-watch-main", daemon=True).start()


def _init_worker(
    main_pid: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    watch_parent(main_pid)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends, then act on it (``KeyboardInterrupt``).

    A pool launches its worker processes inside ``submit``. Interrupted half-way through a
    launch, the main process loses track of a worker the fork server is still starting; that
    worker then finds the pool's semaphores gone and prints a traceback after mitoscope has
    said "interrupted". Launches are short (milliseconds), so holding the signal costs nothing.
    Outside the main thread (where signals cannot be handled) the block runs as is.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:  # an error in the block after Ctrl-C (say, a worker the Ctrl-C of the whole
        # process group stopped) is the interruption: the handler's KeyboardInterrupt replaces it
        signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)
        if caught and callable(before):
            before(signal.SIGINT, caught[0])


def ordered_map(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *args: Any,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> Iterator[Any]:
    """``fn(item, *args)`` for every item in ``workers`` processes, yielded in item order.

    At most ``2 * workers`` items are in flight, so memory stays flat however many items
    there are. A worker that dies (or cannot start) raises a ``RuntimeError`` that says what
    to do.
    """
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=pool_context(),
            initializer=_init_worker,
            initargs=(os.getpid(), initializer, initargs),
        ) as pool:
            pending: deque = deque()
            it = iter(items)
            with sigint_deferred():  # the first submits launch the workers
                for item in it:
                    pending.append(pool.submit(fn, item, *args))
                    if len(pending) >= 2 * workers:
                        break
            while pending:
                out = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    with sigint_deferred():  # launches a worker if one is still missing
                        pending.append(pool.submit(fn, nxt, *args))
                yield out
    except (BrokenPipeError, BrokenProcessPool) as exc:
        raise RuntimeError(
            f"a tile worker process died or could not start ({exc.__class__.__name__}). When "
            "detect_slide runs with workers > 1 from a script, call it under "
            '`if __name__ == "__main__":` (the workers import the script); a worker killed '
            "for lack of memory ends the same way: try fewer --workers"
        ) from exc


def band_map(fn: Callable[..., Any], items: Iterable[Any], *, workers: int) -> Iterator[Any]:
    """``fn(item)`` for every item in ``workers`` fresh processes (one thread each), in order:
    the map a reader's banded thumbnail pass runs on
    (:attr:`~mitoscope.slide.reader.SlideReader.band_map`)."""
    return ordered_map(fn, items, workers=workers, initializer=cap_threads, initargs=(1,))


__all__ = [
    "MAX_AUTO_WORKERS",
    "band_map",
    "cap_threads",
    "limited_torch_threads",
    "main_threads",
    "ordered_map",
    "pool_context",
    "process_start_time",
    "resolve_workers",
    "sigint_deferred",
    "usable_cores",
    "watch_parent",
]
