"""Typed errors of SkyRank.

Every error the library raises on bad input is a :class:`SkyRankError` subclass whose message says what is wrong
and how to fix it. ``cli.py`` maps them to exit codes in one table; the library never prints and never returns
``None`` to signal failure.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path


class SkyRankError(Exception):
    """Base class of every error SkyRank raises on bad input or bad state.

    ``hint``, when given, is the fix for this particular case (naming the flag or file to change); ``cli.py`` prints
    it instead of the generic hint of the error type.
    """

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class OptionError(SkyRankError, ValueError):
    """An option's value cannot work (the message names the option): caught before any work is done. Also a
    ``ValueError``, as the library raised for bad arguments before it existed."""


class BenchmarkLayoutError(SkyRankError):
    """A benchmark root is missing or does not have the expected folder layout."""


class BadImageError(SkyRankError):
    """One or more images failed to decode. ``paths`` lists them."""

    def __init__(self, message: str, paths: list[str] | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.paths = list(paths or [])


class CheckpointMismatchError(SkyRankError):
    """A checkpoint is missing, unreadable, holds non-finite values, or its keys or shapes do not match the model."""


class MissingWeightsError(SkyRankError):
    """A retriever was asked to build a dataset without weights (it would rank with random features)."""


class UnknownNameError(SkyRankError):
    """An unknown retriever, benchmark or backbone name was requested."""


class OutputError(SkyRankError):
    """The output folder cannot be written (read-only parent, a file in the way, ...)."""


class OutputExistsError(OutputError):
    """The output folder exists and ``overwrite`` was not given (or was refused: not a SkyRank folder)."""


class ValidationError(SkyRankError):
    """A SkyRank dataset folder breaks the schema or an invariant. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message, hint=hint)


class MissingDependencyError(SkyRankError):
    """An optional engine (faiss-gpu, deepspeed, flash-attn, ...) is not installed."""


class PublishError(SkyRankError):
    """Publishing to the Hub was refused or failed."""


class HubUnreachableError(PublishError):
    """The Hub could not be reached (no network, ``HF_HUB_OFFLINE=1``, a wrong ``--endpoint``)."""


class TrainingError(SkyRankError):
    """Training stopped (non-finite loss, mismatched resume state, ...)."""


class EvalFileError(SkyRankError):
    """An evaluation JSON (or its per-query file) is missing, unreadable or not what ``skyrank eval`` writes."""


# ------------------------------------------------------------------------------------------ environment faults
# Faults of the user's machine or files, not of SkyRank: each is named with its fix (issue 21).


