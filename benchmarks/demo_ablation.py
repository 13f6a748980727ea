"""What each of ``skyrank demo``'s choices buys: SkyLink alone and fused, per variant, on one demo dataset.

Each variant is one :func:`skyrank.demo.run_demo` (pre-train, train, evaluate) on the same SkyRank folder (the one
``skyrank demo`` builds: ``<demo out>/dataset``), seed 0 unless the variant sets one. Prints a markdown table: the
retriever, SkyLink alone with its 95% bootstrap interval, a random order of the top-10 (R@10 / 10), the learning
check, the fused row and its W, and the CPU seconds of pre-training and training.

    skyrank demo --out /tmp/demo                                     # builds /tmp/demo/dataset
    python benchmarks/demo_ablation.py --dataset /tmp/demo/dataset --work /tmp/demo-ablation
    python benchmarks/demo_ablation.py --dataset /tmp/demo/dataset --work /tmp/a --only demo,random-backbone
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: name -> run_demo keyword arguments (on top of the demo's own settings). Names hold no commas (``--only``).
VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},
    "random-backbone": {"pretrain_steps": 0},  # SkyLink on the random tiny Qwen2-VL
    "seed-1": {"settings": {"seed": 1}},  # another seed for pre-training, validation locations and training
    "double-budget": {"max_steps": 6000, "pretrain_steps": 600},
    # the paper's batch of 4 groups per optimizer step: the same 3,000 groups in 750 steps
    "paper-batch": {"settings": {"batch_size": 4, "learning_rate": 2e-3}, "max_steps": 750},
}


def _row(name: str, report: dict[str, Any]) -> str:
    rows, demo = report["rows"], report["extra"]["demo"]
    check, t = demo["check"], demo["timings"]
    low, high = check["skylink_R@1_ci95"]
    fused, base = rows["skylink_fused"], rows["retriever"]
    w = report["fusion"]["weight"]
    return (
        f"| {name} | {base['R@1']:.2f} / {base['AP']:.2f} | {check['skylink_R@1']:.2f} [{low:.2f}, {high:.2f}] | "
        f"{check['random_top10_R@1']:.2f} | {'yes' if check['learns'] else 'no'} ({check['ci_low_over_random']}x) | "
        f"{w} | {fused['R@1']:.2f} / {fused['AP']:.2f} | {t['pretrain']['cpu_s']:.0f} + {t['train']['cpu_s']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a SkyRank folder built by skyrank demo")
    parser.add_argument("--work", type=Path, required=True, help="one sub-folder per variant")
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    from skyrank.demo import run_demo

    names = list(VARIANTS) if not args.only else [n.strip() for n in args.only.split(",")]
    lines = [
        "| variant | retriever R@1 / AP | SkyLink R@1 [95% CI] | random | learns | W | fused R@1 / AP | CPU s "
        "(pre-train + train) |",
        "|---|---|---|---:|---|---|---|---|",
    ]
    for name in names:
        kwargs = VARIANTS[name]
        folder = args.work / name
        result = run_demo(folder, dataset=args.dataset, progress=False, report=False, **kwargs)
        lines.append(_row(name, result.report))
        print(lines[-1], flush=True)
    print("\n".join(lines))
    (args.work / "ablation.json").write_text(json.dumps({"variants": VARIANTS, "table": lines}, indent=2) + "\n")


if __name__ == "__main__":
    main()
