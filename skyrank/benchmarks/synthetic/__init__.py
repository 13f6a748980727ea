"""The procedural synthetic cross-view benchmark (no download, no licensed image): region worlds
(:mod:`.world`), satellite and drone cameras (:mod:`.camera`), the writer of the University-1652 / SUES-200 on-disk
layouts (:mod:`.layout`) and the reader (:mod:`.reader`, ``get_benchmark("synthetic")``), so every benchmark reader,
retriever and the whole SkyRank pipeline run on real files. Details: DEVELOPERS.md, "The synthetic benchmark".
"""

from __future__ import annotations

from skyrank.benchmarks.synthetic.layout import (
    LAYOUTS,
    SYNTHETIC_DEFAULTS,
    SYNTHETIC_VERSION,
    build_command,
    default_synthetic_root,
    ensure_synthetic,
    generate_synthetic,
)
from skyrank.benchmarks.synthetic.reader import SYNTHETIC_CITATION, SyntheticBenchmark
from skyrank.benchmarks.synthetic.world import REGION_SLOTS

__all__ = [
    "LAYOUTS",
    "REGION_SLOTS",
    "SYNTHETIC_CITATION",
    "SYNTHETIC_DEFAULTS",
    "SYNTHETIC_VERSION",
    "SyntheticBenchmark",
    "build_command",
    "default_synthetic_root",
    "ensure_synthetic",
    "generate_synthetic",
]
