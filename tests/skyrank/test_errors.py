"""Environment faults named from the exceptions torch and Python raise (skyrank.errors)."""

from __future__ import annotations

import errno

import pytest
import torch

from skyrank.errors import NoSpaceError, OutOfMemoryError, memory_error, storage_error


@pytest.mark.parametrize(
    ("exc", "device", "words"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"), "GPU", "Tried to allocate"),
        (MemoryError(), "CPU", "MemoryError"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                      "tried to allocate 9 bytes. Error code 12 (Cannot allocate memory)"), "CPU", "alloc_cpu.cpp"),
        (RuntimeError("DataLoader worker (pid 77) is killed by signal: Killed. "), "CPU", "out-of-memory killer"),
    ],
)
def test_memory_running_out_is_named(exc: BaseException, device: str, words: str) -> None:
    named = memory_error(exc)
    assert isinstance(named, OutOfMemoryError) and named.device == device
    assert f"out of {device} memory" in str(named) and words in str(named) and "\n" not in str(named)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom"),
        RuntimeError("DataLoader worker (pid 77) is killed by signal: Aborted. "),  # a crash, not the OOM killer
        ValueError("can't allocate memory"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_anything_else_is_not_a_memory_fault(exc: BaseException) -> None:
    assert memory_error(exc) is None


def test_a_full_disk_stays_a_storage_error_not_memory() -> None:
    exc = OSError(errno.ENOSPC, "No space left on device", "/tmp/x")
    assert isinstance(storage_error(exc), NoSpaceError) and memory_error(exc) is None
