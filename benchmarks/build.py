"""Where the time and memory of ``skyrank build`` go, for two synthetic benchmark sizes.

Each build runs in its own process (so its peak RSS is its own) on a synthetic benchmark written in the
University-1652 layout, with a random-weight ``convnext_atto`` Sample4Geo retriever, and reports the wall time
split into setup, decode, encode (the retriever's forward pass), search, write and validate, plus peak RSS.

    python benchmarks/build.py                       # small (CI default size) and 10x the images
    python benchmarks/build.py --full                # small and University-1652's full counts at 64 px
    python benchmarks/build.py --full --ids-only     # the same without image bytes (the real benchmarks' default)

Targets (issue #2): everything except the retriever's forward pass ≤ 10% of wall time; peak RSS flat as the
number of images grows tenfold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "small": dict(locations=48, distractors=16, views=8, image_size=64),
    "10x": dict(locations=160, distractors=48, views=24, image_size=64),
    "u1652-full": dict(locations=701, distractors=250, views=54, image_size=64),
}


def _child(
    size: str, work: Path, image_size: int, splits: str, batch_size: int, num_workers: int, with_images: bool
) -> None:
    import torch

    from skyrank.benchmarks.synthetic import generate_synthetic
    from skyrank.build import build_dataset
    from skyrank.retrievers import create

    root = work / f"bench-{size}"
    t0 = time.perf_counter()
    if not root.exists():
        generate_synthetic(root, layout="university1652", progress=False, **SIZES[size])
    t_gen = time.perf_counter() - t0
    ckpt = work / "atto-random.pth"
    if not ckpt.exists():
        torch.manual_seed(0)
        r = create("sample4geo", arch="convnext_atto", image_size=image_size, random_weights=True)
        torch.save(r.model.state_dict(), ckpt)
    report = build_dataset(
        dataset="synthetic",
        root=root,
        retriever="sample4geo",
        checkpoint=ckpt,
        arch="convnext_atto",
        image_size=image_size,
        splits=tuple(splits.split(",")),
        out=work / f"out-{size}",
        with_images=with_images,
        overwrite=True,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=False,
    )
    n_images = sum(s.queries + s.gallery for s in report.stats)
    print(
        json.dumps(
            {
                "size": size,
                "images": n_images,
                "generate_s": t_gen,
                "timings": report.timings,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="compare with University-1652's full counts at 64 px")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary folder)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--splits", default="test")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument(
        "--ids-only",
        action="store_true",
        help="no image bytes in the gallery/queries configs (the default for University-1652 and SUES-200)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="skyrank-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        _child(args.child, work, args.image_size, args.splits, args.batch_size, args.num_workers, not args.ids_only)
        return
    sizes = ["small", "u1652-full" if args.full else "10x"]
    results = []
    for size in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            size,
            "--work",
            str(work),
            "--image-size",
            str(args.image_size),
            "--splits",
            args.splits,
            "--batch-size",
            str(args.batch_size),
            "--num-workers",
            str(args.num_workers),
        ] + (["--ids-only"] if args.ids_only else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{'size':<11} {'images':>7} {'total s':>8} {'encode %':>8} {'decode %':>8} {'search %':>8} "
        f"{'write %':>8} {'valid. %':>8} {'other %':>8} {'peak RSS MB':>11}"
    )
    for r in results:
        t = r["timings"]
        tot = t["total"]
        pct = {k: 100 * t.get(k, 0.0) / tot for k in ("encode", "decode", "search", "write", "validate")}
        other = 100 - sum(pct.values())
        print(
            f"{r['size']:<11} {r['images']:>7} {tot:>8.1f} {pct['encode']:>8.1f} {pct['decode']:>8.1f} "
            f"{pct['search']:>8.1f} {pct['write']:>8.1f} {pct['validate']:>8.1f} {other:>8.1f} "
            f"{r['peak_rss_mb']:>11.0f}"
        )
    a, b = results
    print(
        f"images x{b['images'] / a['images']:.1f}  ->  peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}, "
        f"wall x{b['timings']['total'] / a['timings']['total']:.1f}"
    )


if __name__ == "__main__":
    main()
