"""Full-count placeholder trees of VIGOR, CVUSA, CVACT, DenseUAV and University-1652 street: each reader must give
exactly the published counts (``../shared/notes/benchmarks-more.md``).

Each tree is written in its real layout (split files, ``ACT_data.mat``, GPS file) by
:mod:`skyrank.benchmarks.synthetic.trees` with every image a hard link to one tiny file, read with
``get_benchmark(name).load_split`` (timed), checked against the counts below (typed from the note, not derived from
the writer) and removed.

    PYTHONPATH=$PWD python benchmarks/full_count_trees.py [--only vigor] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks.synthetic import trees

#: (benchmark, split, direction) → (queries, gallery), from the note (VIGOR: SliceMatch split files and the VIGOR
#: paper; CVUSA/CVACT: OriCNN README and paper; DenseUAV: README; University-1652: README)
EXPECTED: dict[tuple[str, str, str], tuple[int, int]] = {
    ("vigor_same", "train", "d2s"): (52_609, 90_618),
    ("vigor_same", "test", "d2s"): (52_605, 90_618),
    ("vigor_cross", "train", "d2s"): (51_520, 44_055),
    ("vigor_cross", "test", "d2s"): (53_694, 46_563),
    ("cvusa", "train", "d2s"): (35_532, 35_532),
    ("cvusa", "test", "d2s"): (8_884, 8_884),
    ("cvact", "train", "d2s"): (35_532, 35_532),
    ("cvact", "test", "d2s"): (8_884, 8_884),
    ("cvact_test", "test", "d2s"): (92_802, 92_802),
    ("cvact_test_1to1", "test", "d2s"): (92_802, 92_802),
    ("denseuav", "train", "d2s"): (6_768, 13_536),
    ("denseuav", "test", "d2s"): (2_331, 18_198),
    ("denseuav", "test", "s2d"): (4_662, 9_099),
    ("university1652_street", "test", "d2s"): (2_579, 951),
}
#: positives per query where the note gives them: DenseUAV d2s 6 (3 heights x {current, _old}), others 1
POSITIVES: dict[str, int] = {"denseuav": 6}


def check_tree(layout: str, base: Path) -> list[str]:
    writer, full, sub, benches = trees.TREES[layout]
    root = base / layout / sub
    t0 = time.perf_counter()
    writer(root, full, trees.placeholder_source(root))
    lines = [f"{layout}: wrote the tree in {time.perf_counter() - t0:.1f} s"]
    for (bench, split, direction), (nq, ng) in EXPECTED.items():
        if bench not in benches:
            continue
        t0 = time.perf_counter()
        rs = get_benchmark(bench).load_split(root, split, direction)
        dt = time.perf_counter() - t0
        per_label = Counter(g.label for g in rs.gallery)
        positives = {len(q.positives) if q.positives is not None else per_label[q.label] for q in rs.queries}
        want_pos = POSITIVES.get(bench, 1) if direction == "d2s" else 3
        ok = (len(rs.queries), len(rs.gallery)) == (nq, ng) and positives == {want_pos}
        lines.append(
            f"  {bench:<22} {split:<5} {direction} queries {len(rs.queries):>6} gallery {len(rs.gallery):>6} "
            f"positives/query {sorted(positives)} read in {dt:.2f} s  {'OK' if ok else f'EXPECTED {nq}/{ng}'}"
        )
        if not ok:
            raise SystemExit("\n".join(lines))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(trees.TREES), action="append")
    ap.add_argument("--keep", type=Path, help="write the trees here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="skyrank-full-count-"))
    try:
        for layout in args.only or list(trees.TREES):
            print("\n".join(check_tree(layout, base)), flush=True)
            if not args.keep:
                shutil.rmtree(base / layout)
                trees.remove_templates(base / layout / trees.TREES[layout][2])
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
