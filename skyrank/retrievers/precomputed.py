"""Precomputed embeddings: use any retriever SkyRank does not implement, by id lookup.

``create("precomputed", checkpoint="embeddings.parquet")`` loads one file holding an embedding for every image
(queries and gallery, both views) keyed by ``image_id``, the path of the image relative to the benchmark root in
POSIX form (``test/query_drone/0839/image-01.jpeg``), exactly as :class:`~skyrank.benchmarks.ImageRecord` spells
it. The retriever never sees an image (``needs_images = False``): the encoder calls :meth:`embed_ids`.

Accepted files (``embed_dim`` is read from the file; every vector is L2-normalised on load, as Eq. 1 of SkyLink,
arXiv 2603.08063, ranks by cosine similarity):

``.parquet``
    Columns ``image_id`` (string) and ``embedding`` (list<float>, the same length in every row).
``.npz``
    Arrays ``embeddings`` (N, D) and ``ids`` (N,) of strings; or only ``embeddings`` with an ids sidecar (below).
    Read with ``allow_pickle=False``.
``.npy``
    An (N, D) float array (``allow_pickle=False``) and an ids sidecar beside it.
``.safetensors``
    A tensor ``embeddings`` (N, D); the ids as a JSON list in the file's metadata under ``"ids"``
    (``save_file({"embeddings": t}, path, metadata={"ids": json.dumps(ids)})``), or an ids sidecar.

The ids sidecar of ``<stem>.<ext>`` is the first of ``<stem>.ids.txt`` (one id per line), ``<stem>.ids.json`` or
``<stem>.json`` (a JSON list of strings) that exists. Ids must be unique; vectors must be finite and non-zero.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers._base import Retriever, RetrieverCfg, check_view, register_retriever

PRECOMPUTED_CFG = RetrieverCfg(
    name="precomputed",
    image_size=0,  # never sees an image
    interpolation="bilinear",
    embed_dim=0,  # read from the file
    paper="(embeddings computed outside SkyRank)",
)

_SHOW = 5  # ids listed in an error message


def _sidecar_ids(path: Path) -> list[str]:
    stem = path.with_suffix("")
    for cand in (Path(f"{stem}.ids.txt"), Path(f"{stem}.ids.json"), Path(f"{stem}.json")):
        if cand.is_file():
            if cand.suffix == ".txt":
                return [line for line in cand.read_text(encoding="utf-8").splitlines() if line.strip()]
            ids = json.loads(cand.read_text(encoding="utf-8"))
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise CheckpointMismatchError(f"{cand} must hold a JSON list of image_id strings")
            return ids
    raise CheckpointMismatchError(
        f"no ids for {path}: write the image_ids (one per line) to {stem}.ids.txt, or a JSON list to {stem}.json"
    )


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, embeddings (N, D) float32)`` from one file in a format of the module docstring (not normalised)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"embeddings file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = {"image_id", "embedding"} - set(table.column_names)
        if missing:
            raise CheckpointMismatchError(
                f"{path} lacks column(s) {sorted(missing)}; found {table.column_names}. "
                "Expected columns image_id (string) and embedding (list<float>)."
            )
        ids = [str(i) for i in table.column("image_id").to_pylist()]
        col = table.column("embedding").combine_chunks()
        lengths = np.asarray(col.value_lengths(), dtype=np.int64) if len(col) else np.zeros(0, np.int64)
        if len(lengths) and (lengths != lengths[0]).any():
            raise CheckpointMismatchError(
                f"{path}: embedding lists have different lengths ({sorted(set(lengths.tolist()))[:5]})"
            )
        dim = int(lengths[0]) if len(lengths) else 0
        emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(ids), dim)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "embeddings" not in data.files:
                raise CheckpointMismatchError(f"{path} has arrays {data.files}; expected 'embeddings' (and 'ids')")
            emb = np.asarray(data["embeddings"], dtype=np.float32)
            ids = [str(i) for i in data["ids"]] if "ids" in data.files else _sidecar_ids(path)
    elif suffix == ".npy":
        emb = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        ids = _sidecar_ids(path)
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            if "embeddings" not in f.keys():
                raise CheckpointMismatchError(f"{path} has tensors {list(f.keys())}; expected 'embeddings'")
            emb = np.asarray(f.get_tensor("embeddings"), dtype=np.float32)
            meta = f.metadata() or {}
        ids = json.loads(meta["ids"]) if "ids" in meta else _sidecar_ids(path)
        ids = [str(i) for i in ids]
    else:
        raise CheckpointMismatchError(
            f"unsupported embeddings file {path}: use .parquet, .npz, .npy (+ ids sidecar) or .safetensors"
        )
    if emb.ndim != 2:
        raise CheckpointMismatchError(f"{path}: embeddings must be a 2-D (N, D) array, got shape {emb.shape}")
    if emb.shape[0] != len(ids):
        raise CheckpointMismatchError(f"{path}: {emb.shape[0]} embeddings but {len(ids)} ids")
    return ids, emb


def _l2_normalise(ids: list[str], emb: np.ndarray, source: Path) -> np.ndarray:
    finite = np.isfinite(emb).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], emb, 0.0), axis=1)
    bad = [ids[i] for i in np.flatnonzero(~finite | (norms == 0))]
    if bad:
        raise CheckpointMismatchError(
            f"{source}: {len(bad)} embedding(s) are zero or not finite, e.g. {', '.join(bad[:_SHOW])}"
        )
    return (emb / norms[:, None]).astype(np.float32)


class PrecomputedRetriever(Retriever):
    """Looks embeddings up by ``image_id`` (``needs_images = False``)."""

    name = "precomputed"
    needs_images = False

    def __init__(self, checkpoint: str | Path | None, device: str | torch.device = "cpu") -> None:
        if checkpoint is None:
            raise CheckpointMismatchError(
                "the precomputed retriever needs --checkpoint: a .parquet/.npz/.npy/.safetensors embeddings file"
            )
        path = Path(checkpoint)
        ids, emb = read_embeddings(path)
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dup:
            raise CheckpointMismatchError(f"{path}: {len(dup)} duplicate image_id(s), e.g. {', '.join(dup[:_SHOW])}")
        super().__init__(dataclasses.replace(PRECOMPUTED_CFG, embed_dim=int(emb.shape[1])), device, path)
        self.model = None
        self._emb = _l2_normalise(ids, emb, path)
        self._row = {image_id: i for i, image_id in enumerate(ids)}

    def __len__(self) -> int:
        return len(self._row)

    def embed(self, batch: torch.Tensor, view: str) -> torch.Tensor:
        raise NotImplementedError("the precomputed retriever looks embeddings up by id: call embed_ids(ids, view)")

    def embed_ids(self, image_ids: Sequence[str], view: str) -> np.ndarray:
        """``(N, D)`` float32, L2-normalised, in the order of ``image_ids`` (``view`` is checked, ids are unique)."""
        check_view(view)  # any view: the embeddings were computed elsewhere (ground panoramas included)
        missing = [i for i in image_ids if i not in self._row]
        if missing:
            raise CheckpointMismatchError(
                f"{self.checkpoint} has no embedding for {len(missing)} of {len(image_ids)} {view} image(s), e.g. "
                f"{', '.join(missing[:_SHOW])}. Ids are paths relative to the benchmark root with '/' separators."
            )
        rows = np.fromiter((self._row[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
        return self._emb[rows]


@register_retriever(
    "precomputed", learned_weights=False, checkpoint_required=True, checkpoint_what="the embeddings file"
)
def precomputed(checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> PrecomputedRetriever:
    """Embeddings read from ``checkpoint`` (see the module docstring for the formats)."""
    return PrecomputedRetriever(checkpoint=checkpoint, device=device)
