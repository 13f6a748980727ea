"""The README's first command, timed as a newcomer runs it: ``skyrank build`` with no arguments, from an empty cache
(fresh ``SKYRANK_CACHE``), under ``/usr/bin/time -v``; once on its own and once with one busy-loop process
(``python3 -c 'while True: pass'``) beside it. Prints wall time, CPU time (user + sys), peak RSS and the load
average before each run (the machine may be shared: the load says how quiet it was).

    python benchmarks/first_build.py --work /tmp/first-build            # quiet, then loaded
    python benchmarks/first_build.py --work /tmp/first-build --only loaded
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _time_v(field: str, text: str) -> str:
    m = re.search(rf"{re.escape(field)}: (.+)", text)
    return m.group(1).strip() if m else "?"


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def run(work: Path, loaded: bool) -> dict[str, str | float]:
    tag = "loaded" if loaded else "quiet"
    cache, out = work / f"cache-{tag}", work / f"skyrank-synthetic-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SKYRANK_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, str(REPO / "cli.py"), "build", "--out", str(out)],
            env=env, capture_output=True, text=True, cwd=work,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"build failed ({proc.returncode})")
    user = float(_time_v("User time (seconds)", proc.stderr))
    system = float(_time_v("System time (seconds)", proc.stderr))
    r1 = re.search(r"sample4geo-synthetic-d2s\s+test\s+\d+\s+\d+\s+[\d.]+\s+([\d.]+)", proc.stdout)
    return {
        "run": tag,
        "wall_s": _seconds(_time_v("Elapsed (wall clock) time (h:mm:ss or m:ss)", proc.stderr)) or wall,
        "cpu_s": user + system,
        "peak_rss_mb": int(_time_v("Maximum resident set size (kbytes)", proc.stderr)) / 1024,
        "load_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_after": " ".join(f"{x:.2f}" for x in load_after),
        "test_R@1": r1.group(1) if r1 else "?",
        "plan": next((x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("skyrank build:")), ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/first-build"))
    ap.add_argument("--only", choices=["quiet", "loaded"])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    rows = [run(args.work, loaded) for loaded in (False, True) if args.only in (None, "loaded" if loaded else "quiet")]
    print(f"{'run':<7} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>11} {'test R@1':>8}  load avg before -> after")
    for r in rows:
        print(f"{r['run']:<7} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['peak_rss_mb']:>11.0f} {r['test_R@1']:>8}  "
              f"{r['load_before']} -> {r['load_after']}")  # fmt: skip
    if rows:
        print(rows[0]["plan"])


if __name__ == "__main__":
    main()
