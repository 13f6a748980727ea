"""Jinja templates of the SkyRank dataset card and the SkyLink model card."""

from __future__ import annotations
