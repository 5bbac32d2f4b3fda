"""Where slides run: in the driver (serial), in local processes, or on a Ray cluster.

Every executor runs the same :func:`run_one` on a :class:`SlideTask` and yields
:class:`SlideOutcome` objects as slides finish (in completion order). ``run_one`` never raises:
an error in one slide becomes a ``failed`` outcome with a one-line message, so the other slides
go on. Workers write the slide's output files (atomically, through
:func:`mitoscope.detect.detect_slide`) but never the database; the driver does that.

The proposer and classifier are built (or unpickled) once per worker process and reused for
every slide that process runs.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MissingDependencyError, MitoscopeError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class SlideTask:
    """One slide to run: its input path, output stem and index in the cohort."""

    index: int
    path: Path
    stem: str


@dataclass
class SlideOutcome:
    """What a worker hands back for one slide."""

    task: SlideTask
    status: str  # "done" | "failed"
    result: Any = None  # SlideResult when done
    error: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


@dataclass
class Models:
    """What a worker needs besides the slide: stages and options of ``detect_slide``.

    ``proposer`` / ``classifier`` may be objects (pickled to workers once) or ``None`` / a
    proposer name, resolved in the worker (the bundled classifier is loaded there once).
    """

    proposer: Any = None
    classifier: Any = None
    config: Any = None
    mpp: float | None = None
    torch_threads: int | None = None


_CACHE: dict[str, Any] = {}


def _resolved(models: Models, key: str) -> tuple[Any, Any]:
    """Proposer and classifier for this process, built once per ``key`` (one cohort run)."""
    if _CACHE.get("key") != key:
        proposer = models.proposer
        if proposer is None or isinstance(proposer, str):
            from ..candidates import get_proposer

            proposer = get_proposer(proposer or "classical")
        classifier = models.classifier
        if classifier is None:
            from ..classify import load_classifier
            from ..classify.atypical import attach_atypical_model

            classifier = attach_atypical_model(load_classifier())  # + bundled atypical model
        if models.torch_threads:
            from ..detect.parallel import cap_threads

            cap_threads(int(models.torch_threads))  # BLAS pools, and torch when loaded
        _CACHE.clear()
        _CACHE.update(key=key, proposer=proposer, classifier=classifier)
    return _CACHE["proposer"], _CACHE["classifier"]


def error_line(exc: BaseException) -> str:
    """One line describing an error (a MitoscopeError's own message; else type and message)."""
    msg = str(exc).strip()
    if isinstance(exc, MitoscopeError):
        line = msg.splitlines()[0] if msg else type(exc).__name__
    else:
        line = f"{type(exc).__name__}: {msg.splitlines()[0]}" if msg else type(exc).__name__
    return line


def run_one(task: SlideTask, out_dir: str, models: Models, key: str) -> SlideOutcome:
    """Detect one slide into ``out_dir`` (no database); never raises."""
    import warnings

    from ..detect import OUTPUT_SUFFIXES, detect_slide

    t0 = time.perf_counter()
    try:
        proposer, classifier = _resolved(models, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "no tissue" is in the summary
            result = detect_slide(
                task.path,
                proposer=proposer,
                classifier=classifier,
                config=models.config,
                out_dir=out_dir,
                db=None,
                progress=False,
                mpp=models.mpp,
                stem=task.stem,
            )
    except Exception as exc:  # one failing slide must not stop the others
        if os.environ.get("MITOSCOPE_DEBUG"):
            traceback.print_exc()
        return SlideOutcome(
            task=task, status="failed", error=error_line(exc), seconds=time.perf_counter() - t0
        )
    files = [
        f"{task.stem}{s}" for s in OUTPUT_SUFFIXES if (Path(out_dir) / f"{task.stem}{s}").exists()
    ]
    return SlideOutcome(
        task=task,
        status="done",
        result=result,
        seconds=time.perf_counter() - t0,
        files=files,
    )


# ------------------------------------------------------------------------------ serial
def run_serial(
    tasks: list[SlideTask], *, out_dir: str, models: Models, key: str
) -> Iterator[SlideOutcome]:
    """Run slides one after another in this process (the reference, serial run)."""
    for task in tasks:
        yield run_one(task, out_dir, models, key)


# ------------------------------------------------------------------------------ local processes
_POOL_MODELS: dict[str, Any] = {}


def _pool_init(models: Models, key: str, main_pid: int | None = None) -> None:
    if main_pid is not None:
        from ..detect.parallel import watch_parent

        watch_parent(main_pid)  # no orphan when the driver is killed; Ctrl-C is the driver's
    _POOL_MODELS["models"] = models
    _POOL_MODELS["key"] = key


def _pool_run(task: SlideTask, out_dir: str) -> SlideOutcome:
    return run_one(task, out_dir, _POOL_MODELS["models"], _POOL_MODELS["key"])


def run_local_pool(
    tasks: list[SlideTask], *, out_dir: str, models: Models, key: str, workers: int
) -> Iterator[SlideOutcome]:
    """Run slides in ``workers`` local processes; a crashed worker fails only its slides."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from ..detect.parallel import pool_context, sigint_deferred

    ctx = pool_context()
    todo = list(reversed(tasks))
    while todo:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_pool_init,
            initargs=(models, key, os.getpid()),
        )
        running: dict[Any, SlideTask] = {}
        broken = False
        try:
            while todo or running:
                while todo and len(running) < workers and not broken:
                    task = todo.pop()
                    with sigint_deferred():  # a submit may launch a worker: never half-started
                        running[pool.submit(_pool_run, task, out_dir)] = task
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        yield SlideOutcome(
                            task=task,
                            status="failed",
                            error="worker process died (killed or out of memory)",
                        )
                if broken and not running:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------ ray
def _ray_task(
    task: SlideTask, out_dir: str, boxed: list, key: str, driver: tuple | None = None
) -> SlideOutcome:
    """Ray entry point: ``boxed`` holds the ObjectRef of :class:`Models` (resolved once);
    ``driver`` is :func:`driver_identity` of the driver process (watched on its machine)."""
    watch_driver(driver)
    if _CACHE.get("key") != key or "models" not in _CACHE:
        import ray

        models = ray.get(boxed[0])
        _CACHE.clear()
        _resolved(models, key)
        _CACHE["models"] = models
    _WATCH["task"] = (out_dir, task.stem)
    try:
        return run_one(task, out_dir, _CACHE["models"], key)
    finally:
        _WATCH.pop("task", None)


_WATCH: dict[str, Any] = {}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def driver_identity() -> tuple[str, int, str] | None:
    """(boot id, pid, start time) of this process; ``None`` without ``/proc``."""
    from ..detect.parallel import process_start_time

    start = process_start_time(os.getpid())
    boot = _boot_id()
    return (boot, os.getpid(), start) if boot and start not in (None, "?") else None


def watch_driver(driver: tuple | None, interval_s: float = 0.5, grace_s: float = 5.0) -> None:
    """In a Ray worker: when the driver process ``driver`` dies, stop the running slide and exit.

    Only on the driver's machine (same boot id, same process start time: another node or pid
    namespace is left to Ray, which stops the tasks of a dead driver itself). The worker first
    gets ``SIGTERM``: Ray's handler raises ``SystemExit`` in the slide, whose atomic outputs
    delete their temporary files; if it is still alive after ``grace_s`` (idle in Ray's task
    loop, say), the running slide's temporaries are removed and it exits at once.
    """
    if not driver or _WATCH.get("driver") == tuple(driver):
        return
    from ..detect.parallel import process_start_time

    boot, pid, start = driver
    if _boot_id() != boot or process_start_time(int(pid)) != start:
        return
    _WATCH["driver"] = tuple(driver)

    def watch() -> None:
        import signal

        while process_start_time(int(pid)) == start:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        running = _WATCH.get("task")
        if running:
            from ..detect.outputs import remove_stale_temporaries

            remove_stale_temporaries(*running)
        os._exit(1)

    import threading

    threading.Thread(target=watch, name="mitoscope-watch-driver", daemon=True).start()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    return ray


def run_ray(
    tasks: list[SlideTask],
    *,
    out_dir: str,
    models: Models,
    key: str,
    workers: int | None,
    address: str | None,
    cpus_per_slide: float = 1.0,
) -> Iterator[SlideOutcome]:
    """Run slides as Ray tasks: on a local Ray instance (``num_cpus=workers``) by default, or on
    the cluster at ``address``. A Ray instance already initialised in this process is reused.

    Input slides and ``out_dir`` must be reachable under the same paths on every node (a shared
    filesystem), as usual for Ray batch jobs.
    """
    ray = _import_ray()
    started = False
    reaper = None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "configure_logging": False,
            "log_to_driver": bool(os.environ.get("MITOSCOPE_DEBUG")),
        }
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = int(workers or os.cpu_count() or 1)
        from . import reaper as _reaper

        before = _reaper.children(os.getpid()) if _reaper.available() else set()
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise InvalidInputError(
                f"cannot connect to the Ray cluster at {address}: {exc}; check --address "
                f"(e.g. 'auto' or 'ray://host:10001') or omit it for a local Ray instance"
            ) from None
        except Exception as exc:  # e.g. Ray's 30 s node start-up limit on a busy machine
            _failed_start(ray, None if address else before)
            what = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise MitoscopeError(
                f"could not {what}: {msg}; retry (on a busy machine Ray's processes may "
                "miss its start-up limit), or run with --executor local"
            ) from None
        started = True
        if not address and _reaper.available():  # a Ray instance of our own: no orphans
            reaper = _reaper.start_reaper(_reaper.children(os.getpid()) - before)
    driver = driver_identity()
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_slide))
        remote = ray.remote(num_cpus=cpus_per_slide, max_retries=0)(_ray_task)
        models_ref = ray.put(models)
        todo = list(reversed(tasks))
        running: dict[Any, SlideTask] = {}
        limit = 2 * int(workers)  # bounded in flight: the driver's memory stays flat
        while todo or running:
            while todo and len(running) < limit:
                task = todo.pop()
                running[remote.remote(task, out_dir, [models_ref], key, driver)] = task
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                task = running.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # worker crash, OOM kill, node loss
                    yield SlideOutcome(task=task, status="failed", error=_ray_error_line(exc))
    finally:
        if started:
            ray.shutdown()
            from .reaper import stop_reaper

            stop_reaper(reaper)


def _failed_start(ray: Any, before: set[int] | None) -> None:
    """After a failed ``ray.init``: reset Ray's state and stop the processes it had started on
    this machine (the children of this process that were not there ``before``)."""
    from . import reaper as _reaper

    try:
        ray.shutdown()
    except Exception:  # best effort: the start already failed
        pass
    if before is not None and _reaper.available():
        _reaper.stop_reaper(_reaper.start_reaper(_reaper.children(os.getpid()) - before))


def _ray_error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return error_line(cause)
    return f"Ray task failed: {error_line(exc)}"


def executor_for(name: str) -> Callable[..., Iterator[SlideOutcome]]:
    key = str(name).strip().lower()
    if key == "local":
        return run_local_pool
    if key == "ray":
        return run_ray
    raise InvalidInputError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