class StorageError(OutputError):
    """Writing failed because of the storage, not the data: no space left, no permission, a read-only file system.
    ``path`` is what was being written."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class NoSpaceError(StorageError):
    """No space left on the device (ENOSPC) or over the disk quota (EDQUOT), found before the work (the estimated
    size over the free space) or while writing."""


class StoragePermissionError(StorageError):
    """The file or folder being written is not writable by this user (EACCES, EPERM)."""


class ReadOnlyStorageError(StorageError):
    """The file system being written is mounted read-only (EROFS)."""


class OutOfMemoryError(SkyRankError):
    """The machine ran out of memory: the GPU (torch's ``OutOfMemoryError``), the CPU allocator, or a DataLoader
    worker killed with SIGKILL (the kernel's out-of-memory killer). ``device`` is ``"GPU"`` or ``"CPU"``."""

    def __init__(self, message: str, *, device: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.device = device


class CorruptShardError(SkyRankError):
    """A Parquet shard of a dataset folder (or its download) is truncated or corrupt. ``paths`` lists the shards."""

    def __init__(self, message: str, paths: list[str] | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.paths = list(paths or [])


class CandidateFileError(OptionError):
    """A ``--candidates`` file (``skyrank rerank``) is malformed; the message names the file, line and column."""


class RunFolderError(SkyRankError):
    """A SkyLink run folder (``--adapter``) lacks a file or holds a corrupt one; the message names the file and
    what writes it."""


class HubRequestError(SkyRankError):
    """A Hub request to read (download a dataset or a model) was refused or failed; ``status`` is the HTTP status
    (``None`` when no answer came)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB`` (binary units, as ``df -h``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def existing_ancestor(path: str | os.PathLike[str]) -> Path:
    """``path`` or its nearest existing parent folder (where free space and permissions can be asked)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes (for this user) on the file system holding ``path`` (or its nearest existing parent)."""
    try:
        return shutil.disk_usage(existing_ancestor(path)).free
    except OSError:
        return None


#: errno → the error it means for a write. ENOSPC and EDQUOT: the disk (or quota) is full; EACCES and EPERM: not
#: this user's to write; EROFS: mounted read-only.
ERRNO_ERRORS: dict[int, type[StorageError]] = {
    errno.ENOSPC: NoSpaceError,
    errno.EDQUOT: NoSpaceError,
    errno.EACCES: StoragePermissionError,
    errno.EPERM: StoragePermissionError,
    errno.EROFS: ReadOnlyStorageError,
}

_ERRNO_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}  # fmt: skip


def os_errno(exc: BaseException) -> int | None:
    """The errno of an ``OSError`` (pyarrow's ``OSError`` only names it in the message), else ``None``."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in ERRNO_ERRORS:
        return exc.errno
    if type(exc) is not OSError or exc.errno is not None:  # an HTTP error is an OSError too: never read its text
        return None
    text = str(exc)
    return next((code for words, code in _ERRNO_WORDS.items() if words in text), None)


def storage_error(
    exc: BaseException, *, path: str | os.PathLike[str] | None = None, what: str | None = None,
    needed: int | None = None,
) -> StorageError | None:  # fmt: skip
    """The named :class:`StorageError` an ``OSError`` means (``None`` when it is none of :data:`ERRNO_ERRORS`).

    ``path`` is the file being written (default: the error's own ``filename``), ``what`` says what it is (a shard
    of ``--out``, the synthetic benchmark cache, ...), ``needed`` the estimated size of the whole write.
    """
    code = os_errno(exc)
    if code is None:
        return None
    target = path if path is not None else getattr(exc, "filename", None)
    where = f"{what} ({target})" if what and target else (what or (str(target) if target else "a file"))
    reason = getattr(exc, "strerror", None) or str(exc)
    cls = ERRNO_ERRORS[code]
    if cls is NoSpaceError:
        return no_space_error(target, what=where, needed=needed, reason=reason)
    folder = existing_ancestor(target) if target else None
    if cls is ReadOnlyStorageError:
        return ReadOnlyStorageError(
            f"cannot write {where}: the file system is read-only ({reason})",
            path=str(target) if target else None,
            hint=f"Write to a folder on a writable disk (--out, SKYRANK_CACHE or HF_HOME), or remount {folder} "
            "read-write.",
        )
    return StoragePermissionError(
        f"cannot write {where}: permission denied ({reason})",
        path=str(target) if target else None,
        hint=f"Choose a folder you can write to (--out, SKYRANK_CACHE or HF_HOME), or ask for write access to "
        f"{folder}.",
    )


#: What torch's CPU allocator says when an allocation fails (c10/core/impl/alloc_cpu.cpp).
_CPU_ALLOCATOR_WORDS = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
#: torch's DataLoader when the kernel killed a worker with SIGKILL, which on Linux is the out-of-memory killer's.
_WORKER_KILLED = re.compile(r"DataLoader worker \(pid \d+\) is killed by signal: Killed")


def memory_error(exc: BaseException) -> OutOfMemoryError | None:
    """The :class:`OutOfMemoryError` ``exc`` means, or ``None`` when it is not one: a GPU out of memory (torch's
    ``OutOfMemoryError``), a failed CPU allocation (``MemoryError``, torch's ``DefaultCPUAllocator``), or a
    DataLoader worker killed by the out-of-memory killer."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("torch"):
        return OutOfMemoryError(f"out of GPU memory: {first}", device="GPU")
    if isinstance(exc, MemoryError):
        return OutOfMemoryError(f"out of CPU memory ({type(exc).__name__}{': ' + first if text else ''})",
                                device="CPU")  # fmt: skip
    if isinstance(exc, RuntimeError):
        if any(words in text for words in _CPU_ALLOCATOR_WORDS):
            return OutOfMemoryError(f"out of CPU memory: {first}", device="CPU")
        if _WORKER_KILLED.search(text):
            return OutOfMemoryError(
                f"out of CPU memory: {first} (SIGKILL; on Linux the kernel's out-of-memory killer)", device="CPU"
            )
    return None


def no_space_error(
    target: str | os.PathLike[str] | None, *, what: str, needed: int | None = None, reason: str | None = None
) -> NoSpaceError:
    """:class:`NoSpaceError` for writing ``what`` at ``target``: the free space there and the estimated size."""
    free = free_bytes(target) if target else None
    folder = existing_ancestor(target) if target else None
    parts = [f"{human_bytes(free)} free at {folder}" if free is not None else None,
             f"about {human_bytes(needed)} needed" if needed else None]  # fmt: skip
    detail = "; ".join(p for p in parts if p)
    more = f"free at least {human_bytes(needed - free)} there" if needed and free is not None and needed > free else (
        "free some space there")
    return NoSpaceError(
        f"not enough space on the disk to write {what}{': ' + reason if reason else ''}"
        f"{' (' + detail + ')' if detail else ''}",
        path=str(target) if target else None,
        hint=f"Nothing half-written was left: {more}, or write to a larger disk (--out, SKYRANK_CACHE or HF_HOME), "
        "then re-run.",
    )
