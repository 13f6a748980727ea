"""Issue 21: one cache shared by concurrent runs. Two real processes on one empty cache generate the synthetic
benchmark once and train the cached retriever once (the second waits, says so, and reuses the result); a holder
killed mid-write releases the lock with its death, and what it left half-written is redone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: A tiny benchmark and a one-epoch retriever: seconds, not minutes.
BENCH = {"locations": 2, "test_locations": 2, "distractors": 0, "views": 1, "image_size": 32}
RECIPE = {"epochs": 1, "image_size": 32, "batch_size": 4, "num_workers": 0}

#: One run: counts every generation and training (production's functions, wrapped), optionally holds the first
#: generation until ``hold`` says go (so that the other process surely meets the lock) or dies inside it.
SCRIPT = r"""
import json, os, sys, time
from pathlib import Path

cache, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
bench, recipe = json.loads(sys.argv[4]), json.loads(sys.argv[5])
import skyrank.benchmarks.synthetic.layout as layout

real_generate = layout.generate_synthetic

def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {os.getpid()}\n")

def generate(out, **kw):
    note("generate")
    if mode == "die":  # leave what a killed holder leaves, then wait to be killed with the lock held
        (out.parent / f".{out.name}.partial-dead").mkdir(parents=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "half.jpg").write_bytes(b"half")
        note("holding")
        time.sleep(600)
    if mode == "hold":  # keep the lock until the other process has started, so that it meets the lock
        deadline = time.time() + 120
        while len(list(log.parent.glob("started-*"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    return real_generate(out, **kw)

layout.generate_synthetic = generate
from skyrank.benchmarks.synthetic import ensure_synthetic

if mode == "hold":  # the retriever too (torch is imported only here: the other runs stay quick)
    import skyrank.retrievers.train as train
    from skyrank.build import synthetic_retriever_checkpoint

    real_train = train.train_retriever

    def trained(*a, **kw):
        note("train")
        return real_train(*a, **kw)

    train.train_retriever = trained
(log.parent / f"started-{os.getpid()}").touch()
root = ensure_synthetic(cache_dir=cache, progress=True, **bench)
ckpt = synthetic_retriever_checkpoint(root, recipe=recipe, progress=True) if mode == "hold" else None
print(json.dumps({"root": str(root), "ckpt": str(ckpt)}), flush=True)
"""


def _start(tmp: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    args = [sys.executable, "-c", SCRIPT, str(tmp / "cache"), str(tmp / "log.txt"), mode, json.dumps(BENCH),
            json.dumps(RECIPE)]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _log(tmp: Path) -> list[str]:
    path = tmp / "log.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_two_processes_on_one_empty_cache_generate_and_train_once(tmp_path: Path) -> None:
    first, second = _start(tmp_path, "hold"), _start(tmp_path, "hold")
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1]  # the same cache entries
    assert sorted(_log(tmp_path)) == ["generate", "train"], _log(tmp_path)  # once each, by one of the two
    stderr = "".join(err for _, err in outs)
    assert "another process is generating the cached synthetic benchmark" in stderr, stderr
    root, ckpt = Path(results[0]["root"]), results[0]["ckpt"]
    assert (root / "synthetic.json").is_file() and _sha(ckpt)
    assert not list(root.parent.glob(f".{root.name}.partial-*"))


def test_a_killed_holder_never_deadlocks_and_its_half_written_entry_is_redone(tmp_path: Path) -> None:
    holder = _start(tmp_path, "die")
    deadline = time.time() + 300
    while "holding" not in _log(tmp_path):
        assert holder.poll() is None and time.time() < deadline, holder.communicate()
        time.sleep(0.1)
    holder.send_signal(signal.SIGKILL)  # dies holding the lock, leaving a staging folder and a half folder
    holder.communicate(timeout=60)
    after = _start(tmp_path, "plain")
    out, err = after.communicate(timeout=600)
    assert after.returncode == 0, err
    root = Path(json.loads(out.strip().splitlines()[-1])["root"])
    assert (root / "synthetic.json").is_file() and not (root / "half.jpg").exists()
    assert not list(root.parent.glob(f".{root.name}.partial-*"))  # the dead holder's staging folder is gone
    assert _log(tmp_path).count("generate") == 2  # redone by the second process
