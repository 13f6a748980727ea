"""A fixed mmap threshold for glibc's ``malloc``, so a CPU training step's freed activations go back to the system.

glibc serves a request of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap`` and unmaps it on ``free``; below
that it carves the request from its heap, which it returns only from the top. The threshold starts at 128 KiB and is
*dynamic*: each time a mapped block is freed, it rises to that block's size (up to 32 MiB). After the first few
activations of an LVLM's vision tower are freed, every later one of up to 32 MiB lands in the heap, where blocks of
changing sizes fragment it and the freed space is kept. Measured on LLaVA-OneVision-0.5B (fp32, one training step at
k = 4, 8 images of 729 patches, 2 text + 8 vision layers, gradient checkpointing): peak RSS 6.37 GiB with glibc's
default, 3.03 GiB with a fixed 1 MiB threshold (``MALLOC_MMAP_THRESHOLD_=1048576``), the same seconds. The full model's
step peaked at 18.7 GiB where the activations held at any moment are about 3 GiB (BENCHMARKS.md, issue 19).

:func:`fix_mmap_threshold` sets the threshold with ``mallopt(M_MMAP_THRESHOLD, …)``, which also switches the dynamic
adjustment off. It is process-wide and idempotent, so it is for the owner of a process that does one job: the CLI's
``skyrank train``/``eval``/``rerank``/``sweep``/``bench`` call it on the CPU, and so do the per-family processes of
``benchmarks/real_shapes.py``. The library itself does not (it would change every allocation of a host program). In
your own process, call it before loading a model, or set ``MALLOC_MMAP_THRESHOLD_=1048576``, which glibc reads at
start-up. Other C libraries (musl, macOS) are left alone, and a threshold already set in the environment wins.

Session 6 kept it out of the CLI because forked DataLoader workers aborted with ``std::system_error: Invalid
argument`` in 3 of 4 full test runs while model loading called it. The same abort then failed CI without it: a
failed :func:`skyrank.retrievers.distributed.launch` left its rendezvous store to be collected in a forked worker
(fixed in session 7, :mod:`skyrank.workers`). With that fixed, the full test run with model loading calling it
passed twice in two runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: every activation of a real-shape model is mapped; small tensors stay in the heap

_applied: int | None = None


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; ``True`` if it is (or was already) fixed.

    ``False`` where there is no glibc ``mallopt`` (another OS or C library) or the environment already sets
    ``MALLOC_MMAP_THRESHOLD_`` (glibc honoured it at start-up).
    """
    global _applied
    if threshold <= 0:
        raise ValueError(f"`threshold` must be a positive number of bytes, got {threshold}.")
    if _applied == threshold:
        return True
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt but ignores it)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return False
    _applied = threshold
    return True


__all__ = ["DEFAULT_THRESHOLD", "M_MMAP_THRESHOLD", "fix_mmap_threshold"]
