"""The SkyRank format: the schema and config names (:mod:`skyrank.format.schema`) and the paper's rules as pure
functions (:mod:`skyrank.format.rules`).

Everything that writes, checks or reads a SkyRank dataset (``mine``, ``validate``, SkyLink's training data and
evaluation) calls these functions; none keeps a copy of a rule. Submodules are imported on use, so the model half can
read the rules without importing the build pipeline.
"""

from __future__ import annotations
