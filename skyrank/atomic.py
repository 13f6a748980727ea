"""Atomic outputs, the house rule for everything SkyRank writes: a file or a folder appears whole or not at all.

A file is written to a hidden temporary sibling and renamed over its target (:func:`atomic_path`,
:func:`write_atomic`, :func:`write_text_atomic`). A folder is assembled in a staging folder and swapped in by
:func:`swap_in_dir`: the old folder is renamed aside first and removed after, so the target path always holds either
the old or the new complete folder, never a mix. A run killed part-way leaves only hidden ``.*.tmp`` / staging
leftovers, which the next run ignores or removes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from skyrank.errors import OutputExistsError, free_bytes, no_space_error, storage_error

__all__ = [
    "atomic_path", "check_free_space", "exclusive_lock", "fsync_dir", "fsync_file", "remove_path", "swap_in_dir",
    "write_atomic", "write_text_atomic",
]  # fmt: skip


def fsync_file(path: str | Path) -> None:
    """Flush a written file to disk (so a rename after it cannot expose an empty file after a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (never what it points to) or a folder tree; missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` (same suffix, so writers that go by it still work) to write to.

    On a clean exit it is renamed over ``path``; on any error it is removed and ``path`` is left as it was.
    ``fsync=True`` flushes the file and the folder around the rename (for data that must survive a power cut).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:  # a full disk, no permission, a read-only mount: named, with the fix
        named = storage_error(exc, path=path)
        if named is None:
            raise
        raise named from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def check_free_space(path: str | Path, needed_bytes: int, what: str) -> None:
    """Raise :class:`~skyrank.errors.NoSpaceError` before the work when the file system of ``path`` (or its nearest
    existing parent) has less than ``needed_bytes`` free: ``what`` (e.g. "the Parquet shards of --out ...") is
    named with the free space and the estimate. A file system that cannot say its free space passes."""
    free = free_bytes(path)
    if free is not None and needed_bytes > free:
        raise no_space_error(path, what=what, needed=int(needed_bytes))


def write_atomic(path: str | Path, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` and rename it into place; returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 ``text`` (``\\n`` line ends) to ``path`` atomically; returns ``path``."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    return write_atomic(path, write, fsync=fsync)


def swap_in_dir(staging: str | Path, out: str | Path) -> Path:
    """Move the complete folder ``staging`` to ``out``, replacing whatever ``out`` held.

    The old ``out`` is first renamed to a hidden sibling, then ``staging`` is renamed to ``out``, then the old one is
    removed: at every instant ``out`` is absent, the old whole folder or the new whole folder. Raises
    :class:`OutputExistsError` if ``out`` appeared (from another process) between the check and the rename.
    """
    staging, out = Path(staging), Path(out)
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(out, old)
        os.rename(staging, out)
        fsync_dir(out.parent)
        remove_path(old)
    else:
        try:
            os.rename(staging, out)
        except OSError as exc:  # a non-empty folder appeared meanwhile
            raise OutputExistsError(f"{out} appeared while it was being written; it was not replaced") from exc
        fsync_dir(out.parent)
    return out


@contextmanager
def exclusive_lock(path: str | Path, *, on_wait: Callable[[], object] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if absent) for the ``with`` block.

    For work that two processes must not do at once into the same cache folder (the synthetic benchmark, the
    synthetic default's retriever, the demo's vision tower): the second waits, then finds the first one's result.
    ``on_wait`` is called once if the lock is busy, before blocking (to say why nothing happens). The lock is the
    ``filelock`` package's (what huggingface_hub locks its cache with): an OS lock on an open file (``flock`` /
    ``msvcrt``), so the OS releases it when its holder dies; a killed holder never leaves the others waiting.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire(poll_interval=0.2)
    except OSError as exc:  # a cache on a full, read-only or someone else's disk
        named = storage_error(exc, path=path, what=f"the lock file {path.name} of the cache")
        if named is None:
            raise
        raise named from exc
    try:
        yield
    finally:
        lock.release()
