"""Atomic file writes: a file is whole or absent, whatever moment a process dies at."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be synced."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync folders
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None], sync: bool = True) -> None:
    """Call ``write(f)`` on a temporary file next to ``path`` (``.<name>.<random>.tmp``), then
    rename it to ``path``. The file gets the permissions a plain ``open`` would give under the
    umask. With ``sync`` the data and then the rename are flushed to disk. On any error (or an
    interrupt) the temporary file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    if sync:
        fsync_dir(folder)
