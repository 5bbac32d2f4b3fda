"""Atomic file output: write to a temporary file in the same directory, then ``os.replace``.

A crash, an exception or Ctrl-C while writing never leaves a partial output file behind, and an
earlier version of the file stays untouched until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

#: names longer than this (bytes) get a shortened temporary name (NAME_MAX is usually 255)
_LONG_NAME = 120


def temp_prefix(name: str) -> str:
    """The prefix of the temporary files written for the output file ``name``.

    ``.<name>.`` (then 8 random characters and ``.tmp``); a long name is cut to 100 characters
    plus a short hash of the whole name, so the temporary name is never longer than the output
    name allows and stale temporaries of one output can still be found
    (``<prefix>*.tmp``).

    >>> temp_prefix("slide.csv")
    '.slide.csv.'
    >>> len(temp_prefix("x" * 250)) < 120
    True
    """
    if len(os.fsencode(name)) <= _LONG_NAME:
        return f".{name}."
    import hashlib

    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
    head = name[:100]
    while len(os.fsencode(head)) > 100:  # multi-byte characters
        head = head[:-1]
    return f".{head}~{digest}."


def max_name_bytes(directory: str | os.PathLike[str]) -> int:
    """The longest file name (bytes) ``directory``'s file system allows (255 if unknown)."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_name_length(path: str | os.PathLike[str], *, hint: str = "") -> None:
    """Raise :class:`OutputError` when ``path``'s file name is too long for its directory.

    ``hint`` says what to do (e.g. "rename the input"); checked before any work is done.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    limit = max_name_bytes(parent if parent.exists() else ".")
    n = len(os.fsencode(p.name))
    if n > limit:
        raise OutputError(
            f"output file name {p.name[:40]}... is {n} bytes, longer than the {limit} the file "
            f"system allows; {hint or 'choose a shorter name'}"
        )


def prepare_dir(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"{parent} is not a directory; choose another output path")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory {parent} is not writable; choose another --out")
    if path.exists() and path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    return parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, copy_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On any exception (including ``KeyboardInterrupt``) the temporary file is deleted and
    ``path`` keeps its previous content.

    Parameters
    ----------
    path : path-like
        Final destination.
    copy_existing : bool
        Start the temporary file as a copy of the existing ``path`` (for appending to a
        database, say); otherwise the temporary file does not exist yet when yielded.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> out.read_text()
    'hello'
    """
    final = Path(path)
    parent = prepare_dir(final)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(final.name), suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(
            f"cannot write in {parent}: {exc.strerror}; choose another --out"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if copy_existing and final.exists():
            import shutil

            shutil.copyfile(final, tmp)
        else:
            tmp.unlink()
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {final}")
        if final.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(final).st_mode & 0o777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    final = Path(path)
    with atomic_path(final) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {final}: {exc.strerror}") from None
    return final


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))
