"""Atomic outputs (skyrank.atomic): a file or folder appears whole or not at all, and a failed write loses nothing."""

from __future__ import annotations

import pytest

from skyrank.atomic import swap_in_dir, write_atomic, write_text_atomic
from skyrank.errors import OutputExistsError


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "eval.json"
    assert write_text_atomic(path, "one\n") == path
    write_text_atomic(path, "two\n", fsync=True)
    assert path.read_text() == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "table.parquet"
    path.write_text("old")
    seen = []

    def half_write(tmp):
        seen.append(tmp)
        assert tmp.suffix == ".parquet" and tmp.name.startswith(".")  # writers that go by the suffix still work
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(path, half_write)
    assert path.read_text() == "old"
    assert not seen[0].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_swap_in_dir_replaces_a_folder_whole(tmp_path):
    out, staging = tmp_path / "out", tmp_path / ".out.partial"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    swap_in_dir(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left behind


def test_swap_in_dir_onto_a_symlink_replaces_the_link_not_its_target(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    out.symlink_to(target)
    staging = tmp_path / "staging"
    staging.mkdir()
    swap_in_dir(staging, out)
    assert out.is_dir() and not out.is_symlink()
    assert (target / "keep.txt").read_text() == "keep"


def test_swap_in_dir_refuses_a_folder_that_appeared_meanwhile(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "staging"
    staging.mkdir()
    (staging / "a").write_text("a")
    import os

    real_rename = os.rename

    def racing_rename(src, dst):  # another process creates a non-empty `out` just before our rename
        if str(dst) == str(out) and not out.exists():
            out.mkdir()
            (out / "theirs").write_text("theirs")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", racing_rename)
    with pytest.raises(OutputExistsError, match="appeared"):
        swap_in_dir(staging, out)
    assert (out / "theirs").read_text() == "theirs"


def test_exclusive_lock_makes_a_second_process_wait(tmp_path):
    """The synthetic retriever's cache lock: a second holder blocks until the first releases (says so once)."""
    import subprocess
    import sys
    import time

    from skyrank.atomic import exclusive_lock

    lock = tmp_path / "cache.lock"
    script = (
        "import sys, time; from skyrank.atomic import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}, on_wait=lambda: print('waiting', flush=True)):\n"
        "    print('got', time.time(), flush=True)\n"
    )
    with exclusive_lock(lock):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        released = time.time()
    out, _ = child.communicate(timeout=60)
    lines = out.split()
    assert lines[0] == "waiting" and lines[1] == "got" and float(lines[2]) >= released
