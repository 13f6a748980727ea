"""SkyLink: a LoRA-tuned vision-language re-ranker for cross-view geo-localization (arXiv 2603.08063)."""

from __future__ import annotations
