"""Retrievers, created by name: ``skyrank.retrievers.create("sample4geo", checkpoint=..., device=...)``."""

from __future__ import annotations

from skyrank.retrievers._base import (
    Retriever,
    RetrieverCfg,
    RetrieverInfo,
    create,
    list_retrievers,
    register_retriever,
    retriever_info,
)

# Importing the modules registers them.
from skyrank.retrievers import sample4geo, precomputed, mccg, sdpl  # noqa: E402,F401  isort: skip

__all__ = [
    "Retriever", "RetrieverCfg", "RetrieverInfo", "create", "list_retrievers", "register_retriever", "retriever_info",
]  # fmt: skip
