"""Durable, atomic writes: a reader, a rerun after ``kill -9`` or a power cut sees the old file or the new
one, never half of one.

A file is written under a temporary name in the same folder, flushed and fsynced, renamed over the
target, and the folder is fsynced so the rename itself is on disk. A folder (an exported model) is
swapped in whole: on Linux with ``renameat2(RENAME_EXCHANGE)``, so there is no moment without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import write_error
from .faults import fault_point


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it to ``path``, fsync the folder.

    A write the system refuses (a full disk, a folder that may not be written) raises
    :class:`~biolingual.errors.WriteError` naming ``path`` and the reason, whatever wrapped it (``torch.save``
    raises a RuntimeError while handling the OSError: three chained tracebacks), once the temporary file is
    removed: the file at ``path`` is the old one or none."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            fault_point("atomic.write", tmp)  # tests: BIOLINGUAL_FAIL_AT=atomic.write=ENOSPC, where a full disk fails
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        failed = write_error(path, e) if isinstance(e, Exception) else None
        if failed is None:
            raise
        raise failed from None
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is not available."""
    # Python has no renameat2 binding, and os.replace cannot put a folder over a non-empty one.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder ``new`` at ``target`` (replacing any folder there) and remove the old one.

    ``new``'s files are fsynced first. Where the system can exchange two paths atomically (Linux), ``target``
    exists at every moment: before, the old folder; after, the new one. Elsewhere the old folder is moved
    aside and the new one renamed in, which leaves a moment without ``target``.
    """
    new, target = Path(new), Path(target)
    _fsync_tree(new)
    if target.exists() and _exchange(new, target):
        fsync_dir(target.parent)
        shutil.rmtree(new)  # the old folder, now under the temporary name
        return target
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target
