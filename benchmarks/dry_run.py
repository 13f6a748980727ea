"""``skyrank build --dry-run`` at University-1652's full counts: the plan, timed, on a placeholder tree.

The tree has University-1652's layout and counts (701 train / 701 test locations, 250 distractors, 54 drone views;
129,417 files) with empty image files, so any decode would fail: the plan reads folder listings only. Both
directions and both splits, the heaviest plan. Target (issue 22): under 10 s.

    python benchmarks/dry_run.py --work /tmp/u1652-placeholders
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.skyrank.benchmarks.layouts import make_university1652_placeholders  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder for the placeholder tree (reused when present)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = args.work / "University-Release"
    if not root.is_dir():
        t0 = time.perf_counter()
        make_university1652_placeholders(root)
        print(f"placeholder tree written in {time.perf_counter() - t0:.1f} s")
    ckpt = args.work / "weights.pth"
    ckpt.touch()  # the dry run checks that --checkpoint exists; nothing loads it
    cmd = [sys.executable, "-m", "cli", "build", "--dataset", "university1652", "--root", str(root),
           "--checkpoint", str(ckpt), "--direction", "d2s", "--direction", "s2d", "--out", str(args.work / "out"),
           "--device", "cpu", "--dry-run"]  # fmt: skip
    times, cpu = [], []
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode:
            sys.exit(f"dry run failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    print(done.stdout)
    # CPU time (user + system) is what the process needs of a free core; wall time also holds the waits of a busy
    # machine (compare with the load average below).
    print(f"skyrank build --dry-run (whole process, University-1652 full counts, both directions): "
          f"wall best {min(times):.2f} s (all {', '.join(f'{t:.2f}' for t in times)}), "
          f"CPU best {min(cpu):.2f} s (all {', '.join(f'{t:.2f}' for t in cpu)})")  # fmt: skip
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().strip()}")


if __name__ == "__main__":
    main()
