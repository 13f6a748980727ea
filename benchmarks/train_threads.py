"""Time of one training step of the synthetic retriever (ConvNeXt-Atto, 64 images at 64 px, forward + backward +
AdamW) by torch intra-op thread count and ``OMP_WAIT_POLICY``, each in a fresh process, interleaved; optionally with
one busy-loop process beside it. Shows what thread oversubscription costs on a shared machine.

    python benchmarks/train_threads.py --repeats 2
    python benchmarks/train_threads.py --repeats 2 --busy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, sys, time, torch
threads, size, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
from skyrank.losses import symmetric_infonce
from skyrank.retrievers.train import _Target
target = _Target("sample4geo", "convnext_atto", size, nclasses=8, block=2)
opt = torch.optim.AdamW(target.parameters(), lr=1e-3)
x = torch.randn(64, 3, size, size)
for k in range(steps + 1):
    if k == 1:
        t0, c0 = time.perf_counter(), time.process_time()
    f = target.descriptor(x)
    loss = symmetric_infonce(*f.chunk(2), target.logit_scale.exp())
    opt.zero_grad()
    loss.backward()
    opt.step()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall_ms": wall / steps * 1e3, "cpu_ms": cpu / steps * 1e3}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--busy", action="store_true", help="run one `while True: pass` process beside every row")
    args = ap.parse_args()
    configs = [(1, "default"), (2, "default"), (1, "PASSIVE"), (2, "PASSIVE")]
    results: dict[tuple[int, str], list[dict[str, float]]] = {c: [] for c in configs}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        for _ in range(args.repeats):
            for threads, policy in configs:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                env["OMP_NUM_THREADS"] = str(threads)
                if policy != "default":
                    env["OMP_WAIT_POLICY"] = policy
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(threads), str(args.size), str(args.steps)],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[(threads, policy)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; busy loop: {args.busy}")
    print(f"{'threads':>7} {'OMP_WAIT_POLICY':<16} {'best wall ms/step':>17} {'CPU ms/step':>11}")
    for (threads, policy), runs in results.items():
        best = min(runs, key=lambda r: r["wall_ms"])
        print(f"{threads:>7} {policy:<16} {best['wall_ms']:>17.0f} {best['cpu_ms']:>11.0f}")


if __name__ == "__main__":
    main()
