"""Benchmark readers, created by name: ``get_benchmark("university1652").load_split(root, "test")``."""

from __future__ import annotations

from skyrank.benchmarks._base import (
    IMAGE_SUFFIXES,
    Benchmark,
    ImageRecord,
    RetrievalSplit,
    apply_protocol,
    benchmark_citation,
    benchmark_notes,
    get_benchmark,
    list_benchmarks,
    register_benchmark,
    restricted_benchmark,
)

# Importing the modules registers them.
from skyrank.benchmarks import university1652, sues200, synthetic  # noqa: E402,F401  isort: skip
from skyrank.benchmarks import (  # noqa: E402,F401  isort: skip
    cvact,
    cvusa,
    denseuav,
    university1652_street,
    vigor,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Benchmark",
    "ImageRecord",
    "RetrievalSplit",
    "apply_protocol",
    "benchmark_citation",
    "benchmark_notes",
    "get_benchmark",
    "list_benchmarks",
    "register_benchmark",
    "restricted_benchmark",
]
