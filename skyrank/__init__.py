"""SkyRank: re-ranking datasets for cross-view UAV geo-localization (SkyLink, arXiv 2603.08063)."""

from __future__ import annotations

__version__ = "0.1.0"
