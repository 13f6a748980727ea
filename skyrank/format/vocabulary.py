"""The format's closed vocabularies: splits, directions, views, gallery protocols and embedding dtypes.

Plain tuples with no import of ``datasets``, so option checks (``skyrank build``'s, before any heavy import) read the
same values :mod:`skyrank.format.schema` declares; the schema re-exports them.
"""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "test")
DIRECTIONS: tuple[str, ...] = ("d2s", "s2d")
VIEWS: tuple[str, ...] = ("drone", "satellite", "ground")  # ground: street-level panoramas and photos
PROTOCOLS: tuple[str, ...] = ("official", "query-ids-only")
#: Storage dtypes of the ``embeddings-*`` configs (recorded in the card and the manifest).
EMBEDDING_DTYPES: tuple[str, ...] = ("float32", "float16")
