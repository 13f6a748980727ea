"""SkyRank: re-ranking datasets for cross-view UAV geo-localization (SkyLink, arXiv 2603.08063).

The entry points are importable from the package (lazily, so ``import skyrank`` stays light)::

    skyrank.build_dataset(...)      # skyrank build
    skyrank.validate_dataset(dir)   # skyrank validate
    skyrank.publish_dataset(...)    # skyrank publish
    skyrank.load_skyrank(repo_or_folder, config, split="test", images_root=...)
    skyrank.iter_triples(rows)      # (query, positives, negatives), sentence-transformers style
    skyrank.load_triples(repo_or_folder, config, split="train")   # query, positive, negative_1..n columns
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_dataset": "skyrank.build",
    "validate_dataset": "skyrank.validate",
    "publish_dataset": "skyrank.publish",
    "load_skyrank": "skyrank.loading",
    "iter_triples": "skyrank.loading",
    "load_triples": "skyrank.loading",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "schema":  # moved to skyrank.format.schema (issue 11); `from skyrank import schema` keeps working
        import importlib

        return importlib.import_module("skyrank.format.schema")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skyrank' has no attribute {name!r}")
