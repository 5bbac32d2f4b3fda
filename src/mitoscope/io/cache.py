"""The user cache: where it is, and entries that are written atomically and checked on read.

The directory is ``$MITOSCOPE_CACHE`` when set, else ``$XDG_CACHE_HOME/mitoscope``, else
``~/.cache/mitoscope``. An entry is one file: a header line, the SHA-256 of the payload, then
the payload. It is written through :func:`mitoscope.io.atomic.atomic_write_bytes` (a temporary
file beside it, then ``os.replace``), so any number of processes may write the same entry at
once: a reader sees a complete old or complete new file, never a mixture. A file whose digest
does not match (a disk error, a hand edit) reads as missing and is written again. The cache is
an optimisation only: an unwritable or missing directory is never an error.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "sub" / "x.bin"
>>> write_entry(p, b"payload")
True
>>> read_entry(p)
b'payload'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import OutputError
from .atomic import atomic_write_bytes

_MAGIC = b"mitoscope-cache 1\n"
_DIGEST_LEN = 64  # hex SHA-256


def user_cache_dir() -> Path:
    """mitoscope's user cache directory (not created here)."""
    env = os.environ.get("MITOSCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mitoscope"


def read_entry(path: str | os.PathLike[str]) -> bytes | None:
    """The payload of the cache entry at ``path``; ``None`` when missing, unreadable or damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    head = len(_MAGIC)
    if not data.startswith(_MAGIC) or len(data) < head + _DIGEST_LEN + 1:
        return None
    digest = data[head : head + _DIGEST_LEN]
    payload = data[head + _DIGEST_LEN + 1 :]
    if data[head + _DIGEST_LEN : head + _DIGEST_LEN + 1] != b"\n":
        return None
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload


def write_entry(path: str | os.PathLike[str], payload: bytes) -> bool:
    """Store ``payload`` at ``path`` (parents created); ``False`` when the cache is unwritable."""
    final = Path(path)
    digest = hashlib.sha256(payload).hexdigest().encode()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(final, _MAGIC + digest + b"\n" + payload)
    except (OSError, OutputError):
        return False
    return True


__all__ = ["read_entry", "user_cache_dir", "write_entry"]
