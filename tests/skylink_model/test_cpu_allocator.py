"""glibc's mmap threshold, fixed for CPU models (skylink_model.cpu_allocator)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skylink_model import cpu_allocator


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):
        return False


GLIBC = _glibc()
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")

# Frees a mapped 8 MiB block (glibc's dynamic threshold then rises to 8 MiB), fills 64 blocks of 4 MiB, keeps the
# last and frees the others; prints the MiB the free gave back to the system.
_PROBE = textwrap.dedent(
    """
    import sys
    import torch
    from skylink_model.cpu_allocator import fix_mmap_threshold

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold() and fix_mmap_threshold()  # idempotent
    big = torch.ones(8 << 20, dtype=torch.uint8)
    del big
    blocks = [torch.ones(4 << 20, dtype=torch.uint8) for _ in range(64)]
    before = rss_mib()
    del blocks[:-1]
    print(before - rss_mib())
    """
)


def _returned_mib(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_fixed_threshold_returns_freed_blocks_to_the_system():
    # glibc's default keeps the 252 MiB freed in its heap; with the threshold fixed they were mapped and go back.
    assert _returned_mib("default") < 64
    assert _returned_mib("fixed") > 200


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        cpu_allocator.fix_mmap_threshold(0)


def test_environment_setting_wins(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert cpu_allocator.fix_mmap_threshold() is False
